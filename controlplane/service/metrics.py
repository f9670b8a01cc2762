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
* ``controlplane_queue_depth{queue}`` and ``controlplane_queue_consumers{queue}`` — messages
  waiting in each queue and the workers consuming it, from the cached queue view
  (:mod:`controlplane.service.workers`, at most one refresh per ``api.workers_cache_seconds``);
* ``controlplane_feed_clients`` — WebSocket feed connections of this process;
* ``controlplane_lookup_cache_lookups_total{result}`` (``hit``: answered from
  memory, ``miss``: read from MongoDB) and ``controlplane_lookup_cache_entries``
  — the single-task lookup cache (:mod:`controlplane.service.lookups`);
* ``controlplane_api_requests_total{handler,method,status}`` and
  ``controlplane_api_request_duration_seconds{handler,method}`` (histogram);
* ``controlplane_metrics_database_up`` — whether the last aggregation worked.

The consumer's metrics are in :mod:`controlplane.bus.metrics`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controlplane.config import Config
from controlplane.core.errors import ApiError, StoreError
from controlplane.core.merge import STATUSES
from controlplane.service.feedhub import FeedHub
from controlplane.service.manager import RevokeOutcome, TaskManager
from controlplane.service.workers import WorkersService, worker_online
from controlplane.store.asynctasks import AsyncTaskStore

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.queue_depth = Gauge(
            "controlplane_queue_depth",
            "Messages waiting in each queue (the broker's count)",
            ["queue"],
            registry=r,
        )
        self.queue_consumers = Gauge(
            "controlplane_queue_consumers",
            "Workers consuming each queue (their active_queues)",
            ["queue"],
            registry=r,
        )
        self.database_up = Gauge(
            "controlplane_metrics_database_up", "1 if the last task count query succeeded", registry=r
        )
        self.refreshed = 0.0
        self.known_types: list[str] = []
        self.store: AsyncTaskStore | None = None  # counted from, once instrument() named it
        self.feed_hub: FeedHub | None = None  # clients and lookup cache, when the app has a feed
        self.workers_view: WorkersService | None = None  # queue depths, when the app has it

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

    def instrument(self, manager: TaskManager) -> None:
        """Count the manager's creates and revokes (this object observes it) and read its store."""
        self.known_types = list(manager.types())
        self.store = manager.store
        manager.observe(self)

    def submitted(self, task_type: Any, error: BaseException | None) -> None:
        """A create ended (the manager's observer hook)."""
        label = task_type if isinstance(task_type, str) and task_type in self.known_types else "unknown"
        self.submissions.labels(label, "accepted" if error is None else outcome_name(error)).inc()

    def revoked(self, requested: int, outcomes: list[RevokeOutcome], error: BaseException | None) -> None:
        """A revoke request ended (the manager's observer hook)."""
        if error is not None:
            self.revokes.labels(outcome_name(error)).inc(requested)
            return
        for outcome in outcomes:
            self.revokes.labels("revoked" if outcome.error is None else outcome_name(outcome.error)).inc()

    # -- scrape --------------------------------------------------------------------

    async def refresh(self, now: float | None = None) -> None:
        """Recount tasks and workers (at most every ``metrics.cache_seconds``)."""
        if self.feed_hub is not None:
            self.feed_clients.set(len(self.feed_hub.clients))
            cache = self.feed_hub.cache
            if cache is not None:
                hits, misses = cache.hits, cache.misses
                self.lookups.labels("hit").inc(hits - self._lookups_seen[0])
                self.lookups.labels("miss").inc(misses - self._lookups_seen[1])
                self._lookups_seen = (hits, misses)
                self.lookup_entries.set(len(cache))
        await self._refresh_queues()
        now = time.time() if now is None else now
        if self.store is None or now - self.refreshed < self.config.metrics.cache_seconds:
            return
        self.refreshed = now
        try:
            counts = await self.store.count_by_type_and_status()
            workers = await self.store.workers()
        except StoreError as exc:
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

    async def _refresh_queues(self) -> None:
        """Queue depths and consumers from the workers service's cached view (kept when it fails)."""
        if self.workers_view is None:
            return
        try:
            view = await self.workers_view.queues()
        except (ApiError, StoreError) as exc:
            log.warning("metrics: queue depths unavailable: %s", exc)
            return
        self.queue_depth.clear()
        self.queue_consumers.clear()
        for queue in view["queues"]:
            if queue["depth"] is not None:
                self.queue_depth.labels(queue["name"]).set(queue["depth"])
            self.queue_consumers.labels(queue["name"]).set(queue["consumer_count"])

    def exposition(self) -> bytes:
        """The text format of every metric."""
        return bytes(generate_latest(self.registry))
