"""The scheduler against a real store and broker: due runs, no overlap, no double submission."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.runtime.scheduler import Scheduler, run_id
from controlplane.runtime.server import Services
from tests.conftest import in_process_config

pytestmark = pytest.mark.integration


def test_schedule_lifecycle(mongo_server: str) -> None:
    asyncio.run(_lifecycle(in_process_config(mongo_server, "sched")))


async def _lifecycle(config) -> None:  # type: ignore[no-untyped-def]
    services = Services(config)
    try:
        services.writer.ensure_indexes()
        manager, store = services.manager, services.store
        first = await manager.create(
            "asset_site_update", {"scope_id": "scope-1", "schedule": {"interval": 60}}
        )
        schedule_id = first["schedule_id"]
        sched = await store.db.schedules.find_one({"_id": schedule_id})
        due = sched["next_run"]
        scheduler = Scheduler(services)

        assert await scheduler.tick(now=due - 1) == [], "not due yet"
        assert await scheduler.tick(now=due + 1) == [], "the first run has not finished: no overlap"

        services.writer.apply_events(
            [{"type": "task-succeeded", "uuid": first["celery_id"], "timestamp": due}]
        )
        submitted = await scheduler.tick(now=due + 1)
        assert submitted == [run_id(schedule_id, due)]
        run = await store.get(submitted[0])
        assert run["task_type"] == "asset_site_update" and run["data"]["schedule_id"] == schedule_id
        assert await scheduler.tick(now=due + 2) == [], "a run is submitted once"

        # A scheduler that died after submitting but before advancing: the retry is not a second run.
        services.writer.apply_events([{"type": "task-succeeded", "uuid": submitted[0], "timestamp": due + 5}])
        sched = await store.db.schedules.find_one({"_id": schedule_id})
        nxt = sched["next_run"]
        assert nxt == pytest.approx(due + 1 + 60, abs=0.001)
        await manager.create(
            "asset_site_update", sched["data"], celery_id=run_id(schedule_id, nxt), schedule_id=schedule_id
        )
        assert await scheduler.tick(now=nxt + 1) == [run_id(schedule_id, nxt)]
        runs = [d["celery_id"] async for d in store.db.tasks.find({"data.schedule_id": schedule_id})]
        assert len(runs) == len(set(runs)) == 3
        sched = await store.db.schedules.find_one({"_id": schedule_id})
        assert sched["next_run"] == pytest.approx(nxt + 1 + 60, abs=0.001), "advanced past the recovered run"
    finally:
        await services.store.client.drop_database(config.mongo.database)
        await services.close()
