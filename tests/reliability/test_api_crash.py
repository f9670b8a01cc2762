"""kill -9 the API while clients create tasks: every task it stored ends in its true state.

An API process that dies between storing a batch of tasks and publishing their
messages leaves tasks with no message anywhere; the consumer's redelivery check
publishes them again (on Redis by searching the broker, on RabbitMQ once their
queue has drained).  Tasks the API had published run as usual.  None may stay
PENDING.  Whether a kill lands in that window depends on timing, so the row says
how many tasks were sent again; ``tests/bus/test_redelivery.py`` forces the window.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Server, fast_stack, non_terminal, wait_consuming
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def crash_under_load(stack: Stack, clients: int = 8, seconds: float = 2.0) -> tuple[set[str], int]:
    """Clients create no-op tasks; the API is killed mid-stream.  Returns (ids answered 200, failures)."""
    accepted: set[str] = set()
    failed = 0
    stop = threading.Event()
    lock = threading.Lock()

    def run(index: int) -> None:
        nonlocal failed
        i = 0
        while not stop.is_set():
            i += 1
            body = {"task_type": "noop_task", "data": {"name": f"c{index}-{i}"}}
            try:
                resp = stack.request("POST", "/api/celery_task/", body, timeout=10)
            except (OSError, http.client.HTTPException):
                with lock:
                    failed += 1
                time.sleep(0.05)
                continue
            if resp.code == 200:
                with lock:
                    accepted.add(str(resp.data["celery_id"]))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stack.kill_part("serve")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    return accepted, failed


def check_api_crash(stack: Stack, broker: str, record: Any) -> None:
    stack.start()
    wait_consuming(stack)
    accepted, failed = crash_under_load(stack)
    killed = time.monotonic()
    assert accepted and failed, "the kill landed while clients were creating tasks"
    wait_for(lambda: not non_terminal(stack), timeout=90, what="every stored task terminal")
    took = time.monotonic() - killed
    docs = list(stack.db.tasks.find({}, {"celery_id": 1, "status": 1, "resent": 1}))
    stored = {d["celery_id"] for d in docs}
    assert accepted <= stored, "every task answered 200 is stored"
    wrong = [d for d in docs if d["status"] != "SUCCESS"]
    assert not wrong, f"{len(wrong)} no-op task(s) not SUCCESS, e.g. {wrong[:3]}"
    resent = sum(1 for d in docs if d.get("resent"))
    record(
        fault="kill -9 the API while clients create tasks",
        load=f"8 clients creating no-op tasks: {len(accepted)} answered 200, {len(stored)} stored",
        outcome=f"all {len(stored)} stored tasks SUCCESS {took:.0f} s after the kill; "
        f"{resent} stored but never published, sent again by the consumer",
        lost=len(accepted - {d["celery_id"] for d in docs if d["status"] == "SUCCESS"}),
        broker=broker,
    )


EVENTS = {"lost_after": 3.0, "reconcile_interval": 1.0}


def test_api_kill9_redis_leaves_no_stored_task_behind(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, events=EVENTS)
    try:
        check_api_crash(stack, "Redis", record)
    finally:
        stack.close()


def test_api_kill9_rabbitmq_leaves_no_stored_task_behind(
    tmp_path: Path, rabbitmq: str, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", rabbitmq, mongo_server, events=EVENTS)
    try:
        check_api_crash(stack, "RabbitMQ", record)
    finally:
        stack.close()
