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


class IngestMetrics:
    """The consumer's metrics: events received, applied and dropped, batch sizes, lag, lease."""

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

    def on_db_error(self) -> None:
        """A bulk write failed."""
        self.db_errors.inc()

    def on_dropped(self, count: int) -> None:
        """Events were shed over the buffer bound."""
        self.dropped.inc(count)

    def exposition(self) -> bytes:
        """The text format of every metric."""
        return bytes(generate_latest(self.registry))


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
