"""Limits of the HTTP client and site identification against the site farm (``tests/lab/many_sites.py``).

A "1 GiB" page costs what the cap says, counted at the server: the bytes it handed to the socket
before the client hung up. A capped page never leaves more than the cap held in the client. A
redirect chain stops at its limit; a site that never answers times out without holding the others.
Assertions are on what was sent, held and returned, never on durations.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trustme

from tests.lab.many_sites import FarmSite, FarmStats, SiteFarm, farm_address
from workers.recon.control import run_pool
from workers.recon.fingerprints import load_rules
from workers.recon.http import MAX_BODY, HttpError, HttpResponse, fetch, shared_ssl_context
from workers.recon.sites import MAX_REDIRECTS, Endpoint, SiteResult, identify_site


def _receive_buffer_ceiling() -> int:
    """The most the kernel lets a TCP receive buffer grow to by itself (``tcp_rmem``'s maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 6 * 1024 * 1024


IN_FLIGHT = _receive_buffer_ceiling() + 1024 * 1024
"""What may be in flight past the cap when the client hangs up: one receive buffer, which the kernel
sizes itself (on an idle loopback about 1 MiB is seen, several MiB under load), plus the farm's
64 KiB send buffer, the stream's read buffer and, over TLS, the TLS layer's (1 MiB for those)."""
HELD = 4 * MAX_BODY + 1024 * 1024
"""Python memory a capped fetch may hold at its peak: the body, a copy of it, and the buffers."""
WAIT = 30.0
"""How long to wait for the farm to see a connection end (a drained 1 GiB page would take longer)."""

HUGE = [(tls, framing) for tls in (False, True) for framing in ("length", "chunked", "close")]
PAGES = 12


def _sites() -> list[FarmSite]:
    sites = [FarmSite(i, "huge", farm_address(i), tls, framing=f) for i, (tls, f) in enumerate(HUGE)]
    base = len(sites)
    sites += [FarmSite(base + i, "page", farm_address(base + i), tls=i % 2 == 1) for i in range(PAGES)]
    extra = len(sites)
    sites += [
        FarmSite(extra, "slow", farm_address(extra), tls=False, delay=120.0),
        FarmSite(extra + 1, "slow", farm_address(extra + 1), tls=True, delay=0.2),
        FarmSite(extra + 2, "redirect", farm_address(extra + 2), tls=False, target=base),
        FarmSite(extra + 3, "loop", farm_address(extra + 3), tls=True),
    ]
    return sites


@pytest.fixture(scope="module")
def farm() -> Iterator[SiteFarm]:
    running = SiteFarm(_sites()).start()
    yield running
    running.stop()


def _endpoint(site: FarmSite) -> Endpoint:
    return Endpoint(site.scheme, site.ip, site.ip, site.port)


async def _ended(farm: SiteFarm, site: FarmSite, count: int) -> FarmStats:
    """The farm's counters once ``count`` connections to ``site`` have ended (or after :data:`WAIT`).

    The event loop of the fetch keeps running meanwhile, as a worker's does: a client that went
    on reading in the background would be seen doing so.
    """
    deadline = time.monotonic() + WAIT
    while True:
        stats = farm.stats()
        ended = [h for h in stats.huge if h["site"] == site.index] + [
            s for s in stats.slow_ended_by if s[0] == site.index
        ]
        if len(ended) >= count or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


async def _everywhere(host: str) -> str | None:
    return host


@pytest.mark.parametrize(("tls", "framing"), HUGE, ids=[f"{'tls' if t else 'http'}-{f}" for t, f in HUGE])
def test_huge_page_costs_the_cap_and_is_dropped(farm: SiteFarm, tls: bool, framing: str) -> None:
    site = next(s for s in farm.of_kind("huge") if s.tls == tls and s.framing == framing)

    async def fetch_and_wait() -> tuple[HttpResponse, FarmStats]:
        response = await fetch(site.ip, site.port, tls=site.tls, timeout=30.0)
        return response, await _ended(farm, site, 1)

    farm.reset()
    response, stats = asyncio.run(fetch_and_wait())
    assert response.status == 200
    assert len(response.body) == MAX_BODY and response.truncated
    assert response.body.startswith(b"<html><head><title>Huge</title>")
    records = [h for h in stats.huge if h["site"] == site.index]
    assert len(records) == 1, "the server never saw the client hang up"
    assert records[0]["ended_by"] == "client"
    assert MAX_BODY <= records[0]["sent"] <= MAX_BODY + IN_FLIGHT


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_memory_held_follows_the_cap_not_the_page(farm: SiteFarm, tls: bool) -> None:
    site = next(s for s in farm.of_kind("huge") if s.tls == tls and s.framing == "length")
    shared_ssl_context()

    async def peak(cap: int) -> tuple[int, int]:
        tracemalloc.start()
        try:
            response = await fetch(site.ip, site.port, tls=site.tls, timeout=30.0, max_body=cap)
            return len(response.body), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for cap in (64 * 1024, MAX_BODY):
        got, held = asyncio.run(peak(cap))
        assert got == cap
        assert held <= 4 * cap + 1024 * 1024 <= HELD


def test_identify_site_on_a_huge_page(farm: SiteFarm) -> None:
    site = next(s for s in farm.of_kind("huge") if s.tls and s.framing == "close")
    rules = load_rules()

    async def identify_and_wait() -> tuple[SiteResult | None, FarmStats]:
        result = await identify_site(_endpoint(site), rules, _everywhere, 30.0)
        return result, await _ended(farm, site, 2)

    farm.reset()
    result, stats = asyncio.run(identify_and_wait())
    assert result is not None
    assert (result.status, result.title, result.body_length) == (200, "Huge", MAX_BODY)
    records = [h for h in stats.huge if h["site"] == site.index and h["path"] == "/"]
    assert records and all(h["sent"] <= MAX_BODY + IN_FLIGHT for h in records)


def test_redirect_chain_stops_at_the_limit(farm: SiteFarm) -> None:
    site = farm.of_kind("loop")[0]
    farm.reset()
    result = asyncio.run(identify_site(_endpoint(site), load_rules(), _everywhere, 10.0))
    assert result is not None
    assert result.status == 302
    assert result.redirects == [f"{site.origin}/loop/{n}" for n in range(1, MAX_REDIRECTS + 1)]
    hits = farm.stats().hits
    assert [hits[(site.index, f"/loop/{n}")] for n in range(1, MAX_REDIRECTS + 2)] == [1] * MAX_REDIRECTS + [
        0
    ]
    assert hits[(site.index, "/")] == 1


def test_in_scope_chain_is_followed_and_out_of_scope_is_not(farm: SiteFarm) -> None:
    site = farm.of_kind("redirect")[0]
    target = farm.sites[site.target or 0]
    rules = load_rules()
    result = asyncio.run(identify_site(_endpoint(site), rules, _everywhere, 10.0))
    assert result is not None
    assert (result.status, result.title) == (200, f"Landing from {site.index}")
    assert result.redirects == [f"{site.origin}/hop", f"{target.origin}/landing/{site.index}"]
    assert result.final_url == f"{target.origin}/landing/{site.index}"

    async def only_self(host: str) -> str | None:
        return host if host == site.ip else None

    farm.reset()
    result = asyncio.run(identify_site(_endpoint(site), rules, only_self, 10.0))
    assert result is not None
    assert result.status == 301 and result.redirects == [f"{site.origin}/hop"]
    assert farm.stats().hits[(target.index, f"/landing/{site.index}")] == 0


def test_a_site_that_never_answers_times_out_without_holding_up_the_others(farm: SiteFarm) -> None:
    stalled = next(s for s in farm.of_kind("slow") if s.delay > 60)
    slow = next(s for s in farm.of_kind("slow") if s.delay < 1)
    others = [*farm.of_kind("page"), slow]
    finished: list[tuple[int, SiteResult | None]] = []
    rules = load_rules()

    async def probe(site: FarmSite) -> None:
        finished.append((site.index, await identify_site(_endpoint(site), rules, _everywhere, 5.0)))

    async def identify_all() -> FarmStats:
        await run_pool([stalled, *others], probe, 4)
        return await _ended(farm, stalled, 1)

    farm.reset()
    stats = asyncio.run(identify_all())
    results = dict(finished)
    assert results[stalled.index] is None
    for site in others:
        found = results[site.index]
        assert found is not None and (found.status, found.title) == (200, site.title), site
    order = [index for index, _ in finished]
    assert order[-1] == stalled.index, f"the stalled site finished before others: {order}"
    assert (stalled.index, "client") in stats.slow_ended_by


@pytest.fixture
def deaf_tls_server() -> Iterator[tuple[str, int]]:
    """A TLS server that takes the request, then neither answers nor reads (no close_notify reply)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("deaf.test").configure_cert(ctx)
    listener = socket.create_server(("127.0.2.251", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            stop.wait(60)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield "127.0.2.251", int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    listener.close()


def test_a_timed_out_tls_connection_is_dropped_at_once(deaf_tls_server: tuple[str, int]) -> None:
    """A graceful TLS close would wait (30 s) for a close_notify this peer never sends, holding the socket."""
    ip, port = deaf_tls_server

    def open_sockets() -> list[str]:
        return [c.status for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr[1] == port]

    async def fetch_then_watch() -> tuple[str, list[str]]:
        try:
            await fetch(ip, port, tls=True, timeout=1.0)
            outcome = "answered"
        except HttpError as exc:
            outcome = str(exc)
        deadline = time.monotonic() + 5.0
        while open_sockets() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return outcome, open_sockets()

    outcome, left = asyncio.run(fetch_then_watch())
    assert outcome.startswith("timeout")
    assert left == []
