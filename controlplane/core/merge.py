"""The event merge: ``merge(document, event) -> document``, a pure function.

The task document's event-derived part is a join-semilattice: every field is
either a maximum under a total order or a set-once value, so folding the same
events in any order, with any repeats, gives the same document.  That is what
lets the consumer apply events at least once, in batches, in whatever order
the broker delivers them.

Bookkeeping lives under ``_m`` (never shown to clients):

* ``phase``: ``[class, timestamp, status]`` of the latest non-terminal event.
  ``class`` is 0 for sent/received (PENDING) and 1 for started/retried, so a
  late ``task-received`` can never pull a running task back to PENDING, while
  a ``task-retried`` followed by a new ``task-started`` shows STARTED again.
* ``presumed``: the same for ``task-lost`` (the consumer's verdict that the worker
  is gone); it sets the status only until a terminal event from the task arrives.
* ``terminal``: ``[timestamp, rank, status, has_timestamp]`` of the winning
  terminal event (SUCCESS < FAILURE < REVOKED on equal timestamps, then the
  payload, then a timestamped event over a bare one).  Its payload (result,
  exception, ...) is stored in ``outcome`` and replaced only when the key wins.
* ``once``: ``{field: timestamp}`` for the ``celery_*`` descriptive fields: the
  earliest event carrying a value wins (a retry re-sends the task under the
  same id with a new ``eta``, so "first seen" would depend on order); equal
  timestamps are decided by the smaller value.
* ``retry``: the timestamp of the latest ``task-retried`` (its reason in ``retry_reason``).
* ``worker``: ``[timestamp, hostname, pid]`` of the latest worker event.

The winning values themselves are not repeated under ``_m``: where two keys
tie on their timestamps the stored value (``celery_<field>``, ``outcome``,
``retry_reason``) is what the newcomer is compared with.  Only the merge writes
those fields, so the stored value is always the winner's; this keeps every
written document (which the store's ten index expressions each parse) about a
quarter smaller.  Bookkeeping written in the older form (the value's JSON
inside the key) is read as the same key.

Times: ``created_time`` / ``received_time`` / ``start_time`` are minima over
the events that carry a timestamp; ``end_time`` is the winning terminal
event's timestamp (``None`` if it had none).  An event without a (finite,
numeric) timestamp sorts first but never sets a time.

``status`` is derived: the terminal status if any terminal event was seen,
else the phase status.  Terminal statuses therefore never regress.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

PENDING, STARTED, RETRY = "PENDING", "STARTED", "RETRY"
SUCCESS, FAILURE, REVOKED = "SUCCESS", "FAILURE", "REVOKED"
STATUSES = (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED)
TERMINAL = frozenset({SUCCESS, FAILURE, REVOKED})
NON_TERMINAL = tuple(s for s in STATUSES if s not in TERMINAL)
_TERMINAL_RANK = {SUCCESS: 0, FAILURE: 1, REVOKED: 2}

RESULT_LIMIT = 4096
TRACEBACK_LIMIT = 16384

# Non-terminal events: type -> (class, status)
_PHASE = {
    "task-sent": (0, PENDING),
    "task-received": (0, PENDING),
    "task-started": (1, STARTED),
    "task-retried": (1, RETRY),
}
TASK_EVENT_TYPES = frozenset(
    [*_PHASE, "task-succeeded", "task-failed", "task-revoked", "task-rejected", "task-progress", "task-lost"]
)

# Set-once descriptive fields, taken from whichever event carries them.
_ONCE = ("name", "args", "kwargs", "eta", "expires", "root_id", "parent_id")


def _clip(value: Any, limit: int) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, default=str, ensure_ascii=False)
    return value if len(value) <= limit else value[:limit] + "…"


def _has_ts(event: Mapping[str, Any]) -> bool:
    ts = event.get("timestamp")
    return isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts)


def _ts(event: Mapping[str, Any]) -> float:
    """The event's timestamp; 0.0 (sorts first) when it has none."""
    return float(event["timestamp"]) if _has_ts(event) else 0.0  # NaN would break every max


def _exception_of(event: Mapping[str, Any]) -> Any:
    """The failure's exception; the real one when Celery reported only billiard's wrapper.

    For failures the worker's main process detects (a lost pool process, a hard
    time limit) Celery's ``task-failed`` event says ``ExceptionWithTraceback()``;
    the traceback's last line names the real exception.
    """
    exc = event.get("exception")
    trace = event.get("traceback")
    if isinstance(exc, str) and exc.startswith("ExceptionWithTraceback(") and isinstance(trace, str):
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        if lines:
            name, sep, message = lines[-1].partition(": ")
            name = name.rsplit(".", 1)[-1]
            return f"{name}: {message}" if sep else name
    return exc


_ENDING_TYPES = frozenset({"task-succeeded", "task-failed", "task-lost", "task-revoked"})


def ends_task(event: Mapping[str, Any]) -> bool:
    """Whether the event gives its task a terminal status (or a presumed one, ``task-lost``).

    Decided by the event's type alone (no payload is built): the consumer asks this of
    every event it buffers.
    """
    kind = event.get("type")
    return kind in _ENDING_TYPES or (kind == "task-rejected" and not event.get("requeue"))


def _terminal_of(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if not ends_task(event):
        return None
    kind = event.get("type")
    if kind == "task-succeeded":
        runtime = event.get("runtime")
        return SUCCESS, {"result": _clip(event.get("result"), RESULT_LIMIT), "runtime": runtime}
    if kind == "task-failed":
        return FAILURE, {
            "exception": _clip(_exception_of(event), RESULT_LIMIT),
            "traceback": _clip(event.get("traceback"), TRACEBACK_LIMIT),
        }
    if kind == "task-lost":
        return FAILURE, {"exception": _clip(event.get("reason") or "WorkerLost", RESULT_LIMIT)}
    if kind == "task-revoked":
        return REVOKED, {
            "terminated": bool(event.get("terminated")),
            "expired": bool(event.get("expired")),
            "signum": event.get("signum"),
            "reason": event.get("reason") or ("terminated" if event.get("terminated") else "revoked"),
        }
    return FAILURE, {"exception": "Rejected: the worker rejected the message"}  # not requeued


def _ordered_key(value: Any) -> Any:
    """Total order over JSON-ish payloads, used only to break exact ties."""
    return json.dumps(value, sort_keys=True, default=str)


def _current_form(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the bookkeeping, with keys written by earlier versions in today's form.

    Those held the winning value's JSON inside the key: ``once`` and ``retry`` as
    ``[timestamp, value JSON]``, ``terminal`` with the payload's JSON fourth.
    """
    out = dict(meta)
    once = out.get("once")
    if once and any(isinstance(v, list | tuple) for v in once.values()):
        out["once"] = {k: v[0] if isinstance(v, list | tuple) else v for k, v in once.items()}
    if isinstance(out.get("retry"), list | tuple):
        out["retry"] = out["retry"][0]
    terminal = out.get("terminal")
    if terminal is not None and len(terminal) == 5:
        out["terminal"] = [*terminal[:3], terminal[4]]
    return out


def _terminal_beats(key: list[Any], payload: Any, held: list[Any], held_payload: Any) -> bool:
    """The order ``[timestamp, rank, status, payload JSON, has_timestamp]``, with the held
    payload's JSON taken from the stored ``outcome`` instead of the key."""
    if key[:3] != held[:3]:
        return bool(key[:3] > held[:3])
    mine, theirs = _ordered_key(payload), _ordered_key(held_payload)
    if mine != theirs:
        return mine > theirs
    return bool(key[3] > held[3])


def merge(document: Mapping[str, Any] | None, event: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new document: ``document`` with ``event`` folded in.

    Unknown event types leave the document unchanged (but copied).
    """
    doc: dict[str, Any] = dict(document or {})
    meta = _current_form(doc.get("_m") or {})
    kind = event.get("type")
    ts = _ts(event)

    if kind in _PHASE:
        cls, status = _PHASE[str(kind)]
        key = [cls, ts, status]
        if meta.get("phase") is None or key > meta["phase"]:
            meta["phase"] = key
    terminal = _terminal_of(event)
    if terminal is not None:
        status, payload = terminal
        rank = _TERMINAL_RANK[status]
        if kind == "task-lost":
            # A lost worker is the consumer's presumption, not the worker's word: any terminal
            # event from the task itself (however late it arrives, whatever its timestamp)
            # wins.  Rare and small, so its key keeps the payload's JSON.
            key = [ts, rank, status, _ordered_key(payload), _has_ts(event)]
            if meta.get("presumed") is None or key > meta["presumed"]:
                meta["presumed"] = key
                if meta.get("terminal") is None:
                    doc["outcome"] = payload
                    doc["end_time"] = ts if _has_ts(event) else None
        else:
            held = meta.get("terminal")
            key = [ts, rank, status, _has_ts(event)]
            if held is None or _terminal_beats(key, payload, held, doc.get("outcome")):
                meta["terminal"] = key
                doc["outcome"] = payload
                doc["end_time"] = ts if _has_ts(event) else None

    if kind == "task-sent" and _has_ts(event):
        # The earliest submission (a retry re-sends the task with the same id, later).
        doc["created_time"] = ts if doc.get("created_time") is None else min(doc["created_time"], ts)
    if kind == "task-received" and _has_ts(event):
        doc["received_time"] = ts if doc.get("received_time") is None else min(doc["received_time"], ts)
    if kind == "task-started" and _has_ts(event):
        doc["start_time"] = ts if doc.get("start_time") is None else min(doc["start_time"], ts)
    if kind in ("task-sent", "task-received"):
        retries = event.get("retries")
        if isinstance(retries, int) and not isinstance(retries, bool):
            doc["retries"] = max(int(doc.get("retries") or 0), retries)
        # The value from the earliest event that carries one (ties: smallest value), so
        # a retry's re-sent message (new ``eta``) wins or loses the same in any order.
        once: dict[str, Any] = dict(meta.get("once") or {})
        for name in _ONCE:
            value = event.get(name)
            if value is None:
                continue
            field = f"celery_{name}"
            held = once.get(name)
            tie = ts == held and _ordered_key(value) < _ordered_key(doc.get(field))
            if held is None or ts < held or tie:
                once[name] = ts
                doc[field] = value
        meta["once"] = once
    if kind == "task-retried":
        exc = _clip(event.get("exception"), RESULT_LIMIT)
        held = meta.get("retry")
        if (
            held is None
            or ts > held
            or (ts == held and _ordered_key(exc) > _ordered_key(doc.get("retry_reason")))
        ):
            meta["retry"] = ts
            doc["retry_reason"] = exc

    hostname = event.get("hostname")
    if (hostname and kind in ("task-received", "task-started", "task-retried", "task-progress")) or (
        hostname and terminal is not None and event.get("source") != "api"
    ):
        pid = event.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        # pid is part of the key: two events with the same timestamp and host but
        # different processes (prefork parent and child) must pick the same pid in any order.
        wkey = [ts, str(hostname), -1 if pid is None else pid]
        if meta.get("worker") is None or wkey > meta["worker"]:
            meta["worker"] = wkey
            doc["worker"] = str(hostname)
            doc["worker_pid"] = pid

    if kind == "task-progress":
        pkey = [ts, _ordered_key([event.get("stage"), event.get("done"), event.get("total")])]
        if meta.get("progress") is None or pkey > meta["progress"]:
            meta["progress"] = pkey
            doc["progress"] = {
                "stage": _clip(event.get("stage"), 64),
                "done": event.get("done"),
                "total": event.get("total"),
            }

    doc["_m"] = meta
    doc["status"] = status_of(meta)
    return doc


def status_of(meta: Mapping[str, Any]) -> str:
    """The status the bookkeeping implies."""
    if meta.get("terminal"):
        return str(meta["terminal"][2])
    if meta.get("presumed"):
        return str(meta["presumed"][2])
    if meta.get("phase"):
        return str(meta["phase"][2])
    return PENDING


def fold(events: Iterable[Mapping[str, Any]], document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge every event into ``document`` (or an empty one)."""
    doc: dict[str, Any] = dict(document or {})
    for event in events:
        doc = merge(doc, event)
    return doc
