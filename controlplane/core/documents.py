"""The task document: its stored shape (:class:`TaskDocument`) and how clients see it (pure functions).

Times are stored as epoch seconds (floats) and shown as ISO 8601 UTC with
milliseconds, ``2023-07-10T08:30:00.000Z``; ``None`` when not known yet.

Every view is redacted for every role (:mod:`controlplane.core.redact`): credentials
in ``options`` show as ``"***"`` (the key kept), URLs in ``target`` lose their userinfo
and credential query values, the task's own secret values are replaced wherever they
appear in ``result``, ``exception``, ``traceback`` and ``retry_reason``, and those
texts carry no absolute server paths.  The stored document keeps the real values.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypedDict

from controlplane.core.redact import (
    redact_text,
    redacted_options,
    scrub_secrets,
    secrets_of,
    shorten_paths,
)


class TaskDocument(TypedDict, total=False):
    """One document of the ``tasks`` collection, as the store writes it and the merge updates it.

    ``_id`` is derived from ``celery_id`` (:func:`controlplane.store.tasks.task_oid`); times are
    epoch seconds; ``_m`` is the merge's bookkeeping (:mod:`controlplane.core.merge`), never shown.
    """

    _id: Any
    celery_id: str
    task_type: str
    name: str | None
    target: Any
    type: str | None
    task_tag: str | None
    options: dict[str, Any]
    data: dict[str, Any]
    status: str
    created_time: float | None
    received_time: float | None
    start_time: float | None
    end_time: float | None
    worker: str | None
    worker_pid: int | None
    progress: dict[str, Any]
    retries: int
    retry_reason: Any
    outcome: dict[str, Any]
    revoke: dict[str, Any]
    statistic: dict[str, Any]
    partial: bool
    waiting: str | None
    rev: int
    _m: dict[str, Any]


_YEAR_10000 = 253_402_300_800  # the first second datetime cannot show


def iso(ts: Any) -> str | None:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), or None.

    The same text as ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")``
    (microseconds rounded half to even, then cut to milliseconds), built from a cached
    whole-second part (1.7 → 0.9 µs a call): the live feed shows four times per task,
    most within the same few seconds, and py-spy found the datetime path in a tenth of
    the consumer's GIL-holding samples at 1,200 tasks/s.
    """
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    t = float(ts)
    if not 0.0 <= t < _YEAR_10000:
        # isoformat (C) truncates to milliseconds like ``microsecond // 1000``; "+00:00" → "Z".
        return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    frac, whole = math.modf(t)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        micro -= 1_000_000
        whole += 1.0
    return f"{_iso_second(int(whole))}.{micro // 1000:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _common(doc: Mapping[str, Any]) -> dict[str, Any]:
    target = doc.get("target")
    return {
        "celery_id": doc.get("celery_id"),
        "status": doc.get("status", "PENDING"),
        "name": doc.get("name"),
        "target": redact_text(target) if isinstance(target, str) else target,
        "type": doc.get("type"),
        "task_tag": doc.get("task_tag"),
        "task_type": doc.get("task_type"),
        "start_time": iso(doc.get("start_time")),
        "end_time": iso(doc.get("end_time")),
        "created_time": iso(doc.get("created_time")),
    }


_COMMON_KEYS = tuple(_common({}))


def _list_entry(task_id: str, common: dict[str, Any], worker: Any, progress: Any) -> dict[str, Any]:
    item = {"_id": task_id, **common, "task_id": task_id, "worker": worker}
    if progress:
        item["progress"] = progress
    return item


def list_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``GET /api/celery_task/`` (the spec's fields plus a few)."""
    return _list_entry(str(doc.get("_id")), _common(doc), doc.get("worker"), doc.get("progress"))


def list_item_of_detail(shown: Mapping[str, Any]) -> dict[str, Any]:
    """The list entry of a task from its detail: ``list_item(doc) == list_item_of_detail(detail(doc))``."""
    common = {key: shown.get(key) for key in _COMMON_KEYS}
    return _list_entry(shown["task_id"], common, shown.get("worker"), shown.get("progress"))


def detail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``GET /api/celery_task/{celery_id}/``: spec fields, then details."""
    out = _common(doc)
    out["task_id"] = str(doc.get("_id"))
    outcome = dict(doc.get("outcome") or {})
    texts = bool(outcome) or doc.get("retry_reason") is not None
    options, secrets = _options(doc, texts)
    out.update(
        {
            "worker": doc.get("worker"),
            "received_time": iso(doc.get("received_time")),
            "retries": int(doc.get("retries") or 0),
            "retry_reason": _text(doc.get("retry_reason"), secrets),
            "result": scrub_secrets(outcome.get("result"), secrets),
            "runtime": outcome.get("runtime"),
            "exception": _text(outcome.get("exception"), secrets),
            "traceback": _text(outcome.get("traceback"), secrets),
            "revoke": _revoke(doc, outcome),
            "options": options,
            "progress": doc.get("progress"),
            "statistic": doc.get("statistic") or {},
            "waiting": doc.get("waiting") if out["status"] == "PENDING" else None,
            "rev": doc.get("rev", 0),
        }
    )
    return out


_NOT_SHOWN = frozenset({"options", "targets"})


def _options(doc: Mapping[str, Any], texts: bool) -> tuple[Any, dict[str, str]]:
    """The task's options as shown, and (when it has ``texts`` to clean) its data's secret values."""
    task_type = doc.get("task_type")
    options = doc.get("options") or {}
    shown, secrets = redacted_options(task_type, options) if options else ({}, {})
    data = doc.get("data")
    if texts and isinstance(data, Mapping):
        # ``targets`` can be long and holds validated targets only; the rest is small.
        secrets = {**secrets_of(task_type, data, _NOT_SHOWN), **secrets}
    return shown, secrets


def _text(text: Any, secrets: dict[str, str]) -> Any:
    """An error text as shown: no secret values of the task, no absolute server paths."""
    if text is None:
        return None
    return shorten_paths(scrub_secrets(text, secrets))


def _revoke(doc: Mapping[str, Any], outcome: Mapping[str, Any]) -> dict[str, Any] | None:
    requested = doc.get("revoke")
    if not requested and doc.get("status") != "REVOKED":
        return None
    info: dict[str, Any] = {}
    if requested:
        info["requested_time"] = iso(requested.get("time"))
        info["terminate"] = bool(requested.get("terminate"))
    if doc.get("status") == "REVOKED":
        info["terminated"] = bool(outcome.get("terminated"))
        info["reason"] = outcome.get("reason")
    return info


@dataclass(frozen=True)
class TaskFilter:
    """A validated list filter and order; every value is a plain string or number (never an operator).

    ``status`` is one status or several (a task in any of them matches); ``worker`` the worker's
    hostname; ``created_after`` (inclusive) and ``created_before`` (exclusive) are epoch seconds;
    ``q`` a case-insensitive prefix of the task's name or target (matched by the store, not by
    :meth:`query`); ``sort`` one of ``created``, ``started``, ``runtime`` (each also with a
    leading ``-`` for descending) and ``status``.
    """

    celery_id: str | None = None
    status: str | tuple[str, ...] | None = None
    task_type: str | None = None
    worker: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    q: str | None = None
    sort: str = "-created"

    @property
    def statuses(self) -> tuple[str, ...]:
        """The wanted statuses, sorted and distinct (empty: any)."""
        if self.status is None:
            return ()
        if isinstance(self.status, str):
            return (self.status,)
        return tuple(sorted(set(self.status)))

    @property
    def spec_only(self) -> bool:
        """Whether only the spec's filters (celery_id, one status, task_type) and its order are asked."""
        extra = (self.worker, self.created_after, self.created_before, self.q)
        return len(self.statuses) <= 1 and all(v is None for v in extra) and self.sort == "-created"

    def order(self) -> tuple[tuple[str, int], ...]:
        """The sort as ``(field, direction)`` pairs; ties are broken by creation time.

        Tasks without the sorted field (not started, no runtime) sort as the smallest value,
        as MongoDB sorts a missing field.  ``status`` orders by the status's name (A to Z),
        newest first within one status.
        """
        key = self.sort.lstrip("-")
        way = -1 if self.sort.startswith("-") else 1
        if key == "status":
            return (("status", 1), ("created_time", -1))
        if key == "created":
            return (("created_time", way),)
        return (("start_time" if key == "started" else "outcome.runtime", way), ("created_time", way))

    def query(self, status: str | None = None) -> dict[str, Any]:
        """The MongoDB filter document (``q`` aside), for ``status`` alone when given.

        Equalities are written ``{"$eq": v}``: the same match on MongoDB, and the form in which
        the embedded server uses its indexes (a bare value also matches array elements there,
        which defeats the index).
        """
        q: dict[str, Any] = {}
        if self.celery_id is not None:
            q["celery_id"] = {"$eq": self.celery_id}
        statuses = (status,) if status is not None else self.statuses
        if len(statuses) == 1:
            q["status"] = {"$eq": statuses[0]}
        elif statuses:
            q["status"] = {"$in": list(statuses)}
        if self.task_type is not None:
            q["task_type"] = {"$eq": self.task_type}
        if self.worker is not None:
            q["worker"] = {"$eq": self.worker}
        created: dict[str, float] = {}
        if self.created_after is not None:
            created["$gte"] = self.created_after
        if self.created_before is not None:
            created["$lt"] = self.created_before
        if created:
            q["created_time"] = created
        return q
