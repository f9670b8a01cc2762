"""Port scanning: the ip_task pipeline against ``nmap -sT`` on the same loopback targets, same ports.

Two cases: one host (127.0.0.1), every port 0-65535 (ARL's "all"); and a /24 of loopback addresses
(127.0.1.1-254) with the top-1000 preset (ARL's TOP_1000: 1,201 ports). Listening sockets are
planted first (on 127.0.0.1 at random free ports, on eight 127.0.1.x addresses at ports of the
preset), so both scanners have something to find. Each round runs ours (``run_ip_task``: connect
scan, open ports written to the embedded MongoDB-wire server as found) then nmap (``nmap -sT -Pn -n
--open``, XML parsed); rounds alternate so both see the same load. Found sets are compared with the
planted ports and with each other; a port found by only one of them is checked against what the
machine listened on during the round (read every 0.1 s: other processes' listeners come and go).

Run: ``.venv/bin/python bench/bench_recon_portscan.py [--rounds 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_recon_common import context, ratio, recon_store, summary, timed
from bench.common import table, write_result
from tests.lab.fastdns import FastDNSServer
from tests.lab.ports import PlantedPorts, listening, wildcard_listeners
from workers.recon.datafiles import ports_for_preset
from workers.recon.nmap import compress_ports, nmap_path, parse_nmap_xml
from workers.recon.scan import run_ip_task

RUN_BOUND = 300.0
"""Seconds one scan (ours or nmap's) may take before it is cut (ours: the scan deadline)."""

Pairs = set[tuple[str, int]]


def nmap_scan(targets: str, ports: list[int]) -> tuple[float, Pairs]:
    nmap = nmap_path()
    assert nmap is not None
    command = [nmap, "-sT", "-Pn", "-n", "--open", "-oX", "-", "-p", compress_ports(ports), targets]
    seconds, done = timed(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=RUN_BOUND, check=True)
    )
    found = parse_nmap_xml(done.stdout)
    return seconds, {(ip, port) for ip, by_port in found.items() for port in by_port}


def our_scan(db: Any, resolvers: list[str], targets: list[str], preset: str) -> tuple[float, Pairs, bool]:
    ctx = context(db, resolvers)
    options = {
        "port_scan": True,
        "port_scan_type": preset,
        "port_scan_timeout": RUN_BOUND,
        "service_detection": False,
        "site_identify": False,
        "ssl_cert": False,
        "file_leak": False,
    }
    seconds, stats = timed(lambda: run_ip_task(targets, options, ctx))
    found = {(d["ip"], p["port"]) for d in db["ip"].find({"task_id": ctx.task_id}) for p in d["ports"]}
    return seconds, found, bool(stats["partial"])


class ListenWatch:
    """What the machine listened on at any moment of a round (``/proc/net/tcp*`` read every 0.1 s)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = listening()
        self.always: set[tuple[str, int]] = set(self.seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            now = listening()
            self.seen |= now
            self.always &= now

    def __enter__(self) -> ListenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def listened(pair: tuple[str, int], snapshot: set[tuple[str, int]]) -> bool:
    return pair in snapshot or ("0.0.0.0", pair[1]) in snapshot


def compare(ours: Pairs, theirs: Pairs, planted: Pairs, watch: ListenWatch) -> dict[str, Any]:
    """Planted ports found by each; a port found by one only is 'transient' when something listened
    on it for part of the round only, else 'unexplained' (listed, with who found it)."""
    transient = [p for p in ours ^ theirs if listened(p, watch.seen) and not listened(p, watch.always)]
    return {
        "planted_found_ours": len(planted & ours),
        "planted_found_nmap": len(planted & theirs),
        "planted": len(planted),
        "same_ports": ours == theirs,
        "differ_transient": len(transient),
        "only_ours_unexplained": sorted(ours - theirs - set(transient)),
        "only_nmap_unexplained": sorted(theirs - ours - set(transient)),
    }


def run_case(
    name: str,
    db: Any,
    resolvers: list[str],
    targets: list[str],
    nmap_targets: str,
    preset: str,
    rounds: int,
    planted: Pairs,
) -> dict[str, Any]:
    ports = ports_for_preset(preset)
    probes = len(targets) * len(ports)
    ours_s: list[float] = []
    nmap_s: list[float] = []
    checks = []
    partial = False
    for _ in range(rounds):
        with ListenWatch() as watch:
            seconds, ours, cut = our_scan(db, resolvers, targets, preset)
            ours_s.append(seconds)
            partial = partial or cut
            seconds, theirs = nmap_scan(nmap_targets, ports)
            nmap_s.append(seconds)
        checks.append(compare(ours, theirs, planted, watch))
        print(f"  {name}: ours {ours_s[-1]:.2f} s, nmap -sT {nmap_s[-1]:.2f} s, {checks[-1]}", flush=True)
    ours_sum, nmap_sum = summary(ours_s), summary(nmap_s)
    return {
        "case": name,
        "probes": probes,
        "ours_runs_s": [round(s, 3) for s in ours_s],
        "nmap_runs_s": [round(s, 3) for s in nmap_s],
        "ours_median_s": ours_sum["median_s"],
        "nmap_median_s": nmap_sum["median_s"],
        "ours_best_s": ours_sum["best_s"],
        "nmap_best_s": nmap_sum["best_s"],
        "ratio_median": ratio(nmap_sum["median_s"], ours_sum["median_s"]),
        "ratio_best": ratio(nmap_sum["best_s"], ours_sum["best_s"]),
        "ours_ports_per_s": round(probes / ours_sum["median_s"]),
        "nmap_ports_per_s": round(probes / nmap_sum["median_s"]),
        "ours_cut_by_bound": partial,
        "planted_found_every_round": all(
            c["planted_found_ours"] == c["planted_found_nmap"] == c["planted"] for c in checks
        ),
        "same_ports_every_round": all(
            c["same_ports"] or not (c["only_ours_unexplained"] or c["only_nmap_unexplained"]) for c in checks
        ),
        "rounds": checks,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, a /26 instead of the /24")
    args = parser.parse_args(argv)
    if nmap_path() is None:
        raise SystemExit("nmap is not installed (apt-get install nmap)")
    rounds = 1 if args.quick else args.rounds
    last = 62 if args.quick else 254
    top1000 = ports_for_preset("top1000")
    busy = wildcard_listeners()
    on_one = PlantedPorts(["127.0.0.1"], per_host=12, seed=1).start()
    hosts = [f"127.0.1.{i}" for i in range(1, last + 1)]
    on_net = PlantedPorts(
        hosts[:: max(1, last // 8)][:8], 4, choices=[p for p in top1000 if p not in busy], seed=2
    )
    on_net.start()
    dns = FastDNSServer([]).start()
    cases = []
    try:
        with recon_store() as db:
            cases.append(
                run_case(
                    "127.0.0.1, ports 0-65535",
                    db,
                    [dns.address],
                    ["127.0.0.1"],
                    "127.0.0.1",
                    "all",
                    rounds,
                    on_one.pairs,
                )
            )
            cases.append(
                run_case(
                    f"127.0.1.1-{last}, top-1000 preset",
                    db,
                    [dns.address],
                    hosts,
                    f"127.0.1.1-{last}",
                    "top1000",
                    rounds,
                    on_net.pairs,
                )
            )
    finally:
        dns.stop()
        on_one.stop()
        on_net.stop()
    rows = [
        [
            c["case"],
            f"{c['ours_median_s']} ({c['ours_best_s']})",
            f"{c['nmap_median_s']} ({c['nmap_best_s']})",
            f"{c['ratio_median']}×",
            f"{c['ours_ports_per_s']:,} / {c['nmap_ports_per_s']:,}",
            "yes" if c["planted_found_every_round"] else "NO",
            "yes" if c["same_ports_every_round"] else "NO",
        ]
        for c in cases
    ]
    print(
        table(
            [
                "case",
                "ours s, median (best)",
                "nmap -sT s",
                "ratio",
                "ports/s ours / nmap",
                "planted found",
                "same ports",
            ],
            rows,
        )
    )
    result = {
        "rounds": rounds,
        "quick": args.quick,
        "results": [{k: v for k, v in c.items() if k != "rounds"} for c in cases],
        "checks": {c["case"]: {"rounds": c["rounds"]} for c in cases},
    }
    write_result("recon_portscan", result)
    return result


if __name__ == "__main__":
    main()
