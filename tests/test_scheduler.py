"""The scheduler against a real store and broker: due runs, no overlap, no double submission,
claims that a concurrent pause orders, claims a dead scheduler left behind."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from controlplane.runtime.scheduler import Scheduler, run_id
from controlplane.runtime.server import Services
from controlplane.service.schedules import ScheduleService
from controlplane.store.asynctasks import AsyncTaskStore
from tests.conftest import in_process_config

pytestmark = pytest.mark.integration

T = TypeVar("T")


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


async def _scheduled(config, **extra):  # type: ignore[no-untyped-def]
    """Services with indexes, and one asset_site_update schedule whose first run has finished."""
    services = Services(config)
    services.writer.ensure_indexes()
    first = await services.manager.create(
        "asset_site_update", {"scope_id": "scope-1", "schedule": {"interval": 60}, **extra}
    )
    services.writer.apply_events([{"type": "task-succeeded", "uuid": first["celery_id"], "timestamp": 1.0}])
    return services, first["schedule_id"]


def _finish(services: Services, celery_id: str) -> None:
    services.writer.apply_events([{"type": "task-succeeded", "uuid": celery_id, "timestamp": 2.0}])


async def _after(delay: float, work: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await work


async def _pause_and_look(api: ScheduleService, sid: str, run: str) -> tuple[dict[str, Any], bool]:
    """Pause through the service; then whether the run exists, read right after the answer."""
    shown = await api.change(sid, {"paused": True})
    return shown, await api.tasks.get(run) is not None


def test_a_pause_racing_the_claim_never_yields_a_run_after_it_is_acknowledged(mongo_server: str) -> None:
    """Two concurrent callers on two connection pools: the scheduler's tick (read, claim, submit)
    and the API's pause. Whatever the interleaving, a run exists for the due time exactly when
    the pause's answer says it was claimed first, it already exists when the answer arrives,
    and nothing is submitted after that."""
    asyncio.run(_pause_race(in_process_config(mongo_server, "sched")))


async def _pause_race(config) -> None:  # type: ignore[no-untyped-def]
    services, sid = await _scheduled(config)
    api_store = AsyncTaskStore(config.mongo)  # the API's own connections
    api = ScheduleService(api_store)
    scheduler = Scheduler(services)
    rng = random.Random(7)
    outcomes = {"paused first": 0, "claimed first": 0}
    try:
        base = float(int(time.time()) - 1000)  # whole seconds: stored floats read back exactly
        for i in range(40):
            due = base + i
            last = (await services.store.schedules.get(sid))["last_celery_id"]
            _finish(services, last)
            await services.store.schedules.update(sid, {"enabled": True, "next_run": due, "pending": None})
            run = run_id(sid, due)
            submitted, (shown, seen_at_ack) = await asyncio.gather(
                _after(rng.uniform(0, 0.01), scheduler.tick(now=due + 0.5)),
                _after(rng.uniform(0, 0.01), _pause_and_look(api, sid, run)),
            )
            exists = await services.store.get(run) is not None
            assert shown["state"] == "paused"
            assert exists == seen_at_ack, f"round {i}: a run appeared after the pause's answer"
            assert exists == (run in submitted)
            if exists:
                outcomes["claimed first"] += 1
                assert shown["last_celery_id"] == run and shown["submitting"] is None
            else:
                outcomes["paused first"] += 1
                assert shown["last_celery_id"] == last, (i, submitted, run, last, shown)
            assert await scheduler.tick(now=due + 100) == [], "nothing for a paused schedule"
        # Both orders, one after the other, so that each branch is checked whatever the race gave.
        last = (await services.store.schedules.get(sid))["last_celery_id"]
        _finish(services, last)
        due = base + 100
        await services.store.schedules.update(sid, {"enabled": True, "next_run": due})
        await api.change(sid, {"paused": True})
        assert await scheduler.tick(now=due + 1) == [] and await services.store.get(run_id(sid, due)) is None
        await services.store.schedules.update(sid, {"enabled": True})
        assert await scheduler.tick(now=due + 1) == [run_id(sid, due)]
        shown = await api.change(sid, {"paused": True})
        assert shown["last_celery_id"] == run_id(sid, due)
        print("race outcomes:", outcomes)
    finally:
        await api_store.close()
        await services.store.client.drop_database(config.mongo.database)
        await services.close()


def test_the_claim_is_atomic_against_a_concurrent_pause(mongo_server: str) -> None:
    """The store methods alone, from two connection pools at once: the claim succeeds exactly when
    the pause's written document shows it (the claim was ordered first)."""
    asyncio.run(_claim_race(in_process_config(mongo_server, "sched")))


async def _claim_race(config) -> None:  # type: ignore[no-untyped-def]
    services, sid = await _scheduled(config)
    other = AsyncTaskStore(config.mongo)
    rng = random.Random(11)
    try:
        for i in range(60):
            due = 1000.0 + i
            await services.store.schedules.update(sid, {"enabled": True, "next_run": due, "pending": None})

            claimed, written = await asyncio.gather(
                _after(
                    rng.uniform(0, 0.005), services.store.schedules.claim(sid, due, due + 60, f"run-{i}", due)
                ),
                _after(rng.uniform(0, 0.005), other.schedules.update(sid, {"enabled": False})),
            )
            assert written is not None and not written["enabled"]
            pending = written.get("pending") or {}
            assert claimed == (pending.get("celery_id") == f"run-{i}"), f"round {i}"
            assert not await services.store.schedules.claim(sid, due + 60, due + 120, "late", due), "paused"
    finally:
        await other.close()
        await services.store.client.drop_database(config.mongo.database)
        await services.close()


def test_a_claim_left_by_a_dead_scheduler_is_submitted_once(mongo_server: str) -> None:
    asyncio.run(_stale_claims(in_process_config(mongo_server, "sched")))


async def _stale_claims(config) -> None:  # type: ignore[no-untyped-def]
    services, sid = await _scheduled(config)
    schedules = services.store.schedules
    scheduler = Scheduler(services, claim_grace=30)
    try:
        due = (await schedules.get(sid))["next_run"]
        # A scheduler claimed the run and died before submitting it; then the schedule was paused.
        run = run_id(sid, due)
        assert await schedules.claim(sid, due, due + 60, run, due)
        await ScheduleService(services.store, claim_wait=0).change(sid, {"paused": True})
        assert await scheduler.tick(now=due + 10) == [], "the claim may still be in flight"
        assert await scheduler.tick(now=due + 31) == [run], "claimed before the pause: submitted"
        doc = await schedules.get(sid)
        assert doc["pending"] is None and doc["last_celery_id"] == run and doc["runs"] == 2
        assert await scheduler.tick(now=due + 1000) == [], "paused: nothing more"

        # One that died after submitting but before releasing: the resubmission is a duplicate.
        _finish(services, run)
        await schedules.update(sid, {"enabled": True, "next_run": due + 2000})
        second = run_id(sid, due + 2000)
        assert await schedules.claim(sid, due + 2000, due + 2060, second, due + 2000)
        await services.manager.create("asset_site_update", doc["data"], celery_id=second, schedule_id=sid)
        assert await scheduler.tick(now=due + 2031) == [second]
        runs = [d["celery_id"] async for d in services.store.db.tasks.find({"data.schedule_id": sid})]
        assert sorted(runs).count(second) == 1 and len(runs) == 3
        assert (await schedules.get(sid))["runs"] == 3
    finally:
        await services.store.client.drop_database(config.mongo.database)
        await services.close()


def test_a_run_the_api_refuses_is_dropped_with_its_reason(mongo_server: str) -> None:
    asyncio.run(_refused(in_process_config(mongo_server, "sched")))


async def _refused(config) -> None:  # type: ignore[no-untyped-def]
    services, sid = await _scheduled(config, webhook="https://hooks.example/SECRETPATH")
    schedules = services.store.schedules
    try:
        doc = await schedules.get(sid)
        await schedules.update(sid, {"data.scope_id": 12345})  # no longer valid data
        due = doc["next_run"]
        assert await Scheduler(services).tick(now=due + 1) == []
        shown = await ScheduleService(services.store).get(sid)
        assert shown["submitting"] is None and shown["runs"] == 1
        assert shown["last_error"]["celery_id"] == run_id(sid, due)
        assert "scope_id" in shown["last_error"]["message"]
        assert shown["next_run"] is not None and shown["data"]["webhook"] == "https://hooks.example/***"
        assert await services.store.get(run_id(sid, due)) is None
    finally:
        await services.store.client.drop_database(config.mongo.database)
        await services.close()
