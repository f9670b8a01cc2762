"""Stored schedules (the ``schedules`` collection): what the API lists and changes and the scheduler claims.

One document per schedule::

    {_id (a UUID string), task_type, data (as submitted), schedule ({"interval": s} or {"cron": e}),
     enabled, created_time, updated_time, next_run, last_celery_id, last_run, runs,
     pending ({celery_id, run_at, at} while a claimed run is being submitted, else null),
     last_error ({time, celery_id, message} of the last run that could not be submitted)}

A run is *claimed* before it is submitted: :meth:`ScheduleStore.claim` is one conditional
update that matches only an enabled schedule whose ``next_run`` is still the due time the
scheduler read, and moves ``next_run`` on while recording the run in ``pending``.  Pausing
(:meth:`ScheduleStore.update` with ``enabled: false``) and deleting are single-document
writes too, so the database orders each of them before or after a claim: before, the claim
matches nothing and no run is submitted; after, the run was claimed first and is submitted.
The scheduler clears ``pending`` once the run is submitted (:meth:`ScheduleStore.release`)
and resubmits claims left behind by a scheduler that died (:meth:`ScheduleStore.stale_claims`);
the run's celery_id is fixed at the claim, so a resubmission is a duplicate, never a second run.

Booleans read back from the embedded server may be ``0``/``1``: readers use ``bool(...)``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from controlplane.store.errors import TranslatesErrors
from controlplane.store.tasks import SCHEDULES


class ScheduleStore(TranslatesErrors):
    """The ``schedules`` collection, asynchronously (the API's and the scheduler's view)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db
        self.collection = db[SCHEDULES]

    async def insert(
        self, task_type: str, data: dict[str, Any], schedule: dict[str, Any], first_run: str, next_run: float
    ) -> str:
        """Store an active schedule whose first run (``first_run``, a celery_id) the caller submits now."""
        now = time.time()
        schedule_id = str(uuid.uuid4())
        await self.collection.insert_one(
            {
                "_id": schedule_id,
                "task_type": task_type,
                "data": data,
                "schedule": schedule,
                "enabled": True,
                "created_time": now,
                "updated_time": now,
                "next_run": round(next_run, 3),
                "last_celery_id": first_run,
                "last_run": now,
                "runs": 1,
                "pending": None,
            }
        )
        return schedule_id

    async def get(self, schedule_id: str) -> dict[str, Any] | None:
        """One schedule, or None."""
        return await self.collection.find_one({"_id": schedule_id})

    async def listing(
        self, task_type: str | None, enabled: bool | None, page: int, size: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """The exact total for the filter and one page of it, newest first."""
        query: dict[str, Any] = {}
        if task_type is not None:
            query["task_type"] = {"$eq": task_type}
        if enabled is not None:
            query["enabled"] = {"$eq": enabled}
        reply = await self.db.command({"count": SCHEDULES, "query": query})
        found = (
            self.collection.find(query)
            .sort([("created_time", DESCENDING), ("_id", DESCENDING)])
            .skip((page - 1) * size)
            .limit(size)
        )
        return int(reply["n"]), [d async for d in found]

    async def due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Enabled schedules whose next run is due at ``now``."""
        cursor = self.collection.find({"next_run": {"$lte": now}, "enabled": True}).limit(limit)
        return [d async for d in cursor]

    async def claim(
        self, schedule_id: str, run_at: float, following: float, celery_id: str, now: float
    ) -> bool:
        """Claim the run due at ``run_at`` (celery_id ``celery_id``) and move ``next_run`` to ``following``.

        One conditional write: it matches only while the schedule is enabled and its
        ``next_run`` is still ``run_at``, so a pause, a delete, a change of interval or
        another scheduler's claim that came first leaves it matching nothing (False).
        """
        result = await self.collection.update_one(
            {"_id": schedule_id, "enabled": True, "next_run": run_at},
            {
                "$set": {
                    "next_run": round(following, 3),
                    "pending": {"celery_id": celery_id, "run_at": run_at, "at": now},
                }
            },
        )
        return result.modified_count == 1

    async def release(self, schedule_id: str, celery_id: str, now: float) -> bool:
        """The claimed run ``celery_id`` was submitted: record it as the last run and count it."""
        result = await self.collection.update_one(
            {"_id": schedule_id, "pending.celery_id": celery_id},
            {
                "$set": {"pending": None, "last_celery_id": celery_id, "last_run": now},
                "$inc": {"runs": 1},
            },
        )
        return result.modified_count == 1

    async def abandon(self, schedule_id: str, celery_id: str, message: str, now: float) -> bool:
        """The claimed run ``celery_id`` was refused (bad data, out of scope): drop it, keep why."""
        result = await self.collection.update_one(
            {"_id": schedule_id, "pending.celery_id": celery_id},
            {
                "$set": {
                    "pending": None,
                    "last_error": {"time": now, "celery_id": celery_id, "message": message[:500]},
                }
            },
        )
        return result.modified_count == 1

    async def stale_claims(self, before: float, limit: int = 100) -> list[dict[str, Any]]:
        """Schedules (paused ones too) with a run claimed at or before ``before`` and not yet released."""
        cursor = self.collection.find({"pending.at": {"$lte": before}}).limit(limit)
        return [d async for d in cursor]

    async def update(self, schedule_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set ``fields`` (dotted paths allowed) in one write; the schedule as written, or None."""
        return await self.collection.find_one_and_update(
            {"_id": schedule_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )

    async def delete(self, schedule_id: str) -> dict[str, Any] | None:
        """Remove a schedule in one write; the schedule as it was, or None."""
        return await self.collection.find_one_and_delete({"_id": schedule_id})
