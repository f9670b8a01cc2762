"""Item 2: kill -9 a worker, or one of its pool processes, mid-task.

The task ends FAILURE with a reason naming the lost worker (or is redelivered
when its type is ``acks_late``), nothing stays STARTED, and no process the task
started outlives it.  Messages the dead worker had reserved but not started
go to another worker.

RabbitMQ redelivers a dead worker's unacknowledged messages itself.  A Redis
broker would only after its visibility timeout (6 h here); the consumer gives
them back as soon as it presumes the worker dead (:mod:`controlplane.bus.redelivery`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Server, fast_stack
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ProcessLookupError):
        return False


def spawn_and_wait(stack: Stack, pidfile: Path, seconds: float = 120) -> tuple[str, int, int]:
    """A task that started a child process; returns (celery_id, child pid, pool process pid)."""
    cid = stack.create("spawn_task", {"name": "spawner", "seconds": seconds, "pidfile": str(pidfile)})
    stack.wait_status(cid, "STARTED")
    pids = wait_for(lambda: pidfile.exists() and pidfile.read_text().split(), what="pids of the task")
    child, pool = int(pids[0]), int(pids[1])
    assert alive(child) and alive(pool)
    return cid, child, pool


def reserved_task(stack: Stack) -> str:
    """A task the worker received but did not start (every pool process of it busy): its message
    is reserved, waiting in the worker."""
    cid = stack.create("noop_task", {"name": "reserved"})
    wait_for(
        lambda: (stack.db.tasks.find_one({"celery_id": cid}) or {}).get("received_time"),
        what="a task received (reserved) by the busy worker",
    )
    assert stack.detail(cid)["status"] == "PENDING"
    return cid


def test_worker_kill9_fails_its_task_with_a_reason(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, workers=1, concurrency=2)
    try:
        stack.start()
        cid, child, pool = spawn_and_wait(stack, tmp_path / "spawn.pid")
        other = stack.create("busy_task", {"name": "busy", "seconds": 120})
        stack.wait_status(other, "STARTED")
        stack.kill_part("worker0")
        killed = time.monotonic()
        done = [stack.wait_status(c, "SUCCESS", "FAILURE", "REVOKED", timeout=40) for c in (cid, other)]
        took = time.monotonic() - killed
        for d in done:
            assert d["status"] == "FAILURE", d
            assert "WorkerLostError" in d["exception"] and "heartbeat" in d["exception"], d
        wait_for(lambda: not alive(pool), timeout=10, what="the pool process gone")
        wait_for(lambda: not alive(child), timeout=10, what="the task's child process gone")
        assert stack.db.tasks.count_documents({"status": "STARTED"}) == 0
        record(
            fault="kill -9 a worker (main process) mid-task",
            load="2 running tasks (one with a child process)",
            outcome=f'both FAILURE "{done[0]["exception"][:60]}…" {took:.0f} s after the kill; '
            "pool processes and the task's child gone",
            lost=0,
            broker="Redis",
        )
    finally:
        stack.close()


def test_pool_child_kill9_fails_its_task_and_the_worker_goes_on(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, workers=1, concurrency=2)
    try:
        stack.start()
        cid, child, pool = spawn_and_wait(stack, tmp_path / "spawn.pid")
        os.kill(pool, signal.SIGKILL)
        killed = time.monotonic()
        done = stack.wait_status(cid, "SUCCESS", "FAILURE", "REVOKED", timeout=30)
        took = time.monotonic() - killed
        assert done["status"] == "FAILURE" and "WorkerLostError" in done["exception"], done
        assert "SIGKILL" in done["exception"], done
        wait_for(lambda: not alive(child), timeout=10, what="the task's child process gone")
        after = [stack.create("noop_task", {"name": f"after{i}"}) for i in range(4)]
        for c in after:
            assert stack.wait_status(c, "SUCCESS", "FAILURE", timeout=30)["status"] == "SUCCESS"
        record(
            fault="kill -9 a pool process mid-task",
            load="1 running task with a child process, then 4 more",
            outcome=f'FAILURE "{done["exception"][:60]}…" {took:.1f} s after the kill; its child gone; '
            "the worker ran the next 4 tasks",
            lost=0,
            broker="Redis",
        )
    finally:
        stack.close()


def test_worker_kill9_redelivers_an_acks_late_task_rabbitmq(
    tmp_path: Path, rabbitmq: str, mongo_server: str, record: Any
) -> None:
    safe = {"task": "workers.tasks.testing:sleep", "label": "Retry-safe sleep (test)", "acks_late": True}
    stack = fast_stack(
        tmp_path / "stack", rabbitmq, mongo_server, workers=2, concurrency=1, tasks={"safe_task": safe}
    )
    try:
        stack.start()
        cid = stack.create("safe_task", {"name": "safe", "seconds": 4})
        first = stack.wait_status(cid, "STARTED")["worker"]
        victim = next(n for n in ("worker0", "worker1") if first.startswith(f"w{n[-1]}-"))
        stack.kill_part(victim)
        killed = time.monotonic()
        done = stack.wait_status(cid, "SUCCESS", "FAILURE", "REVOKED", timeout=60)
        took = time.monotonic() - killed
        assert done["status"] == "SUCCESS", done
        assert done["worker"] != first, "the surviving worker ran the redelivered message"
        record(
            fault="kill -9 the worker running an `acks_late` task, a second worker up",
            load="1 running task of a retry-safe type",
            outcome=f"message redelivered; SUCCESS on the other worker {took:.0f} s after the kill",
            lost=0,
            broker="RabbitMQ",
        )
    finally:
        stack.close()


def test_worker_kill9_redis_gives_back_its_reserved_and_acks_late_messages(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    safe = {"task": "workers.tasks.testing:sleep", "label": "Retry-safe sleep (test)", "acks_late": True}
    stack = fast_stack(
        tmp_path / "stack", own_redis.url, mongo_server, workers=1, concurrency=2, tasks={"safe_task": safe}
    )
    try:
        stack.start()
        late = stack.create("safe_task", {"name": "safe", "seconds": 3})
        stack.wait_status(late, "STARTED")
        early = stack.create("busy_task", {"name": "busy", "seconds": 120})
        stack.wait_status(early, "STARTED")
        waiting = reserved_task(stack)  # both pool processes are busy
        stack.kill_part("worker0")
        killed = time.monotonic()
        stack.start_worker(1)
        # The acks_late task is presumed lost (FAILURE) first, then its redelivered run succeeds.
        done = {c: stack.wait_status(c, "SUCCESS", timeout=60) for c in (late, waiting)}
        took = time.monotonic() - killed
        lost = stack.wait_status(early, "FAILURE", timeout=30)
        assert "WorkerLostError" in lost["exception"], lost
        for cid, doc in done.items():
            assert doc["worker"].startswith("w1-"), f"{cid} ran on the new worker: {doc}"
        statuses = [d["status"] for d in stack.db.tasks.find({}, {"status": 1})]
        assert len(statuses) == 3 and not {"PENDING", "STARTED"} & set(statuses), statuses
        record(
            fault="kill -9 a worker holding an `acks_late` task, a plain one and a reserved one",
            load="2 running tasks, 1 reserved; a new worker started",
            outcome=f"acks_late and reserved messages given back; both SUCCESS on the new worker "
            f"{took:.0f} s after the kill; the plain one FAILURE (WorkerLostError)",
            lost=0,
            broker="Redis",
        )
    finally:
        stack.close()


def test_worker_kill9_and_restart_redis_gives_back_what_the_old_process_reserved(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    # Heartbeat silence would take 30 s to count: only the restart can explain an earlier give-back.
    stack = fast_stack(
        tmp_path / "stack",
        own_redis.url,
        mongo_server,
        workers=1,
        concurrency=1,
        events={"worker_timeout": 30.0},
    )
    try:
        stack.start()
        running = stack.create("busy_task", {"name": "busy", "seconds": 120})
        stack.wait_status(running, "STARTED")
        waiting = reserved_task(stack)
        stack.kill_part("worker0")
        killed = time.monotonic()
        stack.start_worker(0)  # the same hostname, a new process
        done = stack.wait_status(waiting, "SUCCESS", timeout=25)
        took = time.monotonic() - killed
        lost = stack.wait_status(running, "FAILURE", timeout=10)
        assert "restarted while the task ran" in lost["exception"], lost
        assert took < 30, "given back on the restart, not after the heartbeat timeout"
        record(
            fault="kill -9 a worker and restart it under the same name at once",
            load="1 running task, 1 reserved",
            outcome=f"reserved message given back; SUCCESS {took:.0f} s after the kill; the running "
            f'one FAILURE "{lost["exception"][:50]}…"',
            lost=0,
            broker="Redis",
        )
        assert done["worker"].startswith("w0-")
    finally:
        stack.close()
