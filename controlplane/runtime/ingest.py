"""``controlplane ingest``: the event consumer, one active per deployment.

Each consumer process competes for a lease in MongoDB; the holder consumes,
renewing the lease as it goes, and the others stand by and take over within
``events.lease_seconds`` of the holder dying.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType
from typing import Any

from controlplane.bus.events import LEASE, EventConsumer
from controlplane.bus.feed import FeedPublisher
from controlplane.bus.metrics import start_ingest_metrics
from controlplane.bus.reconcile import Reconciler
from controlplane.bus.redelivery import Redeliverer
from controlplane.celeryapp import make_celery
from controlplane.config import Config
from controlplane.core.errors import StoreError
from controlplane.store.recent import RecentTasks
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)


class LeasedConsumer(EventConsumer):
    """An EventConsumer that stops consuming when it loses the lease."""

    def on_iteration(self) -> None:
        super().on_iteration()
        now = time.monotonic()
        if now - getattr(self, "_lease_at", 0.0) >= self.config.events.lease_seconds / 3:
            self._lease_at = now
            try:
                held = self.store.acquire_lease(LEASE, self.owner, self.config.events.lease_seconds)
            except StoreError:
                held = True  # keep going; database writes fail anyway until it is back
            if not held:
                log.warning("lease lost to another consumer; standing by")
                self.lost_lease = True
                self.should_stop = True


def run_ingest(config: Config, stop_event: threading.Event | None = None) -> None:
    """Stand by for the lease, consume while holding it, until SIGTERM/SIGINT."""
    stop_event = stop_event or threading.Event()
    store = TaskStore(config.mongo, recent=RecentTasks(config.events.cache_tasks))
    current: dict[str, Any] = {}

    def on_signal(sig: int, frame: FrameType | None) -> None:
        stop_event.set()
        consumer = current.get("consumer")
        if consumer is not None:
            consumer.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    app = make_celery(config)
    reconciler = Reconciler(app, store, redeliverer=Redeliverer(app, store, config))
    publisher = FeedPublisher(config, store)  # every change written is published to the live feed
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    metrics = start_ingest_metrics(config)
    while not stop_event.is_set():
        try:
            held = store.acquire_lease(LEASE, owner, config.events.lease_seconds)
        except StoreError as exc:
            log.warning("database unreachable (%s); waiting", exc)
            stop_event.wait(1.0)
            continue
        if not held:
            stop_event.wait(min(1.0, config.events.lease_seconds / 3))
            continue
        log.info("holding the ingest lease as %s", owner)
        try:
            store.ensure_indexes()
        except StoreError as exc:
            log.warning("could not ensure indexes: %s", exc)
        consumer = LeasedConsumer(config, store, owner=owner, reconciler=reconciler, on_changes=publisher)
        consumer.metrics = metrics
        if metrics is not None:
            metrics.lease_held.set(1)
        current["consumer"] = consumer
        if stop_event.is_set():
            break
        try:
            consumer.run_forever()
        except Exception:  # a bug must not end the deployment's only consumer
            log.exception("event consumer failed; starting a new one")
            stop_event.wait(1.0)
        current.pop("consumer", None)
        if metrics is not None:
            metrics.lease_held.set(0)
    try:
        store.release_lease(LEASE, owner)
    except StoreError:
        pass
    publisher.close()
    store.close()
    log.info("ingest stopped")
