"""Schedules as objects (``/api/schedules/``) against a real stack with a real scheduler process.

The stack runs the API, the consumer, one worker and ``controlplane scheduler`` (which
looks for due runs every second) as separate processes on a Redis database of their own.
The runs the scheduler submits must come fast enough to watch, so the tests that need
them schedule the test-only ``sleep_task`` (registered in the test config, see
``tests/stack.py``) every 1 second: the create path bounds ``schedule.interval`` (at
least 60 s) only for the built-in types, and these tests rely on that to get short
intervals. The PATCH under test applies the create rules to every type.

"No run while paused" is observed without timing: a second, active schedule (the
witness) on the same scheduler keeps getting runs, and once it has had several after the
pause, the scheduler has passed the due time of the paused schedule several times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.runtime import schedules_cli
from controlplane.runtime.scheduler import run_id
from tests.conftest import make_stack
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Response, Stack, wait_for

pytestmark = pytest.mark.integration

FAST = {"seconds": 0.05, "schedule": {"interval": 1}}
SECRET = "sk-live-0123456789abcdef"
HOOK_SECRET = "T0KENPATH9f8e7d6c"


@pytest.fixture(scope="module")
def sstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    """API, consumer, one worker and the scheduler."""
    s = make_stack(tmp_path_factory.mktemp("schedules"), mongo_server)
    try:
        s.start()
        s.start_part("scheduler", "scheduler")
        yield s
    finally:
        s.close()


def create_schedule(stack: Stack, task_type: str, data: dict[str, Any]) -> tuple[str, str]:
    """POST a task with a schedule; returns (schedule_id, first celery_id)."""
    resp = stack.request("POST", "/api/celery_task/", {"task_type": task_type, "data": data})
    assert resp.code == 200, resp
    return str(resp.data["schedule_id"]), str(resp.data["celery_id"])


def runs_of(stack: Stack, schedule_id: str) -> set[str]:
    """celery_ids of every task a schedule submitted (its first run included), from the database."""
    return {d["celery_id"] for d in stack.db.tasks.find({"data.schedule_id": schedule_id}, {"celery_id": 1})}


def show(stack: Stack, schedule_id: str, token: str | None = None) -> Response:
    kwargs = {"token": token} if token else {}
    return stack.request("GET", f"/api/schedules/{schedule_id}/", **kwargs)  # type: ignore[arg-type]


def patch(stack: Stack, schedule_id: str, body: Any, token: str | None = None) -> Response:
    kwargs = {"token": token} if token else {}
    return stack.request("PATCH", f"/api/schedules/{schedule_id}/", body, **kwargs)  # type: ignore[arg-type]


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_witness(stack: Stack, witness: str, more: int) -> None:
    """Until the witness schedule has ``more`` runs beyond the ones it has now."""
    seen = len(runs_of(stack, witness))
    wait_for(lambda: len(runs_of(stack, witness)) >= seen + more, timeout=60, what=f"{more} witness runs")


def test_a_created_schedule_is_listed_and_shown_with_credentials_redacted(sstack: Stack) -> None:
    sid, first = create_schedule(
        sstack, "sleep_task", {"seconds": 0, "api_key": SECRET, "schedule": {"interval": 3600}}
    )
    hook = f"http://127.0.0.1:9/hooks/{HOOK_SECRET}"
    cron_sid, _ = create_schedule(
        sstack,
        "asset_site_update",
        {"scope_id": "scope-1", "webhook": hook, "schedule": {"cron": "0 3 * * *"}},
    )

    listed = sstack.request("GET", "/api/schedules/?task_type=sleep_task&size=100", token=VIEWER_TOKEN)
    assert listed.code == 200, listed
    item = next(i for i in listed.data["items"] if i["id"] == sid)
    assert item["task_type"] == "sleep_task" and item["state"] == "active"
    assert item["interval"] == 3600 and item["cron"] is None
    assert item["data"]["api_key"] == "***" and item["data"]["seconds"] == 0
    assert item["last_celery_id"] == first and item["runs"] == 1
    assert epoch(item["next_run"]) == pytest.approx(epoch(item["created_time"]) + 3600, abs=0.01)
    assert item["last_run"] and item["submitting"] is None and item["last_error"] is None
    assert all(i["task_type"] == "sleep_task" for i in listed.data["items"])
    assert SECRET.encode() not in listed.raw

    detail = show(sstack, cron_sid, VIEWER_TOKEN)
    assert detail.code == 200, detail
    assert detail.data["cron"] == "0 3 * * *" and detail.data["interval"] is None
    assert detail.data["next_run"].endswith("T03:00:00.000Z")
    assert detail.data["data"]["webhook"] == "http://127.0.0.1:9/***"
    assert HOOK_SECRET.encode() not in detail.raw
    assert SECRET.encode() not in show(sstack, sid).raw

    everything = sstack.request("GET", "/api/schedules/?size=100")
    assert {sid, cron_sid} <= {i["id"] for i in everything.data["items"]}
    assert everything.data["total"] >= 2
    paged = sstack.request("GET", "/api/schedules/?size=1&page=2")
    assert paged.data["size"] == 1 and len(paged.data["items"]) == 1
    assert paged.data["items"][0]["id"] != everything.data["items"][0]["id"], "page 2 is not page 1"
    paused_only = sstack.request("GET", "/api/schedules/?state=paused&size=100")
    assert sid not in {i["id"] for i in paused_only.data["items"]}
    other_type = sstack.request("GET", "/api/schedules/?task_type=asset_site_update&size=100")
    assert {i["id"] for i in other_type.data["items"]} == {cron_sid}


def test_pause_stops_runs_and_resume_restarts_them_without_a_burst(sstack: Stack) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", dict(FAST))
    witness, _ = create_schedule(sstack, "sleep_task", dict(FAST))
    wait_for(lambda: len(runs_of(sstack, sid)) >= 3, timeout=60, what="two scheduled runs")

    paused = patch(sstack, sid, {"paused": True})
    assert paused.code == 200, paused
    assert paused.data["state"] == "paused" and paused.data["next_run"] is None
    assert paused.data["submitting"] is None, "a run claimed before the pause was submitted before the answer"
    at_pause = runs_of(sstack, sid)
    assert paused.data["last_celery_id"] in at_pause
    assert paused.data["runs"] == len(at_pause)

    wait_witness(sstack, witness, 4)
    assert runs_of(sstack, sid) == at_pause, "no run submitted after the pause was acknowledged"
    assert show(sstack, sid).data["runs"] == len(at_pause)
    listed = sstack.request("GET", "/api/schedules/?state=paused&size=100")
    assert sid in {i["id"] for i in listed.data["items"]}

    resumed = patch(sstack, sid, {"paused": False})
    assert resumed.code == 200, resumed
    assert resumed.data["state"] == "active"
    # The next run is computed from the resume, not from the missed due times.
    assert epoch(resumed.data["next_run"]) == pytest.approx(
        epoch(resumed.data["updated_time"]) + 1, abs=0.002
    )
    stored = sstack.db.schedules.find_one({"_id": sid})["next_run"]
    wait_for(lambda: len(runs_of(sstack, sid)) >= len(at_pause) + 2, timeout=60, what="runs after resuming")
    after = runs_of(sstack, sid) - at_pause
    assert run_id(sid, stored) in after, "the first run after resuming is the one due after the resume"
    missed = [run_id(sid, stored - k) for k in range(1, 30)]
    assert not after & set(missed)


def test_patch_interval_or_cron_recomputes_the_next_run(sstack: Stack) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", {"seconds": 0, "schedule": {"interval": 3600}})

    changed = patch(sstack, sid, {"interval": 120})
    assert changed.code == 200, changed
    assert (
        changed.data["interval"] == 120 and changed.data["cron"] is None and changed.data["state"] == "active"
    )
    assert epoch(changed.data["next_run"]) == pytest.approx(
        epoch(changed.data["updated_time"]) + 120, abs=0.002
    )
    assert show(sstack, sid).data["next_run"] == changed.data["next_run"]
    stored = sstack.db.schedules.find_one({"_id": sid})
    assert stored["schedule"] == {"interval": 120} and stored["data"]["schedule"] == {"interval": 120}

    cron = patch(sstack, sid, {"cron": "30 4 * * *"})
    assert cron.code == 200, cron
    assert cron.data["cron"] == "30 4 * * *" and cron.data["interval"] is None
    assert cron.data["next_run"].endswith("T04:30:00.000Z")
    assert 0 < epoch(cron.data["next_run"]) - epoch(cron.data["updated_time"]) <= 86400

    both = patch(sstack, sid, {"paused": True, "interval": 600})
    assert both.data["state"] == "paused" and both.data["interval"] == 600 and both.data["next_run"] is None


def test_delete_stops_runs_and_the_schedule_is_gone(sstack: Stack) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", dict(FAST))
    witness, _ = create_schedule(sstack, "sleep_task", dict(FAST))
    wait_for(lambda: len(runs_of(sstack, sid)) >= 2, timeout=60, what="a scheduled run")

    deleted = sstack.request("DELETE", f"/api/schedules/{sid}/")
    assert deleted.code == 200, deleted
    assert deleted.data["id"] == sid and deleted.data["deleted"] is True
    at_delete = runs_of(sstack, sid)
    assert deleted.data["last_celery_id"] in at_delete
    claimed = deleted.data["claimed_run"]
    assert claimed is None or claimed in at_delete

    for resp in (
        show(sstack, sid),
        patch(sstack, sid, {"paused": True}),
        sstack.request("DELETE", f"/api/schedules/{sid}/"),
    ):
        assert resp.status == 404 and resp.code == 107 and resp.json["message"] == "ScheduleNotFound", resp
        assert resp.data == {"id": sid}
    wait_witness(sstack, witness, 4)
    assert runs_of(sstack, sid) == at_delete, "no run after the delete was acknowledged"
    for celery_id in at_delete:
        assert sstack.request("GET", f"/api/celery_task/{celery_id}/").code == 200, "submitted runs stay"
    assert sid not in {i["id"] for i in sstack.request("GET", "/api/schedules/?size=100").data["items"]}


def test_a_viewer_may_read_but_not_change_schedules(sstack: Stack) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", {"seconds": 0, "schedule": {"interval": 3600}})
    assert show(sstack, sid, VIEWER_TOKEN).code == 200
    for resp in (
        patch(sstack, sid, {"paused": True}, VIEWER_TOKEN),
        sstack.request("DELETE", f"/api/schedules/{sid}/", token=VIEWER_TOKEN),
    ):
        assert resp.status == 403 and resp.code == 403, resp
    assert show(sstack, sid).data["state"] == "active"
    assert sstack.request("GET", "/api/schedules/", token=None).code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ([], "body"),
        ({"paused": "yes"}, "paused"),
        ({"paused": 1}, "paused"),
        ({"interval": 5}, "interval"),
        ({"interval": "3600"}, "interval"),
        ({"interval": 3600.5}, "interval"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"interval": 60, "cron": "* * * * *"}, "cron"),
        ({"enabled": False}, "enabled"),
        ({"paused": True, "task_type": "ip_task"}, "task_type"),
        ({"paused": True, "data": {}}, "data"),
    ],
)
def test_bad_patch_bodies_are_400_naming_the_field(sstack: Stack, body: Any, field: str) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", {"seconds": 0, "schedule": {"interval": 3600}})
    before = sstack.db.schedules.find_one({"_id": sid})
    resp = patch(sstack, sid, body)
    assert resp.status == 400 and resp.code == 400, resp
    assert resp.data["field"] == field, resp
    assert sstack.db.schedules.find_one({"_id": sid}) == before, "nothing changed"


def test_bad_ids_and_list_arguments(sstack: Stack) -> None:
    assert show(sstack, "not-a-uuid").data["field"] == "schedule_id"
    unknown = "00000000-0000-4000-8000-000000000000"
    assert show(sstack, unknown).code == 107
    assert sstack.request("PATCH", f"/api/schedules/{unknown}/", raw=b"{not json").data["field"] == "body"
    assert sstack.request("GET", "/api/schedules/?state=stopped").data["field"] == "state"
    assert sstack.request("GET", "/api/schedules/?size=1000").data["field"] == "size"
    assert sstack.request("GET", "/api/schedules/?page=0").data["field"] == "page"


def test_changes_are_audit_logged(sstack: Stack) -> None:
    sid, _ = create_schedule(sstack, "sleep_task", {"seconds": 0, "schedule": {"interval": 3600}})
    assert patch(sstack, sid, {"paused": True}).code == 200
    assert sstack.request("DELETE", f"/api/schedules/{sid}/").code == 200
    wait_for(
        lambda: (
            f"audit: test-operator (operator) schedule {sid}: paused=True" in sstack.log("serve")
            and f"audit: test-operator (operator) schedule {sid}: deleted" in sstack.log("serve")
            and f"audit: test-operator (operator) DELETE /api/schedules/{sid}/ -> 200" in sstack.log("serve")
        ),
        timeout=10,
        what="audit lines",
    )


def cli(stack: Stack, *argv: str, token: str = OPERATOR_TOKEN) -> tuple[int, str, str]:
    """``controlplane schedules <argv>`` (its own parser: the module's, as cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="controlplane")
    schedules_cli.add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["schedules", argv[0], *argv[1:], "--url", f"http://127.0.0.1:{stack.port}", "--token", token]
    )
    out, err = io.StringIO(), io.StringIO()
    code = schedules_cli.run(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_lists_shows_changes_and_deletes(sstack: Stack) -> None:
    sid, _ = create_schedule(
        sstack,
        "sleep_task",
        {"seconds": 0, "name": "cli-sched", "token": SECRET, "schedule": {"interval": 3600}},
    )
    code, out, _ = cli(sstack, "list", "--task-type", "sleep_task", "--all")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["SCHEDULE_ID", "STATE", "TASK_TYPE"]
    row = next(line for line in out.splitlines() if line.startswith(sid))
    assert "active" in row and "3600s" in row and "cli-sched" in row
    code, out, _ = cli(sstack, "list", "--state", "active", "--size", "100", "-q")
    assert code == 0 and sid in out.split()
    code, out, _ = cli(sstack, "show", sid)
    assert code == 0 and f"id:              {sid}" in out and SECRET not in out and '"token": "***"' in out

    code, out, _ = cli(sstack, "pause", sid)
    assert code == 0 and out.split()[:2] == [sid, "paused"]
    code, out, _ = cli(sstack, "list", "--state", "paused", "--size", "100", "-q")
    assert sid in out.split()
    code, out, _ = cli(sstack, "resume", sid, "--json")
    assert code == 0 and json.loads(out)["state"] == "active"
    code, out, _ = cli(sstack, "set", sid, "--interval", "900", "--json")
    assert code == 0 and json.loads(out)["interval"] == 900
    code, out, _ = cli(sstack, "set", sid, "--cron", "15 2 * * *")
    assert code == 0 and "every 15 2 * * *" in out and "T02:15:00.000Z" in out
    code, out, err = cli(sstack, "set", sid, "--interval", "5")
    assert code == 1 and "interval" in err

    code, _, err = cli(sstack, "pause", sid, token=VIEWER_TOKEN)
    assert code == 1 and "403" in err
    code, out, _ = cli(sstack, "delete", sid)
    assert code == 0 and out.split()[:2] == [sid, "deleted"]
    code, out, err = cli(sstack, "show", sid, "--json")
    assert code == 1 and json.loads(out)["code"] == 107 and "ScheduleNotFound" in err
