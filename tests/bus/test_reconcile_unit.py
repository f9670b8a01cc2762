"""Result-backend entries → synthetic events (pure part of reconciliation)."""

from __future__ import annotations

from controlplane.bus.reconcile import events_from_meta
from controlplane.core.merge import fold


def test_success_meta_becomes_a_succeeded_event_at_date_done() -> None:
    meta = {
        "status": "SUCCESS",
        "result": {"n": 1},
        "date_done": "2024-01-01T00:00:00+00:00",
        "worker": "w@h",
    }
    (event,) = events_from_meta("c1", meta, now=2e9)
    assert event["type"] == "task-succeeded" and event["timestamp"] == 1704067200.0
    assert fold([event])["status"] == "SUCCESS"


def test_failure_meta_keeps_exception_and_traceback() -> None:
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": "ValueError", "exc_message": ["bad"]},
        "traceback": "TB",
    }
    doc = fold(events_from_meta("c1", meta, now=10.0))
    assert doc["status"] == "FAILURE"
    assert "ValueError" in doc["outcome"]["exception"] and doc["outcome"]["traceback"] == "TB"


def test_revoked_started_retry_and_pending_metas() -> None:
    assert fold(events_from_meta("c", {"status": "REVOKED"}, now=5.0))["status"] == "REVOKED"
    assert fold(events_from_meta("c", {"status": "STARTED", "worker": "w"}, now=5.0))["status"] == "STARTED"
    assert fold(events_from_meta("c", {"status": "RETRY"}, now=5.0))["status"] == "RETRY"
    assert events_from_meta("c", {"status": "PENDING"}, now=5.0) == []


def test_reconciled_events_never_undo_a_terminal_state() -> None:
    done = fold([{"type": "task-succeeded", "uuid": "c", "timestamp": 3.0, "result": "1"}])
    again = fold(events_from_meta("c", {"status": "STARTED"}, now=99.0), done)
    assert again["status"] == "SUCCESS"
