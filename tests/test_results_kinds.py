"""Every kind of result a task writes is readable through ``GET .../results/?kind=``."""

from __future__ import annotations

import uuid

import pytest

from controlplane.runtime import embedded
from controlplane.store.results import RESULT_COLLECTIONS, RESULT_KINDS, ResultWriter
from tests.stack import Stack

pytestmark = pytest.mark.integration

INTERNAL = {"github_seen"}
"""Collections that are a task type's own bookkeeping, not findings (a monitor's seen records)."""


def page(stack: Stack, cid: str, kind: str) -> dict[str, object]:
    """The first page of the task's results of ``kind`` (asserting a 200)."""
    resp = stack.request("GET", f"/api/celery_task/{cid}/results/?kind={kind}&size=100")
    assert resp.status == 200 and resp.code == 200, (kind, resp)
    return dict(resp.data)


def test_every_result_collection_but_bookkeeping_is_a_listed_kind() -> None:
    assert set(RESULT_KINDS) == set(RESULT_COLLECTIONS) - INTERNAL
    assert "asset_site_change" in RESULT_KINDS


def test_each_kind_is_served_for_its_task_only(stack: Stack) -> None:
    cid = stack.create("sleep_task", {"name": "kinds", "seconds": 0})
    other = stack.create("sleep_task", {"name": "kinds other", "seconds": 0})
    task_id, other_id = stack.detail(cid)["task_id"], stack.detail(other)["task_id"]
    for kind in RESULT_KINDS:
        keys = [k for k in RESULT_COLLECTIONS[kind].keys if k != "task_id"]
        for owner in (task_id, other_id):
            writer = ResultWriter(stack.db, owner, [kind])
            writer.ensure_indexes()
            assert writer.insert(kind, [{k: f"{kind}-{k}-{owner}" for k in keys}]) == 1, kind
        served = page(stack, cid, kind)
        assert served["kind"] == kind and served["total"] == 1, served
        items = served["items"]
        assert isinstance(items, list) and items[0]["task_id"] == task_id, (kind, items)


def test_asset_site_update_changes_are_served(stack: Stack) -> None:
    scope = f"scope-{uuid.uuid4().hex[:12]}"
    port = embedded.free_port()
    site = f"http://127.0.0.1:{port}"
    stack.db["asset_site"].insert_one(
        {"scope_id": scope, "site": site, "hostname": "127.0.0.1", "port": port, "scheme": "http"}
        | {"status": 200, "title": "was here", "alive": True}
    )
    cid = stack.create("asset_site_update", {"name": "recheck", "scope_id": scope})
    done = stack.wait_status(cid, "SUCCESS", "FAILURE", timeout=60)
    assert done["status"] == "SUCCESS" and done["statistic"]["asset_site_change"] == 1, done
    served = page(stack, cid, "asset_site_change")
    assert served["total"] == 1, served
    items = served["items"]
    assert isinstance(items, list)
    assert (items[0]["site"], items[0]["change"], items[0]["scope_id"]) == (site, "removed", scope)
