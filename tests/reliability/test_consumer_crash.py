"""Item 1: kill -9 the event consumer while ~2,000 tasks run; every task ends in its true status.

On Redis, events sent while no consumer listens are gone: the restarted consumer
reconciles every non-terminal task from the result backend (at start and every
``events.reconcile_interval``).  On RabbitMQ the consumer's durable named queue
keeps the events, and messages are acknowledged only after the database write,
so the unacknowledged batch of the killed consumer is delivered again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import (
    Server,
    Submitted,
    create_many,
    fast_stack,
    lost,
    mixed_load,
    wait_consuming,
    wait_final,
)
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration

N = 1800


def _crash_consumer_under_load(stack: Stack) -> tuple[Submitted, float]:
    """Submit N tasks in the background; kill -9 the consumer a third in, restart it two thirds in."""
    result: dict[str, Any] = {}

    def submit() -> None:
        result["sub"] = create_many(stack, mixed_load(N), threads=12)

    progress = Submitted()
    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    # create_many fills its Submitted only at the end; watch the store instead.
    wait_for(lambda: stack.db.tasks.count_documents({}) >= N // 3, timeout=120, what="a third submitted")
    stack.kill_part("ingest")
    killed = time.monotonic()
    wait_for(lambda: stack.db.tasks.count_documents({}) >= 2 * N // 3, timeout=120, what="two thirds")
    stack.start_part("ingest", "ingest")
    down = time.monotonic() - killed
    thread.join(240)
    assert not thread.is_alive(), "submission did not finish"
    progress = result["sub"]
    assert len(progress.expected) == N
    return progress, down


def test_consumer_kill9_redis_reconciles_every_task(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, events={"reconcile_interval": 5.0})
    try:
        stack.start()
        wait_consuming(stack)
        began = time.monotonic()
        sub, down = _crash_consumer_under_load(stack)
        wait_consuming(stack, count=2)
        seen = wait_final(stack, sub.expected, timeout=150)
        took = time.monotonic() - began
        missing = lost(sub.expected, seen)
        assert not missing, f"{len(missing)} task(s) not in their true state, e.g. {missing[:5]}"
        assert "reconciled" in stack.log("ingest"), (
            "the restarted consumer reconciled from the result backend"
        )
        ok = sum(1 for s in seen.values() if s == "SUCCESS")
        record(
            fault="kill -9 the consumer mid-load, restart it",
            load=f"{N} tasks ({N // 10} fail), 2 workers × 2",
            outcome=f"consumer down {down:.1f} s; all {ok} SUCCESS + {N - ok} FAILURE true "
            f"after {took:.0f} s (reconciled from the result backend)",
            lost=len(missing),
            broker="Redis",
        )
    finally:
        stack.close()


def test_consumer_kill9_rabbitmq_loses_no_event(
    tmp_path: Path, rabbitmq: str, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", rabbitmq, mongo_server, events={"reconcile_interval": 3600.0})
    try:
        stack.start()
        wait_consuming(stack)
        began = time.monotonic()
        sub, down = _crash_consumer_under_load(stack)
        wait_consuming(stack, count=2)
        seen = wait_final(stack, sub.expected, timeout=150)
        took = time.monotonic() - began
        missing = lost(sub.expected, seen)
        assert not missing, f"{len(missing)} task(s) not in their true state, e.g. {missing[:5]}"
        assert "reconciled" not in stack.log("ingest"), "no result backend: the durable queue alone suffices"
        ok = sum(1 for s in seen.values() if s == "SUCCESS")
        record(
            fault="kill -9 the consumer mid-load, restart it",
            load=f"{N} tasks ({N // 10} fail), 2 workers × 2",
            outcome=f"consumer down {down:.1f} s; all {ok} SUCCESS + {N - ok} FAILURE true "
            f"after {took:.0f} s (durable queue, ack after write; no reconciliation)",
            lost=len(missing),
            broker="RabbitMQ",
        )
    finally:
        stack.close()
