"""The passive subdomain sources against their local imitations (tests/lab/passive.py)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest
import trustme

from tests.lab.passive import KEYS, Behaviour, PassiveServer, PassiveState
from workers.recon.sources import REGISTRY, SourceConfig, SourceReport, SourcesSettings, query_sources
from workers.recon.sources.base import Requester
from workers.recon.sources.certlogs import CrtSh
from workers.recon.sources.engines import fofa_query
from workers.recon.sources.names import clean_name, names_under

ROOT = "planted.test"
RAW = [
    "www.planted.test",
    "API.planted.test",
    "*.dev.planted.test",
    "planted.test",
    "mail.planted.test.",
    "other.test",
    "notplanted.test",
    "bad..planted.test",
    "-x-.planted.test",
]
EXPECTED = {"www.planted.test", "api.planted.test", "dev.planted.test", "planted.test", "mail.planted.test"}
SECURITYTRAILS_EXPECTED = {"www.planted.test", "api.planted.test", "dev.planted.test"}
"""SecurityTrails reports labels of children only: not the root, not a name written with a final dot."""
KEYED = ("fofa", "hunter_qax", "securitytrails")
ALL = tuple(REGISTRY)


@pytest.fixture
def server() -> Iterator[PassiveServer]:
    """A fresh imitation of every service with the planted names."""
    running = PassiveServer(PassiveState(records={ROOT: list(RAW)})).start()
    yield running
    running.stop()


def settings(
    server: PassiveServer, *, keys: dict[str, str] | None = None, only: tuple[str, ...] = (), **kw: Any
) -> SourcesSettings:
    """Every source pointed at ``server`` with the lab keys (or ``keys``)."""
    use = KEYS if keys is None else keys
    sources = {name: SourceConfig(url=server.url, key=use.get(name, "")) for name in REGISTRY}
    return SourcesSettings(sources=sources, only=only, **kw)


def run(server: PassiveServer, roots: list[str] | None = None, **kw: Any) -> SourceReport:
    """``query_sources`` on ``roots`` (the planted root by default), 10 s at most."""
    timeout = kw.pop("timeout", 10.0)
    return asyncio.run(query_sources(roots or [ROOT], settings(server, **kw), timeout=timeout))


def expected(name: str) -> set[str]:
    """What ``name`` must find of the planted records."""
    return SECURITYTRAILS_EXPECTED if name == "securitytrails" else EXPECTED


@pytest.mark.parametrize("name", ALL)
def test_source_finds_planted_names_and_drops_the_rest(server: PassiveServer, name: str) -> None:
    report = run(server, only=(name,))
    assert report.failed == {} and report.skipped == {} and report.limited == {}
    assert set(report.found[name]) == expected(name)
    assert len(report.found[name]) == len(set(report.found[name]))


@pytest.mark.parametrize(("name", "pages"), [("certspotter", 6), ("fofa", 5), ("hunter_qax", 5)])
def test_paging_sources_fetch_every_page(server: PassiveServer, name: str, pages: int) -> None:
    """Nine planted records two a page: five pages (Cert Spotter asks once more, for the empty page)."""
    report = run(server, only=(name,))
    assert set(report.found[name]) == EXPECTED
    assert server.state.count(name) == pages == report.requests[name]


def test_all_sources_at_once_report_the_union(server: PassiveServer) -> None:
    report = run(server)
    assert set(report.found) == set(ALL)
    assert report.names() == sorted(EXPECTED)
    assert report.failed == {} and report.skipped == {}


@pytest.mark.parametrize("name", (*KEYED, "certspotter", "alienvault"))
def test_rejected_key_fails_the_source_with_its_reason(server: PassiveServer, name: str) -> None:
    report = run(server, keys={name: "wrong-key"}, only=(name,))
    assert "rejected the key" in report.failed[name]
    assert "wrong-key" not in report.failed[name]
    assert report.found[name] == []
    assert server.state.count(name) == 1


def test_missing_key_skips_the_source_by_name_and_the_others_run(server: PassiveServer) -> None:
    report = run(server, keys={})
    assert report.skipped == {name: "no key" for name in KEYED}
    for name in ("crtsh", "certspotter", "alienvault"):
        assert set(report.found[name]) == EXPECTED
    for name in KEYED:
        assert server.state.count(name) == 0 and name not in report.found


def test_disabled_and_unknown_sources_are_skipped_with_a_reason(server: PassiveServer) -> None:
    base = settings(server, only=("crtsh", "nosuch"))
    disabled = SourcesSettings(sources={"crtsh": SourceConfig(url=server.url, enabled=False)}, only=base.only)
    report = asyncio.run(query_sources([ROOT], disabled, timeout=5))
    assert report.skipped == {"crtsh": "disabled", "nosuch": "unknown source"}
    assert server.state.count("crtsh") == 0


@pytest.mark.parametrize("name", KEYED)
def test_spent_quota_fails_at_once_with_its_reason(server: PassiveServer, name: str) -> None:
    server.state.behaviour[name] = Behaviour(mode="quota")
    report = run(server, only=(name,))
    assert "quota exhausted" in report.failed[name]
    assert server.state.count(name) == 1


@pytest.mark.parametrize("name", ALL)
def test_service_answering_an_error_page_fails_only_that_source(server: PassiveServer, name: str) -> None:
    server.state.behaviour[name] = Behaviour(mode="down")
    report = run(server)
    assert "HTTP 502" in report.failed[name]
    assert set(report.failed) == {name}
    assert report.names() == sorted(EXPECTED)


def test_source_that_crashes_is_isolated(server: PassiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one source (here: it raises KeyError) is reported as its failure; the others run."""

    class Broken(CrtSh):
        name = "broken"

        async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
            await client.get("/", {"q": f"%.{root}", "output": "json"})
            raise KeyError("name_value")
            yield []

    monkeypatch.setitem(REGISTRY, "broken", Broken)
    report = run(server, only=("broken", "alienvault"))
    assert report.failed == {"broken": "broken failed unexpectedly: KeyError: 'name_value'"}
    assert set(report.found["alienvault"]) == EXPECTED


def test_429_with_retry_after_is_waited_out(server: PassiveServer) -> None:
    """Every source answers 429 with Retry-After: 1 once; each waits a second and then succeeds."""
    limited = ("crtsh", "certspotter", "fofa", "securitytrails", "alienvault")
    for name in limited:
        server.state.behaviour[name] = Behaviour(rate_limited=1, retry_after=1)
    started = time.monotonic()
    report = run(server, only=limited)
    assert time.monotonic() - started >= 1.0
    assert report.failed == {}
    for name in limited:
        assert set(report.found[name]) == expected(name)
    assert server.state.count("crtsh") == 2


def test_hunter_rate_limit_code_backs_off_and_retries(server: PassiveServer) -> None:
    """Hunter's own rate-limit answer (HTTP 200, code 429, no Retry-After) is waited out too."""
    server.state.behaviour["hunter_qax"] = Behaviour(rate_limited=1)
    started = time.monotonic()
    report = run(server, only=("hunter_qax",))
    assert time.monotonic() - started >= 2.0
    assert set(report.found["hunter_qax"]) == EXPECTED
    assert server.state.count("hunter_qax") == 6


def test_retry_after_over_the_cap_gives_up_at_once(server: PassiveServer) -> None:
    server.state.behaviour["certspotter"] = Behaviour(rate_limited=1, retry_after=120)
    started = time.monotonic()
    report = run(server, only=("certspotter",), max_wait=5.0)
    assert time.monotonic() - started < 2.0
    assert "asked to wait 120 s, over the 5 s cap" in report.failed["certspotter"]


def test_rate_limit_that_persists_gives_up_after_the_allowed_waits(server: PassiveServer) -> None:
    server.state.behaviour["securitytrails"] = Behaviour(rate_limited=5, retry_after=0)
    report = run(server, only=("securitytrails",), rate_retries=2)
    assert "rate limited" in report.failed["securitytrails"]
    assert "still after 2 wait(s)" in report.failed["securitytrails"]
    assert server.state.count("securitytrails") == 3


def test_hanging_source_is_cut_at_its_budget_while_the_others_return(server: PassiveServer) -> None:
    server.state.behaviour["certspotter"] = Behaviour(mode="hang")
    started = time.monotonic()
    report = run(server, budget=1.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 15, "the hanging source is cut at its budget, not waited out"
    assert "timed out" in report.failed["certspotter"]
    for name in set(ALL) - {"certspotter"}:
        assert set(report.found[name]) == expected(name), name
        assert name not in report.failed


def test_overall_timeout_bounds_every_source(server: PassiveServer) -> None:
    server.state.behaviour["crtsh"] = Behaviour(mode="hang")
    started = time.monotonic()
    report = run(server, only=("crtsh",), budget=60.0, timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert "timed out after 0.5 s" in report.failed["crtsh"]


def test_request_cap_stops_paging_and_keeps_what_was_found(server: PassiveServer) -> None:
    report = run(server, only=("certspotter",), max_requests=2)
    assert report.limited == {"certspotter": "request cap of 2 reached"}
    assert report.failed == {}
    assert server.state.count("certspotter") == 2
    assert 0 < len(report.found["certspotter"]) < len(EXPECTED)


def test_on_found_streams_each_new_name_once(server: PassiveServer) -> None:
    calls: list[tuple[str, list[str]]] = []
    report = asyncio.run(
        query_sources([ROOT], settings(server), timeout=10, on_found=lambda s, n: calls.append((s, n)))
    )
    streamed = [name for _, names in calls for name in names]
    assert sorted(streamed) == report.names()
    assert {source for source, _ in calls} <= set(ALL)


def test_several_roots_each_filtered_to_its_own_names(server: PassiveServer) -> None:
    server.state.records["second.test"] = ["a.second.test", "b.planted.test", "*.c.second.test"]
    report = run(server, roots=[ROOT, "Second.Test"], only=("crtsh", "alienvault"))
    for name in ("crtsh", "alienvault"):
        assert set(report.found[name]) == EXPECTED | {"a.second.test", "c.second.test"}


def test_tls_service_with_an_untrusted_certificate_is_refused() -> None:
    """Certificates of outside services are verified: a certificate no system CA signed fails."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tls_server = PassiveServer(PassiveState(records={ROOT: list(RAW)}), tls=context).start()
    try:
        report = run(tls_server, only=("crtsh",))
    finally:
        tls_server.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in report.failed["crtsh"]
    assert report.found["crtsh"] == []


def test_report_document_counts_and_reasons(server: PassiveServer) -> None:
    report = run(server, keys={"fofa": "wrong"}, only=("crtsh", "fofa", "hunter_qax"))
    doc = report.to_doc()
    assert doc["found"] == {"crtsh": len(EXPECTED), "fofa": 0}
    assert set(doc["failed"]) == {"fofa"} and doc["skipped"] == {"hunter_qax": "no key"}
    assert doc["requests"] == {"crtsh": 1, "fofa": 1}


def test_clean_name_drops_garbage_and_normalises() -> None:
    assert clean_name("*.*.Dev.Planted.Test.") == "dev.planted.test"
    assert clean_name("https://www.planted.test:8443/login") == "www.planted.test"
    assert clean_name("bücher.planted.test") == "xn--bcher-kva.planted.test"
    for garbage in ("admin@planted.test", "bad..planted.test", "", "a b.planted.test", None, 42, "localhost"):
        assert clean_name(garbage) is None
    assert names_under(ROOT, ["WWW.planted.test", "www.planted.test", "xplanted.test", "planted.test"]) == [
        "www.planted.test",
        "planted.test",
    ]


def test_fofa_query_follows_arl_for_registrable_and_deeper_roots() -> None:
    assert fofa_query("example.com") == 'domain="example.com"'
    assert fofa_query("dev.example.co.uk") == 'host="dev.example.co.uk" && domain="example.co.uk"'
