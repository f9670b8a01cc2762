"""A lab HTTP(S) site for the template tests: pages by path (and method, request header, request body),
a fallback page, and a log of every request it answered (to count requests per host).
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Page:
    """A canned answer; ``method``, ``header`` (name, substring) and ``body_has`` must all hold for it."""

    body: bytes | str = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    method: str = ""
    header: tuple[str, str] | None = None
    body_has: str = ""

    def raw(self) -> bytes:
        """The body as bytes."""
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


NOT_FOUND = Page("<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>", 404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def version_string(self) -> str:
        return "LabHTTP/1.0"

    def _answer(self) -> None:
        site = self.server.site
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        with site.lock:
            site.requests.append((self.command, self.path, dict(self.headers.items()), body))
        page = site.pick(self.command, self.path, self.headers, body)
        data = page.raw()
        self.send_response(page.status)
        headers = {"Content-Type": "text/html; charset=utf-8", **page.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = do_TRACE = do_DELETE = do_PATCH = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], site: PlantSite) -> None:
        self.site = site
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.site.tls is not None:
            request.settimeout(5)
            try:
                request = self.site.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Scanners hang up; stay quiet."""


class PlantSite:
    """An HTTP(S) site on ``ip`` serving ``pages`` (path or path?query -> candidate pages in order)."""

    def __init__(
        self,
        ip: str,
        pages: dict[str, list[Page]] | None = None,
        *,
        fallback: Page = NOT_FOUND,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ip = ip
        self.pages = dict(pages or {})
        self.fallback = fallback
        self.tls = tls
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self._server = _Server((ip, 0), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def pick(self, method: str, path: str, headers: Any, body: str) -> Page:
        """The first page for ``path`` (exact, then without the query) whose conditions hold."""
        for key in (path, path.split("?", 1)[0]):
            for page in self.pages.get(key, []):
                if page.method and page.method != method:
                    continue
                if page.header and page.header[1] not in (headers.get(page.header[0]) or ""):
                    continue
                if page.body_has and page.body_has not in body:
                    continue
                return page
        return self.fallback

    @property
    def url(self) -> str:
        """The origin URL."""
        return f"{'https' if self.tls else 'http'}://{self.ip}:{self.port}"

    @property
    def hostport(self) -> str:
        """``ip:port``."""
        return f"{self.ip}:{self.port}"

    def start(self) -> PlantSite:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
