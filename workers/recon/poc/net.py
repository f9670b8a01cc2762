"""Raw network exchanges for PoCs: one HTTP request with any method, headers and body; one TCP exchange.

The HTTP side reuses the recon client's response parsing (bounded headers and body) and adds what
a PoC needs on top: a chosen method, extra headers and a request body.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from workers.recon.http import USER_AGENT, HttpResponse, exchange, format_host

MAX_POC_BODY = 256 * 1024


def build_request(
    method: str, path: str, host: str, port: int, tls: bool, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """The bytes of an HTTP/1.1 request; the PoC's headers override the defaults (Host included)."""
    default = 443 if tls else 80
    base = {
        "Host": format_host(host) + ("" if port == default else f":{port}"),
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    names = {k.lower(): k for k in base}
    for key, value in headers:
        base.pop(names.get(key.lower(), key), None)
        base[key] = value
    if body or method in ("POST", "PUT", "PATCH"):
        base["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in base.items()) + "\r\n"
    return head.encode("latin-1", "replace") + body


async def http_request(
    ip: str,
    port: int,
    *,
    tls: bool,
    host: str,
    method: str = "GET",
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 5.0,
    max_body: int = MAX_POC_BODY,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one request to ``ip:port`` and read the response within ``timeout``; raises HttpError.

    TLS uses the scanning context (any certificate) unless ``ssl_context`` is given; ``ip`` may be
    a host name, in which case it is also the TLS server name.
    """
    return await exchange(
        ip,
        port,
        build_request(method, path, host, port, tls, headers, body),
        tls=tls,
        sni=None if host == ip else host,
        method=method,
        timeout=timeout,
        max_body=max_body,
        ssl_context=ssl_context,
    )


async def tcp_exchange(ip: str, port: int, send: bytes, read: int, timeout: float) -> bytes:
    """Connect, send ``send``, and read up to ``read`` bytes until the peer pauses, closes or time runs out.

    Returns what was read (possibly empty); raises OSError when the connection cannot be made.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(ip, port)
    data = b""
    try:
        if send:
            writer.write(send)
            await writer.drain()
        while len(data) < read:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(
                    reader.read(read - len(data)), min(remaining, 0.5 if data else remaining)
                )
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    return data
