"""The tally (exact counts per status, task type and worker) against a real count on the real server.

Every write path that changes a task's cell is driven through the store (the API's inserts and
deletes, the consumer's merges with its memory, a second writer racing it, foreign tasks,
replayed events), then the tally is compared with the documents themselves; writers that die
between their writes are simulated by a store that raises at that point, and the repair must
bring the tally back to the real count.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from pymongo import ReplaceOne

from controlplane.config import MongoConfig
from controlplane.core.documents import TaskFilter
from controlplane.store import tally
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.errors import StoreError
from controlplane.store.recent import RecentTasks
from controlplane.store.tasks import TaskStore, new_task_document

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The writer's process dies here."""


@pytest.fixture()
def mongo_config(mongo_server: str) -> MongoConfig:
    return MongoConfig(url=mongo_server, database=f"t_{uuid.uuid4().hex[:8]}")


def ev(cid: str, kind: str, ts: float, host: str = "celery@w1", **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": cid, "timestamp": ts, "hostname": host, **fields}


def lifecycle(cid: str, i: int) -> list[dict[str, Any]]:
    """A task's events: some end, some stop early; two workers."""
    host = f"celery@w{i % 2}"
    out = [ev(cid, "task-received", 10.0 + i, host), ev(cid, "task-started", 11.0 + i, host)]
    if i % 4 == 0:
        out.append(ev(cid, "task-succeeded", 12.0 + i, host, result="1", runtime=1.0))
    elif i % 4 == 1:
        out.append(ev(cid, "task-failed", 12.0 + i, host, exception="E()"))
    return out


def created(store: TaskStore, n: int, task_type: str = "ip_task") -> list[str]:
    """``n`` tasks inserted as the API inserts them."""
    first = store.next_revisions(n)
    cids = [str(uuid.uuid4()) for _ in range(n)]
    docs = [
        new_task_document(
            celery_id=c, task_type=task_type, data={"name": c}, created_time=float(i), rev=first + i
        )
        for i, c in enumerate(cids)
    ]
    assert store.insert_new(docs) == {}
    return cids


def real_cells(store: TaskStore) -> dict[str, int]:
    docs = store.tasks.find({}, {"status": 1, "task_type": 1, "worker": 1})
    return dict(Counter(tally.cell(d) for d in docs))


def tally_doc(store: TaskStore) -> dict[str, Any]:
    return store.db["counters"].find_one(tally.TALLY) or {}


def assert_exact(store: TaskStore) -> None:
    """No entry open, the cells are the real count, every document counted under its own cell."""
    doc = tally_doc(store)
    assert not doc.get("since") and not doc.get("open")
    cells = {k: v for k, v in (doc.get("cells") or {}).items() if v}
    assert cells == real_cells(store)
    for d in store.tasks.find({}, {"status": 1, "task_type": 1, "worker": 1, "_c": 1}):
        assert d["_c"] == tally.cell(d)


def age(store: TaskStore, seconds: float) -> None:
    """Make every open entry ``seconds`` old (as if that much time had passed since it opened)."""
    for entry in tally_doc(store).get("since") or {}:
        store.db["counters"].update_one(tally.TALLY, {"$set": {f"since.{entry}": time.time() - seconds}})


def listing_totals(config: MongoConfig, filters: list[TaskFilter]) -> tuple[bool, list[int]]:
    """Whether the API's store trusts the tally, and the list's totals for ``filters``."""

    async def run() -> tuple[bool, list[int]]:
        api = AsyncTaskStore(config)
        try:
            trusted = await api.tally_cells() is not None
            return trusted, [(await api.listing(f, 1, 10))[0] for f in filters]
        finally:
            await api.close()

    return asyncio.run(run())


def counted(store: TaskStore, filters: list[TaskFilter]) -> list[int]:
    return [store.tasks.count_documents(f.query()) for f in filters]


FILTERS = [
    TaskFilter(),
    TaskFilter(status="SUCCESS"),
    TaskFilter(status=("STARTED", "FAILURE")),
    TaskFilter(worker="celery@w1"),
    TaskFilter(worker="celery@w0", status="FAILURE"),
    TaskFilter(task_type="ip_task", status="PENDING"),
    TaskFilter(task_type="external", sort="-started"),
    TaskFilter(sort="status"),
]


def test_the_tally_is_the_real_count_after_every_write_path_racing(mongo_config: MongoConfig) -> None:
    api = TaskStore(mongo_config)
    consumer = TaskStore(mongo_config, recent=RecentTasks(1000))
    other = TaskStore(mongo_config)  # the API's revoke path, racing the consumer
    try:
        api.ensure_indexes()
        cids = created(api, 60)
        pending = created(api, 5, "domain_task")  # no events: deleted, as unpublished tasks are
        foreign = [str(uuid.uuid4()) for _ in range(20)]  # first seen through their events
        events = [e for i, c in enumerate(cids + foreign) for e in lifecycle(c, i)]
        random.Random(3).shuffle(events)

        def feed(store: TaskStore, batch: list[dict[str, Any]]) -> None:
            for k in range(0, len(batch), 25):
                store.apply_events(batch[k : k + 25])

        racers = [
            threading.Thread(target=feed, args=(consumer, events)),
            threading.Thread(target=feed, args=(other, events[::-1])),
        ]
        for t in racers:
            t.start()
        for t in racers:
            t.join()
        other.apply_events([ev(c, "task-revoked", 50.0, terminated=True) for c in cids[2:8]])
        consumer.set_status_fields(cids[10], {"statistic": {"site": 1}})
        consumer.restamp(list(consumer.tasks.find({"celery_id": {"$in": cids[20:24]}})))
        api.delete_new(pending[:2])

        async def delete_one() -> None:
            store = AsyncTaskStore(mongo_config)
            try:
                await store.delete(pending[2])
            finally:
                await store.close()

        asyncio.run(delete_one())
        feed(consumer, events)  # replayed (a reconcile, a redelivery): no change
        assert_exact(api)
        assert api.tasks.count_documents({}) == 65 + 20 - 3
        trusted, totals = listing_totals(mongo_config, FILTERS)
        assert trusted and totals == counted(api, FILTERS)
    finally:
        for s in (api, consumer, other):
            s.close()


class DiesBeforeClosing(TaskStore):
    """Dies after its documents were written, before its tally entry is closed."""

    def _close_entry(self, entry: str, landed: list[tally.Item]) -> bool:
        raise Crash


class DiesBeforeWriting(TaskStore):
    """Dies after opening its tally entry, before its documents are written; keeps what it would
    have written (a write still in flight when it died)."""

    in_flight: list[ReplaceOne[Any]]

    def _count_writes(self, inserts: Any, updates: Any) -> Any:
        super()._count_writes(inserts, updates)
        self.in_flight = [ReplaceOne({"_id": new["_id"], "rev": old["rev"]}, new) for old, new in updates]
        raise Crash


def test_a_writer_dying_after_its_writes_is_repaired_to_the_real_count(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    dying = DiesBeforeClosing(mongo_config)
    try:
        store.ensure_indexes()
        cids = created(store, 12)
        with pytest.raises(Crash):
            dying.apply_events([e for i, c in enumerate(cids) for e in lifecycle(c, i)])
        assert tally_doc(store)["since"], "the dead writer's entry is left open"
        # While it is young, readers add its writes that landed: exact from the moment they land.
        assert listing_totals(mongo_config, FILTERS) == (True, counted(store, FILTERS))
        # Another writer changes some of those tasks before anyone repairs: evidence is carried.
        store.apply_events([ev(c, "task-revoked", 90.0, terminated=True) for c in cids[:3]])
        age(store, 30)
        trusted, totals = listing_totals(mongo_config, FILTERS)
        assert not trusted and totals == counted(store, FILTERS), "counted while an entry is stale"
        assert store.repair_tally(older_than=20) == 1
        assert_exact(store)
        assert listing_totals(mongo_config, FILTERS) == (True, counted(store, FILTERS))
    finally:
        store.close()
        dying.close()


def test_a_writer_dying_before_its_writes_is_fenced_off(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    dying = DiesBeforeWriting(mongo_config)
    try:
        store.ensure_indexes()
        cids = created(store, 8)
        with pytest.raises(Crash):
            dying.apply_events([ev(c, "task-started", 5.0) for c in cids])
        age(store, 600)
        assert store.repair_tally() == 1
        assert_exact(store)
        late = store.tasks.bulk_write(dying.in_flight, ordered=False)  # arrives after the repair
        assert late.matched_count == 0, "fenced: a new revision fails the dead writer's write"
        assert_exact(store)
        store.apply_events([ev(c, "task-started", 5.0) for c in cids])  # the events again
        assert_exact(store)
        assert store.tasks.count_documents({"status": "STARTED"}) == 8
    finally:
        store.close()
        dying.close()


def test_an_insert_left_open_blocks_its_delete_until_repaired(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    dying = DiesBeforeClosing(mongo_config)
    try:
        store.ensure_indexes()
        created(store, 3)
        with pytest.raises(Crash):
            created(dying, 2)  # stored, then the API process died before closing
        lost = [d["celery_id"] for d in store.tasks.find({"_j": {"$in": list(tally_doc(store)["since"])}})]
        assert len(lost) == 2
        with pytest.raises(StoreError):
            store.delete_new(lost)  # its count entry is open: retried later by the caller
        age(store, 600)
        store.delete_new(lost)  # repairs the stale entry first
        assert_exact(store)
        assert store.tasks.count_documents({}) == 3
    finally:
        store.close()
        dying.close()


def test_a_delete_dying_before_closing_is_repaired(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    dying = DiesBeforeClosing(mongo_config)
    try:
        store.ensure_indexes()
        cids = created(store, 5)
        with pytest.raises(Crash):
            dying.delete_new(cids[:2])
        assert store.tasks.count_documents({}) == 3
        assert listing_totals(mongo_config, FILTERS) == (True, counted(store, FILTERS))
        age(store, 600)
        assert store.repair_tally() == 1
        assert_exact(store)
    finally:
        store.close()
        dying.close()


def test_documents_written_around_the_store_are_counted_until_adopted(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    try:
        store.ensure_indexes()
        created(store, 4)
        outside = [
            new_task_document(
                celery_id=str(uuid.uuid4()), task_type="ip_task", data={}, created_time=9.0, rev=0
            )
            for _ in range(5)
        ]
        store.tasks.insert_many(outside)  # an older version, a bulk load
        trusted, totals = listing_totals(mongo_config, FILTERS)
        assert not trusted and totals == counted(store, FILTERS)
        assert store.adopt_uncounted(limit=3) == 3
        assert store.adopt_uncounted() == 2
        assert store.adopt_uncounted() == 0
        assert_exact(store)
        assert listing_totals(mongo_config, FILTERS) == (True, counted(store, FILTERS))
    finally:
        store.close()


def test_cell_keys_survive_any_worker_name() -> None:
    for worker in ("celery@host.example.com", "a|b", "$x", "100%~", "", None):
        doc = {"status": "SUCCESS", "task_type": "ip.task", "worker": worker}
        key = tally.cell(doc)
        assert "." not in key and not key.startswith("$")
        assert tally.fields(key) == ("SUCCESS", "ip.task", worker)


def test_a_large_batch_in_flight_shows_when_its_writer_closes_it(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    dying = DiesBeforeClosing(mongo_config)
    try:
        store.ensure_indexes()
        created(store, 10)
        n = tally.ADJUST_LIMIT + 1
        with pytest.raises(Crash):
            created(dying, n)  # stored; its entry still open, too large for readers to check
        trusted, totals = listing_totals(mongo_config, [TaskFilter()])
        assert trusted and totals == [10], "the cells as they were before the batch"
        store.repair_tally(older_than=0)
        assert_exact(store)
        assert listing_totals(mongo_config, [TaskFilter()]) == (True, [10 + n])
    finally:
        store.close()
        dying.close()
