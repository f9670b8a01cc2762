"""Lookups by celery_id answered from the cache, on real services: fresh through the feed, never stale.

The stack here trusts an entry for a minute (``feed.lookup_ttl: 60``) and sweeps
for orphans only every 30 s, so an answer that follows a change within seconds
can only have come from the feed (or, after a lost subscription, from MongoDB).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from controlplane.config import MongoConfig
from controlplane.runtime.server import Services
from controlplane.service.lookups import LookupCache
from controlplane.store.tasks import TaskFilter, TaskStore
from tests.conftest import in_process_config, make_stack
from tests.stack import VIEWER_TOKEN, Stack, wait_for
from tests.test_feed import Events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    s = make_stack(
        tmp_path_factory.mktemp("lookups"),
        mongo_server,
        workers=0,
        extra_config={
            "feed": {"lookup_ttl": 60.0, "poll_interval": 30.0},
            "metrics": {"cache_seconds": 0},
        },
    )
    try:
        s.start()
        yield s
    finally:
        s.close()


def lookups(stack: Stack) -> dict[str, float]:
    """``{"hit": n, "miss": n}`` from the API's /metrics."""
    text = stack.request("GET", "/metrics", token=VIEWER_TOKEN).raw.decode()
    found = re.findall(r'^controlplane_lookup_cache_lookups_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(n) for result, n in found}


def listed(stack: Stack, celery_id: str, **params: str) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in {"celery_id": celery_id, **params}.items())
    resp = stack.request("GET", f"/api/celery_task/?{query}")
    assert resp.code == 200, resp
    return dict(resp.data)


def status_of(stack: Stack, celery_id: str) -> str | None:
    items = listed(stack, celery_id)["items"]
    return items[0]["status"] if items else None


def until_cached(stack: Stack, celery_id: str, status: str) -> None:
    """Look the task up until one lookup shows ``status`` from the cache (the first reads MongoDB)."""

    def answered_from_cache() -> bool:
        hits = lookups(stack).get("hit", 0.0)
        return status_of(stack, celery_id) == status and lookups(stack)["hit"] > hits

    wait_for(answered_from_cache, timeout=15, what=f"{celery_id} {status} from the cache")


def started(events: Events) -> str:
    """A foreign task, received and started (as a worker reports it); its celery_id."""
    cid = str(uuid.uuid4())
    events.send("task-received", cid, name="controlplane.synthetic", timestamp=time.time())
    events.send("task-started", cid, timestamp=time.time())
    return cid


def test_a_polled_task_is_answered_from_memory_and_follows_its_events(lstack: Stack) -> None:
    events = Events(lstack)
    try:
        cid = started(events)
        until_cached(lstack, cid, "STARTED")
        before = lookups(lstack)
        for _ in range(20):
            assert status_of(lstack, cid) == "STARTED"
        after = lookups(lstack)
        assert after["hit"] - before["hit"] == 20, (before, after)
        assert after["miss"] == before["miss"], (before, after)

        events.send("task-succeeded", cid, timestamp=time.time(), result="'done'", runtime=0.5)
        wait_for(lambda: status_of(lstack, cid) == "SUCCESS", timeout=10, what="SUCCESS through the feed")
        assert lstack.detail(cid)["status"] == "SUCCESS"
        assert lstack.detail(cid)["result"] == "'done'"
        assert listed(lstack, cid, status="SUCCESS")["total"] == 1
        assert listed(lstack, cid, status="STARTED") == {"total": 0, "page": 1, "size": 10, "items": []}
        assert listed(lstack, cid, page="2")["items"] == [] and listed(lstack, cid, page="2")["total"] == 1
        assert lookups(lstack)["hit"] - after["hit"] >= 3
    finally:
        events.close()


def test_a_task_just_created_is_answered_from_memory_on_its_first_lookup(lstack: Stack) -> None:
    wait_for(lambda: "hit" in lookups(lstack), timeout=15, what="the lookup cache live")
    before = lookups(lstack)
    cid = lstack.create("sleep_task", {"name": "fresh", "seconds": 1})
    assert lstack.detail(cid)["status"] == "PENDING"
    assert status_of(lstack, cid) == "PENDING"
    after = lookups(lstack)
    assert after["hit"] - before["hit"] == 2 and after["miss"] == before["miss"], (before, after)


def test_after_a_lost_subscription_lookups_read_mongodb_again(lstack: Stack) -> None:
    """A change the feed never carried shows once the subscription drops and comes back."""
    events = Events(lstack)
    try:
        cid = started(events)
    finally:
        events.close()
    until_cached(lstack, cid, "STARTED")

    # Behind the feed's back: a new revision that is never published.
    writer = TaskStore(MongoConfig(url=lstack.mongo_url, database=lstack.database))
    try:
        rev = writer.next_revisions(1)
    finally:
        writer.close()
    lstack.db.tasks.update_one({"celery_id": cid}, {"$set": {"status": "FAILURE", "rev": rev}})
    time.sleep(0.5)
    assert status_of(lstack, cid) == "STARTED", "no feed message, no lost subscription: the cached state"

    client = redis.Redis.from_url(lstack.broker_url)
    try:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        killed = 0
        for info in client.client_list():
            if int(info.get("db", -1)) == db and int(info.get("sub", 0)) > 0:
                killed += int(client.client_kill_filter(_id=info["id"]))
        assert killed >= 1, "the API's feed subscription"
    finally:
        client.close()
    wait_for(lambda: status_of(lstack, cid) == "FAILURE", timeout=10, what="MongoDB's state after the drop")


def test_this_process_sees_its_own_revoke_before_the_feed_brings_it(mongo_server: str) -> None:
    """No feed at all here: only the manager's own write can move the cached entry."""
    config = in_process_config(mongo_server, "lookups")
    config.scope.allow_loopback = True
    asyncio.run(_own_revoke(config))


async def _own_revoke(config: Any) -> None:
    services = Services(config)
    try:
        services.writer.ensure_indexes()
        manager = services.manager
        created = await manager.create("ip_task", {"name": "lookup", "target": "127.0.0.1"})
        cid = created["celery_id"]
        plain = await manager.get(cid)

        cache = LookupCache(10, 60.0)
        cache.resume(10**9)
        manager.cache = cache
        assert await manager.get(cid) == plain  # a miss, read and kept
        assert await manager.get(cid) == plain and cache.hits == 1
        assert plain["status"] == "PENDING"

        (outcome,) = await manager.revoke([cid], terminate=True)
        assert outcome.error is None
        hits = cache.hits
        shown = await manager.get(cid)
        assert cache.hits == hits + 1, "answered from the cache"
        assert shown["status"] == "REVOKED" and shown["revoke"]["requested_time"] is not None

        with_cache = await manager.list_tasks(TaskFilter(celery_id=cid), 1, 10)
        manager.cache = None
        without = await manager.list_tasks(TaskFilter(celery_id=cid), 1, 10)
        assert with_cache == without and with_cache["total"] == 1
    finally:
        await services.close()
