"""The feed's pure logic (filters, the resume seam, bounded queues, the hub's dispatch)
and the ordering gate against the real Redis and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from controlplane.bus.feed import FeedPublisher, channel_name, decode
from controlplane.config import Config, MongoConfig, load_config
from controlplane.core.errors import InvalidParam
from controlplane.service.feedhub import (
    MAX_HOLDING,
    Entry,
    FeedClient,
    FeedFilter,
    FeedHub,
    Seam,
    parse_holding,
)
from controlplane.service.lookups import LookupCache
from controlplane.store.tasks import TaskStore, new_task_document
from tests.conftest import fresh_redis_url

TYPES = ["sleep_task", "domain_task"]


def doc(
    cid: str = "a", rev: int = 1, status: str = "PENDING", task_type: str = "sleep_task"
) -> dict[str, Any]:
    return {"celery_id": cid, "rev": rev, "status": status, "task_type": task_type}


# -- filters ---------------------------------------------------------------------------


def test_an_empty_filter_matches_everything() -> None:
    flt = FeedFilter.parse({}, TYPES)
    assert flt.matches(doc()) and flt.query() == {}


def test_filters_accept_lists_and_comma_separated_values() -> None:
    flt = FeedFilter.parse({"status": ["SUCCESS,FAILURE", "REVOKED"], "task_type": "sleep_task"}, TYPES)
    assert flt.status == {"SUCCESS", "FAILURE", "REVOKED"}
    assert flt.matches(doc(status="FAILURE")) and not flt.matches(doc(status="STARTED"))
    assert not flt.matches(doc(status="SUCCESS", task_type="domain_task"))
    assert flt.query() == {
        "task_type": {"$in": ["sleep_task"]},
        "status": {"$in": ["FAILURE", "REVOKED", "SUCCESS"]},
    }


X, Y, Z = (f"{n:08d}-0000-4000-8000-000000000000" for n in (1, 2, 3))


def test_celery_id_filter() -> None:
    flt = FeedFilter.parse({"celery_id": [X, Y.upper()]}, TYPES)
    assert flt.matches(doc(X)) and flt.matches(doc(Y)) and not flt.matches(doc(Z))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"status": "BOGUS"}, "status"),
        ({"status": 3}, "status"),
        ({"status": [None]}, "status"),
        ({"task_type": "nope"}, "task_type"),
        ({"celery_id": "x" * 300}, "celery_id"),
        ({"celery_id": [str(i) for i in range(101)]}, "celery_id"),
        ({"task_type": {"$ne": 1}}, "task_type"),
    ],
)
def test_bad_filter_values_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParam) as err:
        FeedFilter.parse(raw, TYPES)
    assert err.value.field == field


def test_foreign_tasks_can_be_filtered() -> None:
    assert FeedFilter.parse({"task_type": "external"}, TYPES).task_type == {"external"}


# -- the seam ----------------------------------------------------------------------------


def test_seam_replays_since_to_high_then_sends_only_above_the_floor() -> None:
    seam = Seam(since=10, high=25)
    assert seam.replay_range == (10, 25) and seam.floor == 25
    assert not seam.live(25) and seam.live(26)


def test_seam_of_a_client_ahead_of_this_process_replays_nothing() -> None:
    seam = Seam(since=40, high=25)
    assert seam.replay_range is None and seam.floor == 40
    assert not seam.live(30) and seam.live(41)


# -- bounded queues -------------------------------------------------------------------------


def test_a_full_queue_overflows_once_and_stops_queueing() -> None:
    dropped: list[FeedClient] = []
    client = FeedClient(FeedFilter(), 3, dropped.append)
    for rev in range(1, 6):
        client.offer(Entry(rev, doc(rev=rev), str(rev)))
    assert dropped == [client] and client.overflowed and not client.queue


def test_take_skips_what_is_below_the_floor_or_no_longer_matches() -> None:
    client = FeedClient(FeedFilter(), 10, lambda c: None)
    client.floor = 2
    for rev, status in [(1, "PENDING"), (2, "PENDING"), (3, "STARTED"), (4, "SUCCESS")]:
        client.offer(Entry(rev, doc(rev=rev, status=status), str(rev)))
    client.offer(Entry(None, None, "heartbeat"))
    client.filter = FeedFilter(status=frozenset({"SUCCESS"}))
    assert [e.text for e in client.take()] == ["4", "heartbeat"]


def test_hub_dispatches_in_revision_order_and_ignores_repeats() -> None:
    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100)
        await hub.on_connect(5)
        mine = hub.register(FeedFilter(status=frozenset({"SUCCESS"})), lambda c: None)
        other = hub.register(FeedFilter(), lambda c: None)
        hub.begin(mine, None)
        hub.begin(other, None)
        hub.on_docs([doc("b", 7, "SUCCESS"), doc("a", 6, "STARTED")])
        hub.on_docs([doc("a", 6, "STARTED"), doc("c", 4, "SUCCESS")])  # repeats and stale
        assert [e.rev for e in mine.take()] == [7]
        assert [e.rev for e in other.take()] == [6, 7]
        assert hub.high == 7 and hub.ignored == 2

    asyncio.run(run())


def test_hub_keeps_the_lookup_cache_fresh_and_empties_it_while_disconnected() -> None:
    async def run() -> None:
        cache = LookupCache(10, 60.0)
        hub = FeedHub(store=None, client_queue=100, cache=cache)
        assert not cache.live
        await hub.on_connect(5)
        assert cache.live and cache.high == 5
        cache.end(cache.begin("a"), doc("a", 4, "STARTED"))
        hub.on_docs([doc("a", 6, "SUCCESS")])
        assert cache.get("a") == doc("a", 6, "SUCCESS")
        hub.on_disconnect()
        assert not cache.live and cache.get("a") is None
        await hub.on_connect(6)
        assert cache.live and len(cache) == 0

    asyncio.run(run())


def test_a_subscription_lost_before_its_connect_ran_does_not_revive_the_cache() -> None:
    async def run() -> None:
        cache = LookupCache(10, 60.0)
        hub = FeedHub(store=None, client_queue=100, cache=cache)
        seen = hub.disconnects  # what the subscriber thread's connect captured
        hub.on_disconnect()  # ... and the drop that followed, handled first
        await hub.on_connect(5, seen)
        assert not cache.live
        await hub.on_connect(5, hub.disconnects)  # the next subscription
        assert cache.live

    asyncio.run(run())


def test_hub_encodes_a_change_once_and_only_for_clients_that_want_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.service import feedhub

    encoded: list[int] = []
    real = feedhub.change_message

    def counting(kind: str, d: Any) -> str:
        encoded.append(int(d["rev"]))
        return real(kind, d)

    monkeypatch.setattr(feedhub, "change_message", counting)

    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100)
        await hub.on_connect(0)
        hub.on_docs([doc("a", 1)])  # nobody listens
        picky = hub.register(FeedFilter(status=frozenset({"SUCCESS"})), lambda c: None)
        hub.begin(picky, None)
        hub.on_docs([doc("a", 2, "STARTED")])  # nobody wants it
        both = [hub.register(FeedFilter(), lambda c: None) for _ in range(2)]
        for client in both:
            hub.begin(client, None)
        hub.on_docs([doc("a", 3, "SUCCESS")])  # three clients, one encoding
        assert encoded == [3]
        texts = [e.text for c in [picky, *both] for e in c.take()]
        assert len(texts) == 3 and len(set(texts)) == 1 and '"rev":3' in texts[0]
        assert hub.high == 3 and hub.dispatched == 3

    asyncio.run(run())


# -- leaving a filter --------------------------------------------------------------------


def kinds(client: FeedClient) -> list[tuple[str, int, str]]:
    """(message type, rev, status) of everything due to the client."""
    out = []
    for entry in client.take():
        msg = json.loads(entry.text)
        out.append((msg["type"], msg["rev"], msg["task"]["status"]))
    return out


def test_a_task_leaving_a_filter_is_announced_to_the_clients_it_was_sent_to() -> None:
    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100)
        await hub.on_connect(0)
        running = hub.register(FeedFilter(status=frozenset({"STARTED"})), lambda c: None)
        done = hub.register(FeedFilter(status=frozenset({"SUCCESS"})), lambda c: None)
        everything = hub.register(FeedFilter(), lambda c: None)
        scans = hub.register(FeedFilter(task_type=frozenset({"domain_task"})), lambda c: None)
        for client in (running, done, everything, scans):
            hub.begin(client, None)
        hub.on_docs([doc("a", 1, "PENDING")])
        hub.on_docs([doc("a", 2, "STARTED")])
        hub.on_docs([doc("a", 3, "SUCCESS")])
        hub.on_docs([doc("a", 4, "FAILURE")])  # a later, winning terminal event
        hub.on_docs([doc("a", 5, "FAILURE")])
        assert kinds(running) == [("change", 2, "STARTED"), ("leave", 3, "SUCCESS")]
        assert kinds(done) == [("change", 3, "SUCCESS"), ("leave", 4, "FAILURE")]
        assert [k for k, _, _ in kinds(everything)] == ["change"] * 5, "an unfiltered client never leaves"
        assert kinds(scans) == [], "never sent the task: nothing to leave"
        assert hub.shown == {}, "no filtered client holds the task any more"

    asyncio.run(run())


def test_the_memory_of_what_filtered_clients_were_sent_is_bounded() -> None:
    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100, leave_tracking=2)
        await hub.on_connect(0)
        running = hub.register(FeedFilter(status=frozenset({"STARTED"})), lambda c: None)
        hub.begin(running, None)
        hub.on_docs([doc("a", 1, "STARTED"), doc("b", 2, "STARTED"), doc("c", 3, "STARTED")])
        assert list(hub.shown) == ["b", "c"], "the least recently changed is forgotten"
        hub.on_docs([doc("b", 4, "STARTED")])  # b changes again: now the most recent
        hub.on_docs([doc("a", 5, "SUCCESS"), doc("b", 6, "SUCCESS"), doc("c", 7, "SUCCESS")])
        leaves = [r for k, r, _ in kinds(running) if k == "leave"]
        assert leaves == [6, 7], "a was forgotten: its end (rev 5) is not a leave"

        off = FeedHub(store=None, client_queue=100, leave_tracking=0)
        await off.on_connect(0)
        watcher = off.register(FeedFilter(status=frozenset({"STARTED"})), lambda c: None)
        off.begin(watcher, None)
        off.on_docs([doc("a", 1, "STARTED"), doc("a", 2, "SUCCESS")])
        assert kinds(watcher) == [("change", 1, "STARTED")] and off.shown == {}

    asyncio.run(run())


def test_a_held_task_that_stops_matching_is_a_leave_even_if_this_process_never_sent_it() -> None:
    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100)
        await hub.on_connect(0)
        client = hub.register(FeedFilter(status=frozenset({"STARTED"})), lambda c: None)
        hub.begin(client, None, holding={"x", "y"})
        hub.on_docs([doc("x", 1, "SUCCESS")])
        hub.on_docs([doc("x", 2, "FAILURE")])  # told once; no longer held
        hub.on_docs([doc("y", 3, "STARTED")])  # still matches: a change, and tracked from now on
        hub.on_docs([doc("y", 4, "SUCCESS")])
        assert kinds(client) == [("leave", 1, "SUCCESS"), ("change", 3, "STARTED"), ("leave", 4, "SUCCESS")]
        assert client.holding == set()

    asyncio.run(run())


def test_take_drops_a_leave_of_a_task_the_current_filter_matches() -> None:
    client = FeedClient(FeedFilter(status=frozenset({"STARTED"})), 10, lambda c: None)
    client.offer(Entry(1, doc(rev=1, status="SUCCESS"), "left", leave=True))
    client.offer(Entry(2, doc("b", rev=2, status="FAILURE"), "left too", leave=True))
    client.filter = FeedFilter(status=frozenset({"STARTED", "SUCCESS"}))
    assert [e.text for e in client.take()] == ["left too"]


def test_equal_filters_are_one_object_judged_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    a = FeedFilter.parse({"status": "STARTED,SUCCESS"}, TYPES)
    assert a is FeedFilter.parse({"status": ["SUCCESS", "STARTED"]}, TYPES)
    assert a is not FeedFilter.parse({"status": "STARTED"}, TYPES)
    judged: list[str] = []
    real = FeedFilter.matches

    def counting(self: FeedFilter, d: Any) -> bool:
        judged.append(d["celery_id"])
        return real(self, d)

    monkeypatch.setattr(FeedFilter, "matches", counting)

    async def run() -> None:
        hub = FeedHub(store=None, client_queue=100)
        await hub.on_connect(0)
        same = [
            hub.register(FeedFilter.parse({"status": "STARTED"}, TYPES), lambda c: None) for _ in range(50)
        ]
        other = hub.register(FeedFilter.parse({"task_type": "domain_task"}, TYPES), lambda c: None)
        for client in [*same, other]:
            hub.begin(client, None)
        hub.on_docs([doc("a", 1, "STARTED")])
        assert len(judged) == 2, "one judgement per distinct filter, not per client"
        assert all(len(c.take()) == 1 for c in same) and other.take() == []

    asyncio.run(run())


def test_holding_takes_strings_or_lists_and_names_the_field_when_bad() -> None:
    assert parse_holding(["a,b", " c "]) == {"a", "b", "c"}
    assert parse_holding("a") == {"a"}
    for bad in ([1], {"$in": ["a"]}, "x" * 300, [str(i) for i in range(MAX_HOLDING + 1)]):
        with pytest.raises(InvalidParam) as err:
            parse_holding(bad)
        assert err.value.field == "holding"


# -- the ordering gate (real Redis, real MongoDB-wire server) ----------------------------------


@pytest.fixture()
def gate(mongo_server: str) -> Iterator[tuple[FeedPublisher, TaskStore, redis.Redis]]:
    database = f"u_{uuid.uuid4().hex[:8]}"
    config: Config = load_config(
        None,
        env={"CP_BROKER_URL": fresh_redis_url(), "CP_MONGO_URL": mongo_server, "CP_MONGO_DATABASE": database},
    )
    store = TaskStore(MongoConfig(url=mongo_server, database=database))
    publisher = FeedPublisher(config, store)
    assert publisher.client is not None
    listener = redis.Redis.from_url(config.broker.url)
    try:
        yield publisher, store, listener
    finally:
        publisher.close()
        listener.close()
        store.client.drop_database(database)
        store.close()


def insert(store: TaskStore, n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        rev = store.next_revisions(1)
        d = new_task_document(
            celery_id=str(uuid.uuid4()),
            task_type="sleep_task",
            data={"name": f"n{i}"},
            created_time=1.0,
            rev=rev,
        )
        store.tasks.insert_one(d)
        docs.append(d)
    return docs


def test_a_write_published_after_a_higher_revision_is_restamped(
    gate: tuple[FeedPublisher, TaskStore, redis.Redis],
) -> None:
    publisher, store, listener = gate
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(publisher.channel)
    pubsub.get_message(timeout=1)
    low, high = insert(store, 2)
    assert publisher.publish([high]) and publisher.publish([low])
    got = []
    while len(got) < 2:
        message = pubsub.get_message(timeout=2)
        assert message is not None
        got.extend(decode(message["data"]))
    revs = [d["rev"] for d in got]
    assert revs == sorted(revs) and revs[0] == high["rev"] and revs[1] > high["rev"]
    assert got[1]["celery_id"] == low["celery_id"]
    assert store.get(low["celery_id"])["rev"] == revs[1]  # type: ignore[index]
    assert publisher.restamped == 1
    pubsub.close()


def test_a_stale_document_that_moved_on_is_left_to_its_newer_writer(
    gate: tuple[FeedPublisher, TaskStore, redis.Redis],
) -> None:
    publisher, store, _ = gate
    old, newer = insert(store, 2)
    publisher.publish([newer])
    store.tasks.update_one({"celery_id": old["celery_id"]}, {"$set": {"rev": store.next_revisions(1)}})
    assert publisher.publish([old])  # stale and changed since: nothing to publish
    assert publisher.published == 1 and publisher.restamped == 0


def test_the_channel_is_per_deployment(gate: tuple[FeedPublisher, TaskStore, redis.Redis]) -> None:
    publisher, _, _ = gate
    assert (
        publisher.channel == channel_name(publisher.config)
        and publisher.config.mongo.database in publisher.channel
    )
