"""Service detection on open ports: read a server banner, else try TLS, else probe with HTTP."""

from __future__ import annotations

import asyncio
import re
import ssl

from workers.recon.http import shared_ssl_context
from workers.recon.portscan import PortInfo

BANNER_LIMIT = 512
HTTP_PROBE = b"GET / HTTP/1.0\r\nUser-Agent: recon-worker/1.0\r\nAccept: */*\r\n\r\n"
_SERVER_RE = re.compile(rb"^server:[ \t]*([^\r\n]+)", re.IGNORECASE | re.MULTILINE)


def printable_banner(data: bytes, limit: int = 256) -> str:
    """Render raw banner bytes as text, replacing control bytes with escapes."""
    out = []
    for byte in data[:limit]:
        if 32 <= byte < 127 or byte in (9, 10, 13):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out).strip()


def classify_banner(data: bytes) -> tuple[str, str, str]:
    """Identify a service from what it sent first (or answered to an HTTP probe).

    Returns ``(service, product, version)``; service is "" when unrecognised.
    """
    if data.startswith(b"SSH-"):
        ident = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1")
        software = ident.split("-", 2)[2] if ident.count("-") >= 2 else ""
        product, _, version = software.split(" ", 1)[0].partition("_")
        return "ssh", product, version
    if data.startswith(b"HTTP/"):
        match = _SERVER_RE.search(data)
        server = match.group(1).decode("latin-1").strip() if match else ""
        product, _, version = server.partition("/")
        return "http", product, version.split(" ", 1)[0]
    if data[:1] in (b"+", b"-") and (
        data.startswith((b"-ERR", b"+PONG", b"-NOAUTH", b"-DENIED", b"+OK\r\n")) or b"redis" in data.lower()
    ):
        return "redis", "Redis", ""
    if len(data) > 5 and data[4] == 0x0A and b"\x00" in data[5:64]:
        version = data[5 : data.index(b"\x00", 5)].decode("latin-1")
        product = "MariaDB" if "mariadb" in version.lower() else "MySQL"
        return "mysql", product, version
    if len(data) > 5 and data[4] == 0xFF and data[3] in (0, 1):
        return "mysql", "MySQL", ""
    if data.startswith(b"220"):
        lowered = data.lower()
        if b"smtp" in lowered or b"mail" in lowered:
            return "smtp", "", ""
        return "ftp", "", ""
    if data.startswith(b"+OK"):
        return "pop3", "", ""
    if data.startswith(b"* OK"):
        return "imap", "", ""
    return "", "", ""


async def _exchange(
    ip: str, port: int, payload: bytes | None, timeout: float, read_timeout: float, tls: bool = False
) -> tuple[bytes, bool]:
    """Connect (and handshake) within ``timeout``, optionally send ``payload``, read up to BANNER_LIMIT bytes.

    Returns ``(data, connected)``; data is b"" when nothing arrived within ``read_timeout``.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                ip, port, ssl=shared_ssl_context() if tls else None
            )
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return b"", False
    data = b""
    try:
        if payload:
            writer.write(payload)
            await writer.drain()
        async with asyncio.timeout(read_timeout):
            while len(data) < BANNER_LIMIT:
                chunk = await reader.read(BANNER_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
                if not payload or b"\r\n\r\n" in data:
                    break
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    finally:
        writer.close()
    return data, True


async def detect_service(ip: str, port: int, timeout: float = 1.0, banner_wait: float = 0.5) -> PortInfo:
    """Fingerprint one open port: banner first, then a TLS handshake, then an HTTP probe.

    ``timeout`` bounds each connect and each probe's answer; ``banner_wait`` is how long to wait for
    a server that speaks first (SSH, FTP, SMTP, MySQL).
    """
    info = PortInfo(port)
    banner, connected = await _exchange(ip, port, None, timeout, banner_wait)
    if not connected:
        return info
    if banner:
        info.banner = printable_banner(banner)
        info.service, info.product, info.version = classify_banner(banner)
        info.service = info.service or "unknown"
        return info
    answer, tls_ok = await _exchange(ip, port, HTTP_PROBE, timeout, timeout, tls=True)
    if tls_ok:
        info.tls = True
        service, info.product, info.version = classify_banner(answer)
        info.service = "https" if service == "http" else "tls"
        info.banner = printable_banner(answer)
        return info
    answer, _ = await _exchange(ip, port, HTTP_PROBE, timeout, timeout)
    info.banner = printable_banner(answer)
    info.service, info.product, info.version = classify_banner(answer)
    info.service = info.service or "unknown"
    return info
