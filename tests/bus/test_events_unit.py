"""Pure parts of the event consumer: message bodies and worker liveness."""

from __future__ import annotations

from controlplane.bus.events import WorkerTracker, flatten_body


def test_flatten_body_handles_single_and_multi_messages() -> None:
    assert flatten_body({"type": "task-sent"}) == [{"type": "task-sent"}]
    assert flatten_body([{"type": "a"}, "junk", {"type": "b"}]) == [{"type": "a"}, {"type": "b"}]
    assert flatten_body("nonsense") == []


def beat(host: str, ts: float, pid: int = 1, kind: str = "worker-heartbeat") -> dict:
    return {"type": kind, "hostname": host, "timestamp": ts, "pid": pid, "freq": 2.0}


def test_live_worker_keeps_its_tasks() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100), now=100)
    assert t.verdict("w1", start_time=95, now=105) is None


def test_silent_worker_loses_its_tasks_after_the_timeout() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100), now=100)
    assert t.verdict("w1", 95, now=109) is None
    assert "stopped sending heartbeats" in (t.verdict("w1", 95, now=111) or "")


def test_offline_worker_loses_its_tasks_at_once() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, kind="worker-offline"), now=100)
    assert "offline" in (t.verdict("w1", 95, now=100) or "")


def test_restarted_worker_loses_tasks_started_before_the_restart() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, pid=1), now=100)
    t.observe(beat("w1", 120, pid=2, kind="worker-online"), now=120)
    assert "restarted" in (t.verdict("w1", start_time=110, now=121) or "")
    assert t.verdict("w1", start_time=125, now=126) is None


def test_new_pid_without_online_event_is_a_restart() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, pid=1), now=100)
    t.observe(beat("w1", 130, pid=7), now=130)
    assert "restarted" in (t.verdict("w1", start_time=110, now=131) or "")


def test_unknown_worker_gets_a_grace_period_from_consumer_start() -> None:
    t = WorkerTracker(timeout=10, now=1000)
    assert t.verdict("ghost", 900, now=1005) is None
    assert t.verdict("ghost", 900, now=1011) is not None


def test_loaded_workers_get_a_fresh_grace_period() -> None:
    t = WorkerTracker(timeout=10, now=1000)
    t.load([{"hostname": "w1", "last_heartbeat": 10.0, "online": True, "freq": 2.0, "pid": 3}])
    assert t.verdict("w1", 900, now=1005) is None
    assert t.verdict("w1", 900, now=1011) is not None


def test_task_sent_does_not_count_as_a_worker_sign_of_life() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe({"type": "task-sent", "hostname": "api@host", "timestamp": 5}, now=5)
    assert "api@host" not in t.seen


def test_suspicious_only_when_a_worker_is_unhealthy_or_restarted() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, pid=1), now=100)
    assert not t.suspicious(now=105)
    assert t.suspicious(now=111), "silent past the timeout"
    t.observe(beat("w1", 112, pid=1), now=112)
    assert not t.suspicious(now=113)
    t.observe(beat("w1", 114, pid=2, kind="worker-online"), now=114)
    assert t.suspicious(now=115), "restarted since the last check"
    assert not t.suspicious(now=116), "a restart is reported once"
    t.observe(beat("w1", 117, kind="worker-offline"), now=117)
    assert t.suspicious(now=117)
