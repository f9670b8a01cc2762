"""TomcatBrute: HTTP Basic authentication on Tomcat's manager (``/manager/html``), over HTTP or HTTPS.

As ARL's plugin, the manager must first answer 401 with a Basic challenge whose realm names Tomcat;
then a 200 with a credential means the credential works.
"""

from __future__ import annotations

import asyncio
import base64

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection

MANAGER_PATH = "/manager/html"
TLS_PORTS = frozenset({443, 8443})
MAX_HEADER_BYTES = 16384


async def http_get(
    ip: str, port: int, path: str, tls: bool, authorization: str | None = None
) -> tuple[int, dict[str, str]]:
    """GET ``path`` (HTTP/1.1, ``Connection: close``); returns the status and the lower-cased headers."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: [{ip}]:{port}" if ":" in ip else f"Host: {ip}:{port}",
        "User-Agent: recon-worker/1.0",
        "Connection: close",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    async with connection(ip, port, tls=tls) as (reader, writer):
        writer.write(request)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("HTTP header too long") from exc
        except asyncio.IncompleteReadError as exc:
            head = exc.partial
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError("HTTP header too long")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError("not an HTTP response")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def basic_authorization(credential: Credential) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    token = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


class TomcatBrute(ProbedPlugin):
    """Tomcat manager: probe for the Basic challenge, then one request per credential."""

    plugin_name = "TomcatBrute"
    app_name = "Tomcat"
    vul_name = "Tomcat 弱口令"
    services = frozenset({"http", "https", "http-proxy", "http-alt", "ssl/http", "https-alt", "ajp13-http"})
    ports = frozenset({80, 443, 8080, 8081, 8443, 8888})
    credential_list = "tomcat"
    service_label = "http"

    def __init__(self) -> None:
        self._tls: dict[tuple[str, int], bool] = {}

    def label_for(self, ip: str, port: int) -> str:
        """``https`` when the manager answered over TLS, else ``http``."""
        return "https" if self._tls.get((ip, port)) else "http"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """GET the manager without credentials, in plain HTTP then over TLS (the reverse on 443, 8443).

        Each way gets half of ``timeout``, so a server that ignores the first still gets the second.
        """
        status: int | None = None
        headers: dict[str, str] = {}
        for tls in (port in TLS_PORTS, port not in TLS_PORTS):
            try:
                async with asyncio.timeout(timeout / 2):
                    status, headers = await http_get(ip, port, MANAGER_PATH, tls)
            except (OSError, ProtocolError, EOFError, TimeoutError):
                continue
            self._tls[(ip, port)] = tls
            break
        if status is None:
            return Probe.ABSENT
        challenge = headers.get("www-authenticate", "")
        if status == 401 and challenge.lower().startswith("basic") and "tomcat" in challenge.lower():
            return Probe.AUTH_REQUIRED
        return Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """GET the manager with the credential; 200 means it was accepted."""
        status, _ = await http_get(
            ip, port, MANAGER_PATH, self._tls.get((ip, port), False), basic_authorization(credential)
        )
        return status == 200
