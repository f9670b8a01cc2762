"""The consumer's memory of the documents it wrote last (pure logic; the store's use is in test_store)."""

from __future__ import annotations

from typing import Any

from controlplane.store.recent import RecentTasks


def doc(cid: str, status: str = "STARTED", rev: int = 1) -> dict[str, Any]:
    return {"celery_id": cid, "status": status, "rev": rev, "_m": {"phase": [1.0, 2, status]}}


def test_remembers_unfinished_tasks_and_hands_out_copies() -> None:
    recent = RecentTasks(10)
    recent.remember([doc("a"), doc("b", rev=4)])
    got = recent.take(["a", "b", "c"])
    assert set(got) == {"a", "b"} and got["b"]["rev"] == 4
    got["a"]["status"] = "CHANGED"
    assert recent.take(["a"])["a"]["status"] == "STARTED"  # the caller's copy, not ours


def test_finished_tasks_are_dropped_not_kept() -> None:
    recent = RecentTasks(10)
    recent.remember([doc("a"), doc("b")])
    recent.remember([doc("a", "SUCCESS", 2), doc("b", "FAILURE", 2), doc("c", "REVOKED")])
    assert recent.take(["a", "b", "c"]) == {} and len(recent) == 0


def test_the_least_recently_used_go_first_over_capacity() -> None:
    recent = RecentTasks(3)
    recent.remember([doc("a"), doc("b"), doc("c")])
    recent.take(["a"])  # used: b is now the oldest
    recent.remember([doc("d")])
    assert set(recent.take(["a", "b", "c", "d"])) == {"a", "c", "d"} and len(recent) == 3


def test_forget_and_capacity_zero() -> None:
    recent = RecentTasks(5)
    recent.remember([doc("a"), doc("b")])
    recent.forget(["a", "zzz"])
    assert set(recent.take(["a", "b"])) == {"b"}
    off = RecentTasks(0)
    off.remember([doc("a")])
    assert off.take(["a"]) == {} and len(off) == 0


def test_a_newer_version_replaces_the_older() -> None:
    recent = RecentTasks(5)
    recent.remember([doc("a", rev=1)])
    recent.remember([doc("a", rev=7)])
    assert recent.take(["a"])["a"]["rev"] == 7 and len(recent) == 1
