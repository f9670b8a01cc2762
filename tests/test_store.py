"""The store: derived document ids, new documents, and folding events into a real server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config import MongoConfig
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.recent import RecentTasks
from controlplane.store.tasks import TaskStore, new_task_document, task_oid


@settings(max_examples=200, deadline=None)
@given(st.uuids(), st.uuids())
def test_task_oid_is_stable_and_distinct(a: uuid.UUID, b: uuid.UUID) -> None:
    assert task_oid(str(a)) == task_oid(str(a))
    if a != b:
        assert task_oid(str(a)) != task_oid(str(b))


def test_new_documents_are_addressed_by_their_derived_id() -> None:
    cid = str(uuid.uuid4())
    doc = new_task_document(celery_id=cid, task_type="ip_task", data={"name": "n"}, created_time=1.0, rev=3)
    assert doc["_id"] == task_oid(cid) and doc["status"] == "PENDING" and doc["rev"] == 3


def test_events_for_a_document_stored_under_another_id_update_it(mongo_server: str) -> None:
    # Not found by its derived _id, so the store tries an insert; the celery_id index
    # refuses the duplicate and the events are merged into the stored document instead.
    store = TaskStore(MongoConfig(url=mongo_server, database=f"s_{uuid.uuid4().hex[:8]}"))
    try:
        store.ensure_indexes()
        cid = str(uuid.uuid4())
        old = new_task_document(
            celery_id=cid, task_type="ip_task", data={"name": "n"}, created_time=1.0, rev=1
        )
        old["_id"] = ObjectId()
        store.tasks.insert_one(old)
        changed = store.apply_events(
            [{"type": "task-succeeded", "uuid": cid, "timestamp": 5.0, "hostname": "w@h", "result": "1"}]
        )
        assert [d["_id"] for d in changed] == [old["_id"]]
        docs = list(store.tasks.find({"celery_id": cid}))
        assert len(docs) == 1 and docs[0]["_id"] == old["_id"] and docs[0]["status"] == "SUCCESS"
    finally:
        store.close()


def test_revisions_are_reserved_in_blocks_from_a_counter_the_first_reservation_creates(
    mongo_server: str,
) -> None:
    config = MongoConfig(url=mongo_server, database=f"s_{uuid.uuid4().hex[:8]}")

    async def reserve_async(count: int) -> int:
        async_store = AsyncTaskStore(config)
        try:
            return await async_store.next_revisions(count)
        finally:
            await async_store.close()

    store = TaskStore(config)
    try:
        assert store.db["counters"].find_one({"_id": "rev"}) is None
        assert store.next_revisions(3) == 1  # creates the counter: 1, 2, 3
        assert asyncio.run(reserve_async(2)) == 4  # 4, 5
        assert store.next_revisions(1) == 6
        assert store.db["counters"].find_one({"_id": "rev"}) == {"_id": "rev", "value": 6}
    finally:
        store.close()


class CountingStore(TaskStore):
    """The real store, counting the documents it had to read back."""

    def __init__(self, config: MongoConfig, recent: RecentTasks | None = None) -> None:
        super().__init__(config, recent=recent)
        self.read_ids: list[str] = []

    def _read(self, celery_ids: list[str], by_key_only: bool = True) -> dict[str, dict[str, Any]]:
        self.read_ids.extend(celery_ids)
        return super()._read(celery_ids, by_key_only)


def ev(cid: str, kind: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": cid, "timestamp": ts, "hostname": "w@h", **fields}


@pytest.fixture()
def mongo_config(mongo_server: str) -> MongoConfig:
    return MongoConfig(url=mongo_server, database=f"s_{uuid.uuid4().hex[:8]}")


def test_the_next_batch_starts_from_the_remembered_document(mongo_config: MongoConfig) -> None:
    store = CountingStore(mongo_config, RecentTasks(100))
    try:
        cid = str(uuid.uuid4())
        store.apply_events([ev(cid, "task-received", 1.0), ev(cid, "task-started", 2.0)])
        assert store.read_ids == [cid]  # not known yet: read, then inserted
        changed = store.apply_events([ev(cid, "task-succeeded", 3.0, result="1", runtime=1.0)])
        assert store.read_ids == [cid]  # no second read
        stored = store.tasks.find_one({"celery_id": cid})
        assert stored is not None and stored["status"] == "SUCCESS" and stored["start_time"] == 2.0
        assert changed == [stored]
        assert len(store.recent) == 0  # finished: not kept
    finally:
        store.close()


def test_a_document_changed_by_another_writer_is_read_again_and_merged(mongo_config: MongoConfig) -> None:
    consumer = CountingStore(mongo_config, RecentTasks(100))
    worker = TaskStore(mongo_config)  # another process: a worker recording its statistics
    try:
        cid = str(uuid.uuid4())
        consumer.apply_events([ev(cid, "task-started", 2.0)])
        first = consumer.tasks.find_one({"celery_id": cid})
        assert first is not None
        assert worker.set_status_fields(cid, {"statistic": {"site": 3}, "partial": False}) is True
        after_worker = consumer.tasks.find_one({"celery_id": cid})
        assert after_worker is not None and after_worker["rev"] > first["rev"]  # a new revision
        changed = consumer.apply_events([ev(cid, "task-succeeded", 3.0, result="1", runtime=1.0)])
        stored = consumer.tasks.find_one({"celery_id": cid})
        assert stored is not None and stored["status"] == "SUCCESS"
        # Not overwritten (nx-27017 stores a boolean set by $set as 0/1; the API's output coerces).
        assert stored["statistic"] == {"site": 3} and "partial" in stored and not stored["partial"]
        assert changed == [stored]  # and the feed gets the document with them
        assert consumer.read_ids.count(cid) == 2  # the remembered version failed; read again
    finally:
        consumer.close()
        worker.close()


def test_a_revoke_flag_set_by_the_api_survives_the_next_write(mongo_config: MongoConfig) -> None:
    consumer = TaskStore(mongo_config, recent=RecentTasks(100))
    try:
        cid = str(uuid.uuid4())
        consumer.apply_events([ev(cid, "task-started", 2.0)])

        async def revoke() -> None:
            api = AsyncTaskStore(mongo_config)
            try:
                await api.request_revoke([cid], terminate=True)
            finally:
                await api.close()

        asyncio.run(revoke())
        consumer.apply_events([ev(cid, "task-revoked", 3.0, terminated=True)])
        stored = consumer.tasks.find_one({"celery_id": cid})
        assert stored is not None and stored["status"] == "REVOKED" and stored["revoke"]["terminate"]
    finally:
        consumer.close()


def test_status_fields_take_a_new_revision_and_need_a_task(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    try:
        cid = str(uuid.uuid4())
        store.apply_events([ev(cid, "task-started", 2.0)])
        before = store.tasks.find_one({"celery_id": cid})
        assert before is not None
        store.next_revisions(10)  # others reserved revisions meanwhile
        assert store.set_status_fields(cid, {"resent": 1}) is True
        after = store.tasks.find_one({"celery_id": cid})
        assert after is not None and after["resent"] == 1 and after["rev"] > before["rev"] + 10
        assert after["status"] == before["status"] == "STARTED"
        assert store.set_status_fields(str(uuid.uuid4()), {"resent": 1}) is False
    finally:
        store.close()


def test_non_terminal_finds_every_unfinished_task_older_than_the_cut_and_honours_the_limit(
    mongo_config: MongoConfig,
) -> None:
    from controlplane.core.merge import STATUSES, TERMINAL

    store = TaskStore(mongo_config)
    try:
        store.ensure_indexes()
        docs = []
        for i, status in enumerate(STATUSES * 3):
            doc = new_task_document(
                celery_id=str(uuid.uuid4()),
                task_type="ip_task",
                data={},
                created_time=float(i % 3 * 10),
                rev=i,
            )
            doc["status"] = status
            docs.append(doc)
        store.tasks.insert_many(docs)
        cut = 15.0  # created_time 0 and 10 are older, 20 is not
        expected = {d["celery_id"] for d in docs if d["status"] not in TERMINAL and d["created_time"] < cut}
        found = store.non_terminal(older_than=cut)
        assert {d["celery_id"] for d in found} == expected and len(found) == len(expected) == 6
        assert all("data" not in d and "options" not in d for d in found)  # the projection only
        assert len(store.non_terminal(older_than=cut, limit=4)) == 4
        assert len(store.non_terminal(older_than=cut, limit=0)) == 6  # 0: no limit
    finally:
        store.close()


def test_received_by_lists_a_workers_received_but_unstarted_tasks(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    try:
        store.ensure_indexes()
        early, late, other, started, queued = (str(uuid.uuid4()) for _ in range(5))
        store.apply_events(
            [
                ev(queued, "task-sent", 1.0, hostname="api@h", name="controlplane.ip_task"),
                ev(early, "task-received", 10.0, hostname="w1"),
                ev(late, "task-received", 30.0, hostname="w1"),
                ev(other, "task-received", 10.0, hostname="w2"),
                ev(started, "task-received", 10.0, hostname="w1"),
                ev(started, "task-started", 11.0, hostname="w1"),
            ]
        )
        assert sorted(store.received_by({"w1": None})) == sorted([early, late])
        assert store.received_by({"w1": 20.0}) == [early], "what an old process received"
        assert sorted(store.received_by({"w1": 20.0, "w2": None})) == sorted([early, other])
        assert store.received_by({"api@h": None}) == [], "sent, never received"
        assert store.received_by({}) == []
    finally:
        store.close()


def test_get_many_looks_for_older_documents_only_when_asked(mongo_config: MongoConfig) -> None:
    store = TaskStore(mongo_config)
    try:
        store.ensure_indexes()
        derived, older = str(uuid.uuid4()), str(uuid.uuid4())
        docs = [
            new_task_document(celery_id=c, task_type="ip_task", data={"name": c}, created_time=1.0, rev=i)
            for i, c in enumerate((derived, older), 1)
        ]
        docs[1]["_id"] = ObjectId()  # written with another _id (an older version)
        store.tasks.insert_many(docs)

        async def run() -> tuple[set[str], set[str]]:
            api = AsyncTaskStore(mongo_config)
            try:
                asked = [derived, older, "made-up"]
                return set(await api.get_many(asked)), set(await api.get_many(asked, older=False))
            finally:
                await api.close()

        every, by_id = asyncio.run(run())
        assert every == {derived, older}
        assert by_id == {derived}, "one query by derived _id, none per unknown id"
    finally:
        store.close()
