"""Shapes of task documents as clients see them (pure functions).

Times are stored as epoch seconds (floats) and shown as ISO 8601 UTC with
milliseconds, ``2023-07-10T08:30:00.000Z``; ``None`` when not known yet.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

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
    return {
        "celery_id": doc.get("celery_id"),
        "status": doc.get("status", "PENDING"),
        "name": doc.get("name"),
        "target": doc.get("target"),
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
    out.update(
        {
            "worker": doc.get("worker"),
            "received_time": iso(doc.get("received_time")),
            "retries": int(doc.get("retries") or 0),
            "retry_reason": doc.get("retry_reason"),
            "result": outcome.get("result"),
            "runtime": outcome.get("runtime"),
            "exception": outcome.get("exception"),
            "traceback": outcome.get("traceback"),
            "revoke": _revoke(doc, outcome),
            "options": doc.get("options") or {},
            "progress": doc.get("progress"),
            "statistic": doc.get("statistic") or {},
            "rev": doc.get("rev", 0),
        }
    )
    return out


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
