"""A lab HTTP(S) server that routes by Host header and path, for the spider and virtual-host tests.

``routes`` maps a host name (without port; ``*`` for any other host) to ``{path: Page}``; the
query string is ignored when the exact ``path?query`` has no page. Every request is logged with
its Host (port stripped) and path, and each answer can be delayed.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Page:
    """A canned answer; with ``echo`` every ``{host}`` in the body becomes the request's Host."""

    body: str | bytes = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    echo: bool = False

    def raw(self, host: str = "") -> bytes:
        """The body as bytes (``host`` echoed when the page echoes)."""
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return body.replace(b"{host}", host.encode()) if self.echo else body


NOT_FOUND = Page("<html><head><title>404 Not Found</title></head><body>Not Found</body></html>", 404)


def host_of(header: str) -> str:
    """The Host header without its port, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def version_string(self) -> str:
        return "LabHTTP/1.0"

    def do_GET(self) -> None:
        web = self.server.web
        host = host_of(self.headers.get("Host") or "")
        with web.lock:
            web.requests.append((host, self.path))
        if web.delay:
            time.sleep(web.delay)
        page = web.pick(host, self.path)
        data = page.raw(host)
        self.send_response(page.status)
        for key, value in {"Content-Type": "text/html; charset=utf-8", **page.headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(data)
        except ConnectionError:
            return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], web: HostWeb) -> None:
        self.web = web
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.web.tls is not None:
            request.settimeout(5)
            try:
                request = self.web.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Scanners hang up; stay quiet."""


class HostWeb:
    """A site (or several virtual hosts) on ``ip``; ``start()`` serves it in a daemon thread."""

    def __init__(
        self,
        ip: str,
        routes: dict[str, dict[str, Page]],
        *,
        tls: ssl.SSLContext | None = None,
        delay: float = 0.0,
        fallback: Page = NOT_FOUND,
    ) -> None:
        self.ip = ip
        self.routes = routes
        self.tls = tls
        self.delay = delay
        self.fallback = fallback
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._server = _Server((ip, 0), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def pick(self, host: str, path: str) -> Page:
        """The page for ``host`` (else ``*``) and ``path`` (exact, then without the query)."""
        pages = self.routes.get(host, self.routes.get("*", {}))
        for key in (path, path.split("?", 1)[0]):
            if key in pages:
                return pages[key]
        return self.fallback

    @property
    def origin(self) -> str:
        """``scheme://ip:port``."""
        return f"{'https' if self.tls else 'http'}://{self.ip}:{self.port}"

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        with self.lock:
            return [path for _, path in self.requests]

    def start(self) -> HostWeb:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
