"""Item 6: two ``controlplane ingest`` processes; one holds the lease, the other takes over when it dies."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Server, create_many, fast_stack, lost, mixed_load, wait_final
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration

N = 600
HOLD = "holding the ingest lease"


def _holders(stack: Stack) -> list[str]:
    return [n for n in ("ingest", "ingest2") if n in stack.procs and HOLD in stack.log(n)]


def test_two_consumers_one_active_standby_takes_over(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, events={"reconcile_interval": 5.0})
    try:
        stack.start()
        stack.start_part("ingest2", "ingest")
        wait_for(lambda: _holders(stack), timeout=30, what="a lease holder")
        time.sleep(3)  # the standby had time to try
        holders = _holders(stack)
        assert len(holders) == 1, f"exactly one consumer is active: {holders}"
        active = holders[0]
        standby = "ingest2" if active == "ingest" else "ingest"
        lease = stack.db.leases.find_one({"_id": "ingest"})
        assert lease and int(lease["owner"].split(":")[1]) == stack.procs[active].pid
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(sub=create_many(stack, mixed_load(N))))
        thread.start()
        wait_for(lambda: stack.db.tasks.count_documents({}) >= N // 3, timeout=60, what="load under way")
        stack.kill_part(active)
        killed = time.monotonic()
        wait_for(lambda: HOLD in stack.log(standby), timeout=30, what="the standby taking over")
        takeover = time.monotonic() - killed
        thread.join(120)
        sub = result["sub"]
        seen = wait_final(stack, sub.expected, timeout=90)
        missing = lost(sub.expected, seen)
        assert not missing, f"{len(missing)} task(s) not in their true state, e.g. {missing[:5]}"
        lease_seconds = stack.config["events"]["lease_seconds"]
        assert takeover < lease_seconds + 5, f"takeover took {takeover:.1f}s"
        record(
            fault="two consumers; kill -9 the active one mid-load",
            load=f"{N} tasks ({N // 10} fail)",
            outcome=f"one active at a time (lease in MongoDB); standby took over in {takeover:.1f} s "
            f"(lease {lease_seconds:g} s); every task true",
            lost=len(missing),
            broker="Redis",
        )
    finally:
        stack.close()
