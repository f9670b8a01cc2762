"""Pure parts of the event consumer: message bodies and worker liveness."""

from __future__ import annotations

from controlplane.bus.events import flatten_body
from controlplane.bus.liveness import WorkerTracker


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


def test_worker_reporting_no_running_task_loses_a_task_started_well_before() -> None:
    # A worker that came back as a process this consumer never saw start (no earlier pid known):
    # its heartbeats say it runs nothing, so a task STARTED on it before is not running.
    t = WorkerTracker(timeout=10, now=0)
    t.observe({**beat("w1", 100, pid=7), "active": 0}, now=100)
    assert t.verdict("w1", start_time=99, now=100) is None  # just started: not counted yet
    t.observe({**beat("w1", 107, pid=7), "active": 0}, now=107)
    assert "reports no task running" in (t.verdict("w1", start_time=99, now=107) or "")


def test_worker_running_tasks_keeps_them() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe({**beat("w1", 100, pid=7), "active": 1}, now=100)
    t.observe({**beat("w1", 130, pid=7), "active": 1}, now=130)
    assert t.verdict("w1", start_time=99, now=130) is None


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


def test_a_gone_worker_is_released_once_until_heard_from_again() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100), now=100)
    t.observe(beat("w2", 100), now=100)
    t.mark_released(t.to_release(now=101))  # what the first worker-heartbeats reported
    assert t.to_release(now=105) == {}
    t.observe(beat("w2", 108), now=108)
    assert t.to_release(now=111) == {"w1": None}, "silent past the timeout: everything it received"
    t.mark_released({"w1": None})
    assert t.to_release(now=115) == {}, "given back once, not on every check"
    t.observe(beat("w1", 120, pid=1), now=120)
    assert t.to_release(now=135) == {"w1": None, "w2": None}, "heard from again, then silent again"


def test_release_is_reported_until_marked() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, kind="worker-offline"), now=100)
    assert t.to_release(now=100) == {"w1": None}
    assert t.to_release(now=101) == {"w1": None}, "not given back yet (say the broker was down)"


def test_a_restarted_worker_releases_what_its_old_process_received() -> None:
    t = WorkerTracker(timeout=10, now=0)
    t.observe(beat("w1", 100, pid=1), now=100)
    t.mark_released(t.to_release(now=100))
    t.observe(beat("w1", 130, pid=2, kind="worker-online"), now=130)
    hosts = t.to_release(now=131)
    assert hosts == {"w1": 130.0}, "what it received before its new process started"
    t.observe(beat("w1", 140, pid=3, kind="worker-online"), now=140)
    t.mark_released(hosts)
    assert t.to_release(now=141) == {"w1": 140.0}, "a later restart is not marked by an earlier release"
    t.mark_released({"w1": 140.0})
    assert t.to_release(now=142) == {}
