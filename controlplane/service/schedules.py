"""Schedules as objects: list, show, pause, resume, change the interval or cron, delete.

A schedule is created with a task (``data.schedule`` on ``POST /api/celery_task/``, see
:meth:`controlplane.service.manager.TaskManager.create`); ``controlplane scheduler``
submits its later runs (:mod:`controlplane.runtime.scheduler`).  This service is what
the ``/api/schedules/`` handlers call.

Every change is one write of the schedule's document, which the database orders against
the scheduler's claim of a due run (:meth:`controlplane.store.schedules.ScheduleStore.claim`):

* a pause or a delete that comes first leaves the claim matching nothing, so no run is
  submitted after it;
* one that comes after a claim finds the claimed run in ``pending``; the answer then waits
  (at most ``claim_wait`` seconds) until the scheduler has submitted it, so the run is in
  the task list when the client reads the answer, and the scheduler submits nothing for
  the schedule after that.  A run already submitted keeps running either way.

Resuming computes the next run from now: the runs missed while paused are not made up.
Changing the interval or cron computes the next run from now with the new rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controlplane.core.cron import next_fire
from controlplane.core.documents import iso
from controlplane.core.errors import InvalidParam, ScheduleNotFound
from controlplane.core.redact import redacted_view, scrub_secrets
from controlplane.store.asynctasks import AsyncTaskStore

ACTIVE, PAUSED = "active", "paused"
STATES = (ACTIVE, PAUSED)
#: Longest a pause or delete waits for a run the scheduler claimed before it to be submitted.
CLAIM_WAIT = 5.0
_POLL = 0.05


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def schedule_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One schedule as the API shows it: credentials in ``data`` redacted, times in ISO 8601 (UTC).

    ``next_run`` is null while paused (no run is coming); ``submitting`` names a run the
    scheduler has claimed and is submitting right now (else null).
    """
    task_type = doc.get("task_type")
    data, secrets = redacted_view(task_type, _mapping(doc.get("data")) or {})
    rule = _mapping(doc.get("schedule")) or {}
    enabled = bool(doc.get("enabled"))
    pending = _mapping(doc.get("pending"))
    error = _mapping(doc.get("last_error"))
    return {
        "id": doc.get("_id"),
        "task_type": task_type,
        "data": data,
        "interval": rule.get("interval"),
        "cron": rule.get("cron"),
        "state": ACTIVE if enabled else PAUSED,
        "next_run": iso(doc.get("next_run")) if enabled else None,
        "last_celery_id": doc.get("last_celery_id"),
        "last_run": iso(doc.get("last_run")),
        "runs": doc.get("runs"),
        "submitting": pending.get("celery_id") if pending else None,
        "last_error": (
            {
                "time": iso(error.get("time")),
                "celery_id": error.get("celery_id"),
                "message": scrub_secrets(error.get("message"), secrets),
            }
            if error
            else None
        ),
        "created_time": iso(doc.get("created_time")),
        "updated_time": iso(doc.get("updated_time")),
    }


def next_run_from(schedule: Mapping[str, Any], now: float) -> float:
    """The first run of ``schedule`` after ``now``; 400 naming ``cron`` for one that never fires."""
    try:
        return round(next_fire(schedule, now), 3)
    except ValueError as exc:
        raise InvalidParam("cron", f"never fires ({exc})") from None


class ScheduleService:
    """List, show, change and delete stored schedules (over the store's ``schedules``)."""

    def __init__(self, store: AsyncTaskStore, *, claim_wait: float = CLAIM_WAIT) -> None:
        self.tasks = store
        self.store = store.schedules
        self.claim_wait = claim_wait

    async def _doc(self, schedule_id: str) -> dict[str, Any]:
        doc = await self.store.get(schedule_id)
        if doc is None:
            raise ScheduleNotFound({"id": schedule_id})
        return doc

    async def list_schedules(
        self, task_type: str | None, state: str | None, page: int, size: int
    ) -> dict[str, Any]:
        """``{"total", "page", "size", "items"}``, newest first; ``state`` is active, paused or None (any)."""
        enabled = None if state is None else state == ACTIVE
        total, docs = await self.store.listing(task_type, enabled, page, size)
        return {"total": total, "page": page, "size": size, "items": [schedule_view(d) for d in docs]}

    async def get(self, schedule_id: str) -> dict[str, Any]:
        """One schedule; ScheduleNotFound (107) when there is none."""
        return schedule_view(await self._doc(schedule_id))

    async def change(self, schedule_id: str, change: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a change (see :func:`~controlplane.core.validate.parse_schedule_patch`); returns the result.

        ``paused``: pause (no run is submitted after the answer) or resume (the next run is
        computed from now). ``schedule``: the new interval or cron (also written to the
        ``data.schedule`` later runs carry); the next run is computed from now.
        """
        doc = await self._doc(schedule_id)
        now = time.time()
        fields: dict[str, Any] = {"updated_time": now}
        paused = change.get("paused")
        rule = change.get("schedule") or doc.get("schedule") or {}
        resuming = paused is False and not bool(doc.get("enabled"))
        if paused is not None:
            fields["enabled"] = not paused
        if "schedule" in change:
            fields["schedule"] = rule
            fields["data.schedule"] = rule
        if "schedule" in change or resuming:
            fields["next_run"] = next_run_from(rule, now)
        written = await self.store.update(schedule_id, fields)
        if written is None:
            raise ScheduleNotFound({"id": schedule_id})
        if paused is True:
            written = await self._settle(schedule_id, written)
        return schedule_view(written)

    async def delete(self, schedule_id: str) -> dict[str, Any]:
        """Delete a schedule: ``{"id", "deleted": true, "last_celery_id", "claimed_run"}``.

        ``claimed_run`` is the run the scheduler claimed just before the delete (null if
        none); it is submitted (and visible in the task list) by the time this answers.
        Runs already submitted keep running.
        """
        doc = await self.store.delete(schedule_id)
        if doc is None:
            raise ScheduleNotFound({"id": schedule_id})
        pending = _mapping(doc.get("pending"))
        claimed = str(pending["celery_id"]) if pending and pending.get("celery_id") else None
        if claimed is not None:
            await self._wait_for(lambda: self._submitted(claimed))
        return {
            "id": schedule_id,
            "deleted": True,
            "last_celery_id": doc.get("last_celery_id"),
            "claimed_run": claimed,
        }

    async def _submitted(self, celery_id: str) -> bool:
        return await self.tasks.get(celery_id) is not None

    async def _settle(self, schedule_id: str, written: dict[str, Any]) -> dict[str, Any]:
        """``written`` (a paused schedule), re-read after a run claimed before the pause is submitted."""
        pending = _mapping(written.get("pending"))
        if not pending:
            return written
        latest = written

        async def released() -> bool:
            nonlocal latest
            found = await self.store.get(schedule_id)
            if found is None:
                return True
            latest = found
            now_pending = _mapping(found.get("pending"))
            return not now_pending or now_pending.get("celery_id") != pending.get("celery_id")

        await self._wait_for(released)
        return latest

    async def _wait_for(self, condition: Callable[[], Awaitable[bool]]) -> bool:
        """Poll ``condition`` (an async callable) until true or ``claim_wait`` passes."""
        deadline = time.monotonic() + self.claim_wait
        while True:
            if await condition():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL)
