"""Lab web sites: threaded HTTP / HTTPS servers with fixed routes, optional soft-404 behaviour."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAVICON = bytes(range(256)) * 3 + b"lab-favicon"


@dataclass
class Page:
    """A canned response."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


@dataclass
class SiteSpec:
    """What a lab site serves: routes, headers added to every answer, and the not-found behaviour.

    With ``soft404`` every unknown path answers 200 with a page that reflects the path.
    """

    name: str
    routes: dict[str, Page] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    soft404: bool = False

    def answer(self, path: str) -> Page:
        """The page for ``path`` (query string ignored)."""
        path = path.split("?", 1)[0]
        if path in self.routes:
            return self.routes[path]
        if self.soft404:
            body = (
                f"status=missing\nThe page {path} is served by the lab portal catch-all handler.\n"
                "Every path answers 200 here, with the same boilerplate text repeated. " * 4
            ).encode()
            return Page(body, 200, {"Content-Type": "text/plain"})
        return Page(b"<html><head><title>404 Not Found</title></head><body>nope</body></html>", 404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SiteServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def version_string(self) -> str:
        """The Server header: the site's own, else a neutral one."""
        return self.server.spec.headers.get("Server", "LabHTTP/1.0")

    def _respond(self, send_body: bool) -> None:
        self.server.requests += 1
        page = self.server.spec.answer(self.path)
        self.send_response(page.status)
        headers = {"Content-Type": "text/html; charset=utf-8", **self.server.spec.headers, **page.headers}
        headers.pop("Server", None)
        for key, value in headers.items():
            self.send_header(key, value)
        if page.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(page.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not send_body:
            return
        if page.chunked:
            for start in range(0, len(page.body), 7):
                piece = page.body[start : start + 7]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(page.body)

    def do_GET(self) -> None:
        self._respond(True)

    def do_HEAD(self) -> None:
        self._respond(False)


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], spec: SiteSpec, tls: ssl.SSLContext | None) -> None:
        self.spec = spec
        self.tls = tls
        self.requests = 0
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Do the TLS handshake in the worker thread, so a silent client never blocks accept()."""
        if self.tls is not None:
            request.settimeout(5)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Scanners hang up mid-request all the time; that is not an error worth printing."""


class LabSite:
    """A running lab site on ``ip:port`` (ephemeral port), plain HTTP or HTTPS."""

    def __init__(self, spec: SiteSpec, ip: str, tls: ssl.SSLContext | None = None) -> None:
        self.spec = spec
        self.ip = ip
        self.tls = tls is not None
        self._server = _SiteServer((ip, 0), spec, tls)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"lab-site-{spec.name}", daemon=True
        )

    @property
    def scheme(self) -> str:
        """http or https."""
        return "https" if self.tls else "http"

    @property
    def requests(self) -> int:
        """How many requests the site answered."""
        return self._server.requests

    def start(self) -> LabSite:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def closed_port(ip: str) -> int:
    """A TCP port on ``ip`` that nothing listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])
