"""Prometheus metrics of the API (``GET /metrics``) and of the event consumer.

Only counts, rates and durations: no task contents, ids, targets or tokens, so
``/metrics`` needs no authentication (it is a plain Tornado handler, outside
the authenticated :class:`~controlplane.handlers.base.APIHandler`).

API process (``controlplane serve``), on its own port under ``/metrics``:

* ``controlplane_tasks{task_type,status}`` — tasks in the store, from one
  aggregation per scrape, cached ``metrics.cache_seconds``;
* ``controlplane_task_submissions_total{task_type,outcome}`` — creates
  (``accepted`` or the error, e.g. ``invalid_param``, ``service_unavailable``);
* ``controlplane_task_revokes_total{outcome}`` — one per id (``revoked``,
  ``celery_id_not_found``, ``task_is_done``, ``task_is_running``, or an error);
* ``controlplane_workers{state}`` — workers seen by the consumer (``online``:
  heartbeat within ``events.worker_timeout``; ``offline``);
* ``controlplane_feed_clients`` — WebSocket feed connections of this process;
* ``controlplane_lookup_cache_lookups_total{result}`` (``hit``: answered from
  memory, ``miss``: read from MongoDB) and ``controlplane_lookup_cache_entries``
  — the single-task lookup cache (:mod:`controlplane.service.lookups`);
* ``controlplane_api_requests_total{handler,method,status}`` and
  ``controlplane_api_request_duration_seconds{handler,method}`` (histogram);
* ``controlplane_metrics_database_up`` — whether the last aggregation worked.

Consumer process (``controlplane ingest``), when ``metrics.ingest_port`` is not
0, served by :func:`prometheus_client.start_http_server` on
``metrics.ingest_host:metrics.ingest_port`` (each consumer its own port; only the
lease holder's counters move):

* ``controlplane_events_received_total``, ``controlplane_events_applied_total``
  (ingestion rate: ``rate(...[1m])``), ``controlplane_events_dropped_total``;
* ``controlplane_event_batch_size`` (histogram of events per bulk write);
* ``controlplane_event_lag_seconds`` (histogram of write time minus the event's
  own timestamp) and ``controlplane_event_lag_last_seconds`` (the largest lag of
  the last batch);
* ``controlplane_event_buffer``, ``controlplane_ingest_database_errors_total``,
  ``controlplane_ingest_lease_held``, ``controlplane_ingest_last_flush_timestamp_seconds``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tornado.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from pymongo.errors import PyMongoError

from controlplane.config import Config
from controlplane.core.errors import NotLogin
from controlplane.core.merge import STATUSES
from controlplane.service.auth import token_from_request
from controlplane.store.tasks import TASKS, WORKERS

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def outcome_name(error: BaseException | None) -> str:
    """``accepted``-style label of an outcome: the error class in snake case."""
    if error is None:
        return "ok"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


class ApiMetrics:
    """The API process's metrics, in a registry of their own (one per application)."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("controlplane_tasks", "Tasks in the store", ["task_type", "status"], registry=r)
        self.submissions = Counter(
            "controlplane_task_submissions",
            "Task create requests by type and outcome",
            ["task_type", "outcome"],
            registry=r,
        )
        self.revokes = Counter(
            "controlplane_task_revokes", "Revoked task ids by outcome", ["outcome"], registry=r
        )
        self.workers = Gauge("controlplane_workers", "Workers known to the consumer", ["state"], registry=r)
        self.feed_clients = Gauge("controlplane_feed_clients", "Live feed connections", registry=r)
        self.lookups = Counter(
            "controlplane_lookup_cache_lookups",
            "Single-task lookups (GET by celery_id) by where they were answered from",
            ["result"],
            registry=r,
        )
        self.lookup_entries = Gauge(
            "controlplane_lookup_cache_entries", "Tasks held by the lookup cache", registry=r
        )
        self._lookups_seen = (0, 0)
        self.requests = Counter(
            "controlplane_api_requests", "API requests", ["handler", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "controlplane_api_request_duration_seconds",
            "API request latency",
            ["handler", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.database_up = Gauge(
            "controlplane_metrics_database_up", "1 if the last task count query succeeded", registry=r
        )
        self.refreshed = 0.0
        self.known_types: list[str] = []

    # -- hooks ---------------------------------------------------------------------

    def log_function(
        self, inner: Callable[[tornado.web.RequestHandler], None]
    ) -> Callable[[tornado.web.RequestHandler], None]:
        """Tornado's ``log_function``: record the request, then call ``inner`` (the access log)."""

        counted: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # the labelled children, looked up once

        def log_and_measure(handler: tornado.web.RequestHandler) -> None:
            method = handler.request.method or "OTHER"
            if method not in ("GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"):
                method = "OTHER"
            key = (type(handler).__name__, method, handler.get_status())
            children = counted.get(key)
            if children is None:
                name, _, status = key
                children = self.requests.labels(name, method, str(status)), self.latency.labels(name, method)
                counted[key] = children
            children[0].inc()
            children[1].observe(handler.request.request_time())
            inner(handler)

        return log_and_measure

    def instrument(self, manager: Any) -> None:
        """Count the manager's creates and revokes (wraps the bound methods of this instance)."""
        self.known_types = list(manager.types())
        create, revoke = manager.create, manager.revoke

        @functools.wraps(create)
        async def counted_create(task_type: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
            label = task_type if isinstance(task_type, str) and task_type in self.known_types else "unknown"
            try:
                reply: dict[str, Any] = await create(task_type, data, **kwargs)
            except Exception as exc:
                self.submissions.labels(label, outcome_name(exc)).inc()
                raise
            self.submissions.labels(label, "accepted").inc()
            return reply

        @functools.wraps(revoke)
        async def counted_revoke(celery_ids: list[str], terminate: bool) -> Any:
            try:
                outcomes = await revoke(celery_ids, terminate)
            except Exception as exc:
                self.revokes.labels(outcome_name(exc)).inc(len(celery_ids))
                raise
            for outcome in outcomes:
                error = getattr(outcome, "error", None)
                self.revokes.labels("revoked" if error is None else outcome_name(error)).inc()
            return outcomes

        setattr(manager, "create", counted_create)  # noqa: B010 - an instance attribute over the method
        setattr(manager, "revoke", counted_revoke)  # noqa: B010

    # -- scrape --------------------------------------------------------------------

    async def refresh(self, db: Any, feed_hub: Any = None, now: float | None = None) -> None:
        """Recount tasks and workers (at most every ``metrics.cache_seconds``); ``db`` is async pymongo."""
        if feed_hub is not None:
            self.feed_clients.set(len(getattr(feed_hub, "clients", ())))
            cache = getattr(feed_hub, "cache", None)
            if cache is not None:
                hits, misses = cache.hits, cache.misses
                self.lookups.labels("hit").inc(hits - self._lookups_seen[0])
                self.lookups.labels("miss").inc(misses - self._lookups_seen[1])
                self._lookups_seen = (hits, misses)
                self.lookup_entries.set(len(cache))
        now = time.time() if now is None else now
        if db is None or now - self.refreshed < self.config.metrics.cache_seconds:
            return
        self.refreshed = now
        try:
            counts = await count_tasks(db)
            workers = await db[WORKERS].find({}, {"_id": 0, "online": 1, "last_heartbeat": 1}).to_list(None)
        except PyMongoError as exc:
            log.warning("metrics: task counts unavailable: %s", exc)
            self.database_up.set(0)
            return
        self.database_up.set(1)
        self.tasks.clear()
        for task_type in self.known_types:
            for status in STATUSES:
                self.tasks.labels(task_type, status).set(0)
        for (task_type, status), n in counts.items():
            self.tasks.labels(task_type, status).set(n)
        online = sum(1 for w in workers if worker_online(w, now, self.config.events.worker_timeout))
        self.workers.labels("online").set(online)
        self.workers.labels("offline").set(len(workers) - online)

    def exposition(self) -> bytes:
        """The text format of every metric."""
        return bytes(generate_latest(self.registry))


def worker_online(info: Mapping[str, Any], now: float, timeout: float) -> bool:
    """Whether a worker document (from the consumer) shows a live worker."""
    beat = info.get("last_heartbeat")
    return bool(info.get("online")) and isinstance(beat, int | float) and now - float(beat) <= timeout


async def count_tasks(db: Any) -> dict[tuple[str, str], int]:
    """``{(task_type, status): n}`` in one aggregation over the task collection."""
    # A compound ``_id`` of field paths is standard, but the embedded server groups only on
    # scalars; ``$concat`` works on both (a missing field makes the key null: "unknown").
    pipeline = [{"$group": {"_id": {"$concat": ["$task_type", "|", "$status"]}, "n": {"$sum": 1}}}]
    cursor = await db[TASKS].aggregate(pipeline)
    out: dict[tuple[str, str], int] = {}
    async for row in cursor:
        task_type, _, status = str(row.get("_id") or "unknown|unknown").rpartition("|")
        key = (task_type[:64] or "unknown", status[:16] or "unknown")
        out[key] = out.get(key, 0) + int(row["n"])
    return out


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: Prometheus text format, counts only.

    Task counts by type and status still say something about the work a team
    runs, so a viewer token is needed (Prometheus sends it as a bearer token)
    unless ``metrics.public`` is true.
    """

    def initialize(self, **services: Any) -> None:
        self.services = services

    def set_default_headers(self) -> None:
        self.set_header("Server", "controlplane")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    async def get(self) -> None:
        metrics: ApiMetrics | None = self.settings.get("cp_metrics")
        if metrics is None:
            raise tornado.web.HTTPError(404)
        if not self.settings["cp_config"].metrics.public:
            try:
                self.settings["cp_auth"].authenticate(token_from_request(self.request, allow_query=False))
            except NotLogin:
                self.set_status(401)
                self.set_header("Content-Type", "application/json; charset=utf-8")
                self.set_header("WWW-Authenticate", 'Bearer realm="controlplane"')
                self.finish(json.dumps({"code": 401, "message": "NotLogin", "data": {}}))
                return
        manager = self.services.get("manager")
        db = getattr(getattr(manager, "store", None), "db", None)
        await metrics.refresh(db, self.services.get("feed_hub"))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(metrics.exposition())


class IngestMetrics:
    """The consumer's metrics (see the module docstring)."""

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
