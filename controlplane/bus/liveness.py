"""Worker liveness as the event consumer sees it: online, silent, gone or restarted."""

from __future__ import annotations

import time
from typing import Any

WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


class WorkerTracker:
    """Liveness of workers, judged against our own clock.

    A task STARTED on a worker is lost when that worker went offline, stayed
    silent past the timeout (heartbeats every ~2 s), or came back as a new
    process (a ``worker-online`` event or a new pid) after the task started:
    a restarted worker is not running its predecessor's tasks.
    """

    def __init__(self, timeout: float, now: float | None = None) -> None:
        self.timeout = timeout
        self.started = time.time() if now is None else now
        self.seen: dict[str, dict[str, Any]] = {}
        self.dirty: dict[str, dict[str, Any]] = {}
        self.restarted = False
        # Workers whose reserved messages were given back since they were last heard from,
        # and workers that came back as a new process (hostname → when the new one started).
        self.released: set[str] = set()
        self.reborn: dict[str, float] = {}

    def load(self, stored: list[dict[str, Any]]) -> None:
        """Start from what an earlier consumer recorded, with a fresh grace period."""
        for info in stored:
            host = info.get("hostname")
            if isinstance(host, str):
                self.seen[host] = {**info, "last_heartbeat": self.started}

    def grace(self, now: float) -> None:
        """Restart every worker's silence clock (the consumer was disconnected until ``now``)."""
        self.started = max(self.started, now)
        for info in self.seen.values():
            info["last_heartbeat"] = max(float(info.get("last_heartbeat") or 0.0), now)

    def observe(self, event: dict[str, Any], now: float) -> None:
        """Record a worker event (any task event from a worker also proves it alive)."""
        host = event.get("hostname")
        kind = event.get("type")
        if not isinstance(host, str) or not host or kind == "task-sent":
            return
        info = dict(self.seen.get(host) or {"freq": 2.0})
        info["last_heartbeat"] = now
        info["online"] = kind != "worker-offline"
        freq = event.get("freq")
        if isinstance(freq, int | float) and not isinstance(freq, bool):
            info["freq"] = float(freq)
        if kind in WORKER_EVENTS:
            pid = event.get("pid")
            stamp = event.get("timestamp")
            restarted = kind == "worker-online" or (info.get("pid") is not None and pid != info.get("pid"))
            if restarted and isinstance(stamp, int | float):
                info["online_since"] = float(stamp)
                self.restarted = True
                self.reborn[host] = float(stamp)
            info["pid"] = pid
            info["active"] = event.get("active")
            info["active_at"] = now
            info["processed"] = event.get("processed")
            for key in ("loadavg", "sw_ver", "sw_ident", "sw_sys"):
                if key in event:
                    info[key] = event[key]
        self.seen[host] = info
        self.dirty[host] = info
        if info["online"]:
            self.released.discard(host)

    def suspicious(self, now: float) -> bool:
        """Whether any known worker is offline, silent too long, or restarted since the last call.

        Lets the consumer skip the query for running tasks while every worker is
        healthy (that query grows with the store on the embedded server).
        """
        restarted, self.restarted = self.restarted, False
        for info in self.seen.values():
            limit = max(self.timeout, 3 * float(info.get("freq") or 2.0))
            if not info.get("online") or now - float(info.get("last_heartbeat") or 0.0) > limit:
                return True
        return restarted

    def verdict(self, host: str, start_time: float | None, now: float) -> str | None:
        """Why a task STARTED on ``host`` at ``start_time`` is lost, or None if it may be running."""
        info = self.seen.get(host)
        if info is None:
            if now - self.started > self.timeout:
                return f"worker {host} sent no heartbeat for {self.timeout:g}s"
            return None
        if not info.get("online"):
            return f"worker {host} went offline"
        limit = max(self.timeout, 3 * float(info.get("freq") or 2.0))
        if now - float(info["last_heartbeat"]) > limit:
            return f"worker {host} stopped sending heartbeats"
        since = info.get("online_since")
        if since is not None and start_time is not None and start_time < since:
            return f"worker {host} restarted while the task ran"
        if self.idle_since(info, start_time):
            return f"worker {host} reports no task running"
        return None

    @staticmethod
    def idle_since(info: dict[str, Any], start_time: float | None) -> bool:
        """Whether the worker's own count of running tasks was 0 well after ``start_time``.

        Catches a task whose worker came back as a new process this consumer never saw start
        (its ``worker-online`` came before the consumer subscribed, and no earlier pid was known):
        the new process runs nothing it did not start, and says how many it runs in every
        heartbeat. "Well after" is three heartbeat intervals, so a task that just started is
        counted by then.
        """
        active, at = info.get("active"), info.get("active_at")
        if start_time is None or active != 0 or not isinstance(at, int | float):
            return False
        return float(at) - start_time > 3 * float(info.get("freq") or 2.0)

    def holds(self, host: str, pid: int, now: float) -> bool:
        """Whether process ``pid`` of worker ``host`` may still hold messages it reserved.

        No: the worker is presumed gone, or is known to run as another process now.
        A worker never heard of is given the grace period of this consumer's start.
        """
        info = self.seen.get(host)
        if info is None:
            return now - self.started <= self.timeout
        if self.verdict(host, None, now):
            return False
        known = info.get("pid")
        return not isinstance(known, int) or known == pid

    def to_release(self, now: float) -> dict[str, float | None]:
        """Workers whose reserved messages nobody will run: hostname → received before when.

        A worker presumed gone (``None``: everything it received) or back as a new
        process (its start: what the old process received), each reported until
        :meth:`mark_released` — once per death, not on every check.
        """
        out: dict[str, float | None] = dict(self.reborn)
        for host in self.seen:
            if host not in self.released and self.verdict(host, None, now):
                out[host] = None
        return out

    def mark_released(self, hosts: dict[str, float | None]) -> None:
        """The reserved messages of ``hosts`` (from :meth:`to_release`) were given back."""
        for host, before in hosts.items():
            if before is None:
                self.released.add(host)
            elif self.reborn.get(host) == before:
                del self.reborn[host]
