"""Pieces shared by the recon benchmarks (``bench_recon_*.py``): a store, contexts, rounds, time bounds.

Every recon benchmark runs the project's pipeline (``run_ip_task`` / ``run_domain_task`` on the
embedded MongoDB-wire server, results written as a worker writes them) and its anchor side by
side in one run, alternating rounds so that both see the same machine load, and bounds its own
time. All traffic stays on loopback, DNS included (a lab DNS server on 127.0.0.1).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymongo

from bench.common import Mongo, workdir
from workers.recon.context import ReconContext

_ids = itertools.count(1)


@contextmanager
def recon_store() -> Iterator[Any]:
    """A pymongo Database on a fresh embedded server (nx-27017), removed afterwards."""
    mongo = Mongo(workdir())
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo.url, serverSelectionTimeoutMS=20000)
    try:
        yield client["recon_bench"]
    finally:
        client.close()
        mongo.close()


def context(db: Any, resolvers: list[str], **overrides: Any) -> ReconContext:
    """A ReconContext on the bench store: everything on loopback is in scope; nothing stops it."""
    fields: dict[str, Any] = {
        "task_id": f"bench-{time.time_ns()}-{next(_ids)}",
        "db": db,
        "resolvers": resolvers,
        "progress": lambda stage, done, total: None,
        "should_stop": lambda: False,
        "scope_check": lambda host: True,
    }
    fields.update(overrides)
    return ReconContext(**fields)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def summary(seconds: list[float]) -> dict[str, float]:
    """Median and best of a list of run times (rounded)."""
    return {"median_s": round(statistics.median(seconds), 3), "best_s": round(min(seconds), 3)}


def ratio(anchor: float, ours: float) -> float:
    """How many times faster ours is (> 1: ours ahead), from times."""
    return round(anchor / ours, 2) if ours else 0.0
