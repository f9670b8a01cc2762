"""Recon throughput benchmark against the loopback lab (not a test).

Measures names resolved per second against the lab's DNS server, TCP ports connect-scanned per
second on loopback, and sites identified per second; prints a table and writes
bench/results/recon.json. Run: ``.venv/bin/python bench/recon_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab import H1, Lab, start_lab  # noqa: E402
from workers.recon.datafiles import load_wordlist  # noqa: E402
from workers.recon.dns import DnsClient, DomainRecord, resolve_names  # noqa: E402
from workers.recon.fingerprints import load_rules  # noqa: E402
from workers.recon.portscan import PortInfo, scan_ports  # noqa: E402
from workers.recon.sites import Endpoint, identify_site  # noqa: E402


async def _timed(step: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = await step()
    return count, time.perf_counter() - started


async def bench_dns(lab: Lab, names: int, concurrency: int) -> dict[str, Any]:
    """Resolve ``names`` brute-force candidates under lab.test (mostly NXDOMAIN, like a real brute force)."""
    labels = load_wordlist("big")[:names]
    client = DnsClient(lab.resolvers, timeout=2.0, concurrency=concurrency)
    found: dict[str, DomainRecord] = {}

    async def step() -> int:
        await resolve_names(
            client, [f"{label}.lab.test" for label in labels], found, source="bench", concurrency=concurrency
        )
        return len(labels)

    count, seconds = await _timed(step)
    return {"metric": "names resolved", "count": count, "seconds": seconds, "queries": client.queries}


async def bench_ports(ports: int, concurrency: int) -> dict[str, Any]:
    """Connect-scan ``ports`` ports of a lab address (nearly all closed: refused at once on loopback)."""
    found: dict[str, dict[int, PortInfo]] = {}

    async def step() -> int:
        await scan_ports([H1], range(1, ports + 1), found, connect_timeout=1.0, concurrency=concurrency)
        return ports

    count, seconds = await _timed(step)
    return {"metric": "ports scanned", "count": count, "seconds": seconds, "open": len(found.get(H1, {}))}


async def bench_sites(lab: Lab, fetches: int, concurrency: int) -> dict[str, Any]:
    """Identify the lab's main site ``fetches`` times (front page + favicon + fingerprints each)."""
    site = lab.sites["main"]
    rules = load_rules()
    endpoint = Endpoint("http", "www.lab.test", site.ip, site.port)
    sem = asyncio.Semaphore(concurrency)

    async def nowhere(host: str) -> str | None:
        return None

    async def one() -> bool:
        async with sem:
            return await identify_site(endpoint, rules, nowhere, 5.0) is not None

    async def step() -> int:
        results = await asyncio.gather(*(one() for _ in range(fetches)))
        return sum(results)

    count, seconds = await _timed(step)
    return {"metric": "sites fetched", "count": count, "seconds": seconds}


def main() -> None:
    """Run the three measurements and report them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    lab = start_lab()
    try:
        results = [
            asyncio.run(bench_dns(lab, int(10000 * scale), args.concurrency)),
            asyncio.run(bench_ports(int(30000 * scale), args.concurrency)),
            asyncio.run(bench_sites(lab, int(1000 * scale), min(args.concurrency, 50))),
        ]
    finally:
        lab.stop()
    for row in results:
        row["per_second"] = round(row["count"] / row["seconds"], 1) if row["seconds"] else None
        row["seconds"] = round(row["seconds"], 3)
    print(f"{'metric':<16} {'count':>8} {'seconds':>9} {'per second':>12}")
    for row in results:
        print(f"{row['metric']:<16} {row['count']:>8} {row['seconds']:>9.3f} {row['per_second']:>12}")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "recon",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "concurrency": args.concurrency,
        "results": results,
    }
    (out_dir / "recon.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out_dir / 'recon.json'}")


if __name__ == "__main__":
    main()
