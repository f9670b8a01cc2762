"""Soak: ``controlplane up`` (shipped config.yaml) under a steady mixed load, with random kills.

Runs for ``--minutes`` (default 30).  A load thread creates sleep (0.1–1 s), no-op and failing
tasks at ``--rate`` per second; every ``--kill-every`` seconds (jittered) one part of the stack, picked at
random, is killed with SIGKILL: the consumer, the worker, a pool process, the scheduler, the API,
the embedded Redis or database server, or (with ``--group-kills``) ``up``'s whole process group.
``up`` restarts a crashed part itself; if ``up`` exits (or after a group kill) the soak starts it
again on the same data, and counts it.  At the end the load stops, every accepted task is given
``--settle`` seconds to reach a final state, and the run reports: tasks accepted, lost (accepted
but never final, or unknown to the API), stuck (non-final at the end), the p50/p99 time from
create to final state, and the memory (RSS) of every process of the stack.

Writes bench/results/soak.json and prints a table.  All traffic stays on loopback; the run
bounds its own time.  Example: ``.venv/bin/python bench/soak.py --minutes 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.upstack import TERMINAL, UpStack  # noqa: E402

PARTS = ("ingest", "worker", "pool", "scheduler", "serve", "redis", "mongo")


class Ledger:
    """What the load created and when each task was first seen final."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.refused = 0
        self.lock = threading.Lock()

    def percentile(self, q: float) -> float | None:
        spans = sorted(self.final[c] - self.created[c] for c in self.final)
        if not spans:
            return None
        return spans[min(len(spans) - 1, int(q * len(spans)))]


def load(stack: UpStack, ledger: Ledger, rate: float, stop: threading.Event, rng: random.Random) -> None:
    """Create tasks at ``rate`` per second until ``stop``."""
    gap = 1.0 / rate
    while not stop.is_set():
        began = time.monotonic()
        pick = rng.random()
        data: dict[str, Any]
        if pick < 0.5:
            kind, data = "sleep_task", {"seconds": round(rng.uniform(0.1, 1.0), 2)}
        elif pick < 0.9:
            kind, data = "noop_task", {}
        else:
            kind, data = "fail_task", {"message": "planned"}
        cid = stack.create(kind, data)
        with ledger.lock:
            if cid is None:
                ledger.refused += 1
            else:
                ledger.created[cid] = time.time()
        stop.wait(max(0.0, gap - (time.monotonic() - began)))


def poll(stack: UpStack, ledger: Ledger, stop: threading.Event) -> None:
    """Record when each task is first seen final (a list page per status, newest first)."""
    while not stop.is_set():
        with ledger.lock:
            pending = [c for c in ledger.created if c not in ledger.final]
        for cid in pending[:200]:
            status = stack.status(cid)
            if status in TERMINAL:
                with ledger.lock:
                    ledger.final[cid] = time.time()
                    ledger.status[cid] = status
        stop.wait(0.5)


def kill_one(stack: UpStack, part: str, rng: random.Random) -> bool:
    """SIGKILL one part of the stack; False when it was not running."""
    if part == "group":
        stack.kill_group()
        return True
    children = stack.children()
    if part == "pool":
        worker = children.get("worker")
        pool = worker.children() if worker is not None else []
        target = rng.choice(pool) if pool else None
    else:
        target = children.get(part)
    if target is None:
        return False
    try:
        os.kill(target.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def memory(stack: UpStack) -> dict[str, float]:
    """RSS in MB of ``up`` and each of its parts (a worker with its pool processes summed)."""
    out: dict[str, float] = {}
    if stack.proc is not None:
        try:
            out["up"] = psutil.Process(stack.proc.pid).memory_info().rss / 2**20
        except psutil.Error:
            pass
    for part, proc in stack.children().items():
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            continue
        out[part] = rss / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--rate", type=float, default=2.0, help="tasks created per second (the default worker runs 2 at once)"
    )
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills (jittered)")
    parser.add_argument("--group-kills", action="store_true", help="also kill up's whole process group")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds for the last tasks to finish")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    stack = UpStack(workdir).start()
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(stack, ledger, args.rate, stop, rng), daemon=True),
        threading.Thread(target=poll, args=(stack, ledger, stop), daemon=True),
    ]
    for t in threads:
        t.start()
    kills: list[tuple[float, str, bool]] = []
    restarts = 0
    began = time.monotonic()
    end = began + args.minutes * 60
    parts = [*PARTS, "group"] if args.group_kills else list(PARTS)
    next_kill = began + args.kill_every * rng.uniform(0.5, 1.5)
    try:
        while time.monotonic() < end:
            time.sleep(1.0)
            if stack.proc is not None and stack.proc.poll() is not None:
                restarts += 1
                stack.start()
            if time.monotonic() >= next_kill:
                part = rng.choice(parts)
                done = kill_one(stack, part, rng)
                kills.append((time.monotonic() - began, part, done))
                print(
                    f"[{time.monotonic() - began:7.1f}s] killed {part}" + ("" if done else " (not running)")
                )
                if part == "group":
                    restarts += 1
                    stack.start()
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
        threads[0].join(0)
        stop.set()
        threads[0].join(15)
        settle_end = time.monotonic() + args.settle
        stop_poll = threading.Event()
        while time.monotonic() < settle_end and len(ledger.final) < len(ledger.created):
            poll_once = threading.Thread(target=poll, args=(stack, ledger, stop_poll), daemon=True)
            poll_once.start()
            time.sleep(2.0)
            stop_poll.set()
            poll_once.join(30)
            stop_poll.clear()
        stuck = [c for c in ledger.created if c not in ledger.final]
        states = {c: stack.status(c) for c in stuck}
        unknown = [c for c, s in states.items() if s is None]
        result: dict[str, Any] = {
            "name": "soak",
            "settings": "shipped config.yaml under controlplane up (only data dir and ports moved)",
            "seed": seed,
            "minutes": args.minutes,
            "rate": args.rate,
            "kills": [{"at_s": round(a, 1), "part": p, "done": d} for a, p, d in kills],
            "up_restarts_by_soak": restarts,
            "accepted": len(ledger.created),
            "refused": ledger.refused,
            "final": len(ledger.final),
            "lost": len(unknown),
            "stuck": len(stuck) - len(unknown),
            "stuck_states": sorted({str(s) for s in states.values()}),
            "p50_to_final_s": ledger.percentile(0.5),
            "p99_to_final_s": ledger.percentile(0.99),
            "memory_mb": memory(stack),
        }
    finally:
        stop.set()
        stack.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print()
    print(f"| soak ({args.minutes:g} min, {args.rate:g}/s, {len(kills)} kills) | value |")
    print("|---|---|")
    for key in ("accepted", "refused", "final", "lost", "stuck", "p50_to_final_s", "p99_to_final_s"):
        value = result[key]
        print(f"| {key} | {value:.2f} |" if isinstance(value, float) else f"| {key} | {value} |")
    print(f"| memory (MB) | {result['memory_mb']} |")
    return 0 if result["lost"] == 0 and result["stuck"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
