"""Workers restart: revoked queued tasks never run, and tasks of the dead worker do not stay STARTED."""

from __future__ import annotations

import re
import signal
import time

import pytest
from pymongo import ReturnDocument

from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_revoked_queued_tasks_never_run_after_worker_restart(stack: Stack) -> None:
    busy = [stack.create("busy_task", {"name": f"busy{i}", "seconds": 60}) for i in range(2)]
    for cid in busy:
        stack.wait_status(cid, "STARTED")
    queued = [stack.create("sleep_task", {"name": f"q{i}", "seconds": 0.1}) for i in range(3)]
    resp = stack.request("POST", "/api/celery_task/batch_revoke/", {"celery_ids": queued, "terminate": False})
    assert [r["code"] for r in resp.data["results"]] == [200, 200, 200]
    # Cold shutdown: the running tasks die with the worker, the queued messages go back to the broker.
    stack.stop_part("worker0", sig=signal.SIGQUIT)
    stack.start_worker(0)
    stack.wait_workers(1)
    log = wait_for(
        lambda: (
            all(
                f"Discarding revoked task: controlplane.sleep_task[{c}]" in stack.log("worker0")
                for c in queued
            )
            and stack.log("worker0")
        ),
        timeout=30,
        what="the new worker to receive the revoked messages",
    )
    preloaded = re.findall(r"preloaded (\d+) revoked task id", log)
    assert preloaded and int(preloaded[-1]) >= 3, "the restarted worker loads the persisted revokes"
    for cid in queued:
        assert f"Discarding revoked task: controlplane.sleep_task[{cid}]" in log
        detail = stack.detail(cid)
        assert detail["status"] == "REVOKED" and detail["start_time"] is None
    # The busy tasks' worker process is gone: they end FAILURE, not STARTED forever.
    for cid in busy:
        done = stack.wait_status(cid, "FAILURE", timeout=30)
        assert "WorkerLostError" in done["exception"]


def test_worker_checks_the_store_when_the_revoke_broadcast_was_missed(stack: Stack) -> None:
    """A revoke persisted while no broadcast reached the worker still stops the task before its body."""
    blockers = [stack.create("busy_task", {"name": f"b{i}", "seconds": 3}) for i in range(2)]
    for cid in blockers:
        stack.wait_status(cid, "STARTED")
    queued = stack.create("sleep_task", {"name": "missed-broadcast", "seconds": 0.1})
    # Persisted as the API persists it, with a new revision (as every writer of a task document
    # must: the consumer's writes are conditioned on the revision they merged from, and would
    # overwrite a change that kept it), but with no broadcast to the workers.
    rev = stack.db.counters.find_one_and_update(
        {"_id": "rev"}, {"$inc": {"value": 1}}, return_document=ReturnDocument.AFTER
    )["value"]
    stack.db.tasks.update_one(
        {"celery_id": queued}, {"$set": {"revoke": {"time": time.time(), "terminate": False}, "rev": rev}}
    )
    done = stack.wait_status(queued, "REVOKED", timeout=30)
    assert done["result"] is None
    assert f"task {queued} was revoked before it started" in stack.log("worker0")
