"""Site fetching: status, title, headers, favicon hash, bounded redirects and fingerprints."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import mmh3

from workers.recon.fingerprints import PageFacts, Rule
from workers.recon.http import HttpError, HttpResponse, fetch, origin_url, split_url
from workers.recon.technologies import fingerprint_page

MAX_REDIRECTS = 3
MAX_FAVICON = 256 * 1024
_ICON_LINK_RE = re.compile(rb"<link[^>]+>", re.IGNORECASE)
_REL_ICON_RE = re.compile(rb"""rel\s*=\s*["']?[^"'>]*\bicon\b""", re.IGNORECASE)
_HREF_RE = re.compile(rb"""href\s*=\s*["']?([^"' >]+)""", re.IGNORECASE)

Locator = Callable[[str], Awaitable[str | None]]
"""Maps a host name to an in-scope IP to connect to (None when out of scope or unresolvable)."""


def favicon_hash(data: bytes) -> int:
    """Shodan-style favicon hash: mmh3 of the base64 encoding with a newline every 76 characters."""
    return int(mmh3.hash(base64.encodebytes(data)))


def icon_link(body: bytes) -> str | None:
    """The href of the first ``<link rel="...icon...">`` in ``body``, if any."""
    for tag in _ICON_LINK_RE.findall(body[: 64 * 1024]):
        if _REL_ICON_RE.search(tag):
            href = _HREF_RE.search(tag)
            if href:
                return href.group(1).decode("latin-1")
    return None


ICON_MAGIC = (b"\x00\x00\x01\x00", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"BM", b"RIFF")


def looks_like_icon(response: HttpResponse) -> bool:
    """Tell whether a 200 answer to an icon request is an image, not a catch-all text or HTML page."""
    kind = response.content_type
    if kind.startswith("image/"):
        return True
    if kind.startswith("text/") or "html" in kind or "json" in kind:
        return False
    head = response.body.lstrip()[:256]
    return head.startswith(ICON_MAGIC) or b"<svg" in head.lower()


@dataclass
class Endpoint:
    """Where to send a request: connect to ``ip:port``, speak TLS or not, name the site ``host``."""

    scheme: str
    host: str
    ip: str
    port: int

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``."""
        return origin_url(self.scheme, self.host, self.port)

    async def get(self, path: str, timeout: float, max_body: int | None = None) -> HttpResponse:
        """GET ``path`` from this endpoint."""
        kwargs: dict[str, Any] = {"max_body": max_body} if max_body else {}
        return await fetch(
            self.ip,
            self.port,
            tls=self.scheme == "https",
            host=self.host,
            path=path,
            timeout=timeout,
            **kwargs,
        )


@dataclass
class SiteResult:
    """One identified web site (keyed by its starting origin URL)."""

    site: str
    hostname: str
    ip: str
    port: int
    scheme: str
    status: int
    title: str
    headers: dict[str, str]
    server: str
    content_type: str
    body_length: int
    final_url: str
    redirects: list[str] = field(default_factory=list)
    favicon: dict[str, Any] | None = None
    fingerprints: list[str] = field(default_factory=list)
    body_sample: str = ""
    finger: list[dict[str, Any]] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        """The site as stored in the ``site`` collection (without the body sample).

        ``fingerprints`` lists the product names; ``finger`` has one ``{"name", "version",
        "categories", "confidence"}`` mapping per product (``{"name"}`` alone when not known).
        """
        doc = {k: v for k, v in self.__dict__.items() if k != "body_sample"}
        doc["headers"] = {k.replace(".", "_").lstrip("$"): v for k, v in self.headers.items()}
        known = {str(f.get("name")): f for f in self.finger}
        doc["finger"] = [dict(known.get(name) or {"name": name}) for name in self.fingerprints]
        return doc


async def follow(
    start: Endpoint, path: str, locate: Locator, timeout: float, max_redirects: int = MAX_REDIRECTS
) -> tuple[Endpoint, HttpResponse, list[str]]:
    """GET ``path`` from ``start`` following at most ``max_redirects`` redirects that stay in scope.

    Returns the endpoint that gave the final answer, that answer, and the redirect URLs followed.
    A redirect to an out-of-scope or unresolvable host is not followed (its 3xx answer is final).
    """
    endpoint, response = start, await start.get(path, timeout)
    chain: list[str] = []
    while response.status in (301, 302, 303, 307, 308) and len(chain) < max_redirects:
        location = response.header("Location")
        if not location:
            break
        target = urljoin(endpoint.origin + path, location)
        try:
            scheme, host, port, next_path = split_url(target)
        except ValueError:
            break
        ip = endpoint.ip if host == endpoint.host else await locate(host)
        if ip is None:
            break
        next_endpoint = Endpoint(scheme, host, ip, port)
        try:
            next_response = await next_endpoint.get(next_path, timeout)
        except HttpError:
            break
        chain.append(target)
        endpoint, response, path = next_endpoint, next_response, next_path
    return endpoint, response, chain


async def fetch_favicon(endpoint: Endpoint, body: bytes, timeout: float) -> dict[str, Any] | None:
    """Fetch the page's icon (``<link rel=icon>`` on the same origin, else /favicon.ico) and hash it."""
    candidates = []
    href = icon_link(body)
    if href:
        url = urljoin(endpoint.origin + "/", href)
        if url.startswith(endpoint.origin + "/"):
            candidates.append(url[len(endpoint.origin) :])
    candidates.append("/favicon.ico")
    for path in dict.fromkeys(candidates):
        try:
            response = await endpoint.get(path, timeout, max_body=MAX_FAVICON)
        except HttpError:
            continue
        data = response.body
        if response.status != 200 or not data or response.truncated or not looks_like_icon(response):
            continue
        return {"url": endpoint.origin + path, "hash": favicon_hash(data), "size": len(data)}
    return None


async def identify_site(
    start: Endpoint, rules: Sequence[Rule], locate: Locator, timeout: float
) -> SiteResult | None:
    """Fetch ``start``'s front page (following redirects), its favicon, and fingerprint it.

    Fingerprints come from ``rules`` (ours) and the technology database, merged by product; the
    matching runs in a worker thread so the event loop keeps serving other connections.

    Returns None when the endpoint does not answer HTTP in that scheme.
    """
    try:
        endpoint, response, chain = await follow(start, "/", locate, timeout)
    except HttpError:
        return None
    favicon = await fetch_favicon(endpoint, response.body, timeout)
    headers = response.header_map()
    text = response.text()
    final_url = endpoint.origin + (split_url(chain[-1])[3] if chain else "/")
    page = PageFacts(
        headers=headers,
        body=text,
        title=response.title,
        favicon_hash=favicon["hash"] if favicon else None,
        url=final_url,
    )
    detections = await asyncio.to_thread(fingerprint_page, rules, page)
    return SiteResult(
        site=start.origin,
        hostname=start.host,
        ip=start.ip,
        port=start.port,
        scheme=start.scheme,
        status=response.status,
        title=page.title,
        headers=headers,
        server=response.header("Server") or "",
        content_type=response.content_type,
        body_length=len(response.body),
        final_url=final_url,
        redirects=chain,
        favicon=favicon,
        fingerprints=[d.name for d in detections],
        body_sample=text[:2048],
        finger=[d.to_doc() for d in detections],
    )
