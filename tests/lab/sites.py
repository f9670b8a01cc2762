"""Lab servers for the recon tests: HTTP sites with per-method routes, and scripted TCP services.

Routes are plain dicts that tests may change between runs (a site's title changes, a page goes
away), which is what the asset-update and monitor tests need.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Route:
    """A canned answer; ``methods`` limits which methods get it (others get 405)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] = ("GET", "HEAD")
    body_contains: bytes = b""


def html(title: str, body: str = "") -> Route:
    """An HTML page with a title."""
    return Route(f"<html><head><title>{title}</title></head><body>{body}</body></html>".encode())


NOT_FOUND = Route(b"<html><head><title>404 Not Found</title></head><body>not here</body></html>", 404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RouteServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def version_string(self) -> str:
        return self.server.owner.server_header

    def _answer(self) -> None:
        owner = self.server.owner
        owner.requests.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner.bodies.append(body)
        route = owner.routes.get(self.path) or owner.routes.get(self.path.split("?", 1)[0])
        if route is None:
            route = owner.fallback
        elif self.command not in route.methods or (route.body_contains and route.body_contains not in body):
            route = Route(b"method or body not accepted", 405 if self.command not in route.methods else 400)
        self.send_response(route.status)
        headers = {"Content-Type": "text/html; charset=utf-8", **owner.headers, **route.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(route.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(route.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = _answer


class _RouteServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], owner: RouteSite) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.owner.tls is not None:
            request.settimeout(5)
            try:
                request = self.owner.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Scanners hang up; stay quiet."""


class RouteSite:
    """An HTTP(S) site on ``ip`` and an ephemeral (or given) port, serving ``routes`` by path."""

    def __init__(
        self,
        ip: str,
        routes: dict[str, Route] | None = None,
        *,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
        fallback: Route = NOT_FOUND,
        server_header: str = "LabHTTP/1.0",
    ) -> None:
        self.ip = ip
        self.routes = dict(routes or {})
        self.headers = dict(headers or {})
        self.tls = tls
        self.fallback = fallback
        self.server_header = server_header
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self._server = _RouteServer((ip, port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def scheme(self) -> str:
        """http or https."""
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """The origin URL."""
        return f"{self.scheme}://{self.ip}:{self.port}"

    @property
    def hostport(self) -> str:
        """``ip:port``."""
        return f"{self.ip}:{self.port}"

    def start(self) -> RouteSite:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(2)
        try:
            data = sock.recv(4096)
            reply = self.server.respond(data)
            if reply:
                sock.sendall(reply)
        except OSError:
            pass


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], respond: Callable[[bytes], bytes]) -> None:
        self.respond = respond
        super().__init__(address, _TcpHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet."""


class ScriptedTcp:
    """A TCP service that reads one message and answers ``respond(message)``, then closes."""

    def __init__(self, ip: str, respond: Callable[[bytes], bytes]) -> None:
        self.ip = ip
        self._server = _TcpServer((ip, 0), respond)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def hostport(self) -> str:
        """``ip:port``."""
        return f"{self.ip}:{self.port}"

    def start(self) -> ScriptedTcp:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
