"""Pure parts of the store: derived document ids and new documents."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.store import new_task_document, task_oid


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
