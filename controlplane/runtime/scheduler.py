"""``controlplane scheduler``: submits the runs of stored schedules as ordinary tasks.

Each due run goes through :meth:`TaskManager.create`, the API's own path, with
a celery_id derived from the schedule and the run's due time.  The run is
created first and the schedule advanced after, so a crash in between neither
skips the run (it is retried) nor submits it twice (the same celery_id is
refused by the store's unique index).  A run is held back while the
schedule's previous run has not finished: never two runs of one schedule at
once.  Runs missed while no scheduler was up are run once, not once per miss.
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
from controlplane.core.errors import ApiError, StoreError
from controlplane.core.merge import TERMINAL
from controlplane.runtime.server import Services, ensure_indexes

log = logging.getLogger(__name__)

RUN_NAMESPACE = uuid.UUID("5b0f2d0e-6d1c-4c8a-9a53-3f0c1c9e7a41")


def run_id(schedule_id: str, run_at: float) -> str:
    """The celery_id of one run of a schedule (stable across scheduler restarts)."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{schedule_id}@{run_at!r}"))


class Scheduler:
    """One pass at a time over due schedules."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.manager = services.manager

    async def tick(self, now: float | None = None) -> list[str]:
        """Submit every due run that may start now; returns the celery_ids submitted."""
        now = time.time() if now is None else now
        submitted = []
        for schedule in await self.store.due_schedules(now):
            celery_id = await self._fire(schedule, now)
            if celery_id:
                submitted.append(celery_id)
        return submitted

    async def _fire(self, schedule: dict[str, Any], now: float) -> str | None:
        last = schedule.get("last_celery_id")
        if last:
            previous = await self.store.get(last)
            if previous is not None and previous.get("status") not in TERMINAL:
                return None
        run_at = float(schedule["next_run"])
        celery_id = run_id(schedule["_id"], run_at)
        try:
            await self.manager.create(
                schedule["task_type"], schedule["data"], celery_id=celery_id, schedule_id=schedule["_id"]
            )
        except DuplicateKeyError:
            log.info("run %s of schedule %s was already submitted", celery_id, schedule["_id"])
        except ApiError as exc:
            log.warning("schedule %s: run not submitted: %s %s", schedule["_id"], exc.message, exc.data)
            return None
        following = next_fire(schedule["schedule"], max(now, run_at))
        if await self.store.advance_schedule(schedule["_id"], run_at, following, celery_id):
            log.info("schedule %s: submitted %s; next run at %.0f", schedule["_id"], celery_id, following)
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
