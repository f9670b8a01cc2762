"""The store: derived document ids, new documents, and folding events into a real server."""

from __future__ import annotations

import uuid

from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config import MongoConfig
from controlplane.store import TaskStore, new_task_document, task_oid


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
