"""Recon throughput on loopback: names resolved, ports scanned (against ``nmap -sT``), sites fetched.

One run against the loopback lab (``tests/lab``: a DNS server, TCP listeners and HTTP(S) sites on
127.88.0.x), rounds alternating so every side sees the same machine load:

- names resolved: the brute-force client (:func:`workers.recon.dns.resolve_names`) over names of
  the big wordlist under ``lab.test`` (mostly NXDOMAIN, like a real brute force);
- ports scanned: the connect scanner through :func:`workers.recon.portrun.run_port_scan` (the
  settings of ``port_scan_type: all``) and, as the anchor, ``nmap -sT -Pn -n --open`` on the same
  lab address and the same ports (0-65535); both must find the lab's open ports, and the same
  ports, except those other processes listened on for part of the round only;
- sites fetched: :func:`workers.recon.sites.identify_site` on the lab's main site (front page,
  favicon, fingerprints), 50 at once.

Prints a table and writes ``bench/results/recon.json`` (``bench/report.py`` shows it in
docs/performance.md). Run: ``.venv/bin/python bench/recon_bench.py [--rounds 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_recon_common import timed
from bench.bench_recon_portscan import ListenWatch, compare
from bench.common import table, write_result
from tests.lab import H1, Lab, start_lab
from tests.lab.ports import wildcard_listeners
from workers.recon.datafiles import load_wordlist
from workers.recon.dns import DnsClient, DomainRecord, resolve_names
from workers.recon.fingerprints import Rule, load_rules
from workers.recon.nmap import compress_ports, nmap_path, parse_nmap_xml
from workers.recon.portrun import run_port_scan
from workers.recon.portscan import PortInfo
from workers.recon.portsettings import scan_settings
from workers.recon.sites import Endpoint, identify_site

NMAP_BOUND = 300.0
"""Seconds nmap may take for one round before the benchmark gives up."""

Pairs = set[tuple[str, int]]


def names_round(lab: Lab, names: int, concurrency: int) -> tuple[float, int]:
    """(seconds, names) to resolve ``names`` brute-force candidates under lab.test."""
    labels = load_wordlist("big")[:names]
    client = DnsClient(lab.resolvers, timeout=2.0, concurrency=concurrency)
    found: dict[str, DomainRecord] = {}
    candidates = [f"{label}.lab.test" for label in labels]
    seconds, _ = timed(
        lambda: asyncio.run(resolve_names(client, candidates, found, source="bench", concurrency=concurrency))
    )
    return seconds, len(candidates)


def ours_ports_round(ports: list[int]) -> tuple[float, Pairs]:
    """(seconds, open pairs) of the connect scanner over ``ports`` of the lab's first address."""
    settings = dataclasses.replace(scan_settings({"port_scan_type": "all"}), ports=tuple(ports))
    found: dict[str, dict[int, PortInfo]] = {}
    seconds, _ = timed(lambda: asyncio.run(run_port_scan([H1], settings, found)))
    return seconds, {(ip, port) for ip, by_port in found.items() for port in by_port}


def nmap_ports_round(ports: list[int]) -> tuple[float, Pairs]:
    """(seconds, open pairs) of ``nmap -sT`` over the same ports of the same address."""
    nmap = nmap_path()
    assert nmap is not None
    command = [nmap, "-sT", "-Pn", "-n", "--open", "-oX", "-", "-p", compress_ports(ports), H1]
    seconds, done = timed(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=NMAP_BOUND, check=True)
    )
    found = parse_nmap_xml(done.stdout)
    return seconds, {(ip, port) for ip, by_port in found.items() for port in by_port}


def sites_round(lab: Lab, rules: list[Rule], fetches: int, concurrency: int) -> tuple[float, int]:
    """(seconds, sites identified) for ``fetches`` identifications of the lab's main site."""
    site = lab.sites["main"]
    endpoint = Endpoint("http", "www.lab.test", site.ip, site.port)

    async def nowhere(host: str) -> str | None:
        return None

    async def run() -> int:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> bool:
            async with gate:
                return await identify_site(endpoint, rules, nowhere, 5.0) is not None

        return sum(await asyncio.gather(*(one() for _ in range(fetches))))

    seconds, count = timed(lambda: asyncio.run(run()))
    return seconds, int(count)


def row(metric: str, side: str, count: int, seconds: list[float]) -> dict[str, Any]:
    """One line of the result: median and best over the rounds, and the rate at the median."""
    median = statistics.median(seconds)
    return {
        "metric": metric,
        "side": side,
        "count": count,
        "median_s": round(median, 3),
        "best_s": round(min(seconds), 3),
        "per_second": round(count / median, 1) if median else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure the three rates and report them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, smaller workloads")
    parser.add_argument("--concurrency", type=int, default=200, help="DNS queries in flight")
    args = parser.parse_args(argv)
    if nmap_path() is None:
        raise SystemExit("nmap is not installed (apt-get install nmap): it is the port scan's anchor")
    rounds, scale = (1, 0.2) if args.quick else (args.rounds, 1.0)
    names, fetches = int(10000 * scale), int(1000 * scale)
    busy = wildcard_listeners()
    ports = [p for p in range(0, 65536) if p not in busy]
    lab = start_lab()
    times: dict[str, list[float]] = {"names": [], "ours": [], "nmap": [], "sites": []}
    counts: dict[str, int] = {}
    checks: list[dict[str, Any]] = []
    try:
        expected = {(H1, port) for port in lab.open_ports[H1] if port in ports}
        rules = load_rules()
        sites_round(lab, rules, 1, 1)  # loads the technology database before anything is measured
        for _ in range(rounds):
            seconds, counts["names"] = names_round(lab, names, args.concurrency)
            times["names"].append(seconds)
            with ListenWatch() as watch:
                seconds, ours = ours_ports_round(ports)
                times["ours"].append(seconds)
                seconds, theirs = nmap_ports_round(ports)
                times["nmap"].append(seconds)
            checks.append(compare(ours, theirs, expected, watch))
            seconds, counts["sites"] = sites_round(lab, rules, fetches, 50)
            times["sites"].append(seconds)
            print(
                "  round: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()) + f", {checks[-1]}",
                flush=True,
            )
    finally:
        lab.stop()
    results = [
        row("names resolved", "ours (lab DNS server)", counts["names"], times["names"]),
        row("ports scanned", "ours (connect scanner)", len(ports), times["ours"]),
        row("ports scanned", "nmap -sT (anchor)", len(ports), times["nmap"]),
        row("sites fetched", "ours (identify_site)", counts["sites"], times["sites"]),
    ]
    headers = ["metric", "side", "count", "median s", "best s", "per second"]
    print(table(headers, [list(r.values()) for r in results]))
    ratio = round(statistics.median(times["nmap"]) / statistics.median(times["ours"]), 2)
    planted = all(c["planted_found_ours"] == c["planted_found_nmap"] == c["planted"] for c in checks)
    same = all(not (c["only_ours_unexplained"] or c["only_nmap_unexplained"]) for c in checks)
    print(f"ports: nmap's time / ours = {ratio}x; lab ports found by both: {planted}; same ports: {same}")
    result = {
        "rounds": rounds,
        "quick": args.quick,
        "results": results,
        "ports_ratio_vs_nmap": ratio,
        "ports_lab_found_every_round": planted,
        "ports_same_every_round": same,
        "ports_checks": checks,
        "ports_target": f"{H1}, ports 0-65535 less {65536 - len(ports)} that other processes listen on",
    }
    path = write_result("recon", result)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
