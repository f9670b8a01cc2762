"""Web logins: a small HTTP/1.1 client, a base for login plugins, the HTTP Basic ones (Tomcat, ActiveMQ).

A web plugin is declarative: the request its probe sends and how to read the answer, the request a
credential makes and what an accepted login looks like. The probe tries plain HTTP, then TLS (the
reverse on 443 and 8443), each with half the timeout, and the logins use whichever answered.
"""

from __future__ import annotations

import asyncio
import base64
from abc import abstractmethod
from dataclasses import dataclass, field

from workers.recon.brute.base import (
    EXPECTED_ERRORS,
    Credential,
    Probe,
    ProbedPlugin,
    ProtocolError,
    connection,
)

TLS_PORTS = frozenset({443, 8443})
MAX_HEADER_BYTES = 16384
BODY_LIMIT = 65536
HTTP_SERVICES = frozenset({"http", "https", "http-proxy", "http-alt", "ssl/http", "https-alt", "http-mgmt"})
HTTP_PORTS = frozenset({80, 443, 8080, 8081, 8443, 8888})


@dataclass(frozen=True)
class HttpRequest:
    """What a plugin asks: a method, a path, extra headers and a body."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class HttpAnswer:
    """A response: its status, lower-cased headers, and the body's first BODY_LIMIT bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The body, by Content-Length, chunked encoding, or until the server closes; at most BODY_LIMIT bytes."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while len(body) < BODY_LIMIT:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return body[:BODY_LIMIT]
    if "content-length" in headers:
        return await reader.readexactly(min(int(headers["content-length"]), BODY_LIMIT))
    return await reader.read(BODY_LIMIT)


async def http_request(ip: str, port: int, request: HttpRequest, tls: bool) -> HttpAnswer:
    """Send ``request`` with HTTP/1.1 and ``Connection: close`` and read the answer."""
    host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}", "User-Agent: recon-worker/1.0"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    if request.body or request.method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(request.body)}")
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    async with connection(ip, port, tls=tls) as (reader, writer):
        writer.write(head + request.body)
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("HTTP header too long") from exc
        if len(raw) > MAX_HEADER_BYTES:
            raise ProtocolError("HTTP header too long")
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError("not an HTTP response")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = b"" if request.method == "HEAD" else await _read_body(reader, headers)
    return HttpAnswer(int(parts[1]), headers, body)


class WebPlugin(ProbedPlugin):
    """A login over HTTP(S); subclasses say what to send and how to read the answers."""

    services = HTTP_SERVICES
    ports = HTTP_PORTS
    service_label = "http"

    def __init__(self) -> None:
        self._tls: dict[tuple[str, int], bool] = {}

    def label_for(self, ip: str, port: int) -> str:
        """``https`` when the application answered over TLS, else ``http``."""
        return "https" if self._tls.get((ip, port)) else "http"

    @abstractmethod
    def probe_request(self) -> HttpRequest:
        """The request that tells whether the application is there (it spends no listed credential)."""

    @abstractmethod
    def probe_result(self, answer: HttpAnswer) -> Probe:
        """What the probe's answer says."""

    @abstractmethod
    def login_request(self, credential: Credential) -> HttpRequest:
        """The request that logs in with ``credential``."""

    @abstractmethod
    def accepted(self, answer: HttpAnswer) -> bool:
        """Whether the login's answer means the credential was accepted."""

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Send the probe in plain HTTP then over TLS (the reverse on 443, 8443), half the timeout each."""
        for tls in (port in TLS_PORTS, port not in TLS_PORTS):
            try:
                async with asyncio.timeout(timeout / 2):
                    answer = await http_request(ip, port, self.probe_request(), tls)
            except EXPECTED_ERRORS:
                continue
            self._tls[(ip, port)] = tls
            return self.probe_result(answer)
        return Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """Send the login request."""
        answer = await http_request(
            ip, port, self.login_request(credential), self._tls.get((ip, port), False)
        )
        return self.accepted(answer)


def basic_authorization(credential: Credential) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    token = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


class BasicAuthPlugin(WebPlugin):
    """HTTP Basic on ``path``: 401 with a Basic challenge naming ``realm_marker`` first; 200 is in."""

    path: str
    realm_marker: str

    def probe_request(self) -> HttpRequest:
        """GET the protected path without credentials."""
        return HttpRequest("GET", self.path)

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """A Basic challenge of the expected realm."""
        challenge = answer.headers.get("www-authenticate", "").lower()
        if answer.status == 401 and challenge.startswith("basic") and self.realm_marker.lower() in challenge:
            return Probe.AUTH_REQUIRED
        return Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """GET the path with Basic credentials."""
        return HttpRequest("GET", self.path, {"Authorization": basic_authorization(credential)})

    def accepted(self, answer: HttpAnswer) -> bool:
        """200 means in (as ARL: a 403 for a user lacking the role is not counted)."""
        return answer.status == 200


class TomcatBrute(BasicAuthPlugin):
    """Tomcat's manager application (``/manager/html``, realm "Tomcat Manager Application")."""

    plugin_name = "TomcatBrute"
    app_name = "Tomcat"
    vul_name = "Tomcat 弱口令"
    credential_list = "tomcat"
    path = "/manager/html"
    realm_marker = "Tomcat"


class ActiveMQBrute(BasicAuthPlugin):
    """ActiveMQ's web console (``/admin/``, realm "ActiveMQRealm"), on 8161 by default."""

    plugin_name = "ActiveMQBrute"
    app_name = "ActiveMQ"
    vul_name = "ActiveMQ 弱口令"
    credential_list = "activemq"
    ports = HTTP_PORTS | {8161}
    path = "/admin/"
    realm_marker = "ActiveMQRealm"
