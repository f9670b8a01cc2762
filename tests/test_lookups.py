"""The lookup cache's rules, alone (pure logic; the served path is in tests/test_lookup_serving.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.service.lookups import LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def shown(cid: str, rev: int, status: str = "STARTED") -> dict[str, Any]:
    return {"celery_id": cid, "rev": rev, "status": status}


def live_cache(size: int = 10, ttl: float = 2.0, high: int = 1000) -> tuple[LookupCache, Clock]:
    clock = Clock()
    cache = LookupCache(size, ttl, clock)
    cache.resume(high)
    return cache, clock


def fill(cache: LookupCache, detail: dict[str, Any]) -> dict[str, Any] | None:
    assert cache.get(detail["celery_id"]) is None
    return cache.end(cache.begin(detail["celery_id"]), detail)


def test_a_read_fills_the_cache_and_the_next_lookup_is_a_hit() -> None:
    cache, _ = live_cache()
    assert fill(cache, shown("a", 5)) == shown("a", 5)
    assert cache.get("a") == shown("a", 5)
    assert (cache.hits, cache.misses) == (1, 1)


def test_nothing_is_answered_or_kept_before_the_feed_is_live() -> None:
    cache = LookupCache(10, 2.0, Clock())
    assert cache.end(cache.begin("a"), shown("a", 5)) == shown("a", 5)
    assert cache.get("a") is None and len(cache) == 0


def test_an_unknown_task_is_not_remembered() -> None:
    cache, _ = live_cache()
    assert cache.end(cache.begin("a"), None) is None
    assert len(cache) == 0


def test_entries_expire_after_ttl_without_a_feed_update() -> None:
    cache, clock = live_cache(ttl=2.0)
    fill(cache, shown("a", 5))
    clock.now += 1.9
    assert cache.get("a") is not None
    clock.now += 0.2
    assert cache.get("a") is None


def test_a_feed_update_refreshes_the_entry_and_its_life() -> None:
    cache, clock = live_cache(ttl=2.0)
    fill(cache, shown("a", 5))
    clock.now += 1.5
    cache.observe(shown("a", 9, "SUCCESS"))
    clock.now += 1.5
    assert cache.get("a") == shown("a", 9, "SUCCESS")
    assert cache.high == 1000  # below the resume point: high does not go down


def test_an_older_feed_message_never_replaces_a_newer_entry() -> None:
    cache, _ = live_cache()
    fill(cache, shown("a", 9, "SUCCESS"))
    cache.observe(shown("a", 7))
    assert cache.get("a") == shown("a", 9, "SUCCESS")


def test_the_feed_does_not_add_tasks_nobody_looked_up() -> None:
    cache, _ = live_cache()
    cache.observe(shown("b", 1001))
    assert len(cache) == 0 and cache.high == 1001


def test_the_least_recently_used_entry_goes_first() -> None:
    cache, _ = live_cache(size=2)
    fill(cache, shown("a", 1))
    fill(cache, shown("b", 2))
    assert cache.get("a") is not None  # a is now the most recent
    fill(cache, shown("c", 3))
    assert len(cache) == 2
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_a_change_dispatched_during_the_read_wins_over_the_older_read() -> None:
    cache, _ = live_cache()
    read = cache.begin("a")
    cache.observe(shown("a", 8, "SUCCESS"))  # landed after the read looked, before it returned
    assert cache.end(read, shown("a", 5)) == shown("a", 8, "SUCCESS")
    assert cache.get("a") == shown("a", 8, "SUCCESS")


def test_concurrent_reads_of_one_task_each_see_the_change() -> None:
    cache, _ = live_cache()
    first, second = cache.begin("a"), cache.begin("a")
    cache.observe(shown("a", 8, "SUCCESS"))
    assert cache.end(first, shown("a", 5)) == shown("a", 8, "SUCCESS")
    assert cache.end(second, shown("a", 5)) == shown("a", 8, "SUCCESS")
    assert cache.get("a") == shown("a", 8, "SUCCESS")


def test_a_read_that_spans_a_lost_subscription_is_not_kept() -> None:
    cache, _ = live_cache()
    read = cache.begin("a")
    cache.suspend()
    cache.resume(1000)
    assert cache.end(read, shown("a", 5)) == shown("a", 5)
    assert cache.get("a") is None


def test_losing_the_subscription_empties_the_cache_until_resumed() -> None:
    cache, _ = live_cache()
    fill(cache, shown("a", 5))
    cache.suspend()
    assert cache.get("a") is None and len(cache) == 0
    fill(cache, shown("a", 5))
    assert cache.get("a") is None  # not kept while suspended
    cache.resume(1000)
    fill(cache, shown("a", 5))
    assert cache.get("a") == shown("a", 5)


def test_a_revision_the_feed_has_not_reached_is_answered_but_not_kept() -> None:
    cache, _ = live_cache(high=10)
    assert fill(cache, shown("a", 11, "PENDING")) == shown("a", 11, "PENDING")
    assert cache.get("a") is None
    cache.observe(shown("z", 11))
    fill(cache, shown("a", 11, "PENDING"))
    assert cache.get("a") == shown("a", 11, "PENDING")


def test_this_process_own_write_is_seen_at_once_without_moving_high() -> None:
    cache, clock = live_cache(high=10, ttl=2.0)
    fill(cache, shown("a", 5))
    clock.now += 1.5
    cache.wrote(shown("a", 12, "REVOKED"))
    assert cache.get("a") == shown("a", 12, "REVOKED")
    assert cache.high == 10
    clock.now += 0.6
    assert cache.get("a") is None  # a local write does not vouch for the feed


def test_a_failed_read_leaves_nothing_behind() -> None:
    cache, _ = live_cache()
    read = cache.begin("a")
    cache.abandon(read)
    cache.observe(shown("a", 8))
    assert read.seen is None


def test_size_zero_keeps_nothing() -> None:
    cache, _ = live_cache(size=0)
    fill(cache, shown("a", 5))
    assert cache.get("a") is None


# -- a model: one task, writers, a delayed in-order feed, reads that look at some moment ------

Step = tuple[str, int]
steps = st.lists(
    st.tuples(
        # write: the store moves on and publishes; deliver: the feed brings the oldest undelivered
        # change; look: in-flight read i takes its snapshot now; drop: the subscription is lost,
        # then the hub resubscribes and catches up.
        st.sampled_from(["write", "deliver", "begin", "look", "end", "get", "drop"]),
        st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=1000, deadline=None)
@given(steps)
def test_an_answer_is_never_behind_what_the_feed_delivered(plan: list[Step]) -> None:
    """Whatever the interleaving, a lookup never shows a revision older than the feed's latest.

    The store holds revision ``db``; each write is published in order and
    delivered later; a read snapshots the store at some moment between its
    begin and its end.
    """
    cache, _ = live_cache(high=0)
    db = 1
    published: list[int] = []
    delivered = 0
    reads: list[tuple[Any, int | None]] = []
    for op, arg in plan:
        if op == "write":
            db += 1
            published.append(db)
        elif op == "deliver" and published:
            delivered = published.pop(0)
            cache.observe(shown("t", delivered))
        elif op == "begin":
            reads.append((cache.begin("t"), None))
        elif op == "look" and reads and reads[arg % len(reads)][1] is None:
            reads[arg % len(reads)] = (reads[arg % len(reads)][0], db)
        elif op == "end" and reads:
            read, seen = reads.pop(arg % len(reads))
            answer = cache.end(read, shown("t", db if seen is None else seen))
            assert answer is not None and answer["rev"] >= max(delivered, seen or 0)
        elif op == "get":
            got = cache.get("t")
            assert got is None or delivered <= got["rev"] <= db
        elif op == "drop":
            cache.suspend()
            # Catch-up: the hub dispatches what it missed, then resumes.
            while published:
                delivered = published.pop(0)
                cache.observe(shown("t", delivered))
            cache.resume(delivered)
    while published:
        delivered = published.pop(0)
        cache.observe(shown("t", delivered))
    got = cache.get("t")
    assert got is None or got["rev"] == db


def recent_cache(recent: int = 3) -> tuple[LookupCache, Clock]:
    clock = Clock()
    cache = LookupCache(10, 2.0, clock, recent=recent)
    cache.resume(1000)
    return cache, clock


def test_a_task_the_feed_changed_is_answered_without_being_looked_up_first() -> None:
    cache, clock = recent_cache()
    cache.observe(shown("new", 1001, "PENDING"))
    assert cache.get("new") == shown("new", 1001, "PENDING")
    cache.observe(shown("new", 1002, "STARTED"))
    assert cache.get("new") == shown("new", 1002, "STARTED")
    clock.now += 2.1
    assert cache.get("new") is None, "a recent change is trusted for ttl, like any entry"
    off, _ = recent_cache(recent=0)
    off.observe(shown("new", 1001))
    assert off.get("new") is None, "with lookup_recent 0 only looked-up tasks are kept"


def test_a_published_create_is_kept_ahead_of_the_feed_and_updated_by_it() -> None:
    cache, _ = recent_cache()
    cache.created(shown("mine", 1005, "PENDING"))  # the feed has reached 1000 only
    assert cache.get("mine") == shown("mine", 1005, "PENDING")
    cache.observe(shown("mine", 1006, "STARTED"))
    assert cache.get("mine") == shown("mine", 1006, "STARTED")
    cache.observe(shown("mine", 1005, "PENDING"))
    assert cache.get("mine") == shown("mine", 1006, "STARTED"), "never an older revision"


def test_recent_changes_are_bounded_and_forgotten_with_the_subscription() -> None:
    cache, _ = recent_cache(recent=3)
    for i in range(5):
        cache.observe(shown(f"t{i}", 1001 + i))
    assert [cache.get(f"t{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert len(cache) == 3
    cache.suspend()
    assert len(cache) == 0 and cache.get("t4") is None
    cache.created(shown("late", 2000))
    assert cache.get("late") is None, "nothing is kept while the feed is down"
