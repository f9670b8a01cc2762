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

from bench import bench_dbops, bench_ingest, bench_list, bench_memory, bench_revoke, bench_submit
from bench.common import fmt_ratio, machine, table, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="listing/memory sizes, e.g. 10000,100000,1000000")
    parser.add_argument(
        "--only", default="ingest,list,submit,dbops,revoke,memory", help="comma-separated subset"
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
    print("\n=== summary (ratio > 1: ours ahead) ===")
    print(table(["figure", "ours", "Flower", "ratio"], rows))
    print(machine())
    write_result("summary", {"quick": args.quick, "rows": rows})


if __name__ == "__main__":
    main()
