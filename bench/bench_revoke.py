"""Revoke: time from ``DELETE /api/celery_task/{id}/`` to the process running the task being gone,
and to ``GET`` showing REVOKED, p50/p99 over N runs.

Each run starts a task that spawns a child process and writes "<child pid> <pool process pid>"
to a file (``workers.tasks.testing:spawn``), waits until it runs, sends DELETE and polls ``/proc``
and the detail endpoint.  One prefork worker, concurrency 2, on the embedded store and the
machine's Redis (database 14).

Run: ``.venv/bin/python bench/bench_revoke.py [--runs 100] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Mongo, ms, our_stack, pct, start_ours, table, workdir, write_result

DB = 14


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def one_run(stack: Any, base: Path, i: int) -> tuple[float, float, float]:
    pidfile = base / f"run{i}.pid"
    cid = stack.create("spawn_task", {"name": f"revoke-{i}", "seconds": 120, "pidfile": str(pidfile)})
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {i}: the task did not start")
        time.sleep(0.01)
    child, pool = (int(p) for p in pidfile.read_text().split())
    started = time.monotonic()
    resp = stack.request("DELETE", f"/api/celery_task/{cid}/")
    answered = time.monotonic() - started
    assert resp.code == 200, resp
    gone = revoked = None
    while gone is None or revoked is None:
        now = time.monotonic() - started
        if now > 30:
            raise TimeoutError(f"run {i}: not stopped after 30 s")
        if gone is None and not alive(pool) and not alive(child):
            gone = now
        if revoked is None and stack.detail(cid)["status"] == "REVOKED":
            revoked = now
        time.sleep(0.005)
    return answered, gone, revoked


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 runs")
    args = parser.parse_args(argv)
    runs = 20 if args.quick else args.runs
    base = workdir()
    mongo = Mongo(base)
    stack = our_stack(base, mongo.url, DB, workers=1)
    try:
        start_ours(stack)
        samples = [one_run(stack, base, i) for i in range(runs)]
    finally:
        stack.close()
        mongo.close()
    columns = list(zip(*samples, strict=True))
    names = ["DELETE answered", "process tree gone", "GET shows REVOKED"]
    rows = [[name, ms(pct(col, 50)), ms(pct(col, 99))] for name, col in zip(names, columns, strict=True)]
    print(table(["after DELETE", "p50 ms", "p99 ms"], rows))
    print(f"({runs} runs)")
    result = {
        name: {"p50": pct(col, 50), "p99": pct(col, 99)} for name, col in zip(names, columns, strict=True)
    }
    write_result("revoke", {"runs": runs, "results": result})
    return result


if __name__ == "__main__":
    main()
