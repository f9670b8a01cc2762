"""Static pages served by the app: the live dashboard and the API reference.

``/dashboard/`` and ``/api/docs/`` (rendered in the browser from
``/api/openapi.json``) are files under ``controlplane/static/<page>/``: public and
holding no data.  The dashboard asks for an API token and then talks to the JSON
API and the WebSocket feed like any other client, so every request it makes is
authenticated and authorized as usual; the reference page reads only the public
OpenAPI document.  The pages get their own Content-Security-Policy (their own
scripts, styles and connections only; no inline code, no framing) instead of the
API's deny-all one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

STATIC_ROOT = Path(__file__).resolve().parent.parent / "static"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # 'self' covers the same origin's ws:/wss: too (CSP Level 3); never any other host.
        "connect-src 'self'",
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


class PageHandler(tornado.web.StaticFileHandler):
    """A page's files, with the pages' security headers (revalidated on every load)."""

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


def page_routes(url: str, folder: str) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """``url`` (redirects to ``url/``) and ``url/...`` (the folder's files; ``index.html`` by default)."""
    return [
        (url, tornado.web.RedirectHandler, {"url": f"{url}/"}),
        (f"{url}/(.*)", PageHandler, {"path": str(STATIC_ROOT / folder), "default_filename": "index.html"}),
    ]


def static_routes() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The dashboard and the API reference page."""
    return [*page_routes("/dashboard", "dashboard"), *page_routes("/api/docs", "apidocs")]
