"""The consumer's pipelined writes against the real MongoDB-wire server.

The store here is the real :class:`TaskStore`; :class:`GatedStore` only holds a
write back until the test lets it go (or makes one attempt fail as a dropped
connection would), so that what the consume thread does meanwhile can be seen.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from controlplane.bus.events import EventConsumer
from controlplane.bus.feedstage import FeedStage
from controlplane.config import Config, MongoConfig
from controlplane.store.tasks import TaskStore


class GatedStore(TaskStore):
    """The real store, whose writes wait for ``gate`` and can be made to fail once."""

    def __init__(self, config: MongoConfig) -> None:
        super().__init__(config)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail_next = False
        self.writes = 0

    def apply_events(self, events: Any, attempts: int = 8) -> list[dict[str, Any]]:
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.writes += 1
        if self.fail_next:
            self.fail_next = False
            raise AutoReconnect("connection closed")
        return super().apply_events(events, attempts)


class Message:
    """What the consumer needs of a kombu message: an ack to count."""

    def __init__(self) -> None:
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1


def event(cid: str, kind: str = "task-succeeded", ts: float = 1.0) -> dict[str, Any]:
    return {"type": kind, "uuid": cid, "timestamp": ts, "hostname": "w@h", "result": "1"}


@pytest.fixture()
def store(mongo_server: str) -> Iterator[GatedStore]:
    s = GatedStore(MongoConfig(url=mongo_server, database=f"p_{uuid.uuid4().hex[:8]}"))
    yield s
    s.gate.set()
    s.close()


def consumer_for(store: TaskStore, changes: list[list[dict[str, Any]]]) -> EventConsumer:
    c = EventConsumer(Config(), store, connection=object(), on_changes=changes.append)  # type: ignore[arg-type]
    c.no_ack = False  # as on RabbitMQ: acks after the write
    return c


def test_receiving_goes_on_while_a_batch_is_written(store: GatedStore) -> None:
    changes: list[list[dict[str, Any]]] = []
    consumer = consumer_for(store, changes)
    first, second = Message(), Message()
    consumer.on_message(event("a"), first)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert consumer.flush(wait=False) is True
    assert time.monotonic() - t0 < 1.0 and store.started.wait(5)  # handed over, not written
    consumer.on_message(event("b"), second)  # type: ignore[arg-type]
    consumer.on_iteration()  # the write is still going: b stays buffered
    assert [e["uuid"] for e in consumer.buffer] == ["b"] and first.acked == 0
    store.gate.set()
    assert consumer.flush() is True  # finishes a, then writes b
    assert first.acked == 1 and second.acked == 1
    assert {d["celery_id"] for d in store.tasks.find({})} == {"a", "b"}
    assert [d["celery_id"] for batch in changes for d in batch] == ["a", "b"]  # fed after each write
    assert consumer.applied == 2 and store.writes == 2


def test_a_failed_write_is_taken_back_and_retried_after_the_backoff(store: GatedStore) -> None:
    changes: list[list[dict[str, Any]]] = []
    consumer = consumer_for(store, changes)
    store.fail_next = True
    store.gate.set()
    message, later = Message(), Message()
    consumer.on_message(event("a", "task-started", 1.0), message)  # type: ignore[arg-type]
    assert consumer.flush() is False
    assert [e["uuid"] for e in consumer.buffer] == ["a"] and message.acked == 0
    assert consumer.db_retry_at > time.monotonic()  # backing off
    consumer.on_message(event("a", "task-succeeded", 2.0), later)  # type: ignore[arg-type]
    assert consumer.flush() is False  # still inside the backoff: nothing written
    assert store.writes == 1
    time.sleep(consumer.db_backoff + 0.05)
    assert consumer.flush() is True
    assert message.acked == 1 and later.acked == 1
    doc = store.tasks.find_one({"celery_id": "a"})
    assert doc is not None and doc["status"] == "SUCCESS"


def test_a_full_buffer_waits_for_the_write_in_progress(store: GatedStore) -> None:
    consumer = consumer_for(store, [])
    consumer.config.events.batch_size = 2
    consumer.on_message(event("a"), Message())  # type: ignore[arg-type]
    consumer.on_message(event("b"), Message())  # type: ignore[arg-type]  # full: handed to the writer
    assert store.started.wait(5) and not consumer.buffer
    opened = threading.Timer(0.3, store.gate.set)
    opened.start()
    t0 = time.monotonic()
    consumer.on_message(event("c"), Message())  # type: ignore[arg-type]
    consumer.on_message(event("d"), Message())  # type: ignore[arg-type]  # full again: waits for a, b
    assert time.monotonic() - t0 >= 0.25
    assert consumer.flush() is True
    assert {d["celery_id"] for d in store.tasks.find({})} == {"a", "b", "c", "d"}


def test_the_next_write_does_not_wait_for_the_feed(store: GatedStore) -> None:
    store.gate.set()
    release = threading.Event()
    fed: list[list[str]] = []

    def slow_feed(docs: list[dict[str, Any]]) -> None:
        assert release.wait(10)
        fed.append([d["celery_id"] for d in docs])

    consumer = EventConsumer(Config(), store, connection=object(), on_changes=slow_feed)  # type: ignore[arg-type]
    consumer.on_message(event("a"), Message())  # type: ignore[arg-type]
    consumer.flush(wait=False)
    consumer.on_message(event("b"), Message())  # type: ignore[arg-type]
    consumer.flush(wait=False)  # waits for a's write, not for a's feed publish
    deadline = time.monotonic() + 5
    while store.writes < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == 2 and fed == []  # both written while the feed is held
    release.set()
    assert consumer.flush() is True  # wait=True: returns once the feed has both
    assert fed == [["a"], ["b"]]


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_under_load_a_task_is_held_one_flush_so_its_end_shares_the_write(store: GatedStore) -> None:
    store.gate.set()
    changes: list[list[dict[str, Any]]] = []
    consumer = consumer_for(store, changes)
    consumer.config.events.coalesce_above = 3
    consumer.config.events.flush_interval = 60.0  # on_iteration settles writes but does not flush
    first, second, third = Message(), Message(), Message()
    consumer.on_message(  # type: ignore[arg-type]
        [event(c, "task-started", 1.0) for c in "abcd"] + [event("d", "task-succeeded", 2.0)], first
    )
    consumer.flush(wait=False)
    _wait_for(lambda: len(changes) == 1)
    consumer.on_iteration()  # the write is done: settled
    assert consumer.applied == 2  # d's two events
    # Only d, which ended, is written; the others wait, and so does the message carrying them.
    assert [d["celery_id"] for d in changes[0]] == ["d"] and changes[0][0]["status"] == "SUCCESS"
    assert {d["celery_id"] for d in store.tasks.find({})} == {"d"}
    assert first.acked == 0 and sorted(e["uuid"] for e in consumer.buffer) == ["a", "b", "c"]

    consumer.on_message([event("a", "task-succeeded", 2.0), event("b", "task-failed", 2.0)], second)  # type: ignore[arg-type]
    consumer.flush(wait=False)
    _wait_for(lambda: len(changes) == 2)
    consumer.on_iteration()
    # a and b are written once, finished; c (held once already) is written as it stands.
    written = {d["celery_id"]: d["status"] for d in changes[1]}
    assert written == {"a": "SUCCESS", "b": "FAILURE", "c": "STARTED"}
    assert first.acked == 1 and second.acked == 1 and not consumer.buffer

    consumer.on_message([event("c", "task-succeeded", 3.0)], third)  # type: ignore[arg-type]
    assert consumer.flush() is True
    assert {d["celery_id"]: d["status"] for d in store.tasks.find({})} == dict.fromkeys("abcd", "SUCCESS") | {
        "b": "FAILURE"
    }
    assert [d["celery_id"] for batch in changes for d in batch].count("a") == 1  # one write for a
    assert store.writes == 3 and third.acked == 1


def test_below_the_load_threshold_or_when_waited_for_nothing_is_held(store: GatedStore) -> None:
    store.gate.set()
    changes: list[list[dict[str, Any]]] = []
    consumer = consumer_for(store, changes)
    consumer.config.events.coalesce_above = 3
    consumer.on_message([event(c, "task-started") for c in "ab"], Message())  # type: ignore[arg-type]
    consumer.flush(wait=False)  # two tasks: under the threshold
    _wait_for(lambda: len(changes) == 1)
    assert {d["celery_id"] for d in changes[0]} == {"a", "b"}
    consumer.on_message([event(c, "task-started") for c in "cdef"], Message())  # type: ignore[arg-type]
    assert consumer.flush() is True  # wait=True (a stop, a test, a control request): all of it
    assert {d["celery_id"] for d in store.tasks.find({})} == set("abcdef")


def test_feed_stage_keeps_order_and_bounds_what_waits() -> None:
    release = threading.Event()
    seen: list[int] = []

    def feed(docs: list[dict[str, Any]]) -> None:
        assert release.wait(10)
        seen.append(docs[0]["n"])

    stage = FeedStage(feed, depth=2)
    stage.put([{"n": 0}])
    stage.put([{"n": 1}])
    third = threading.Thread(target=stage.put, args=([{"n": 2}],))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # two batches queued: the third waits for the oldest
    release.set()
    third.join(5)
    stage.close()
    assert seen == [0, 1, 2]


def test_feed_stage_goes_on_after_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def feed(docs: list[dict[str, Any]]) -> None:
        if docs[0]["n"] == 0:
            raise RuntimeError("feed broke")
        seen.append(docs[0]["n"])

    stage = FeedStage(feed)
    stage.put([{"n": 0}])
    stage.put([{"n": 1}])
    stage.drain()
    stage.close()
    stage.put([{"n": 2}])  # after close (a write finishing while the consumer stops): handed over here
    assert seen == [1, 2]
    assert "announcing 1 change(s) failed" in caplog.text
