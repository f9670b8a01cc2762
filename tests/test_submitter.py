"""The create batcher against the real MongoDB-wire server, Redis broker and feed gate."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from controlplane.bus.control import BrokerUnavailable, ControlBus
from controlplane.bus.feed import FeedPublisher, channel_name, gate_key
from controlplane.config import Config, load_config
from controlplane.core.tasktypes import Registry
from controlplane.service.submitter import Submission, Submitter
from controlplane.store.tasks import TaskStore, new_task_document
from tests.conftest import fresh_redis_url


class Deployment:
    """A config, store, bus and feed of a private database and Redis index."""

    def __init__(self, mongo_url: str, broker_url: str, *, indexes: bool = True) -> None:
        self.config: Config = load_config(
            None,
            env={
                "CP_BROKER_URL": broker_url,
                "CP_MONGO_URL": mongo_url,
                "CP_MONGO_DATABASE": f"s_{uuid.uuid4().hex[:8]}",
                "CP_BROKER_CONNECT_TIMEOUT": "0.5",
                "CP_MONGO_TIMEOUT_MS": "500",
            },
        )
        self.store = TaskStore(self.config.mongo)
        if indexes:
            self.store.ensure_indexes()
        self.bus = ControlBus(self.config)
        self.feed = FeedPublisher(self.config, self.store)
        self.forgotten: list[str] = []
        self.submitter = Submitter(self.store, self.bus, self.feed, self._forget)
        self.kind = Registry.from_config(self.config).get("domain_task")
        assert self.kind is not None

    def _forget(self, celery_id: str) -> None:
        self.forgotten.append(celery_id)
        self.store.tasks.delete_one({"celery_id": celery_id})

    def submission(self, celery_id: str | None = None) -> Submission:
        cid = celery_id or str(uuid.uuid4())
        data = {"name": cid[:8], "target": "a.example.com"}
        doc = new_task_document(celery_id=cid, task_type="domain_task", data=data, created_time=1.0, rev=0)
        return Submission(self.kind, doc, {**data, "task_id": str(doc["_id"])})  # type: ignore[arg-type]

    def queued(self) -> list[str]:
        client = redis.Redis.from_url(self.config.broker.url)
        try:
            raw = client.lrange(self.config.task_defaults.queue, 0, -1)
        finally:
            client.close()
        return [json.loads(m)["headers"]["id"] for m in raw]

    def close(self) -> None:
        self.submitter.close()
        self.feed.close()
        self.bus.close()
        self.store.close()


@pytest.fixture()
def deployment(mongo_server: str) -> Iterator[Deployment]:
    dep = Deployment(mongo_server, fresh_redis_url())
    yield dep
    dep.close()


async def _submit_all(dep: Deployment, items: list[Submission]) -> list[BaseException | None]:
    results = await asyncio.gather(*(dep.submitter.submit(i) for i in items), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def test_concurrent_creates_share_batches_and_all_land_in_order(deployment: Deployment) -> None:
    dep = deployment
    listener = redis.Redis.from_url(dep.config.broker.url).pubsub()
    listener.subscribe(channel_name(dep.config))
    items = [dep.submission() for _ in range(60)]
    assert asyncio.run(_submit_all(dep, items)) == [None] * 60

    assert dep.submitter.batches < 60  # shared round trips
    docs = {d["celery_id"]: d for d in dep.store.tasks.find({})}
    assert set(docs) == {i.celery_id for i in items}
    revs = sorted(d["rev"] for d in docs.values())
    assert revs == list(range(revs[0], revs[0] + 60))  # one reservation per batch, no gaps
    assert sorted(dep.queued()) == sorted(i.celery_id for i in items)  # every message in the broker
    # The feed got every document in revision order, and none had to be re-stamped.
    announced: list[int] = []
    while len(announced) < 60 and (message := listener.get_message(timeout=2.0)) is not None:
        if message["type"] == "message":
            announced.extend(d["rev"] for d in json.loads(message["data"])["docs"])
    assert announced == revs
    assert dep.feed.restamped == 0
    gate = redis.Redis.from_url(dep.config.broker.url).get(gate_key(dep.config))
    assert int(gate or 0) == revs[-1]


def test_a_duplicate_celery_id_fails_alone(deployment: Deployment) -> None:
    dep = deployment
    first = dep.submission()
    assert asyncio.run(_submit_all(dep, [first])) == [None]
    again = dep.submission(first.celery_id)
    others = [dep.submission() for _ in range(5)]
    results = asyncio.run(_submit_all(dep, [others[0], again, *others[1:]]))
    assert isinstance(results[1], DuplicateKeyError)
    assert results[:1] + results[2:] == [None] * 5
    assert sorted(dep.queued()) == sorted([first.celery_id, *(o.celery_id for o in others)])
    assert dep.forgotten == []  # the original stays


def test_a_broker_that_refuses_fails_the_batch_and_deletes_its_documents_first(mongo_server: str) -> None:
    dep = Deployment(mongo_server, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        items = [dep.submission() for _ in range(4)]
        results = asyncio.run(_submit_all(dep, items))
        assert all(isinstance(r, BrokerUnavailable) for r in results), results
        # Gone by the time the callers hear of the failure, without the background clean-up.
        assert dep.store.tasks.count_documents({}) == 0
        assert dep.forgotten == []
    finally:
        dep.close()


def test_a_database_that_is_down_fails_every_waiter_and_publishes_nothing() -> None:
    dep = Deployment("mongodb://127.0.0.1:1", fresh_redis_url(), indexes=False)  # nothing listens
    try:
        items = [dep.submission() for _ in range(3)]
        results = asyncio.run(_submit_all(dep, items))
        assert all(isinstance(r, ConnectionFailure) for r in results), results
        assert dep.queued() == []
    finally:
        dep.close()


def test_creates_queued_behind_a_batch_that_found_the_database_down_fail_with_it() -> None:
    """One wait of ``mongo.timeout_ms`` answers every create queued meanwhile, not one wait each."""
    dep = Deployment("mongodb://127.0.0.1:1", fresh_redis_url(), indexes=False)  # nothing listens
    attempts: list[int] = []
    reserve = dep.store.next_revisions

    def counted(count: int) -> int:
        attempts.append(count)
        return reserve(count)

    dep.store.next_revisions = counted  # type: ignore[method-assign]

    async def scenario() -> list[BaseException | None]:
        first = asyncio.ensure_future(dep.submitter.submit(dep.submission()))
        while not attempts:  # the first batch is waiting for the server
            await asyncio.sleep(0.01)
        later = [dep.submission() for _ in range(5)]
        rest = asyncio.gather(*(dep.submitter.submit(i) for i in later), return_exceptions=True)
        results = await asyncio.gather(first, return_exceptions=True)
        return [*results, *(await rest)]

    try:
        results = asyncio.run(scenario())
        assert all(isinstance(r, ConnectionFailure) for r in results), results
        assert attempts == [1], "the creates queued meanwhile did not wait for a second attempt"
        assert dep.queued() == []
    finally:
        dep.close()
