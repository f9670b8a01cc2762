"""Run every benchmark (ours and Flower side by side in one run); ``make bench``.

Each script prints its table and writes bench/results/<name>.json; this one also writes
bench/results/summary.json with the headline ratios.  ``--quick`` (5 s steps, 10k tasks) checks
the harness in a few minutes; without it expect ~30 min (plus ~15 min per 1M size).

Run: ``.venv/bin/python bench/run_all.py [--quick] [--sizes 10000,100000,1000000]``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    bench_dbops,
    bench_ingest,
    bench_list,
    bench_memory,
    bench_recon_dns,
    bench_recon_memory,
    bench_recon_portscan,
    bench_revoke,
    bench_sites,
    bench_submit,
)
from bench.common import fmt_ratio, machine, table, write_result


def recon_rows(out: dict[str, Any]) -> list[list[Any]]:
    """Summary rows of the recon benchmarks (their anchor named in the figure; ratio > 1: ours ahead)."""
    rows: list[list[Any]] = []
    if out.get("recon_portscan"):
        for c in out["recon_portscan"]["results"]:
            rows.append(
                [
                    f"port scan {c['case']}, median s (anchor: nmap -sT; same ports: "
                    f"{'yes' if c['same_ports_every_round'] else 'no'})",
                    c["ours_median_s"],
                    c["nmap_median_s"],
                    fmt_ratio(c["ratio_median"]),
                ]
            )
    if out.get("recon_dns"):
        h = out["recon_dns"]["headline"]
        rows.append(
            [
                "DNS brute force, wildcard zone, names/s (anchor: the lab server's ceiling)",
                h["ours_per_s"],
                h["ceiling_per_s"],
                fmt_ratio(h["ours_of_ceiling"]),
            ]
        )
        rows.append(
            [
                "DNS brute force, names/s (anchor: dnspython asyncio, the previous client)",
                h["ours_per_s"],
                h["previous_per_s"],
                fmt_ratio(h["ours_per_s"] / h["previous_per_s"] if h["previous_per_s"] else None),
            ]
        )
    if out.get("recon_memory"):
        for c in out["recon_memory"]["results"]:
            rows.append(
                [f"worker peak RSS MB, {c['case']} (anchor: the bound)", c["peak_mb"], c["bound_mb"], "—"]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="listing/memory sizes, e.g. 10000,100000,1000000")
    parser.add_argument(
        "--only",
        default="ingest,list,submit,dbops,revoke,memory,recon_portscan,recon_dns,recon_memory,sites",
        help="comma-separated subset",
    )
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    wanted = args.only.split(",")
    out: dict[str, Any] = {}
    runs = {
        "ingest": lambda: bench_ingest.main(quick),
        "list": lambda: bench_list.main(quick + (["--sizes", args.sizes] if args.sizes else [])),
        "submit": lambda: bench_submit.main(quick),
        "dbops": lambda: bench_dbops.main(["--tasks", "500" if args.quick else "2000"]),
        "revoke": lambda: bench_revoke.main(quick),
        # Without --quick: 1M tasks through the real consumer, then the 1M listing comparison.
        "memory": lambda: bench_memory.main(quick or ["--list"]),
        # Recon: ours against nmap -sT, the lab DNS server's ceiling and dnspython, and a memory bound.
        "recon_portscan": lambda: bench_recon_portscan.main(quick),
        "recon_dns": lambda: bench_recon_dns.main(quick),
        "recon_memory": lambda: bench_recon_memory.main(quick),
        "sites": lambda: bench_sites.main(quick),
    }
    for name in wanted:
        print(f"\n=== {name} ===", flush=True)
        try:
            out[name] = runs[name]()
        except Exception:  # one failing benchmark must not hide the others' figures
            traceback.print_exc()
            out[name] = None
    rows = []
    if out.get("ingest"):
        s = out["ingest"]["sustained"]
        rows.append(["ingestion, sustained tasks/s", s["ours"], s["flower"], fmt_ratio(s["ratio"])])
    if out.get("list"):
        for res in out["list"]["results"]:
            for c in res["cases"]:
                rows.append(
                    [
                        f"list {res['tasks']}: {c['case']} p50 ms",
                        c["ours_p50_ms"],
                        c["flower_p50_ms"],
                        fmt_ratio(c["p50_ratio"]),
                    ]
                )
            m = res["memory_mb"]
            rows.append(
                [
                    f"RSS after {res['tasks']} tasks, MB (API+consumer / Flower)",
                    round(m["ours_api"] + m["ours_consumer"], 1),
                    m["flower"],
                    "—",
                ]
            )
    if out.get("submit"):
        s = out["submit"]
        ours, theirs = s["ours"], s["flower"]
        rows.append(
            [
                f"submission, accepted/s (best of each: ours {ours['processes']} API process(es) "
                f"× {ours['clients']} clients, Flower × {theirs['clients']})",
                ours["per_second"],
                theirs["per_second"],
                fmt_ratio(s["ratio"]),
            ]
        )
    if out.get("memory"):
        listing = out["memory"].get("listing") or {}
        last = out["memory"]["checkpoints"][-1]["tasks"] if out["memory"]["checkpoints"] else 0
        for c in listing.get("cases", []):
            rows.append(
                [
                    f"list {last}: {c['case']} p50 ms",
                    c["ours_p50_ms"],
                    c["flower_p50_ms"],
                    fmt_ratio(c["p50_ratio"]),
                ]
            )
        for row in out["memory"]["checkpoints"]:
            rows.append(
                [
                    f"RSS after {row['tasks']} ingested tasks, MB (API+consumer / Flower)",
                    round(row["ours_api_mb"] + row["ours_consumer_mb"], 1),
                    row["flower_mb"],
                    "—",
                ]
            )
    rows += recon_rows(out)
    print("\n=== summary (ratio > 1: ours ahead) ===")
    print(table(["figure", "ours", "Flower", "ratio"], rows))
    print(machine())
    write_result("summary", {"quick": args.quick, "rows": rows})


if __name__ == "__main__":
    main()
