"""Search-engine discovery against a local engine serving Bing's result-page format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.lab.fakebing import BingState, FakeBing, tracking_link
from workers.recon.searchengine import (
    BROWSER_USER_AGENT,
    SearchEngineError,
    SearchOutcome,
    parse_result_page,
    search_domain,
    unwrap_bing_link,
)

DOMAIN = "corp.test"
FILLER = [f"https://docs.corp.test/guide{i}" for i in range(17)]
PLANTED = [
    "https://www.corp.test/",
    "https://www.corp.test/about",
    "http://shop.corp.test/item?id=1",
    "https://evilcorp.test/phish",
    "https://corp.test.attacker.example/x",
    "https://secret.corp.test/hidden",
    *FILLER[:4],
    "http://shop.corp.test/item?id=2",
    "https://mail.corp.test/owa/",
    "https://corp.test/news/1.html",
    *FILLER[4:],
]
"""25 results over three pages: in-domain URLs, look-alike domains, a name outside the scope."""
EXPECTED_DOMAINS = {"www.corp.test", "shop.corp.test", "docs.corp.test", "mail.corp.test", "corp.test"}
EXPECTED_URLS = {
    "https://www.corp.test/about",
    "http://shop.corp.test/item?id=1",
    "https://mail.corp.test/owa/",
    "https://corp.test/news/1.html",
    *FILLER,
}
AD_URL = "https://ads.corp.test/promo"


def not_secret(host: str) -> bool:
    """The tests' scope: everything but secret.corp.test."""
    return host != "secret.corp.test"


@pytest.fixture
def bing() -> Iterator[FakeBing]:
    engine = FakeBing(BingState(results={DOMAIN: list(PLANTED)}, ad_url=AD_URL)).start()
    yield engine
    engine.stop()


def search(engine: FakeBing, **options: object) -> SearchOutcome:
    kwargs: dict = {"in_scope": not_secret, "base_url": engine.base_url, "timeout": 2.0, "page_delay": 0.0}
    kwargs.update(options)
    return asyncio.run(search_domain(DOMAIN, **kwargs))


def test_every_in_scope_result_found_across_pages(bing: FakeBing) -> None:
    outcome = search(bing)
    assert set(outcome.domains) == EXPECTED_DOMAINS
    assert set(outcome.urls) == EXPECTED_URLS
    assert len(outcome.urls) == len(EXPECTED_URLS)
    assert outcome.pages == 3 and outcome.error == ""
    assert [(q, first) for q, first, _ in bing.state.requests] == [
        ("site:corp.test", 1),
        ("site:corp.test", 11),
        ("site:corp.test", 21),
    ]
    assert bing.state.requests[0][2] == BROWSER_USER_AGENT


def test_ads_and_attribution_links_are_not_results(bing: FakeBing) -> None:
    outcome = search(bing)
    assert "ads.corp.test" not in outcome.domains
    assert AD_URL not in outcome.urls


def test_tracking_links_are_unwrapped(bing: FakeBing) -> None:
    bing.state.wrap_links = True
    outcome = search(bing)
    assert set(outcome.urls) == EXPECTED_URLS
    assert set(outcome.domains) == EXPECTED_DOMAINS


def test_page_bound(bing: FakeBing) -> None:
    outcome = search(bing, max_pages=1)
    assert outcome.pages == 1 and len(bing.state.requests) == 1
    assert set(outcome.urls) == {u for u in EXPECTED_URLS if u in PLANTED[:10]}


def test_repeated_last_page_ends_the_search(bing: FakeBing) -> None:
    bing.state.always_next = True
    outcome = search(bing, max_pages=10)
    assert len(bing.state.requests) == 4  # the fourth page repeats the third: nothing new
    assert set(outcome.urls) == EXPECTED_URLS


def test_error_answer_ends_the_search(bing: FakeBing) -> None:
    bing.state.status = 429
    outcome = search(bing)
    assert outcome.pages == 0 and outcome.urls == [] and "429" in outcome.error
    assert len(bing.state.requests) == 1


def test_time_bound(bing: FakeBing) -> None:
    bing.state.delay = 0.4
    started = time.monotonic()
    outcome = search(bing, deadline=started + 0.6)
    assert time.monotonic() - started < 1.2
    assert outcome.pages == 1 and len(bing.state.requests) <= 2


def test_page_delay_spaces_requests(bing: FakeBing) -> None:
    started = time.monotonic()
    search(bing, page_delay=0.2)
    assert time.monotonic() - started >= 0.4


def test_bad_base_url() -> None:
    with pytest.raises(SearchEngineError):
        asyncio.run(search_domain(DOMAIN, in_scope=not_secret, base_url="ftp://example.test/search"))


def test_parse_result_page_reads_bing_markup() -> None:
    page = (
        '<ol id="b_results"><li class="b_algo"><div class="b_tpcn"><a class="tilk" href="https://x.test/">'
        '<cite>x.test</cite></a></div><h2><a href="https://x.test/a">A</a></h2><div class="b_caption">'
        '<p><a href="https://x.test/in-snippet">s</a></p></div></li>'
        f'<li class="b_algo"><h2><a href="{tracking_link("https://y.test/b?c=1")}">B</a></h2></li>'
        '<li class="b_pag"><a class="sb_pagN" href="/search?q=site%3ax.test&amp;first=11">Next</a></li></ol>'
    )
    links, next_url = parse_result_page(page, "https://www.bing.com/search?q=site%3ax.test")
    assert links == ["https://x.test/a", "https://y.test/b?c=1"]
    assert next_url == "https://www.bing.com/search?q=site%3ax.test&first=11"
    assert unwrap_bing_link("https://www.bing.com/ck/a?!&&p=1&u=zz&ntb=1") is None
    assert unwrap_bing_link("https://plain.test/") == "https://plain.test/"
