"""Each part of ``controlplane up`` (shipped config.yaml) killed in turn under load.

One ``up``, a steady mixed load, and SIGKILL for the consumer, the worker, a pool process,
the embedded Redis and the embedded database server, one after another.  ``up`` restarts
each; afterwards every task the API accepted must reach its true final state (see
:func:`tests.reliability.test_up_crash.untrue`), and the stack must still take new work.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.test_up_crash import Load, final_states, untrue
from tests.stack import wait_for
from tests.upstack import UpStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTS = ("ingest", "worker", "pool", "redis", "mongo")
# Seconds after the last kill within which every accepted task must be final (a task running
# on a killed worker is presumed lost after events.worker_timeout, 15 s by default).
BOUND = 120.0


def kill(stack: UpStack, part: str) -> int:
    """SIGKILL one part; returns the pid killed."""
    children = stack.children()
    if part == "pool":
        pool = children["worker"].children()
        assert pool, "the worker has no pool process"
        target = pool[0]
    else:
        target = children[part]
    os.kill(target.pid, signal.SIGKILL)
    return target.pid


def replaced(stack: UpStack, part: str, pid: int) -> bool:
    """Whether ``part`` runs again as another process than ``pid``."""
    now = stack.children().get(part)
    return now is not None and now.pid != pid


def test_each_part_of_up_killed_under_load_is_restarted_and_no_task_is_lost(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    rng = random.Random(7)
    stack = UpStack(tmp_path / "up").start()
    kills: list[float] = []
    restarted: list[str] = []
    try:
        with Load(stack, rng) as load:
            for part in PARTS:
                time.sleep(3.0)
                pid = kill(stack, part)
                kills.append(time.time())
                if part != "pool":  # up restarts its own children; Celery replaces a pool process
                    wait_for(
                        lambda part=part, pid=pid: (
                            part in stack.children() and stack.children()[part].pid != pid
                        ),
                        timeout=60,
                        what=f"{part} restarted by up",
                    )
                    restarted.append(part)
                wait_for(stack.healthy, timeout=60, what="the API healthy again")
            time.sleep(3.0)
        after = [stack.create("noop_task", {}) for _ in range(3)]
        assert all(after), "the stack takes new work after the kills"
        accepted = {**load.accepted, **{cid: "noop_task" for cid in after if cid}}
        began = time.monotonic()
        details = final_states(stack, list(accepted), BOUND)
        took = time.monotonic() - began
        wrong = {cid: untrue(kind, details.get(cid, {}), kills) for cid, kind in accepted.items()}
        wrong = {cid: why for cid, why in wrong.items() if why}
        assert not wrong, f"{len(wrong)} of {len(accepted)} tasks not in their true state: {wrong}"
        log = (stack.data / "logs" / "up.log").read_text(encoding="utf-8", errors="replace")
        for part in restarted:
            assert part in log, f"up.log does not name the restart of {part}"
        lost_worker = sum(1 for d in details.values() if "WorkerLost" in str(d.get("exception")))
        record(
            fault="kill -9 each part of `up` in turn under load: consumer, worker, a pool process, "
            "Redis, the database server",
            load="~15 creates/s: sleep (0.1–1.5 s), noop and failing tasks",
            outcome=f"each restarted by `up`; {len(accepted)} accepted tasks all final {took:.0f} s after "
            f"the last kill; {lost_worker} running at a kill FAILURE (WorkerLostError)",
            lost=0,
            broker="Redis (embedded)",
            settings="shipped config.yaml under `controlplane up` (only data dir and ports moved)",
        )
    finally:
        stack.kill_group()
