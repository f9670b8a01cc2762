"""How each system's view of the tasks is watched: completions and end-to-end lag.

* Ours: every document the consumer writes is published, after the write, on the deployment's
  live-feed channel in Redis (``controlplane:feed:<database>``).  The observer subscribes and,
  for each task reaching SUCCESS or FAILURE, takes ``arrival - end_time`` (``end_time`` is the
  timestamp of the terminal event, stamped by the publisher when it sent it): publish → stored
  in MongoDB → noticed, for every task, with no polling load on the system.
* Flower: its state is in memory and only visible over HTTP, so the observer polls
  ``/api/task/info/<id>`` for a sample of the tasks (every ``sample_every``-th, whose terminal
  event time the publisher reports) and takes ``first poll showing the terminal state -
  terminal event time`` (≤ 10 ms of polling granularity).  Completed tasks are counted from
  Flower's own ``flower_events_total`` Prometheus counter.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime
from typing import Any

import redis

from bench.common import Flower, Http

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso).timestamp()


class OursObserver(threading.Thread):
    """Counts tasks reaching a terminal state on our live feed, with their lag."""

    def __init__(self, redis_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(f"controlplane:feed:{database}")
        self.done: set[str] = set()
        self.lags: list[tuple[float, float]] = []  # (arrival, lag)
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if not msg:
                continue
            now = time.time()
            try:
                docs = json.loads(msg["data"])["docs"]
            except (ValueError, KeyError, TypeError):
                continue
            with self.lock:
                for doc in docs:
                    cid = doc.get("celery_id")
                    if doc.get("status") in TERMINAL and cid not in self.done:
                        self.done.add(cid)
                        end = _epoch(doc.get("end_time"))
                        if end is not None:
                            self.lags.append((now, now - end))

    def count(self) -> int:
        with self.lock:
            return len(self.done)

    def seen(self, celery_id: str) -> bool:
        with self.lock:
            return celery_id in self.done

    def lags_since(self, t: float) -> list[float]:
        with self.lock:
            return [lag for at, lag in self.lags if at >= t]

    def close(self) -> None:
        self.stopped.set()
        self.join(2)
        self.pubsub.close()
        self.client.close()


class FlowerObserver(threading.Thread):
    """Polls Flower for sampled tasks until they show a terminal state."""

    def __init__(self, flower: Flower) -> None:
        super().__init__(daemon=True)
        self.flower = flower
        self.http = Http(flower.port)
        self.inbox: queue.Queue[Any] | None = None
        self.pending: list[tuple[str, float]] = []
        self.lags: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def watch(self, samples: Any) -> None:
        """Take samples ``(task_id, terminal_event_time)`` from a publisher's queue."""
        self.inbox = samples

    def run(self) -> None:
        while not self.stopped.is_set():
            inbox = self.inbox
            if inbox is not None:
                try:
                    while True:
                        self.pending.append(inbox.get_nowait())
                except (queue.Empty, OSError, ValueError):
                    pass
            still = []
            for task_id, t_end in self.pending:
                if self.stopped.is_set():
                    break
                status, body = self.http.get(f"/api/task/info/{task_id}")
                now = time.time()
                state = json.loads(body).get("state") if status == 200 else None
                if state in TERMINAL:
                    with self.lock:
                        self.lags.append((now, now - t_end))
                else:
                    still.append((task_id, t_end))
            self.pending = still
            time.sleep(0.01)

    def count(self) -> int:
        return self.flower.events_total()

    def seen(self, task_id: str) -> bool:
        status, body = self.http.get(f"/api/task/info/{task_id}")
        return status == 200 and json.loads(body).get("state") in TERMINAL

    def lags_since(self, t: float) -> list[float]:
        with self.lock:
            return [lag for at, lag in self.lags if at >= t]

    def unresolved(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        self.stopped.set()
        self.join(5)
        self.http.close()
