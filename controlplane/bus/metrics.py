"""The event consumer's Prometheus metrics (``controlplane ingest``).

Served, when ``metrics.ingest_port`` is not 0, by :func:`prometheus_client.start_http_server`
on ``metrics.ingest_host:metrics.ingest_port`` (each consumer its own port; only the lease
holder's counters move).  The list of metrics is in docs/operations.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from controlplane.config import Config

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
RUNTIME_BUCKETS = (
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
#: Most distinct task_type labels; tasks of further types (foreign names) count as ``other``.
MAX_TASK_TYPES = 64
_OUTCOMES = {"task-succeeded": "succeeded", "task-failed": "failed"}


class IngestMetrics:
    """The consumer's metrics: events received, applied and dropped, batch sizes, lag, lease,
    and how long tasks ran and waited (observed once, by the consumer that writes their events)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("controlplane_events_received", "Task events received", registry=r)
        self.applied = Counter("controlplane_events_applied", "Task events written to the store", registry=r)
        self.dropped = Counter(
            "controlplane_events_dropped", "Events dropped over the buffer bound (reconciled)", registry=r
        )
        self.batch_size = Histogram(
            "controlplane_event_batch_size", "Events per bulk write", buckets=BATCH_BUCKETS, registry=r
        )
        self.lag = Histogram(
            "controlplane_event_lag_seconds",
            "Write time minus the event's timestamp",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.lag_last = Gauge(
            "controlplane_event_lag_last_seconds", "Largest event lag of the last batch", registry=r
        )
        self.buffer = Gauge("controlplane_event_buffer", "Events buffered, not yet written", registry=r)
        self.db_errors = Counter(
            "controlplane_ingest_database_errors", "Failed bulk writes (retried)", registry=r
        )
        self.lease_held = Gauge(
            "controlplane_ingest_lease_held", "1 while this consumer holds the ingest lease", registry=r
        )
        self.last_flush = Gauge(
            "controlplane_ingest_last_flush_timestamp_seconds",
            "Time of the last successful write",
            registry=r,
        )

        self.runtime = Histogram(
            "controlplane_task_runtime_seconds",
            "Run time of finished tasks (the worker's runtime; end minus start for a failure)",
            ["task_type", "outcome"],
            buckets=RUNTIME_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "controlplane_task_queue_wait_seconds",
            "Waits before a task ran: stage broker = received - created, worker = started - received",
            ["task_type", "stage"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self._types: set[str] = set()

    def on_received(self, count: int, buffered: int) -> None:
        """``count`` task events arrived; ``buffered`` are now waiting."""
        if count:
            self.received.inc(count)
        self.buffer.set(buffered)

    def on_batch(self, events: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        """A batch was written."""
        now = time.time() if now is None else now
        n = 0
        worst = 0.0
        for event in events:
            n += 1
            stamp = event.get("timestamp")
            if isinstance(stamp, int | float) and not isinstance(stamp, bool):
                lag = max(0.0, now - float(stamp))
                self.lag.observe(lag)
                worst = max(worst, lag)
        if n:
            self.applied.inc(n)
            self.batch_size.observe(n)
            self.lag_last.set(worst)
        self.buffer.set(0)
        self.last_flush.set(now)

    def on_written(self, events: Iterable[Mapping[str, Any]], changed: Iterable[Mapping[str, Any]]) -> None:
        """Observe run times and waits of the tasks a write changed (on the writer thread).

        A wait is observed when this write set the document's time of that step from an
        event of the batch (so a repeated or retried event does not count twice); a run
        time when the batch carried the task's end and the write changed the document.
        """
        by_id: dict[Any, list[Mapping[str, Any]]] = {}
        for event in events:
            if event.get("type") in ("task-received", "task-started", *_OUTCOMES):
                by_id.setdefault(event.get("uuid"), []).append(event)
        if not by_id:
            return
        for doc in changed:
            mine = by_id.get(doc.get("celery_id"))
            if mine:
                self._observe(doc, mine)

    def _observe(self, doc: Mapping[str, Any], events: list[Mapping[str, Any]]) -> None:
        kind = self._task_type(doc.get("task_type"))
        created, received, started = (
            _number(doc.get(k)) for k in ("created_time", "received_time", "start_time")
        )
        stamps = {e.get("type"): _number(e.get("timestamp")) for e in events}
        if received is not None and created is not None and stamps.get("task-received") == received:
            self.queue_wait.labels(kind, "broker").observe(max(0.0, received - created))
        if started is not None and received is not None and stamps.get("task-started") == started:
            self.queue_wait.labels(kind, "worker").observe(max(0.0, started - received))
        for event in events:
            outcome = _OUTCOMES.get(str(event.get("type")))
            if outcome is None:
                continue
            runtime = _number(event.get("runtime"))
            end = _number(doc.get("end_time"))
            if runtime is None and end is not None and started is not None:
                runtime = end - started
            if runtime is not None:
                self.runtime.labels(kind, outcome).observe(max(0.0, runtime))
            break

    def _task_type(self, value: Any) -> str:
        """A task_type label: the type, or ``other`` past :data:`MAX_TASK_TYPES` distinct ones."""
        name = value if isinstance(value, str) and value else "unknown"
        if name not in self._types:
            if len(self._types) >= MAX_TASK_TYPES:
                return "other"
            self._types.add(name)
        return name

    def on_db_error(self) -> None:
        """A bulk write failed."""
        self.db_errors.inc()

    def on_dropped(self, count: int) -> None:
        """Events were shed over the buffer bound."""
        self.dropped.inc(count)

    def exposition(self) -> bytes:
        """The text format of every metric."""
        return bytes(generate_latest(self.registry))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def start_ingest_metrics(config: Config) -> IngestMetrics | None:
    """Serve the consumer's metrics on ``metrics.ingest_host:ingest_port`` (None when the port is 0)."""
    if not config.metrics.enabled or not config.metrics.ingest_port:
        return None
    metrics = IngestMetrics()
    start_http_server(config.metrics.ingest_port, config.metrics.ingest_host, registry=metrics.registry)
    log.info(
        "consumer metrics on http://%s:%d/metrics", config.metrics.ingest_host, config.metrics.ingest_port
    )
    return metrics
