"""Search-engine discovery (ARL's ``search_engines``): ``site:<domain>`` on a web search engine.

:func:`search_domain` reads the result pages of ``site:<domain>`` from a Bing-compatible search
page (``base_url``, by default Bing's), no key needed: the result links are the ``<a>`` of the
``<h2>`` of each ``<li class="b_algo">``, links wrapped in Bing's click-tracking redirect
(``/ck/a?...&u=a1<base64url>``) are unwrapped, and paging follows the page's next link
(``a.sb_pagN``, whose ``first`` parameter is the offset of the next page). It stops after
``max_pages`` pages, at a page without results or without new ones (Bing repeats its last page),
at a page without a next link, at an error answer, or at the deadline.

What it returns is what ARL takes from the results: the host names under the domain (new
subdomains for the domain step) and the URLs that are not a front page, one per URL shape, for
the ``url`` collection (their pages are fetched with :func:`workers.recon.spider.fetch_pages`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from workers.recon.http import HttpError, HttpResponse
from workers.recon.links import is_root, normalize_url, url_shape
from workers.recon.poc.net import http_request

DEFAULT_BASE_URL = "https://www.bing.com/search"
SOURCE = "search_engine"
"""The ``source`` of URLs and domains found this way (ARL's value)."""
DEFAULT_MAX_PAGES = 5
MAX_REDIRECTS = 3
MAX_BODY = 2 * 1024 * 1024
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


class SearchEngineError(Exception):
    """The search engine could not be asked (bad base URL)."""


@dataclass
class SearchOutcome:
    """What a search found: in-scope host names and page URLs, pages read, and why it stopped early."""

    domains: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    pages: int = 0
    error: str = ""


class _ResultParser(HTMLParser):
    """Collects the ``li.b_algo h2 a`` links and the ``a.sb_pagN`` next-page link of a result page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.next_href: str | None = None
        self._li_depth = 0
        self._in_h2 = False
        self._taken = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        classes = values.get("class", "").split()
        if tag == "li":
            if "b_algo" in classes:
                self._li_depth, self._in_h2, self._taken = 1, False, False
            elif self._li_depth:
                self._li_depth += 1
        elif tag == "h2" and self._li_depth:
            self._in_h2 = True
        elif tag == "a":
            if "sb_pagN" in classes and values.get("href") and self.next_href is None:
                self.next_href = values["href"]
            elif self._in_h2 and not self._taken and values.get("href"):
                self.links.append(values["href"])
                self._taken = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        elif tag == "li" and self._li_depth:
            self._li_depth -= 1


def unwrap_bing_link(href: str) -> str | None:
    """The target of a Bing click-tracking link (``.../ck/a?...&u=a1<base64url>``); other links as
    they are; None when a tracking link cannot be decoded."""
    parts = urlsplit(href)
    if not parts.path.startswith("/ck/"):
        return href
    token = (parse_qs(parts.query).get("u") or [""])[0]
    if not token.startswith("a1"):
        return None
    token = token[2:]
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def parse_result_page(html: str, page_url: str) -> tuple[list[str], str | None]:
    """The result links of a Bing result page (absolute, unwrapped) and its next-page URL, if any."""
    parser = _ResultParser()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        pass
    links = []
    for href in parser.links:
        target = unwrap_bing_link(urljoin(page_url, href))
        if target:
            links.append(target)
    return links, urljoin(page_url, parser.next_href) if parser.next_href else None


def in_domain(host: str, domain: str) -> bool:
    """Whether ``host`` is ``domain`` or a name under it."""
    return host == domain or host.endswith("." + domain)


class _Engine:
    """GETs pages of one search origin, following its redirects."""

    def __init__(self, base_url: str, timeout: float, deadline: float | None, user_agent: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SearchEngineError(f"search engine URL is not an http(s) URL: {base_url[:200]!r}")
        self.base_url = base_url
        self.timeout = timeout
        self.deadline = deadline
        self.headers = [
            ("User-Agent", user_agent),
            ("Accept", "text/html,application/xhtml+xml"),
            ("Accept-Language", "en-US,en;q=0.9"),
        ]
        self._tls = ssl.create_default_context()

    def time_left(self) -> float:
        """Seconds before the deadline (infinite without one)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    async def get(self, url: str) -> HttpResponse:
        """GET ``url`` (redirects followed); raises HttpError."""
        for _ in range(MAX_REDIRECTS + 1):
            wait = min(self.timeout, self.time_left())
            if wait <= 0.05:
                raise HttpError("deadline reached")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise HttpError(f"redirected to a non-http(s) URL: {url[:200]!r}")
            https = parts.scheme == "https"
            response = await http_request(
                parts.hostname,
                parts.port or (443 if https else 80),
                tls=https,
                host=parts.hostname,
                path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                headers=self.headers,
                timeout=wait,
                max_body=MAX_BODY,
                ssl_context=self._tls,
            )
            location = response.header("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            url = urljoin(url, location)
        raise HttpError("too many redirects")


async def search_domain(
    domain: str,
    *,
    in_scope: Callable[[str], bool],
    base_url: str = DEFAULT_BASE_URL,
    max_pages: int = DEFAULT_MAX_PAGES,
    timeout: float = 10.0,
    deadline: float | None = None,
    page_delay: float = 1.0,
    user_agent: str = BROWSER_USER_AGENT,
    outcome: SearchOutcome | None = None,
) -> SearchOutcome:
    """Search ``site:<domain>`` and collect the in-scope names and URLs of up to ``max_pages`` pages.

    A result counts when its host is ``domain`` or under it and ``in_scope(host)`` holds. Pages
    are asked ``page_delay`` seconds apart, each within ``timeout`` seconds, none after
    ``deadline`` (a :func:`time.monotonic` value). Findings accumulate in ``outcome`` (returned),
    so a cancelled call keeps what it read. Raises :class:`SearchEngineError` for a bad base URL;
    an engine that fails or answers an error ends the search with ``outcome.error`` set.
    """
    found = SearchOutcome() if outcome is None else outcome
    domain = domain.strip().lower().rstrip(".")
    engine = _Engine(base_url, timeout, deadline, user_agent)
    seen: set[str] = set()
    shapes: set[tuple[str, str, tuple[str, ...]]] = set()
    url: str | None = f"{base_url}?{urlencode({'q': f'site:{domain}', 'first': 1})}"
    while url and found.pages < max_pages:
        if found.pages and page_delay > 0:
            if engine.time_left() <= page_delay:
                break
            await asyncio.sleep(page_delay)
        try:
            response = await engine.get(url)
        except HttpError as exc:
            found.error = f"search engine unreachable: {exc}"
            break
        if response.status != 200:
            found.error = f"search engine answered HTTP {response.status}"
            break
        found.pages += 1
        links, next_url = parse_result_page(response.text(), url)
        new = [link for link in links if link not in seen]
        seen.update(new)
        for link in new:
            _collect(link, domain, in_scope, found, shapes)
        if not new:
            break
        url = next_url
    return found


def _collect(
    link: str,
    domain: str,
    in_scope: Callable[[str], bool],
    found: SearchOutcome,
    shapes: set[tuple[str, str, tuple[str, ...]]],
) -> None:
    url = normalize_url(link, link)
    host = urlsplit(url).hostname if url else None
    if not url or not host or not in_domain(host, domain) or not in_scope(host):
        return
    if host not in found.domains:
        found.domains.append(host)
    shape = url_shape(url)
    if not is_root(url) and shape not in shapes:
        shapes.add(shape)
        found.urls.append(url)
