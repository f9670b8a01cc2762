"""Site spider (ARL's ``site_spider``) and page fetching of found URLs (ARL's ``page_fetch``).

:func:`spider_site` crawls one web site from its front page, breadth first: it follows the links
of HTML pages (and URL strings in their scripts) that stay on the same site (host and port) and
pass the caller's scope check, up to ``max_depth`` links away from the front page, fetching at
most ``max_pages`` pages before ``deadline``. Like ARL it keeps one URL per *shape*
(:func:`workers.recon.links.url_shape`: ``/item?id=1`` and ``/item?id=2`` are one page), never
fetches static assets (images, style sheets, fonts, media, documents, archives) and does not
record them or scripts, and leaves the front page itself out (the ``site`` collection has it).
Scripts the pages load from the site are fetched (at most ``max_scripts``) only to find URLs.

Every recorded URL was fetched: a :class:`UrlRecord` has its status, title and length.
:func:`fetch_pages` builds the same records for URLs found elsewhere (search engines).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.recon.control import run_pool
from workers.recon.http import HttpError, HttpResponse, fetch, origin_url, split_url
from workers.recon.links import (
    Link,
    html_links,
    is_root,
    is_script,
    is_static,
    js_links,
    normalize_url,
    url_shape,
)

SOURCE = "site_spider"
"""The ``source`` of the URLs the spider finds (ARL's value)."""
DEFAULT_MAX_DEPTH = 3
DEFAULT_MAX_PAGES = 60
"""ARL's bound: about 60 pages per site."""
MAX_SCRIPTS = 10
MAX_PAGE_BODY = 256 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MIN_REQUEST_TIME = 0.05
"""A request is not started with less time than this left before the deadline."""

Locator = Callable[[str], Awaitable[str | None]]
"""Maps a host name to an in-scope IP to connect to (None when out of scope or unresolvable)."""


@dataclass(frozen=True)
class UrlRecord:
    """One URL found on a site, as fetched (a document of the ``url`` collection)."""

    url: str
    site: str
    status_code: int
    title: str
    content_length: int
    content_type: str
    source: str

    def to_doc(self) -> dict[str, Any]:
        """The record as stored: ARL's ``url`` fields (``url``, ``site``, ``status_code``, ``title``,
        ``content_length``, ``source``) plus ``content_type``."""
        return dict(self.__dict__)


def _remaining(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


def _length(response: HttpResponse) -> int:
    declared = response.header("Content-Length")
    if response.truncated and declared and declared.strip().isdigit():
        return int(declared)
    return len(response.body)


def _is_html(response: HttpResponse) -> bool:
    kind = response.content_type
    if kind:
        return "html" in kind
    return response.body.lstrip()[:1] == b"<"


async def _get(url: str, ip: str, timeout: float, deadline: float | None) -> HttpResponse | None:
    """GET ``url`` from ``ip`` within ``timeout`` and the deadline; None on failure or no time left."""
    wait = min(timeout, _remaining(deadline))
    if wait < MIN_REQUEST_TIME:
        return None
    scheme, host, port, path = split_url(url)
    try:
        return await fetch(
            ip, port, tls=scheme == "https", host=host, path=path, timeout=wait, max_body=MAX_PAGE_BODY
        )
    except HttpError:
        return None


def _record(url: str, site: str, response: HttpResponse, source: str) -> UrlRecord:
    return UrlRecord(
        url=url,
        site=site,
        status_code=response.status,
        title=response.title,
        content_length=_length(response),
        content_type=response.content_type,
        source=source,
    )


@dataclass
class _Crawl:
    """The state of one site's crawl."""

    site: str
    ip: str
    netloc: tuple[str, int]
    in_scope: Callable[[str], bool]
    timeout: float
    deadline: float | None
    pages_left: int
    scripts_left: int
    found: list[UrlRecord]

    def __post_init__(self) -> None:
        self.shapes: set[tuple[str, str, tuple[str, ...]]] = set()
        self.scripts: set[str] = set()

    def on_site(self, url: str) -> bool:
        """Same host and port as the site, and in the caller's scope."""
        try:
            _, host, port, _ = split_url(url)
        except ValueError:
            return False
        return (host, port) == self.netloc and self.in_scope(url)

    def admit(self, url: str) -> bool:
        """Whether ``url`` is a new page of the site to visit (claims its shape when it is)."""
        if is_static(url) or is_script(url) or not self.on_site(url):
            return False
        shape = url_shape(url)
        if shape in self.shapes:
            return False
        self.shapes.add(shape)
        return True

    async def mine_script(self, url: str) -> list[str]:
        """URL strings of a script of the site (fetched once; bounded by ``scripts_left``)."""
        if url in self.scripts or self.scripts_left <= 0 or not self.on_site(url):
            return []
        self.scripts.add(url)
        self.scripts_left -= 1
        response = await _get(url, self.ip, self.timeout, self.deadline)
        if response is None or response.status != 200 or _is_html(response):
            return []
        return await asyncio.to_thread(js_links, response.text(), url)

    async def visit(self, url: str, guessed: bool, follow: bool) -> list[tuple[str, bool]]:
        """Fetch one page, record it, and return the new pages it leads to (``follow`` pages only)."""
        if self.pages_left <= 0:
            return []
        self.pages_left -= 1
        response = await _get(url, self.ip, self.timeout, self.deadline)
        if response is None:
            return []
        guessed_wrong = guessed and response.status >= 400 and response.status not in (401, 403)
        if not is_root(url) and not guessed_wrong:
            self.found.append(_record(url, self.site, response, SOURCE))
        if not follow:
            return []
        links: list[Link] = []
        location = response.header("Location") if response.status in REDIRECTS else None
        target = normalize_url(location, url) if location else None
        if target:
            links = [Link(target)]
        elif _is_html(response):
            links = await asyncio.to_thread(html_links, response.text(), url)
        elif "javascript" in response.content_type or "json" in response.content_type:
            links = [Link(u, "guess") for u in await asyncio.to_thread(js_links, response.text(), url)]
        out = [(link.url, link.kind == "guess") for link in links if link.kind != "script"]
        for link in links:
            if link.kind == "script":
                out.extend((u, True) for u in await self.mine_script(link.url))
        return [(u, s) for u, s in out if self.admit(u)]


async def spider_site(
    site_url: str,
    ip: str,
    *,
    in_scope: Callable[[str], bool],
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_pages: int = DEFAULT_MAX_PAGES,
    timeout: float = 5.0,
    deadline: float | None = None,
    concurrency: int = 4,
    seeds: Iterable[str] = (),
    max_scripts: int = MAX_SCRIPTS,
    found: list[UrlRecord] | None = None,
) -> list[UrlRecord]:
    """Crawl the site at ``site_url`` (an origin such as ``https://www.example.com:8443``) on ``ip``.

    ``in_scope(url)`` is asked about every same-site URL before it is fetched. Pages up to
    ``max_depth`` links from the front page are fetched and recorded, links are followed from
    pages less deep; ``seeds`` (URLs known from elsewhere, such as search results) start at depth
    0 beside the front page. At most ``max_pages`` page requests (plus ``max_scripts`` script
    requests), each within ``timeout`` seconds, and none started after ``deadline`` (a
    :func:`time.monotonic` value). Records are appended to ``found`` as they come, so a cancelled
    call keeps what it found; the list is also returned.
    """
    records: list[UrlRecord] = [] if found is None else found
    scheme, host, port, _ = split_url(site_url)
    site = origin_url(scheme, host, port)
    crawl = _Crawl(
        site=site,
        ip=ip,
        netloc=(host, port),
        in_scope=in_scope,
        timeout=timeout,
        deadline=deadline,
        pages_left=max_pages,
        scripts_left=max_scripts,
        found=records,
    )
    root = site + "/"
    crawl.shapes.add(url_shape(root))
    level: list[tuple[str, bool]] = [(root, False)]
    for seed in seeds:
        url = normalize_url(seed, root)
        if url and crawl.admit(url):
            level.append((url, False))
    for depth in range(max_depth + 1):
        follow = depth < max_depth
        next_level: list[tuple[str, bool]] = []

        async def visit(
            item: tuple[str, bool], follow: bool = follow, into: list[tuple[str, bool]] = next_level
        ) -> None:
            into.extend(await crawl.visit(item[0], item[1], follow))

        await run_pool(level, visit, concurrency)
        if not next_level or crawl.pages_left <= 0 or _remaining(deadline) < MIN_REQUEST_TIME:
            break
        level = next_level
    return records


async def fetch_pages(
    urls: Sequence[str],
    locate: Locator,
    *,
    source: str,
    timeout: float = 5.0,
    deadline: float | None = None,
    concurrency: int = 8,
    found: list[UrlRecord] | None = None,
) -> list[UrlRecord]:
    """Fetch each URL once (no redirects followed) and record it with ``source`` (ARL's ``page_fetch``).

    ``locate`` gives the IP to connect to for a host, None when it is out of scope or does not
    resolve (the URL is then skipped, as are URLs that fail). ``site`` is the URL's origin.
    """
    records: list[UrlRecord] = [] if found is None else found

    async def one(url: str) -> None:
        try:
            scheme, host, port, _ = split_url(url)
        except ValueError:
            return
        ip = await locate(host)
        if ip is None:
            return
        response = await _get(url, ip, timeout, deadline)
        if response is not None:
            records.append(_record(url, origin_url(scheme, host, port), response, source))

    await run_pool(dict.fromkeys(urls), one, concurrency)
    return records
