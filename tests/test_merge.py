"""The event merge against real Celery event sequences and synthetic ones.

The fixtures under ``tests/fixtures/events/`` were recorded from a real prefork
worker by ``tests/fixtures/capture_events.py``; each is the list of raw task
events of one task, in the order the receiver got them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core.merge import (
    FAILURE,
    PENDING,
    RESULT_LIMIT,
    RETRY,
    REVOKED,
    STARTED,
    STATUSES,
    SUCCESS,
    TASK_EVENT_TYPES,
    TERMINAL,
    TRACEBACK_LIMIT,
    ends_task,
    fold,
    merge,
    status_of,
)

EVENTS_DIR = Path(__file__).parent / "fixtures" / "events"
WORKER = "capture@fixtures"
SCENARIOS = ("succeed", "fail", "retry", "progress", "eta", "revoked_running", "revoked_queued")
EXPECTED_STATUS = {
    "succeed": SUCCESS,
    "fail": FAILURE,
    "retry": SUCCESS,
    "progress": SUCCESS,
    "eta": SUCCESS,
    "revoked_running": REVOKED,
    "revoked_queued": REVOKED,
}
TERMINAL_TYPES = {"task-succeeded", "task-failed", "task-revoked"}

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def _load(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((EVENTS_DIR / f"{name}.json").read_text()))


def load(name: str) -> list[dict[str, Any]]:
    """A fresh deep copy, so no test can leak mutations into another."""
    return copy.deepcopy(list(_load(name)))


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def is_terminal_event(event: dict[str, Any]) -> bool:
    return event.get("type") in {"task-succeeded", "task-failed", "task-revoked", "task-lost"} or (
        event.get("type") == "task-rejected" and not event.get("requeue")
    )


ALL_REAL = [e for name in SCENARIOS for e in load(name)]


# --------------------------------------------------------------------------- fixtures are real


@pytest.mark.parametrize("name", SCENARIOS)
def test_fixture_is_one_raw_task_sequence(name: str) -> None:
    events = load(name)
    assert 3 <= len(events) <= 20
    assert len({e["uuid"] for e in events}) == 1
    assert all(e["type"] in TASK_EVENT_TYPES for e in events)
    # Raw receiver output: Celery's own bookkeeping fields are still there.
    assert all({"timestamp", "clock", "local_received", "hostname", "pid"} <= set(e) for e in events)
    assert events[0]["type"] == "task-sent"
    assert sum(e["type"] in TERMINAL_TYPES for e in events) == 1
    assert (EVENTS_DIR / f"{name}.json").stat().st_size < 8192


# --------------------------------------------------------------------------- recorded order


@pytest.mark.parametrize("name", SCENARIOS)
def test_recorded_order_gives_status_times_and_worker(name: str) -> None:
    events = load(name)
    doc = fold(events)
    assert doc["status"] == EXPECTED_STATUS[name]
    (terminal,) = [e for e in events if e["type"] in TERMINAL_TYPES]
    assert doc["end_time"] == terminal["timestamp"]
    assert doc["created_time"] == of_type(events, "task-sent")[0]["timestamp"]
    assert doc["received_time"] == of_type(events, "task-received")[0]["timestamp"]
    started = of_type(events, "task-started")
    if started:
        assert doc["start_time"] == started[0]["timestamp"]
    else:
        assert doc.get("start_time") is None
    assert doc["worker"] == WORKER
    assert doc["worker_pid"] == terminal["pid"]
    assert doc["celery_name"] == events[0]["name"]
    assert doc["celery_args"] == events[0]["args"]


def test_succeed_outcome() -> None:
    events = load("succeed")
    doc = fold(events)
    done = of_type(events, "task-succeeded")[0]
    assert doc["outcome"] == {"result": "{'sum': 5, 'items': [2, 3]}", "runtime": done["runtime"]}
    assert doc["retries"] == 0


def test_fail_outcome_has_exception_and_traceback() -> None:
    events = load("fail")
    doc = fold(events)
    failed = of_type(events, "task-failed")[0]
    assert doc["outcome"]["exception"] == "ValueError('bad input: nope')"
    assert doc["outcome"]["traceback"] == failed["traceback"]
    assert "Traceback (most recent call last)" in doc["outcome"]["traceback"]
    assert "ValueError: bad input: nope" in doc["outcome"]["traceback"]


def test_retry_counts_two_retries_and_keeps_first_start() -> None:
    events = load("retry")
    doc = fold(events)
    assert doc["status"] == SUCCESS
    assert doc["retries"] == 2
    assert doc["retry_reason"] == "RuntimeError('transient #1')"
    starts = [e["timestamp"] for e in of_type(events, "task-started")]
    assert len(starts) == 3
    assert doc["start_time"] == starts[0] != starts[-1]
    # created_time is the original submission, not one of the re-sent retry messages.
    assert doc["created_time"] == min(e["timestamp"] for e in of_type(events, "task-sent"))
    assert doc["outcome"]["result"] == "{'label': 'flaky', 'retries': 2}"


def test_retry_status_along_the_recorded_order() -> None:
    events = load("retry")
    statuses = []
    doc: dict[str, Any] = {}
    for event in events:
        doc = merge(doc, event)
        statuses.append(doc["status"])
    # sent, received, started, [retry 1: sent, received, retried], started,
    # [retry 2: sent, received, retried], started, succeeded
    assert [e["type"] for e in events][5] == "task-retried"
    assert statuses == [
        PENDING,
        PENDING,
        STARTED,
        STARTED,
        STARTED,
        RETRY,
        STARTED,
        STARTED,
        STARTED,
        RETRY,
        STARTED,
        SUCCESS,
    ]


def test_retry_status_holds_until_next_start_whatever_arrives_in_between() -> None:
    events = load("retry")
    retried = of_type(events, "task-retried")[0]
    before = [e for e in events if e["timestamp"] <= retried["timestamp"]]
    doc = fold(before)
    assert doc["status"] == RETRY
    # The re-sent message's task-sent/task-received (even late ones) never pull it back to PENDING.
    late_sent = {**of_type(events, "task-sent")[1], "timestamp": retried["timestamp"] + 0.01}
    late_received = {**of_type(events, "task-received")[1], "timestamp": retried["timestamp"] + 0.02}
    assert fold([late_sent, late_received], doc)["status"] == RETRY
    next_start = next(e for e in of_type(events, "task-started") if e["timestamp"] > retried["timestamp"])
    assert merge(doc, next_start)["status"] == STARTED


def test_revoked_running_is_terminated() -> None:
    doc = fold(load("revoked_running"))
    assert doc["outcome"] == {"terminated": True, "expired": False, "signum": 15, "reason": "terminated"}
    assert doc["start_time"] is not None


def test_revoked_queued_never_started() -> None:
    events = load("revoked_queued")
    doc = fold(events)
    assert doc["outcome"]["terminated"] is False
    assert doc["outcome"]["reason"] == "revoked"
    assert doc.get("start_time") is None
    assert doc["celery_eta"] == events[0]["eta"] is not None


def test_eta_is_recorded() -> None:
    events = load("eta")
    doc = fold(events)
    assert doc["celery_eta"] == events[0]["eta"] is not None
    assert doc["status"] == SUCCESS


def test_progress_fields() -> None:
    events = load("progress")
    progress = of_type(events, "task-progress")
    assert len(progress) == 4
    doc = fold(events)
    assert doc["progress"] == {"stage": "report", "done": 3, "total": 3}
    # Before the last progress event, the latest one so far is shown.
    partial = fold([e for e in events if e is not progress[-1]])
    assert partial["progress"] == {"stage": "scan", "done": 2, "total": 3}
    # The progress events come from the pool child; a child pid is recorded while it is the latest.
    upto = events.index(progress[1]) + 1
    assert fold(events[:upto])["worker_pid"] == progress[1]["pid"]


# --------------------------------------------------------------------------- order independence


@st.composite
def shuffled_with_repeats(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event at least once, some several times, in any order."""
    extra = draw(st.lists(st.sampled_from(events), max_size=2 * len(events)))
    return draw(st.permutations(events + extra))


@pytest.mark.parametrize("name", SCENARIOS)
@PROPERTY
@given(data=st.data())
def test_any_permutation_with_repeats_gives_the_recorded_document(name: str, data: st.DataObject) -> None:
    events = load(name)
    expected = fold(events)
    assert fold(data.draw(shuffled_with_repeats(events))) == expected


def _retry_runs() -> list[list[dict[str, Any]]]:
    """The retry fixture split into its three runs (one per message)."""
    runs: list[list[dict[str, Any]]] = []
    for event in load("retry"):
        if event["type"] == "task-sent":
            runs.append([])
        runs[-1].append(event)
    return runs


@PROPERTY
@given(data=st.data())
def test_interleaved_retry_runs_give_the_recorded_document(data: st.DataObject) -> None:
    runs = _retry_runs()
    assert len(runs) == 3
    expected = fold(load("retry"))
    # Interleave the runs (each keeps its own order, as one broker channel would), with repeats.
    order = data.draw(st.permutations([i for i, run in enumerate(runs) for _ in run]))
    cursors = [0] * len(runs)
    merged: list[dict[str, Any]] = []
    for i in order:
        merged.append(runs[i][cursors[i]])
        cursors[i] += 1
    redelivered = data.draw(st.lists(st.sampled_from(merged), max_size=6))
    assert fold(merged + redelivered) == expected
    # Whole runs concatenated in any order.
    assert fold([e for run in data.draw(st.permutations(runs)) for e in run]) == expected


# Synthetic events: every type the system folds, with few timestamps, hosts and pids so that
# ties (equal timestamps, different payloads) are common.
_TS = st.one_of(st.sampled_from([1.0, 2.0, 2.5, 3.0]), st.none())
_HOST = st.sampled_from(["w1@h", "w2@h", None])
_PID = st.sampled_from([100, 200, None])
_TYPES = sorted(TASK_EVENT_TYPES | {"task-custom", "worker-heartbeat"})


@st.composite
def synthetic_event(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"type": draw(st.sampled_from(_TYPES)), "uuid": "u"}
    ts = draw(_TS)
    if ts is not None:
        event["timestamp"] = ts
    for key, strategy in (
        ("hostname", _HOST),
        ("pid", _PID),
        ("retries", st.sampled_from([0, 1, 2, None])),
        ("eta", st.sampled_from(["2030-01-01T00:00:00+00:00", "2030-01-02T00:00:00+00:00", None])),
        ("name", st.sampled_from(["a", "b", None])),
        ("result", st.sampled_from(["1", "2", None])),
        ("exception", st.sampled_from(["E('x')", "E('y')", None])),
        ("reason", st.sampled_from(["gone", None])),
        ("requeue", st.booleans()),
        ("terminated", st.booleans()),
        ("source", st.sampled_from(["api", None])),
        ("stage", st.sampled_from(["scan", "report", None])),
        ("done", st.sampled_from([0, 1, None])),
    ):
        value = draw(strategy)
        if value is not None:
            event[key] = value
    return event


ANY_EVENT = st.one_of(st.sampled_from(ALL_REAL), synthetic_event())


@PROPERTY
@given(events=st.lists(ANY_EVENT, max_size=14), data=st.data())
def test_fold_is_order_independent_for_any_events(events: list[dict[str, Any]], data: st.DataObject) -> None:
    """Real events of all scenarios under one task, plus synthetic ones: any two orders agree."""
    assert fold(data.draw(st.permutations(events))) == fold(events)


@PROPERTY
@given(prefix=st.lists(ANY_EVENT, max_size=10), event=ANY_EVENT)
def test_merge_is_idempotent(prefix: list[dict[str, Any]], event: dict[str, Any]) -> None:
    once = merge(fold(prefix), event)
    assert merge(once, event) == once
    assert fold(prefix + prefix) == fold(prefix)


@PROPERTY
@given(prefix=st.lists(ANY_EVENT, max_size=10), a=ANY_EVENT, b=ANY_EVENT)
def test_merge_commutes_for_any_pair(
    prefix: list[dict[str, Any]], a: dict[str, Any], b: dict[str, Any]
) -> None:
    doc = fold(prefix)
    assert merge(merge(doc, a), b) == merge(merge(doc, b), a)


@PROPERTY
@given(prefix=st.lists(ANY_EVENT, max_size=10), event=ANY_EVENT)
def test_merge_does_not_mutate_its_inputs(prefix: list[dict[str, Any]], event: dict[str, Any]) -> None:
    doc = fold(prefix)
    doc_before, event_before = copy.deepcopy(doc), copy.deepcopy(event)
    merge(doc, event)
    assert doc == doc_before
    assert event == event_before


def test_tied_timestamps_from_two_processes_pick_one_pid_in_any_order() -> None:
    a = {"type": "task-progress", "timestamp": 5.0, "hostname": "w@h", "pid": 10, "stage": "s", "done": 1}
    b = {**a, "pid": 20}
    assert fold([a, b]) == fold([b, a])
    assert fold([a, b])["worker_pid"] == 20


def test_retry_resend_with_new_eta_gives_the_same_eta_in_any_order() -> None:
    sent = of_type(load("retry"), "task-sent")
    assert len({e["eta"] for e in sent}) == 3
    forward, backward = fold(sent), fold(sent[::-1])
    assert forward["celery_eta"] == backward["celery_eta"] == sent[1]["eta"]
    assert forward["created_time"] == backward["created_time"] == sent[0]["timestamp"]


# --------------------------------------------------------------------------- monotonicity


@PROPERTY
@given(events=st.lists(ANY_EVENT, min_size=1, max_size=14), data=st.data())
def test_any_subset_with_a_terminal_event_is_terminal(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    terminal = data.draw(st.sampled_from([e for e in ALL_REAL if e["type"] in TERMINAL_TYPES]))
    doc = fold(data.draw(st.permutations([*events, terminal])))
    assert doc["status"] in TERMINAL
    assert doc["outcome"] is not None


@PROPERTY
@given(events=st.lists(ANY_EVENT, min_size=1, max_size=14))
def test_status_is_terminal_iff_a_terminal_event_was_folded(events: list[dict[str, Any]]) -> None:
    assert (fold(events)["status"] in TERMINAL) == any(is_terminal_event(e) for e in events)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_prefix_after_the_terminal_event_stays_terminal(name: str) -> None:
    events = load(name)
    seen_terminal = False
    for i in range(1, len(events) + 1):
        status = fold(events[:i])["status"]
        seen_terminal = seen_terminal or events[i - 1]["type"] in TERMINAL_TYPES
        assert (status == EXPECTED_STATUS[name]) if seen_terminal else (status not in TERMINAL)


NON_TERMINAL = st.one_of(
    st.sampled_from([e for e in ALL_REAL if not is_terminal_event(e)]),
    synthetic_event().filter(lambda e: not is_terminal_event(e)),
)


@pytest.mark.parametrize("name", SCENARIOS)
@PROPERTY
@given(later=st.lists(NON_TERMINAL, min_size=1, max_size=10), shift=st.floats(0, 1e6))
def test_non_terminal_events_never_undo_a_terminal_status(
    name: str, later: list[dict[str, Any]], shift: float
) -> None:
    doc = fold(load(name))
    # Even when they carry timestamps later than the terminal event.
    later = [{**e, "timestamp": doc["end_time"] + shift} if "timestamp" in e else e for e in later]
    after = fold(later, doc)
    assert after["status"] == doc["status"]
    assert after["outcome"] == doc["outcome"]
    assert after["end_time"] == doc["end_time"]


def test_late_task_received_never_pulls_a_started_task_back_to_pending() -> None:
    sent, received, started, _ = load("succeed")
    late = {**received, "timestamp": started["timestamp"] + 10}
    assert fold([sent, started, late])["status"] == STARTED


# --------------------------------------------------------------------------- synthetic events


def _running() -> dict[str, Any]:
    sent, received, started, _ = load("succeed")
    doc = fold([sent, received, started])
    assert doc["status"] == STARTED
    return doc


def _queued() -> dict[str, Any]:
    sent, received, _ = load("revoked_queued")
    doc = fold([sent, received])
    assert doc["status"] == PENDING
    return doc


def test_api_revoke_of_a_queued_task() -> None:
    doc = _queued()
    api = {"type": "task-revoked", "uuid": "x", "timestamp": doc["received_time"] + 1, "source": "api",
           "reason": "revoked while queued"}  # fmt: skip
    out = merge(doc, api)
    assert out["status"] == REVOKED
    assert out["end_time"] == api["timestamp"]
    assert out["outcome"] == {"terminated": False, "expired": False, "signum": None,
                              "reason": "revoked while queued"}  # fmt: skip
    # The API is not a worker: the task stays attributed to the worker that received it.
    assert merge(doc, {**api, "hostname": "api-host"})["worker"] == WORKER


def test_api_revoke_then_the_workers_own_revoke_stay_revoked_in_any_order() -> None:
    events = load("revoked_queued")
    worker_revoke = events[-1]
    api = {"type": "task-revoked", "uuid": worker_revoke["uuid"], "source": "api",
           "timestamp": events[1]["timestamp"] + 0.5, "reason": "revoked while queued"}  # fmt: skip
    a, b = fold([*events, api]), fold([api, *events[::-1]])
    assert a == b
    assert a["status"] == REVOKED
    assert a["end_time"] == worker_revoke["timestamp"]  # the later terminal event wins


def test_task_lost_fails_a_running_task() -> None:
    doc = _running()
    lost = {"type": "task-lost", "uuid": "x", "timestamp": doc["start_time"] + 30, "hostname": WORKER,
            "reason": "WorkerLostError: worker gone"}  # fmt: skip
    out = merge(doc, lost)
    assert out["status"] == FAILURE
    assert out["outcome"] == {"exception": "WorkerLostError: worker gone"}
    assert out["end_time"] == lost["timestamp"]
    assert out["worker"] == WORKER
    no_reason = merge(doc, {k: v for k, v in lost.items() if k != "reason"})
    assert no_reason["outcome"] == {"exception": "WorkerLost"}


def test_terminal_events_pick_the_latest_then_the_highest_rank() -> None:
    doc = _running()
    t = doc["start_time"] + 1
    ok = {"type": "task-succeeded", "timestamp": t, "hostname": WORKER, "result": "1"}
    lost = {"type": "task-lost", "timestamp": t + 1, "hostname": WORKER, "reason": "gone"}
    # A lost-worker verdict is a presumption: the worker's own outcome wins, whatever its time.
    assert fold([ok, lost], doc)["status"] == fold([lost, ok], doc)["status"] == SUCCESS
    assert fold([ok, lost], doc)["outcome"] == fold([lost, ok], doc)["outcome"]
    revoked = {"type": "task-revoked", "timestamp": t, "hostname": WORKER, "terminated": True}
    # Same timestamp: SUCCESS < FAILURE < REVOKED.
    failed = {"type": "task-failed", "timestamp": t, "hostname": WORKER, "exception": "E()"}
    assert fold([ok, failed], doc)["status"] == fold([failed, ok], doc)["status"] == FAILURE
    assert fold([failed, revoked, ok], doc)["status"] == fold([ok, revoked, failed], doc)["status"] == REVOKED


@pytest.mark.parametrize("make_doc", [_queued, _running])
def test_rejected_without_requeue_is_failure(make_doc: Any) -> None:
    doc = make_doc()
    rejected = {"type": "task-rejected", "timestamp": 9e9, "hostname": WORKER, "requeue": False}
    out = merge(doc, rejected)
    assert out["status"] == FAILURE
    assert out["outcome"] == {"exception": "Rejected: the worker rejected the message"}
    assert out["end_time"] == 9e9
    assert merge(doc, {k: v for k, v in rejected.items() if k != "requeue"})["status"] == FAILURE


@pytest.mark.parametrize("make_doc", [_queued, _running])
def test_rejected_with_requeue_is_not_terminal(make_doc: Any) -> None:
    doc = make_doc()
    out = merge(doc, {"type": "task-rejected", "timestamp": 9e9, "hostname": WORKER, "requeue": True})
    assert out["status"] == doc["status"]
    assert out["status"] not in TERMINAL
    assert out.get("end_time") is None
    assert "outcome" not in out


@pytest.mark.parametrize(
    "event",
    [
        {"type": "task-custom", "timestamp": 9e9, "hostname": "other@h", "result": "x"},
        {"type": "worker-heartbeat", "timestamp": 9e9, "hostname": "other@h"},
        {"timestamp": 9e9, "hostname": "other@h"},
        {},
    ],
)
def test_unknown_events_change_nothing_but_copy(event: dict[str, Any]) -> None:
    for doc in (_queued(), _running(), fold(load("fail"))):
        out = merge(doc, event)
        assert out == doc
        assert out is not doc
        out["status"] = "mutated"
        assert doc["status"] != "mutated"


def test_merge_into_nothing() -> None:
    assert merge(None, {"type": "task-custom"}) == {"_m": {}, "status": PENDING}
    assert merge({}, {"type": "task-started", "timestamp": 1.0})["status"] == STARTED


def test_events_without_timestamp() -> None:
    sent, received, started, succeeded = load("succeed")
    bare = [{k: v for k, v in e.items() if k != "timestamp"} for e in (sent, received, started, succeeded)]
    doc = fold(bare)
    assert doc["status"] == SUCCESS
    # No timestamp means unknown times, never 1970.
    assert doc.get("created_time") is None
    assert doc.get("received_time") is None
    assert doc.get("start_time") is None
    assert doc["end_time"] is None
    # They never overwrite times that are known ...
    full = fold([sent, received, started])
    again = fold(bare[:3], full)
    for key in ("created_time", "received_time", "start_time", "status", "worker", "celery_name"):
        assert again[key] == full[key]
    # ... and a timestamped terminal event wins over a bare one, in either order.
    failed = {"type": "task-failed", "timestamp": started["timestamp"] + 1, "hostname": WORKER,
              "exception": "E()"}  # fmt: skip
    a, b = fold([bare[3], failed], full), fold([failed, bare[3]], full)
    assert a == b
    assert a["status"] == FAILURE
    assert a["end_time"] == failed["timestamp"]


def test_non_numeric_timestamps_count_as_missing() -> None:
    for ts in ("123", True, float("nan"), float("inf")):
        doc = fold([{"type": "task-started", "timestamp": ts}, {"type": "task-started", "timestamp": 5.0}])
        assert doc["start_time"] == 5.0


# --------------------------------------------------------------------------- clipping


def test_huge_result_is_clipped() -> None:
    doc = merge(_running(), {"type": "task-succeeded", "timestamp": 9e9, "result": "r" * (RESULT_LIMIT * 3)})
    result = doc["outcome"]["result"]
    assert len(result) == RESULT_LIMIT + 1
    assert result == "r" * RESULT_LIMIT + "…"


def test_small_result_is_kept_whole_and_non_strings_become_json() -> None:
    exact = "r" * RESULT_LIMIT
    assert merge({}, {"type": "task-succeeded", "result": exact})["outcome"]["result"] == exact
    as_json = merge({}, {"type": "task-succeeded", "result": {"a": [1, 2]}})["outcome"]["result"]
    assert json.loads(as_json) == {"a": [1, 2]}


def test_huge_traceback_and_exception_are_clipped() -> None:
    failed = of_type(load("fail"), "task-failed")[0]
    huge = {**failed, "traceback": failed["traceback"] * 1000, "exception": "E" * (RESULT_LIMIT + 50)}
    assert len(huge["traceback"]) > TRACEBACK_LIMIT
    outcome = merge(_running(), huge)["outcome"]
    assert outcome["traceback"] == huge["traceback"][:TRACEBACK_LIMIT] + "…"
    assert outcome["exception"] == "E" * RESULT_LIMIT + "…"


def test_huge_retry_reason_and_progress_stage_are_clipped() -> None:
    retried = {"type": "task-retried", "timestamp": 1.0, "exception": "x" * (RESULT_LIMIT + 1)}
    assert merge({}, retried)["retry_reason"] == "x" * RESULT_LIMIT + "…"
    progress = {"type": "task-progress", "timestamp": 1.0, "stage": "s" * 100, "done": 1, "total": 2}
    assert merge({}, progress)["progress"] == {"stage": "s" * 64 + "…", "done": 1, "total": 2}


# --------------------------------------------------------------------------- status_of


def test_status_of_prefers_terminal_over_phase() -> None:
    assert status_of({}) == PENDING
    assert status_of({"phase": [1, 2.0, STARTED]}) == STARTED
    assert status_of({"phase": [1, 9.0, STARTED], "terminal": [1.0, 0, SUCCESS, "{}", True]}) == SUCCESS
    for name in SCENARIOS:
        doc = fold(load(name))
        assert status_of(doc["_m"]) == doc["status"] in STATUSES


# --------------------------------------------------------------------------- bookkeeping form


def _older_form(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its bookkeeping written as earlier versions wrote it (values' JSON in the keys)."""
    old = copy.deepcopy(doc)
    meta = old.get("_m", {})
    for name, ts in meta.get("once", {}).items():
        meta["once"][name] = [ts, json.dumps(old[f"celery_{name}"], sort_keys=True, default=str)]
    if "terminal" in meta:
        ts, rank, status, has_ts = meta["terminal"]
        payload = json.dumps(old["outcome"], sort_keys=True, default=str)
        meta["terminal"] = [ts, rank, status, payload, has_ts]
    if "retry" in meta:
        meta["retry"] = [meta["retry"], json.dumps(old["retry_reason"], sort_keys=True, default=str)]
    return old


def test_bookkeeping_does_not_repeat_the_stored_values() -> None:
    for name in ("fail", "retry", "eta"):
        doc = fold(load(name))
        meta = json.dumps(doc["_m"])
        for value in (doc.get("celery_kwargs"), doc.get("celery_eta"), doc.get("retry_reason")):
            if isinstance(value, str) and len(value) > 8:
                assert value not in meta and json.dumps(value) not in meta
        assert json.dumps(doc["outcome"]["exception" if name == "fail" else "result"]) not in meta
    failed = fold(load("fail"))
    assert len(json.dumps(failed["_m"])) < 400 < len(failed["outcome"]["traceback"])


@PROPERTY
@given(prefix=st.lists(ANY_EVENT, max_size=8), rest=st.lists(ANY_EVENT, min_size=1, max_size=8))
def test_a_document_in_the_older_form_merges_like_the_current_one(
    prefix: list[dict[str, Any]], rest: list[dict[str, Any]]
) -> None:
    """Documents stored by earlier versions go on merging to the same result (in today's form)."""
    assert fold(rest, _older_form(fold(prefix))) == fold([*prefix, *rest])


@PROPERTY
@given(prefix=st.lists(ANY_EVENT, max_size=8), rest=st.lists(ANY_EVENT, max_size=8))
def test_ties_are_decided_the_same_after_a_round_trip_through_bson(
    prefix: list[dict[str, Any]], rest: list[dict[str, Any]]
) -> None:
    """Tie-breaks read the stored values, so they must survive the database's encoding."""
    stored = bson.decode(bson.encode(fold(prefix)))
    assert fold(rest, stored) == fold([*prefix, *rest])


def test_equal_timestamps_are_decided_by_the_values_in_either_order_and_after_storage() -> None:
    """Set-once fields keep the smaller value, terminal payloads and retry reasons the larger."""
    pairs = [
        (
            {"type": "task-sent", "uuid": "u", "timestamp": 5.0, "name": "b", "eta": "2030-01-02"},
            {"type": "task-received", "uuid": "u", "timestamp": 5.0, "name": "a", "eta": "2030-01-01"},
            lambda d: (d["celery_name"], d["celery_eta"]) == ("a", "2030-01-01"),
        ),
        (
            {"type": "task-succeeded", "uuid": "u", "timestamp": 7.0, "result": "2"},
            {"type": "task-succeeded", "uuid": "u", "timestamp": 7.0, "result": "1"},
            lambda d: d["outcome"]["result"] == "2" and d["end_time"] == 7.0,
        ),
        (
            {"type": "task-retried", "uuid": "u", "timestamp": 6.0, "exception": "E('y')"},
            {"type": "task-retried", "uuid": "u", "timestamp": 6.0, "exception": "E('x')"},
            lambda d: d["retry_reason"] == "E('y')",
        ),
    ]
    for first, second, wins in pairs:
        for x, y in ((first, second), (second, first)):
            assert wins(fold([x, y]))
            assert wins(merge(bson.decode(bson.encode(merge(None, x))), y))


@PROPERTY
@given(event=ANY_EVENT)
def test_ends_task_says_whether_the_event_alone_makes_the_task_terminal(event: dict[str, Any]) -> None:
    """The consumer's cheap check (type only) agrees with what the merge does."""
    assert ends_task(event) == (merge(None, event)["status"] in TERMINAL) == is_terminal_event(event)
