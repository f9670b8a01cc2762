"""The spec's endpoints end to end: real HTTP, real Celery workers, real broker and store."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery

from controlplane.core.tasktypes import SPEC_TYPES
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration

SPEC_LABELS = {
    "domain_task": "常规域名任务",
    "ip_task": "常规IP任务",
    "run_risk_cruising": "PoC运行任务",
    "domain_task_sync_task": "域名同步任务",
    "fofa_task": "Fofa查询任务",
    "domain_exec_task": "域名监测任务",
    "ip_exec_task": "IP监测任务",
    "github_task_task": "Github泄露任务",
    "github_task_monitor": "Github泄露监控任务",
    "asset_site_update": "资产站点更新任务",
    "add_asset_site_task": "资产站点添加任务",
    "asset_wih_update": "资产WIH更新任务",
}


def envelope_ok(resp: object) -> None:
    body = resp.json  # type: ignore[attr-defined]
    assert set(body) == {"code", "message", "data"}, body


def test_types_lists_the_twelve_spec_types_with_their_labels(stack: Stack) -> None:
    resp = stack.request("GET", "/api/celery_task/types/")
    envelope_ok(resp)
    assert resp.status == 200 and resp.code == 200 and resp.json["message"] == "success"
    types = resp.data["task_types"]
    for value, label in SPEC_LABELS.items():
        assert types[value] == label
    assert list(types)[:12] == [t.value for t in SPEC_TYPES]


def test_created_task_runs_to_success_with_times_and_result(stack: Stack) -> None:
    resp = stack.request(
        "POST", "/api/celery_task/", {"task_type": "sleep_task", "data": {"name": "n1", "seconds": 0.3}}
    )
    envelope_ok(resp)
    assert resp.code == 200 and resp.data["status"] == "PENDING"
    cid = resp.data["celery_id"]
    assert str(uuid.UUID(cid)) == cid
    done = stack.wait_status(cid, "SUCCESS")
    for key in (
        "celery_id",
        "status",
        "task_id",
        "name",
        "target",
        "type",
        "task_tag",
        "start_time",
        "end_time",
    ):
        assert key in done
    assert done["name"] == "n1"
    assert done["start_time"].endswith("Z") and len(done["start_time"]) == 24
    assert done["start_time"] <= done["end_time"]
    assert done["worker"].startswith("w0-")
    assert "'slept': 0.3" in done["result"]
    assert done["progress"]["stage"] == "sleep" and done["progress"]["done"] == done["progress"]["total"]


def test_failure_records_exception_and_traceback(stack: Stack) -> None:
    cid = stack.create("fail_task", {"name": "boom", "message": "kaboom-42"})
    done = stack.wait_status(cid, "FAILURE")
    assert "kaboom-42" in done["exception"]
    assert "Traceback" in done["traceback"]
    assert done["end_time"] is not None


def test_retry_shows_retries_and_ends_success(stack: Stack) -> None:
    cid = stack.create("flaky_task", {"name": "flaky", "times": 2})
    done = stack.wait_status(cid, "SUCCESS")
    assert done["retries"] == 2
    assert "attempt 1 failed" in (done["retry_reason"] or "")


def test_detail_of_unknown_id_is_102_and_404(stack: Stack) -> None:
    missing = str(uuid.uuid4())
    resp = stack.request("GET", f"/api/celery_task/{missing}/")
    envelope_ok(resp)
    assert resp.status == 404 and resp.code == 102 and resp.json["message"] == "CeleryIdNotFound"
    assert resp.data == {"celery_id": missing}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "nope", "data": {}}, "task_type"),
        ({"data": {"name": "x"}}, "task_type"),
        ({"task_type": 5, "data": {}}, "task_type"),
        ({"task_type": "domain_task"}, "data"),
        ({"task_type": "domain_task", "data": []}, "data"),
        ({"task_type": "domain_task", "data": {"name": "x"}}, "data.target"),
        ({"task_type": "domain_task", "data": {"name": "x", "target": "not a domain!"}}, "data.target"),
        ({"task_type": "ip_task", "data": {"name": "x", "target": "0.0.0.0/0"}}, "data.target"),
        (
            {"task_type": "domain_task", "data": {"target": "a.com", "options": {"port_scan": "yes"}}},
            "data.options.port_scan",
        ),
    ],
)
def test_create_rejects_bad_input_with_field_and_changes_nothing(
    stack: Stack, body: dict, field: str
) -> None:
    before = stack.db.tasks.count_documents({})
    resp = stack.request("POST", "/api/celery_task/", body)
    envelope_ok(resp)
    assert resp.status == 400 and resp.code == 400
    assert resp.data["field"] == field
    assert field in resp.json["message"]
    assert stack.db.tasks.count_documents({}) == before


def test_unknown_task_type_lists_the_valid_ones(stack: Stack) -> None:
    resp = stack.request("POST", "/api/celery_task/", {"task_type": "nope", "data": {}})
    assert set(SPEC_LABELS) <= set(resp.data["valid"])


@pytest.mark.parametrize("raw", [b"{not json", b"[1,2]", b"", b"\xff\xfe"])
def test_malformed_bodies_are_400(stack: Stack, raw: bytes) -> None:
    resp = stack.request("POST", "/api/celery_task/", raw=raw)
    envelope_ok(resp)
    assert resp.status == 400 and resp.data["field"] == "body"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("size=1000", "size"),
        ("page=abc", "page"),
        ("size=0", "size"),
        ("size=-1", "size"),
        ("status=DONE", "status"),
        ("celery_id=xyz", "celery_id"),
        ("task_type=nope", "task_type"),
        ("page=1&page=2", "page"),
    ],
)
def test_list_rejects_bad_query_arguments(stack: Stack, query: str, field: str) -> None:
    resp = stack.request("GET", f"/api/celery_task/?{query}")
    envelope_ok(resp)
    assert resp.status == 400 and resp.code == 400 and resp.data["field"] == field


def test_non_uuid_path_is_400_and_unknown_route_404(stack: Stack) -> None:
    resp = stack.request("GET", "/api/celery_task/not-a-uuid/")
    assert resp.status == 400 and resp.data["field"] == "celery_id"
    resp = stack.request("GET", "/api/nothing/here")
    envelope_ok(resp)
    assert resp.status == 404 and resp.code == 404
    resp = stack.request("PUT", "/api/celery_task/types/", {})
    envelope_ok(resp)
    assert resp.status == 405


def test_delete_terminates_a_running_task_and_its_child_process(stack: Stack, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cid = stack.create("spawn_task", {"name": "spawner", "seconds": 60, "pidfile": str(pidfile)})
    stack.wait_status(cid, "STARTED")
    pids = wait_for(lambda: pidfile.exists() and pidfile.read_text().split(), what="child and pool pids")
    child, pool_process = int(pids[0]), int(pids[1])
    assert _alive(child) and _alive(pool_process)
    resp = stack.request("DELETE", f"/api/celery_task/{cid}/")
    envelope_ok(resp)
    assert resp.code == 200 and resp.data == {"celery_id": cid, "status": "revoked"}
    done = stack.wait_status(cid, "REVOKED")
    assert done["revoke"]["terminated"] is True
    wait_for(lambda: not _alive(child), timeout=10, what="child process gone")
    wait_for(lambda: not _alive(pool_process), timeout=10, what="pool process gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _fill_workers(stack: Stack, seconds: float = 20) -> list[str]:
    busy = [stack.create("busy_task", {"name": f"busy{i}", "seconds": seconds}) for i in range(2)]
    for cid in busy:
        stack.wait_status(cid, "STARTED")
    return busy


def test_revoke_states_queued_running_finished_and_terminate_false(stack: Stack) -> None:
    busy = _fill_workers(stack)
    queued = stack.create("sleep_task", {"name": "queued", "seconds": 0.1})
    finished = stack.create("fail_task", {"name": "f"})
    # The failing task cannot run while both slots are busy: it is queued too.
    resp = stack.request("POST", "/api/celery_task/revoke/", {"celery_id": busy[0], "terminate": False})
    envelope_ok(resp)
    assert resp.status == 409 and resp.code == 104 and resp.json["message"] == "TaskIsRunning"
    assert stack.detail(busy[0])["status"] == "STARTED"

    resp = stack.request("POST", "/api/celery_task/revoke/", {"celery_id": queued})
    assert resp.code == 200 and resp.data == {"celery_id": queued, "status": "revoked"}
    assert stack.detail(queued)["status"] == "REVOKED"

    for cid in busy:
        assert stack.request("DELETE", f"/api/celery_task/{cid}/").code == 200
    stack.wait_status(finished, "FAILURE")
    resp = stack.request("POST", "/api/celery_task/revoke/", {"celery_id": finished})
    envelope_ok(resp)
    assert resp.status == 409 and resp.code == 105 and resp.data["status"] == "FAILURE"
    for cid in busy:
        stack.wait_status(cid, "REVOKED")
    # The queued task never ran, even after the worker was free.
    time.sleep(1.0)
    after = stack.detail(queued)
    assert after["status"] == "REVOKED" and after["start_time"] is None


def test_revoke_body_validation(stack: Stack) -> None:
    for body, field in [
        ({}, "celery_id"),
        ({"celery_id": "x"}, "celery_id"),
        ({"celery_id": str(uuid.uuid4()), "terminate": "yes"}, "terminate"),
    ]:
        resp = stack.request("POST", "/api/celery_task/revoke/", body)
        assert resp.status == 400 and resp.data["field"] == field, resp
    resp = stack.request("POST", "/api/celery_task/revoke/", {"celery_id": str(uuid.uuid4())})
    assert resp.code == 102


def test_batch_revoke_mixes_unknown_finished_queued_and_running(stack: Stack) -> None:
    busy = _fill_workers(stack)
    queued = stack.create("sleep_task", {"name": "q", "seconds": 0.1})
    finished_id = stack.create("sleep_task", {"name": "done-already", "seconds": 0})
    unknown = str(uuid.uuid4())
    # Free one slot so the short task can finish, then occupy it again.
    assert stack.request("DELETE", f"/api/celery_task/{busy[1]}/").code == 200
    stack.wait_status(finished_id, "SUCCESS", timeout=30)
    stack.wait_status(queued, "SUCCESS", timeout=30)
    running = busy[0]
    blocker = stack.create("busy_task", {"name": "blocker", "seconds": 20})
    stack.wait_status(blocker, "STARTED")
    queued2 = stack.create("sleep_task", {"name": "q2", "seconds": 0.1})
    ids = [unknown, finished_id, queued2, running]
    resp = stack.request("POST", "/api/celery_task/batch_revoke/", {"celery_ids": ids, "terminate": True})
    envelope_ok(resp)
    assert resp.code == 200
    results = {r["celery_id"]: r for r in resp.data["results"]}
    assert [r["celery_id"] for r in resp.data["results"]] == ids
    assert results[unknown]["code"] == 102
    assert results[finished_id]["code"] == 105 and results[finished_id]["status"] == "SUCCESS"
    assert results[queued2]["code"] == 200 and results[queued2]["status"] == "revoked"
    assert results[running]["code"] == 200 and results[running]["status"] == "revoked"
    stack.wait_status(running, "REVOKED")
    assert stack.detail(queued2)["status"] == "REVOKED"
    stack.request("DELETE", f"/api/celery_task/{blocker}/")
    stack.wait_status(blocker, "REVOKED")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"celery_ids": []}, "celery_ids"),
        ({"celery_ids": "abc"}, "celery_ids"),
        ({"celery_ids": [1, 2]}, "celery_ids[0]"),
        ({"celery_ids": [str(uuid.uuid4())] * 1001}, "celery_ids"),
        ({"celery_ids": [str(uuid.uuid4())], "terminate": 1}, "terminate"),
    ],
)
def test_batch_revoke_rejects_invalid_requests(stack: Stack, body: dict, field: str) -> None:
    resp = stack.request("POST", "/api/celery_task/batch_revoke/", body)
    envelope_ok(resp)
    assert resp.status == 400 and resp.data["field"] == field


def test_active_merges_active_and_reserved_with_worker_and_state(stack: Stack) -> None:
    busy = _fill_workers(stack)
    waiting = stack.create("sleep_task", {"name": "waiting", "seconds": 0.1})
    resp = stack.request("GET", "/api/celery_task/active/")
    envelope_ok(resp)
    entries = {e["id"]: e for e in resp.data["active_tasks"]}
    for cid in busy:
        entry = entries[cid]
        assert entry["state"] == "active"
        assert entry["worker"].startswith("w0-")
        assert entry["name"] == "controlplane.busy_task"
        assert entry["kwargs"]["options"]["celery_action"] == "busy_task"
        assert isinstance(entry["time_start"], float)
    assert entries.get(waiting, {}).get("state") in ("reserved", None)
    for cid in busy:
        stack.request("DELETE", f"/api/celery_task/{cid}/")
    stack.wait_status(waiting, "SUCCESS")


def test_task_sent_by_another_producer_appears(stack: Stack) -> None:
    app = Celery(broker=stack.broker_url, set_as_current=False)
    app.conf.task_send_sent_event = True
    try:
        result = app.send_task(
            "controlplane.sleep_task",
            kwargs={"options": {"data": {"seconds": 0.1}}},
            queue=f"recon-{stack.database}",
        )
    finally:
        app.close()
    cid = result.id
    resp = wait_for(
        lambda: (r := stack.request("GET", f"/api/celery_task/{cid}/")).code == 200 and r, what="foreign task"
    )
    assert resp.data["celery_id"] == cid
    done = stack.wait_status(cid, "SUCCESS")
    assert done["task_type"] == "sleep_task"


def test_sync_task_checks_its_source_task_103_104(stack: Stack) -> None:
    def sync(task_id: str) -> object:
        body = {"task_type": "domain_task_sync_task", "data": {"task_id": task_id, "scope_id": "scope-a"}}
        return stack.request("POST", "/api/celery_task/", body)

    unknown = sync("0123456789abcdef01234567")
    assert unknown.status == 404 and unknown.code == 103 and unknown.json["message"] == "NotFoundTask"
    assert unknown.data == {"task_id": "0123456789abcdef01234567"}

    running = stack.create("busy_task", {"name": "source", "seconds": 20})
    stack.wait_status(running, "STARTED")
    resp = sync(running)
    assert resp.status == 409 and resp.code == 104 and resp.data["status"] == "STARTED"
    stack.request("DELETE", f"/api/celery_task/{running}/")

    failed = stack.create("fail_task", {"name": "source-failed"})
    failed_doc = stack.wait_status(failed, "FAILURE")
    resp = sync(failed_doc["task_id"])
    assert resp.status == 400 and resp.data["field"] == "data.task_id"

    good = stack.create("sleep_task", {"name": "source-ok", "seconds": 0})
    stack.wait_status(good, "SUCCESS")
    resp = sync(good)
    assert resp.code == 200
    done = stack.wait_status(resp.data["celery_id"], "SUCCESS", "FAILURE")
    assert done["status"] == "SUCCESS", done
    stack.wait_status(running, "REVOKED")
