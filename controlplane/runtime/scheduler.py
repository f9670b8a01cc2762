"""``controlplane scheduler``: submits the runs of stored schedules as ordinary tasks.

Each due run goes through :meth:`TaskManager.create`, the API's own path, with a
celery_id derived from the schedule and the run's due time.  The run is *claimed*
first (:meth:`ScheduleStore.claim`: one conditional write that matches only an
active schedule whose next run is still the one read, and moves the next run on),
then submitted, then released (recorded as the last run).  So:

* a pause or delete the database orders before the claim leaves it matching
  nothing: no run is submitted for a paused or deleted schedule after the API
  acknowledged the change; one ordered after it finds the run claimed, and the
  run is submitted and stays (the API's answer waits for it, see
  :mod:`controlplane.service.schedules`);
* a scheduler that dies between the claim and the release leaves the claim in
  ``pending``; any scheduler resubmits claims older than ``claim_grace`` seconds,
  with the same celery_id, which the store's unique index refuses if the first
  attempt got through: a run is neither skipped nor submitted twice;
* a run the API refuses (data no longer valid, target out of scope) is dropped and
  its reason kept in ``last_error``; one that fails because the broker or the
  database is down stays claimed and is retried.

A run is held back while the schedule's previous run has not finished: never two
runs of one schedule at once.  Runs missed while no scheduler was up are run once,
not once per miss.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from typing import Any

from pymongo.errors import DuplicateKeyError

from controlplane.config import Config
from controlplane.core.cron import next_fire
from controlplane.core.errors import ApiError, ServiceUnavailable, StoreError
from controlplane.core.merge import TERMINAL
from controlplane.runtime.server import Services, ensure_indexes

log = logging.getLogger(__name__)

RUN_NAMESPACE = uuid.UUID("5b0f2d0e-6d1c-4c8a-9a53-3f0c1c9e7a41")
#: Seconds after which a claimed, unreleased run is taken for abandoned and resubmitted.
CLAIM_GRACE = 30.0


def run_id(schedule_id: str, run_at: float) -> str:
    """The celery_id of one run of a schedule (stable across scheduler restarts)."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{schedule_id}@{run_at!r}"))


class Scheduler:
    """One pass at a time over due schedules (and runs left claimed by a scheduler that died)."""

    def __init__(self, services: Services, *, claim_grace: float = CLAIM_GRACE) -> None:
        self.services = services
        self.store = services.store
        self.schedules = services.store.schedules
        self.manager = services.manager
        self.claim_grace = claim_grace

    async def tick(self, now: float | None = None) -> list[str]:
        """Submit every due run that may start now; returns the celery_ids submitted."""
        now = time.time() if now is None else now
        submitted = []
        for schedule in await self.schedules.stale_claims(now - self.claim_grace):
            pending = schedule.get("pending") or {}
            if pending.get("celery_id"):
                log.info("schedule %s: resubmitting claimed run %s", schedule["_id"], pending["celery_id"])
                celery_id = await self._submit(schedule, str(pending["celery_id"]), now)
                if celery_id:
                    submitted.append(celery_id)
        for schedule in await self.schedules.due(now):
            celery_id = await self._fire(schedule, now)
            if celery_id:
                submitted.append(celery_id)
        return submitted

    async def _fire(self, schedule: dict[str, Any], now: float) -> str | None:
        if schedule.get("pending"):
            return None  # a claimed run not submitted yet: resubmitted after claim_grace
        last = schedule.get("last_celery_id")
        if last:
            previous = await self.store.get(last)
            if previous is not None and previous.get("status") not in TERMINAL:
                return None
        run_at = float(schedule["next_run"])
        celery_id = run_id(schedule["_id"], run_at)
        following = next_fire(schedule["schedule"], max(now, run_at))
        if not await self.schedules.claim(schedule["_id"], run_at, following, celery_id, now):
            # Paused, deleted, changed or claimed by another scheduler since it was read.
            return None
        submitted = await self._submit(schedule, celery_id, now)
        if submitted:
            log.info("schedule %s: submitted %s; next run at %.0f", schedule["_id"], celery_id, following)
        return submitted

    async def _submit(self, schedule: dict[str, Any], celery_id: str, now: float) -> str | None:
        """Submit a claimed run and release the claim; None when it was not submitted."""
        schedule_id = schedule["_id"]
        try:
            await self.manager.create(
                schedule["task_type"], schedule["data"], celery_id=celery_id, schedule_id=schedule_id
            )
        except DuplicateKeyError:
            log.info("run %s of schedule %s was already submitted", celery_id, schedule_id)
        except (ServiceUnavailable, StoreError) as exc:
            log.warning(
                "schedule %s: run %s not submitted yet, retried later: %s", schedule_id, celery_id, exc
            )
            return None
        except ApiError as exc:
            log.warning("schedule %s: run %s refused: %s %s", schedule_id, celery_id, exc.message, exc.data)
            await self.schedules.abandon(schedule_id, celery_id, f"{exc.message} {exc.data}", now)
            return None
        await self.schedules.release(schedule_id, celery_id, now)
        return celery_id


async def run_scheduler(config: Config, interval: float = 1.0) -> None:
    """Tick every ``interval`` seconds until SIGTERM/SIGINT."""
    services = Services(config)
    scheduler = Scheduler(services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The unique celery_id index is what makes a retried run a duplicate, not a second run.
    await loop.run_in_executor(None, ensure_indexes, services.writer, threading.Event())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("scheduler running")
    while not stop.is_set():
        try:
            await scheduler.tick()
        except StoreError as exc:
            log.warning("scheduler tick failed, database unavailable: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    await services.close()
    log.info("scheduler stopped")
