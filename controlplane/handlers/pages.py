"""The live dashboard: static HTML, CSS and JavaScript served at ``/dashboard/``.

The files (``controlplane/static/dashboard/``) are public and hold no data: the
page asks for an API token and then talks to the JSON API and the WebSocket feed
like any other client, so every request it makes is authenticated and authorized
as usual. The page gets its own Content-Security-Policy (its own scripts, styles
and connections only; no inline code, no framing) instead of the API's deny-all one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class DashboardHandler(tornado.web.StaticFileHandler):
    """The dashboard's files, with the page's security headers (revalidated on every load)."""

    def set_default_headers(self) -> None:
        self.set_header("Server", "controlplane")
        for name, value in HEADERS.items():
            self.set_header(name, value)

    def set_extra_headers(self, path: str) -> None:
        # StaticFileHandler sets long-lived caching when a version argument is given; we never use one.
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


def dashboard_routes() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """``/dashboard`` (redirects) and ``/dashboard/...`` (the files; ``index.html`` by default)."""
    return [
        (r"/dashboard", tornado.web.RedirectHandler, {"url": "/dashboard/"}),
        (
            r"/dashboard/(.*)",
            DashboardHandler,
            {"path": str(STATIC_DIR), "default_filename": "index.html"},
        ),
    ]
