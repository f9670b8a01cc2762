"""Consumer behaviour the fault tests hit only by chance, pinned down without processes."""

from __future__ import annotations

import time
from typing import Any

from kombu.exceptions import MessageStateError

from controlplane.bus.events import EventConsumer
from controlplane.bus.liveness import WorkerTracker
from controlplane.config import Config


class StaleMessage:
    """A message received on a channel that the broker connection has since lost."""

    acked = 0

    def ack(self) -> None:
        raise MessageStateError("Message already acknowledged with state: ACK")


class FakeStore:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    def workers(self) -> list[dict[str, Any]]:
        return []

    def apply_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.applied.extend(events)
        return []

    def record_workers(self, seen: Any) -> None:
        pass

    def started_on_any(self) -> list[dict[str, Any]]:
        return []


def test_flush_survives_messages_of_a_lost_channel() -> None:
    store = FakeStore()
    consumer = EventConsumer(Config(), store, connection=object())  # type: ignore[arg-type]
    consumer.on_message({"type": "task-succeeded", "uuid": "c1", "timestamp": 1.0}, StaleMessage())  # type: ignore[arg-type]
    assert consumer.flush() is True
    assert [e["uuid"] for e in store.applied] == ["c1"] and not consumer.messages


def test_silence_while_the_consumer_was_disconnected_is_forgiven() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe({"type": "worker-heartbeat", "hostname": "w1", "timestamp": 100, "pid": 1}, now=100)
    assert t.verdict("w1", 95, now=130) is not None
    t.grace(now=130)
    assert t.verdict("w1", 95, now=135) is None
    assert t.verdict("w1", 95, now=141) is not None


def test_a_held_consume_loop_does_not_count_as_worker_silence() -> None:
    consumer = EventConsumer(Config(), FakeStore(), connection=object())  # type: ignore[arg-type]
    now = time.time()
    consumer.workers.observe(
        {"type": "worker-heartbeat", "hostname": "w1", "timestamp": now, "pid": 1}, now - 30
    )
    assert consumer.workers.verdict("w1", now - 40, now) is not None  # 30 s of silence, as heard
    consumer.on_iteration()  # a loop that just came round: nothing forgiven
    assert consumer.workers.verdict("w1", now - 40, time.time()) is not None
    consumer.last_iteration = time.monotonic() - 10  # the loop was held for 10 s
    consumer.on_iteration()
    assert consumer.workers.verdict("w1", now - 40, time.time()) is None
