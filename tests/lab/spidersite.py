"""A lab site for the spider: pages linking to planted same-site URLs, out-of-scope ones and assets.

:func:`start_spider_lab` starts the site and a second server on the same IP (another port: out
of the site, never to be requested) and returns the ground truth: which paths a crawl of depth
3 must record (:data:`EXPECTED`), which it must never request (:data:`NEVER_REQUESTED`), and
what lies deeper than depth 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.lab.hostweb import HostWeb, Page

SPIDER_IP = "127.88.7.1"
JSON = {"Content-Type": "application/json"}
JS = {"Content-Type": "application/javascript"}

EXPECTED = {
    # depth 1, from the front page: links, a form, a frame, a canonical link, a redirect, one of
    # each URL shape, a path in an inline script and paths in the site's script
    "/index.html",
    "/about.html",
    "/products/1.html",
    "/item?id=1",
    "/login",
    "/frame.html",
    "/old",
    "/api/v1/status",
    "/api/v1/users",
    "/ajax/list?page=2",
    # depth 2
    "/team/",
    "/new",
    # depth 3
    "/team/deep.html",
}
"""Paths a crawl with ``max_depth=3`` records (the front page itself is not recorded)."""
DEEPER = "/team/deeper.html"
"""Four links away: neither requested nor recorded at depth 3."""
ADMIN = "/admin/"
"""Linked from the front page; the tests' scope check refuses it."""
NEVER_REQUESTED = {
    "/static/site.css",
    "/img/logo.png",
    "/files/report.pdf",
    "/products/2.html",
    "/products/3.html",
    "/item?id=2",
    DEEPER,
}
"""Static assets and URLs of a shape already visited: a crawl never requests them."""
NOT_RECORDED = {"/static/app.js", "/api/v1/missing", "/api/v1/gone"}
"""Requested but not recorded: the script (mined for URLs) and script paths that answer 404."""


def _html(title: str, body: str) -> Page:
    return Page(f"<html><head><title>{title}</title></head><body>{body}</body></html>")


def front_page(outside: str) -> Page:
    """The front page; ``outside`` is the origin of a site the crawl must not enter."""
    return Page(
        f"""<html><head><title>Spider Lab</title>
<link rel="stylesheet" href="/static/site.css"><link rel="canonical" href="/index.html">
<script src="/static/app.js"></script>
<script>var api = "/api/v1/status", gone = "/api/v1/gone", other = "https://elsewhere.test/api/x";</script>
</head><body>
<a href="/about.html">About</a>
<a href="products/1.html">one</a> <a href="/products/2.html">two</a> <a href="/products/3.html">three</a>
<a href="/item?id=1">item 1</a> <a href="/item?id=2">item 2</a>
<form action="/login" method="post"><input name="u"></form>
<iframe src="/frame.html"></iframe>
<a href="/old">old</a> <img src="/img/logo.png"> <a href="/files/report.pdf">report</a>
<a href="{outside}/secret.html">same IP, other port</a>
<a href="http://elsewhere.test/page.html">elsewhere</a> <a href="//cdn.elsewhere.test/lib.html">cdn</a>
<a href="mailto:ops@lab.test">mail</a> <a href="javascript:void(0)">js</a> <a href="#top">top</a>
<a href="{ADMIN}">admin</a>
</body></html>"""
    )


def pages(outside: str) -> dict[str, Page]:
    """Every page of the site."""
    return {
        "/": front_page(outside),
        "/index.html": _html("Index", "index"),
        "/about.html": _html("About", '<a href="/team/">team</a>'),
        "/team/": _html("Team", '<a href="deep.html">deep</a>'),
        "/team/deep.html": _html("Deep", f'<a href="{DEEPER}">deeper</a>'),
        DEEPER: _html("Deeper", "too deep"),
        "/products/1.html": _html("Product", "p"),
        "/products/2.html": _html("Product", "p"),
        "/products/3.html": _html("Product", "p"),
        "/item": _html("Item", "i"),
        "/login": _html("Login", "<form></form>"),
        "/frame.html": _html("Frame", "f"),
        "/old": Page("", 302, {"Location": "/new"}),
        "/new": _html("New", "moved here"),
        "/static/app.js": Page(
            'fetch("/api/v1/users"); const next = "/ajax/list?page=2"; get("/api/v1/missing");', 200, JS
        ),
        "/api/v1/users": Page('{"users": []}', 200, JSON),
        "/api/v1/status": Page('{"ok": true}', 200, JSON),
        "/ajax/list": Page('{"items": []}', 200, JSON),
        ADMIN: _html("Admin", "admin"),
    }


@dataclass
class SpiderLab:
    """The running site and the server beside it."""

    site: HostWeb
    outside: HostWeb

    def stop(self) -> None:
        """Stop both servers."""
        self.site.stop()
        self.outside.stop()


def start_spider_lab(delay: float = 0.0) -> SpiderLab:
    """Start the site (each answer delayed by ``delay`` seconds) and the out-of-site server."""
    outside = HostWeb(SPIDER_IP, {"*": {"/secret.html": _html("Secret", "s")}}).start()
    site = HostWeb(SPIDER_IP, {"*": pages(outside.origin)}, delay=delay).start()
    return SpiderLab(site, outside)
