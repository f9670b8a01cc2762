"""The site spider against a loopback site: planted URLs found, nothing out of scope, bounds kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.lab.spidersite import (
    ADMIN,
    DEEPER,
    EXPECTED,
    NEVER_REQUESTED,
    NOT_RECORDED,
    SPIDER_IP,
    SpiderLab,
    start_spider_lab,
)
from workers.recon.links import html_links, normalize_url, url_shape
from workers.recon.spider import SOURCE, UrlRecord, fetch_pages, spider_site


def not_admin(url: str) -> bool:
    """The tests' scope check: everything but the admin area."""
    return ADMIN not in url


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
def spider_lab() -> Iterator[SpiderLab]:
    running = start_spider_lab()
    yield running
    running.stop()


def crawl(site_lab: SpiderLab, **options: object) -> list[UrlRecord]:
    kwargs: dict = {"in_scope": not_admin, "timeout": 2.0, **options}
    return asyncio.run(spider_site(site_lab.site.origin, SPIDER_IP, **kwargs))


def test_spider_records_every_planted_url_once_and_nothing_else(spider_lab: SpiderLab) -> None:
    records = crawl(spider_lab, max_depth=3)
    paths = [path_of(r.url) for r in records]
    assert sorted(paths) == sorted(EXPECTED)
    assert all(r.source == SOURCE and r.site == spider_lab.site.origin for r in records)
    requested = spider_lab.site.paths()
    assert not NEVER_REQUESTED & set(requested)
    assert ADMIN not in requested
    assert spider_lab.outside.paths() == []
    assert set(requested) == EXPECTED | NOT_RECORDED | {"/"}
    assert len(requested) == len(set(requested)), "every URL is requested once"


def test_spider_records_status_title_and_length(spider_lab: SpiderLab) -> None:
    by_path = {path_of(r.url): r for r in crawl(spider_lab, max_depth=3)}
    about = by_path["/about.html"]
    assert (about.status_code, about.title, about.content_type) == (200, "About", "text/html")
    assert about.content_length == len(spider_lab.site.pick("x", "/about.html").raw())
    assert by_path["/old"].status_code == 302
    assert by_path["/api/v1/users"].content_type == "application/json"
    assert by_path["/api/v1/users"].to_doc()["status_code"] == 200


def test_spider_depth_bound(spider_lab: SpiderLab) -> None:
    records = crawl(spider_lab, max_depth=1)
    paths = {path_of(r.url) for r in records}
    assert "/about.html" in paths
    assert not {"/team/", "/new", "/team/deep.html"} & paths
    assert "/team/" not in spider_lab.site.paths()


def test_spider_page_bound(spider_lab: SpiderLab) -> None:
    records = crawl(spider_lab, max_depth=3, max_pages=4, concurrency=1)
    pages = [p for p in spider_lab.site.paths() if p != "/static/app.js"]
    assert len(pages) == 4
    assert len(records) == 3  # the front page is fetched but not recorded


def test_spider_time_bound() -> None:
    slow = start_spider_lab(delay=0.3)
    try:
        started = time.monotonic()
        records = asyncio.run(
            spider_site(
                slow.site.origin,
                SPIDER_IP,
                in_scope=not_admin,
                timeout=2.0,
                deadline=started + 1.0,
                concurrency=1,
            )
        )
    finally:
        slow.stop()
    # One request at a time, 0.3 s each: no request starts after the 1 s deadline.
    assert len(slow.site.paths()) <= 4
    assert len(records) < len(EXPECTED)


def test_spider_seeds_start_beside_the_front_page(spider_lab: SpiderLab) -> None:
    seeds = [spider_lab.site.origin + DEEPER, "http://elsewhere.test/x.html"]
    records = crawl(spider_lab, max_depth=0, seeds=seeds)
    assert [path_of(r.url) for r in records] == [DEEPER]
    assert sorted(spider_lab.site.paths()) == sorted(["/", DEEPER])


def test_fetch_pages_records_urls_found_elsewhere(spider_lab: SpiderLab) -> None:
    async def locate(host: str) -> str | None:
        return SPIDER_IP if host == SPIDER_IP else None

    urls = [
        spider_lab.site.origin + "/about.html",
        "http://elsewhere.test/page.html",
        spider_lab.site.origin + "/nope",
    ]
    records = asyncio.run(fetch_pages(urls, locate, source="search_engine", timeout=2.0))
    by_path = {path_of(r.url): r for r in records}
    assert set(by_path) == {"/about.html", "/nope"}
    assert by_path["/about.html"].title == "About"
    assert by_path["/nope"].status_code == 404
    assert all(r.source == "search_engine" and r.site == spider_lab.site.origin for r in records)


def test_links_are_resolved_against_base_and_cleaned() -> None:
    page = (
        '<base href="http://Example.COM:80/dir/"><a href="../a b.html#frag">x</a>'
        '<a href="HTTPS://example.com:443/x?q=1">y</a><meta http-equiv="refresh" content="0; url=/r">'
        '<a href="mailto:x@y.z">m</a><a href="javascript:go()">j</a>'
    )
    urls = [link.url for link in html_links(page, "http://example.com/start/")]
    assert urls == ["http://example.com/a%20b.html", "https://example.com/x?q=1", "http://example.com/r"]
    assert (
        normalize_url("//cdn.example.com/lib.js", "https://example.com/") == "https://cdn.example.com/lib.js"
    )


def test_url_shape_collapses_numbers_and_query_values() -> None:
    assert url_shape("http://a/news/12.html") == url_shape("http://a/news/7.html")
    assert url_shape("http://a/item?id=1&x=2") == url_shape("https://a/item?x=5&id=9")
    assert url_shape("http://a/item?id=1") != url_shape("http://a/item?name=1")
    assert url_shape("http://a/v1/users") != url_shape("http://a/v2/users")
