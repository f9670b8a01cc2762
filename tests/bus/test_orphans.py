"""Reserved messages whose holder process is gone come back, decided from worker identity.

A worker process using our Redis transport records who holds each message it reserves
(:func:`controlplane.celeryapp.redis_transport.hold_as`); the consumer gives back what a
dead or replaced process held (:meth:`Redeliverer.release_orphans`), and nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from controlplane.bus.liveness import WorkerTracker
from controlplane.bus.redelivery import Redeliverer, _message_id
from controlplane.celeryapp import make_celery
from controlplane.config import Config
from controlplane.store.tasks import TaskStore
from tests.conftest import in_process_config

pytestmark = pytest.mark.integration

TRANSPORT = "controlplane.celeryapp.redis_transport:Transport"

# A worker process: as node argv[3], reserve argv[4] messages of queue argv[2] (acking them when
# argv[5] is "ack"), then say so and wait to be killed.
HOLDER = f"""
import os, sys, time
from kombu import Connection
from controlplane.celeryapp.redis_transport import hold_as
hold_as(sys.argv[3])
with Connection(sys.argv[1], transport="{TRANSPORT}") as conn:
    channel = conn.channel()
    channel.basic_consume("idle-" + sys.argv[2], False, lambda m: None, "idle")
    for _ in range(int(sys.argv[4])):
        message = channel.basic_get(sys.argv[2], no_ack=False)
        assert message is not None
        if sys.argv[5] == "ack":
            message.ack()
    print(os.getpid(), flush=True)
    time.sleep(60)
"""


class Setup:
    """A fresh Redis database, a queue with ``count`` task messages, and a redeliverer."""

    def __init__(self, config: Config, app: Celery, count: int) -> None:
        self.config, self.app = config, app
        self.queue = f"orphans-{uuid.uuid4().hex[:6]}"
        self.ids = [str(uuid.uuid4()) for _ in range(count)]
        for cid in self.ids:
            app.send_task("controlplane.sleep_task", kwargs={"data": {}}, task_id=cid, queue=self.queue)
        self.client = redis.Redis.from_url(config.broker.url)
        self.redeliverer = Redeliverer(app, TaskStore(config.mongo), config)
        self.procs: list[subprocess.Popen[bytes]] = []

    def holder(self, node: str, reserve: int, ack: bool = False) -> int:
        """Start a holder process; returns its pid once it has reserved."""
        argv = [sys.executable, "-c", HOLDER, self.config.broker.url, self.queue, node, str(reserve)]
        proc = subprocess.Popen([*argv, "ack" if ack else "keep"], stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        return int(proc.stdout.readline())

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def queued(self) -> set[str]:
        return {i for i in map(_message_id, self.client.lrange(self.queue, 0, -1)) if i}

    def reserved(self) -> set[str]:
        return {i for i in map(_message_id, self.client.hvals("unacked")) if i}


@pytest.fixture()
def setup(mongo_server: str) -> Iterator[Setup]:
    config = in_process_config(mongo_server, "orphans")
    app = make_celery(config)
    s = Setup(config, app, 3)
    yield s
    s.kill_all()
    s.client.close()
    app.close()


def test_a_live_holders_messages_stay_and_a_replaced_ones_come_back(setup: Setup) -> None:
    setup.holder("w1@lab", reserve=2)
    setup.kill_all()  # kill -9: nothing is acknowledged or restored
    held = setup.reserved()
    assert len(held) == 2 and len(setup.client.hgetall("unacked_holders")) == 2
    # The tracker still thinks the process alive and no other process runs as w1: left alone.
    assert setup.redeliverer.release_orphans(lambda node, pid: True) == []
    assert setup.reserved() == held
    # w1 comes back as a new process (no message for it yet): the old process's messages return.
    setup.holder("w1@lab", reserve=0)
    assert sorted(setup.redeliverer.release_orphans(lambda node, pid: True)) == sorted(held)
    assert setup.reserved() == set() and setup.queued() == set(setup.ids)
    assert setup.client.hlen("unacked_holders") == 0


def test_a_holder_presumed_dead_gives_back_only_its_own(setup: Setup) -> None:
    dead = setup.holder("w1@lab", reserve=1)
    alive = setup.holder("w2@lab", reserve=1)
    by_node = {k.decode(): v.decode() for k, v in setup.client.hgetall("unacked_holders").items()}
    assert len(by_node) == 2
    back = setup.redeliverer.release_orphans(lambda node, pid: pid == alive)
    assert len(back) == 1 and back[0] not in setup.reserved()
    assert len(setup.reserved()) == 1, "the live holder keeps its message"
    assert dead != alive


def test_acknowledged_messages_leave_no_holder_record(setup: Setup) -> None:
    setup.holder("w1@lab", reserve=2, ack=True)
    assert setup.reserved() == set()
    assert setup.client.hlen("unacked_holders") == 0
    assert setup.redeliverer.release_orphans(lambda node, pid: False) == []


def test_tracker_says_who_may_still_hold() -> None:
    tracker = WorkerTracker(timeout=15.0, now=1000.0)
    assert tracker.holds("never-seen@h", 7, now=1010.0), "within the consumer's start grace"
    assert not tracker.holds("never-seen@h", 7, now=1016.0)
    tracker.observe({"type": "worker-online", "hostname": "w@h", "pid": 42, "timestamp": 1001.0}, now=1001.0)
    assert tracker.holds("w@h", 42, now=1005.0)
    assert not tracker.holds("w@h", 41, now=1005.0), "another process of the same node"
    assert not tracker.holds("w@h", 42, now=1030.0), "silent past the timeout"
    tracker.observe({"type": "worker-offline", "hostname": "w@h", "pid": 42, "timestamp": 1031.0}, now=1031.0)
    assert not tracker.holds("w@h", 42, now=1031.5)
