"""A small, careful HTTP/1.1 client on asyncio streams: one request per connection, bounded reads."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import re
import ssl
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_BODY = 512 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
USER_AGENT = "Mozilla/5.0 (compatible; recon-worker/1.0)"

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", re.IGNORECASE)


class HttpError(Exception):
    """The peer did not answer with a well-formed HTTP response in time."""


def scanning_ssl_context() -> ssl.SSLContext:
    """A client TLS context that accepts any certificate (scanning, not trusting) and old protocols."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass
    return ctx


_SSL_CONTEXT: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The process-wide scanning context (building one per connection is needlessly slow)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = scanning_ssl_context()
    return _SSL_CONTEXT


@dataclass
class HttpResponse:
    """A parsed response. ``headers`` keeps order and duplicates; ``truncated`` means the body hit the cap."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_map(self) -> dict[str, str]:
        """Headers as a dict with lower-cased names; repeated headers joined with newlines."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            lkey = key.lower()
            out[lkey] = f"{out[lkey]}\n{value}" if lkey in out else value
        return out

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased ('' when absent)."""
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()

    def text(self) -> str:
        """The body decoded with the declared (or meta) charset, falling back to UTF-8."""
        return decode_body(self.body, self.header("Content-Type"))

    @property
    def title(self) -> str:
        """The page's <title>, unescaped and whitespace-collapsed."""
        return extract_title(self.body, self.header("Content-Type"))


def _charset(body: bytes, content_type: str | None) -> str:
    if content_type and "charset=" in content_type.lower():
        value = content_type.lower().split("charset=", 1)[1].split(";", 1)[0].strip().strip("\"'")
        if value:
            return value
    match = _CHARSET_RE.search(body[:4096])
    return match.group(1).decode("ascii", "replace").lower() if match else "utf-8"


def decode_body(body: bytes, content_type: str | None = None) -> str:
    """Decode ``body`` using the charset from ``content_type`` or a <meta> tag; never raises."""
    charset = _charset(body, content_type)
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def extract_title(body: bytes, content_type: str | None = None, limit: int = 300) -> str:
    """Extract the HTML <title> from ``body`` (first 64 KiB), unescaped, whitespace collapsed."""
    match = _TITLE_RE.search(body[: 64 * 1024])
    if not match:
        return ""
    charset = _charset(body, content_type)
    try:
        raw = match.group(1).decode(charset, errors="replace")
    except LookupError:
        raw = match.group(1).decode("utf-8", errors="replace")
    return " ".join(html.unescape(raw).split())[:limit]


def format_host(host: str) -> str:
    """Bracket IPv6 literals for use in URLs and Host headers."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def origin_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host[:port]`` with the default port omitted."""
    default = 443 if scheme == "https" else 80
    suffix = "" if port == default else f":{port}"
    return f"{scheme}://{format_host(host)}{suffix}"


def split_url(url: str) -> tuple[str, str, int, str]:
    """Split an absolute http(s) URL into (scheme, host, port, path-with-query)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname.lower(), port, path


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    used = 0
    line = await reader.readline()
    used += len(line)
    if not line.startswith(b"HTTP/"):
        raise HttpError(f"not an HTTP response: {line[:40]!r}")
    parts = line.decode("latin-1").strip().split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError) as exc:
        raise HttpError(f"bad status line: {line[:60]!r}") from exc
    reason = parts[2] if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        used += len(line)
        if used > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
            raise HttpError("response headers too large")
        if not line:
            raise HttpError("connection closed inside headers")
        if line in (b"\r\n", b"\n"):
            return status, reason, headers
        key, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers.append((key.strip(), value.strip()))


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    while True:
        size_line = await reader.readline()
        if not size_line:
            return bytes(body), False
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError as exc:
            raise HttpError("bad chunk size") from exc
        if size == 0:
            return bytes(body), False
        take = min(size, limit - len(body))
        if take > 0:
            body += await reader.readexactly(take)
        if take < size:
            return bytes(body), True
        await reader.readline()


async def _read_body(
    reader: asyncio.StreamReader, response: HttpResponse, method: str, limit: int
) -> tuple[bytes, bool]:
    if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
        return b"", False
    if (response.header("Transfer-Encoding") or "").lower().endswith("chunked"):
        return await _read_chunked(reader, limit)
    length_text = response.header("Content-Length")
    if length_text is not None and length_text.strip().isdigit():
        length = int(length_text)
        data = await _read_up_to(reader, min(length, limit))
        return data, length > limit
    data = await _read_up_to(reader, limit + 1)
    return data[:limit], len(data) > limit


async def _read_up_to(reader: asyncio.StreamReader, count: int) -> bytes:
    """Read ``count`` bytes, fewer when the peer closes first; never more (the rest stays unread)."""
    data = bytearray()
    while len(data) < count:
        more = await reader.read(count - len(data))
        if not more:
            break
        data += more
    return bytes(data)


async def read_response(reader: asyncio.StreamReader, method: str, max_body: int) -> HttpResponse:
    """Read one response (skipping 1xx interim ones) with its body, bounded by ``max_body``."""
    while True:
        status, reason, headers = await _read_headers(reader)
        if not 100 <= status < 200 or status == 101:
            break
    response = HttpResponse(status=status, reason=reason, headers=headers)
    response.body, response.truncated = await _read_body(reader, response, method, max_body)
    return response


def _hang_up(writer: asyncio.StreamWriter, complete: bool) -> None:
    """Close after an answer read to its end; abort (no TLS close_notify) in every other case.

    A graceful TLS close sends close_notify, then keeps the socket until the peer's arrives (up to
    asyncio's 30 s TLS shutdown timeout), reading what comes meanwhile: a server that stalled or
    stopped reading never sends one. Aborting closes the socket at once with its unread bytes (the
    peer gets a reset), whatever was left of the page unread.
    """
    if complete:
        writer.close()
    else:
        writer.transport.abort()


async def exchange(
    ip: str,
    port: int,
    request: bytes,
    *,
    tls: bool,
    sni: str | None,
    method: str,
    timeout: float,
    max_body: int,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Connect to ``ip:port``, send ``request`` and read the response to ``method``; raises HttpError.

    TLS (when ``tls``) uses ``ssl_context``, by default the scanning context (any certificate), and
    ``sni`` as the server name. The whole exchange must finish within ``timeout`` seconds; the body
    is cut at ``max_body`` bytes, and a connection whose answer was not read to its end (cut,
    timed out, failed) is dropped at once, its unread bytes never read (see :func:`_hang_up`).
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                ip,
                port,
                ssl=(ssl_context or shared_ssl_context()) if tls else None,
                server_hostname=sni if tls else None,
                limit=MAX_HEADER_BYTES,
            )
            complete = False
            try:
                writer.write(request)
                await writer.drain()
                response = await read_response(reader, method, max_body)
                complete = not response.truncated
                return response
            finally:
                _hang_up(writer, complete)
    except TimeoutError as exc:
        raise HttpError(f"timeout after {timeout}s") from exc
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpError(f"{type(exc).__name__}: {exc}") from exc


async def fetch(
    ip: str,
    port: int,
    *,
    tls: bool,
    host: str | None = None,
    path: str = "/",
    method: str = "GET",
    timeout: float = 5.0,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """Send one HTTP/1.1 request to ``ip:port`` (TLS when ``tls``) and read the response.

    ``host`` is the Host header and TLS SNI name (defaults to ``ip``). The whole exchange must finish
    within ``timeout`` seconds; the body is cut at ``max_body`` bytes. Raises :class:`HttpError`.
    """
    host = host or ip
    default = 443 if tls else 80
    host_header = format_host(host) + ("" if port == default else f":{port}")
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    return await exchange(
        ip,
        port,
        request.encode("latin-1", "replace"),
        tls=tls,
        sni=None if host == ip else host,
        method=method,
        timeout=timeout,
        max_body=max_body,
    )
