"""Site identification: sites fetched and fingerprinted per second on 1,000 loopback sites, and a floor.

The site farm (``tests/lab/many_sites.py``) serves 1,000 sites from a process of its own, each on
an address and port of its own (127.0.2.1 … 127.0.5.250), a third of them over TLS (a self-signed
certificate made at start): mostly pages of 2–200 KiB with a title, headers and markup that
technologies are recognised by, and an icon for two sites in three; 4% slow (every answer's first
byte delayed 0.5–1.5 s); 1% stalled (no answer before the client's timeout); 1% huge (a "1 GiB"
page by Content-Length, chunked or delimited by the close, produced only as far as it is read);
5% redirecting (``/`` → ``/hop`` → a page on another site, in scope); 1% in an endless redirect
loop.

Measured in one run, rounds alternating, each side bounded by :data:`PHASE_BOUND` seconds:

- ours: :func:`workers.recon.sites.identify_site` on every site through ``run_pool`` with the
  site stage's concurrency (``min(SITE_CONCURRENCY, concurrency)`` = 50 by default) and the
  default HTTP timeout, as ``ReconRun.identify_sites`` calls it (the scheme known, as after
  service detection; redirects located like the run locates them: in-scope IPs only): front page
  following redirects, favicon, fingerprints (our rules and the technology database);
- the floor: a bare asyncio GET of ``/`` per site (status line, headers, then the body up to the
  same cap, read and dropped; the connection aborted), same concurrency, same timeout;
- and, to show where ours spends its time, ours without the fingerprints: ``follow`` and
  ``fetch_favicon`` exactly as identify_site calls them.

Reported per side: sites per second, requests the farm answered, bytes the farm sent, the most a
huge page sent before the client hung up, CPU seconds of this process, and its resident memory:
at the start of the side and the peak during it (sampled every 5 ms). Ours must identify every
site but the stalled ones as planted (titles, the landing page of each chain, the loop cut at
the redirect limit, huge pages cut at the cap).

Run: ``.venv/bin/python bench/bench_sites.py [--rounds 3] [--sites 1000] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table, write_result
from tests.lab.many_sites import FarmSite, SiteFarm, plan
from workers.recon.context import DEFAULT_RECON
from workers.recon.control import run_pool
from workers.recon.fingerprints import Rule, load_rules
from workers.recon.http import MAX_BODY, MAX_HEADER_BYTES, HttpError
from workers.recon.scan import SITE_CONCURRENCY
from workers.recon.sites import MAX_REDIRECTS, Endpoint, SiteResult, fetch_favicon, follow, identify_site

PHASE_BOUND = 180.0
"""Seconds one side of a round may take; a side cut by it is marked ``cut``."""
SETTLE = 10.0
"""Seconds to wait, between sides, for the farm's connections to end."""
CONCURRENCY = min(SITE_CONCURRENCY, DEFAULT_RECON.concurrency)
TIMEOUT = DEFAULT_RECON.http_timeout
SIDES = {
    "floor": "floor: bare asyncio GET /",
    "ours": "ours: identify_site (site stage)",
    "fetching": "ours without fingerprints (follow + favicon)",
}


class PeakRss:
    """Samples this process's resident memory every 5 ms in a thread; :attr:`peak` in bytes."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def bare_context() -> ssl.SSLContext:
    """The floor's TLS context: any certificate, no name check."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def bare_get(site: FarmSite, ctx: ssl.SSLContext) -> int | None:
    """GET / from ``site``: the status, after reading the headers and the body up to the cap (dropped)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                site.ip, site.port, ssl=ctx if site.tls else None, limit=MAX_HEADER_BYTES
            )
            try:
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: {site.ip}:{site.port}\r\nConnection: close\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                want = MAX_BODY
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        want = min(want, int(line.split(b":", 1)[1]))
                got = 0
                while got < want:
                    chunk = await reader.read(want - got)
                    if not chunk:
                        break
                    got += len(chunk)
                return status
            finally:
                writer.transport.abort()
    except (
        OSError,
        TimeoutError,
        ValueError,
        IndexError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
    ):
        return None


def expected(site: FarmSite, farm: SiteFarm) -> tuple[int, str, int] | None:
    """(status, title, redirects) that identify_site must report for ``site`` (None: no answer in time)."""
    if site.kind == "slow" and site.delay >= TIMEOUT:
        return None
    if site.kind == "huge":
        return 200, "Huge", 0
    if site.kind == "redirect":
        return 200, f"Landing from {site.index}", 2
    if site.kind == "loop":
        return 302, "", MAX_REDIRECTS
    return 200, site.title, 0


async def ours(sites: Sequence[FarmSite], rules: Sequence[Rule]) -> dict[int, SiteResult | None]:
    """identify_site over every site the way the site stage runs it."""
    in_scope = {s.ip for s in sites}
    found: dict[int, SiteResult | None] = {}

    async def locate(host: str) -> str | None:
        return host if host in in_scope else None

    async def probe(site: FarmSite) -> None:
        endpoint = Endpoint(site.scheme, site.ip, site.ip, site.port)
        found[site.index] = await identify_site(endpoint, rules, locate, TIMEOUT)

    await run_pool(sites, probe, CONCURRENCY)
    return found


async def fetching(sites: Sequence[FarmSite]) -> dict[int, int | None]:
    """identify_site's fetching alone (redirects followed, favicon), no fingerprints: where the time goes."""
    in_scope = {s.ip for s in sites}
    found: dict[int, int | None] = {}

    async def locate(host: str) -> str | None:
        return host if host in in_scope else None

    async def probe(site: FarmSite) -> None:
        start = Endpoint(site.scheme, site.ip, site.ip, site.port)
        try:
            endpoint, response, _ = await follow(start, "/", locate, TIMEOUT)
        except HttpError:
            found[site.index] = None
            return
        await fetch_favicon(endpoint, response.body, TIMEOUT)
        found[site.index] = response.status

    await run_pool(sites, probe, CONCURRENCY)
    return found


async def floor(sites: Sequence[FarmSite]) -> dict[int, int | None]:
    """A bare GET of every site, same concurrency."""
    ctx = bare_context()
    found: dict[int, int | None] = {}

    async def probe(site: FarmSite) -> None:
        found[site.index] = await bare_get(site, ctx)

    await run_pool(sites, probe, CONCURRENCY)
    return found


def settle(farm: SiteFarm) -> None:
    deadline = time.monotonic() + SETTLE
    while farm.stats().open and time.monotonic() < deadline:
        time.sleep(0.05)


def measure(farm: SiteFarm, side: str, work: Callable[[], Awaitable[dict[int, Any]]]) -> dict[str, Any]:
    """Run one side once: time, CPU, memory and what the farm saw."""
    settle(farm)
    gc.collect()
    farm.reset()
    process = psutil.Process()
    cpu = process.cpu_times()
    found: dict[int, Any] = {}
    cut = False

    async def bounded() -> None:
        nonlocal cut
        task = asyncio.ensure_future(work())
        try:
            async with asyncio.timeout(PHASE_BOUND):
                found.update(await asyncio.shield(task))
        except TimeoutError:
            cut = True
            task.cancel()

    with PeakRss() as rss:
        started = time.perf_counter()
        asyncio.run(bounded())
        seconds = time.perf_counter() - started
    after = process.cpu_times()
    settle(farm)
    stats = farm.stats()
    huge_sent = [h["sent"] for h in stats.huge if h["path"] == "/"]
    return {
        "side": side,
        "sites": len(farm.sites),
        "seconds": round(seconds, 3),
        "per_s": round(len(farm.sites) / seconds, 1),
        "cut": cut,
        "answered": sum(1 for v in found.values() if v is not None),
        "requests": stats.requests,
        "farm_mb_sent": round(stats.bytes_sent / 2**20, 1),
        "huge_max_sent_kb": round(max(huge_sent, default=0) / 1024),
        "cpu_s": round(after.user + after.system - cpu.user - cpu.system, 2),
        "rss_start_mb": round(rss.start / 2**20, 1),
        "rss_peak_mb": round(rss.peak / 2**20, 1),
        "found": found,
    }


def check(farm: SiteFarm, found: dict[int, SiteResult | None]) -> list[str]:
    """How ours differs from the plan (empty: every site identified as planted)."""
    wrong = []
    for site in farm.sites:
        result, want = found.get(site.index), expected(site, farm)
        got = None if result is None else (result.status, result.title, len(result.redirects))
        if got != want or (site.kind == "huge" and result is not None and result.body_length != MAX_BODY):
            wrong.append(f"{site.kind} {site.origin}: {got} (wanted {want})")
    return wrong


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def summarise(runs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """One side's rounds in one row: medians of rates and times, worst of memory and of huge pages."""
    return {
        "per_s": median(runs, "per_s"),
        "seconds": median(runs, "seconds"),
        "requests_per_site": round(statistics.median(x["requests"] for x in runs) / count, 2),
        "cpu_s": median(runs, "cpu_s"),
        "cpu_ms_per_site": round(statistics.median(x["cpu_s"] for x in runs) * 1000 / count, 1),
        "rss_peak_mb": max(x["rss_peak_mb"] for x in runs),
        "rss_growth_mb": round(max(x["rss_peak_mb"] - x["rss_start_mb"] for x in runs), 1),
        "farm_mb_sent": median(runs, "farm_mb_sent"),
        "huge_max_sent_kb": max(x["huge_max_sent_kb"] for x in runs),
        "answered": min(x["answered"] for x in runs),
        "cut": any(x["cut"] for x in runs),
    }


def report(summary: dict[str, dict[str, Any]], count: int) -> str:
    """The table printed at the end."""
    top = summary["floor"]["per_s"]
    rows = [
        [
            SIDES[side],
            f"{s['per_s']:,}",
            f"{s['per_s'] / top:.2f}" if top else "—",
            s["seconds"],
            s["requests_per_site"],
            s["cpu_ms_per_site"],
            s["rss_peak_mb"],
            s["rss_growth_mb"],
            s["farm_mb_sent"],
            s["huge_max_sent_kb"],
            f"{s['answered']}/{count}" + (" (cut)" if s["cut"] else ""),
        ]
        for side, s in summary.items()
    ]
    headers = [
        "side",
        "sites/s (median)",
        "of floor",
        "s",
        "requests/site",
        "CPU ms/site",
        "peak RSS MB",
        "RSS growth MB",
        "farm MB sent",
        "max KiB a huge page sent",
        "answered",
    ]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="one round over 300 sites")
    args = parser.parse_args(argv)
    rounds, count = (1, 300) if args.quick else (args.rounds, args.sites)
    farm = SiteFarm(plan(count)).start()
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "ours": [], "fetching": []}
    wrong: list[str] = []
    try:
        rules = load_rules()
        page = farm.of_kind("page")[0]
        asyncio.run(ours([page], rules))  # loads the technology database before anything is measured
        for _ in range(rounds):
            runs["floor"].append(measure(farm, "floor", lambda: floor(farm.sites)))
            runs["ours"].append(measure(farm, "ours", lambda: ours(farm.sites, rules)))
            runs["fetching"].append(measure(farm, "fetching", lambda: fetching(farm.sites)))
            wrong += check(farm, runs["ours"][-1].pop("found"))
            runs["floor"][-1].pop("found")
            runs["fetching"][-1].pop("found")
            print("  round: " + ", ".join(f"{k} {v[-1]['per_s']}/s" for k, v in runs.items()), flush=True)
    finally:
        farm.stop()
    kinds = {
        k: sum(1 for s in farm.sites if s.kind == k) for k in ("page", "slow", "huge", "redirect", "loop")
    }
    stalled = sum(1 for s in farm.sites if s.kind == "slow" and s.delay >= TIMEOUT)
    tls = sum(1 for s in farm.sites if s.tls)
    summary = {side: summarise(r, count) for side, r in runs.items()}
    top = summary["floor"]["per_s"]
    ratio = round(summary["ours"]["per_s"] / top, 2) if top else None
    print(report(summary, count))
    verdict = "yes" if not wrong else "NO: " + "; ".join(wrong[:5])
    print(f"ours / floor: {ratio}×; identified as planted: {verdict}")
    result = {
        "rounds": rounds,
        "quick": args.quick,
        "sites": count,
        "mix": {
            **kinds,
            "stalled": stalled,
            "slow": kinds["slow"] - stalled,
            "tls": tls,
        },
        "concurrency": CONCURRENCY,
        "timeout_s": TIMEOUT,
        "body_cap_bytes": MAX_BODY,
        "headline": {
            "ours_per_s": summary["ours"]["per_s"],
            "floor_per_s": summary["floor"]["per_s"],
            "ratio": ratio,
            "ours_rss_peak_mb": summary["ours"]["rss_peak_mb"],
            "floor_rss_peak_mb": summary["floor"]["rss_peak_mb"],
            "ours_cpu_ms_per_site": summary["ours"]["cpu_ms_per_site"],
            "floor_cpu_ms_per_site": summary["floor"]["cpu_ms_per_site"],
            "fetching_per_s": summary["fetching"]["per_s"],
            "identified_as_planted": not wrong,
        },
        "summary": summary,
        "mismatches": wrong[:20],
        "runs": runs,
    }
    path = write_result("sites", result)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
