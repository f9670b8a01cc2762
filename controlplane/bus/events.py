"""The event consumer: Celery worker events → task documents in MongoDB.

A small kombu :class:`~kombu.mixins.ConsumerMixin`: messages are buffered and
written in batches through :meth:`TaskStore.apply_events` (one read, one bulk
write per batch).  On RabbitMQ (a durable named queue) messages are
acknowledged only after the write, so nothing is lost when the consumer or the
database dies, and the prefetch window bounds what is held.  On Redis, where
events are pub/sub, nothing is acknowledged: what a dead consumer missed is
reconciled from the result backend, and the buffer is bounded by
``events.max_buffer`` while the database is down.  Worker heartbeats are
tracked so that a task whose worker vanished does not stay STARTED forever.
Connection errors are retried with capped backoff by the mixin; database
errors keep the buffer and are retried with capped backoff too.

Writing is pipelined: a batch is written on a writer thread while the consume
loop goes on receiving and buffering the next one, so receiving never waits
for the database round trips.  One batch is written at a time; a full buffer
waits for it (backpressure).  What a write changed is then published to the
live feed by a third thread (:class:`FeedStage`), in write order, so the next
batch's write does not wait for the feed's encoding and Redis round trip.
Acks, buffers and retries stay on the consume thread: the writer only reports
back.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery.events.event import get_exchange
from kombu import Connection, Queue
from kombu.exceptions import MessageStateError
from kombu.message import Message
from kombu.mixins import ConsumerMixin

from controlplane.bus.control import BROKER_ERRORS
from controlplane.bus.feedstage import Changes, FeedStage
from controlplane.bus.liveness import WorkerTracker
from controlplane.bus.metrics import IngestMetrics
from controlplane.bus.reconcile import Reconciler
from controlplane.config import Config
from controlplane.core.errors import StoreError
from controlplane.core.merge import TASK_EVENT_TYPES, ends_task
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

LEASE = "ingest"
# Acking a message of a lost channel fails with one of these (see EventConsumer.flush).
ACK_ERRORS: tuple[type[BaseException], ...] = (MessageStateError, *BROKER_ERRORS)
#: Seconds between scans of all running tasks even while every known worker looks healthy
#: (catches tasks of workers this consumer never heard from).
FULL_LIVENESS_SCAN = 15.0
# A consume loop that did not come back for this long was not listening (see on_iteration).
DEAF_AFTER = 2.0


def flatten_body(body: Any) -> list[dict[str, Any]]:
    """One message body → its events (``task.multi`` messages carry a list)."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    return []


class EventConsumer(ConsumerMixin):  # type: ignore[misc]
    """Consume every Celery event of the deployment into the task store."""

    #: Prometheus metrics (set by ``controlplane ingest`` when ``metrics.ingest_port`` is on).
    metrics: IngestMetrics | None = None

    def __init__(
        self,
        config: Config,
        store: TaskStore,
        connection: Connection | None = None,
        on_changes: Changes | None = None,
        owner: str | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.connection = connection or Connection(
            config.broker.url, connect_timeout=config.broker.connect_timeout
        )
        self.on_changes = on_changes
        self.feed = FeedStage(on_changes) if on_changes is not None else None
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.buffer: list[dict[str, Any]] = []
        self.messages: list[Message] = []
        self.no_ack = False
        self.last_flush = time.monotonic()
        self.db_backoff = 0.0
        self.db_retry_at = 0.0
        self.workers = WorkerTracker(config.events.worker_timeout)
        try:
            self.workers.load(store.workers())
        except StoreError as exc:
            log.warning("could not load worker liveness: %s", exc)
        self.last_liveness = time.monotonic()
        self.last_full_liveness = 0.0
        self.applied = 0
        self.reconciler = reconciler
        self.last_reconcile = 0.0
        self.dropped = 0
        self.catch_up_in = 0  # iterations until the start-up reconciliation (see on_consume_ready)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="event-writer")
        self.last_iteration = time.monotonic()
        # Tasks whose events the last flush held back (see _hold_back).
        self._held: set[Any] = set()
        # The batch being written: its events, its messages and the writer's future.
        self._writing: tuple[list[dict[str, Any]], list[Message], Future[None]] | None = None

    # -- kombu hooks -----------------------------------------------------------

    def get_consumers(self, consumer_cls: Any, channel: Any) -> list[Any]:
        exchange = get_exchange(self.connection, name="celeryev")
        ev = self.config.events
        queue = Queue(
            ev.queue,
            exchange,
            routing_key="#",
            durable=ev.durable,
            auto_delete=False,
        )
        # On Redis, Celery's events travel over pub/sub: an unacknowledged message is never
        # redelivered in time to matter, so acks would only cost two Redis round trips per
        # message; reconciliation covers what a dead consumer missed.  RabbitMQ keeps acks:
        # its durable queue redelivers whatever was not written.
        self.no_ack = self.connection.transport.driver_type == "redis"
        consumer = consumer_cls(
            queues=[queue],
            callbacks=[self.on_message],
            accept=["json"],
            prefetch_count=None if self.no_ack else ev.batch_size * 2,
            no_ack=self.no_ack,
        )
        return [consumer]

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        log.warning("broker connection lost (%s); retrying in %.1fs", exc, interval)

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        log.info("consuming events from %s", self.connection.as_uri())
        # Events sent while nobody listened (Redis pub/sub) are gone: catch up, but only
        # once the subscription is live (kombu subscribes on the first drain), or whatever
        # finishes during the pass would be missed until the next periodic one.
        self.catch_up_in = 2
        self.last_reconcile = time.monotonic()
        # Silence heard while we were not listening proves nothing: fresh grace for every worker.
        self.workers.grace(time.time())

    def consume(self, limit: Any = None, timeout: Any = None, safety_interval: Any = 1, **kwargs: Any) -> Any:
        """Wake at least every ``events.flush_interval`` (and every second, so a stop is prompt)."""
        return super().consume(
            limit=limit, timeout=timeout, safety_interval=min(self.config.events.flush_interval, 1.0)
        )

    def on_message(self, body: Any, message: Message) -> None:
        """Buffer the message's events; acknowledge only after they are written."""
        now = time.time()
        before = len(self.buffer)
        for event in flatten_body(body):
            self.workers.observe(event, now)
            if event.get("type") in TASK_EVENT_TYPES:
                self.buffer.append(event)
        if not self.no_ack:
            self.messages.append(message)
        if self.metrics is not None:
            self.metrics.on_received(len(self.buffer) - before, len(self.buffer))
        if len(self.buffer) > self.config.events.max_buffer:
            self._shed()
        if max(len(self.messages), len(self.buffer)) >= self.config.events.batch_size:
            self.flush(wait=False)

    def _shed(self) -> None:
        """Over the buffer bound (database down for long): drop the oldest, reconcile later."""
        excess = len(self.buffer) - self.config.events.max_buffer
        del self.buffer[:excess]
        self.dropped += excess
        if self.metrics is not None:
            self.metrics.on_dropped(excess)
        self.last_reconcile = 0.0
        log.warning("event buffer full: dropped %d oldest events; they will be reconciled", excess)

    def on_iteration(self) -> None:
        now = time.monotonic()
        if now - self.last_iteration > DEAF_AFTER:
            # The loop was held (a slow query, a database that would not answer): heartbeats
            # that arrived meanwhile are still unread, and that silence proves nothing.
            self.workers.grace(time.time())
        self.last_iteration = now
        if self.catch_up_in:
            self.catch_up_in -= 1
            if not self.catch_up_in:
                self.reconcile()
        self._settle(block=False)
        if time.monotonic() - self.last_flush >= self.config.events.flush_interval and self._writing is None:
            self.flush(wait=False)
        if time.monotonic() - self.last_liveness >= min(2.0, self.config.events.worker_timeout / 3):
            self.check_workers()
        if time.monotonic() - self.last_reconcile >= self.config.events.reconcile_interval:
            self.reconcile()

    def reconcile(self) -> None:
        """Correct non-terminal tasks from the result backend (see :mod:`.reconcile`)."""
        self.last_reconcile = time.monotonic()
        if self.reconciler is None:
            return
        try:
            changed = self.reconciler.run_once()
        except StoreError as exc:
            log.warning("reconciliation skipped, database unavailable: %s", exc)
            self.last_reconcile = (
                time.monotonic() - self.config.events.reconcile_interval + self.db_backoff + 1
            )
            return
        except BROKER_ERRORS as exc:
            log.warning("reconciliation skipped, result backend unavailable: %s", exc)
            return
        self._announce(changed)
        self.tend_tally()

    def tend_tally(self) -> None:
        """Close the list counters' entries of writers that died, and count up to 1,000 tasks written
        around the store (an older database) per pass, so list totals come from the counters again."""
        try:
            self.store.repair_tally()
            self.store.adopt_uncounted(1000)
        except StoreError as exc:
            log.warning("list counters not tended, database unavailable: %s", exc)

    # -- writing ---------------------------------------------------------------

    def flush(self, wait: bool = True) -> bool:
        """Hand the buffered events to the writer; False if the database failed.

        ``wait=False`` (the consume loop) returns once the batch is handed over,
        waiting only for the batch before it; ``wait=True`` returns once it is
        written, its messages are acknowledged and its changes handed to the feed.
        """
        written = self._flush(wait)
        if wait and self.feed is not None:
            self.feed.drain()
        return written

    def _flush(self, wait: bool) -> bool:
        self.last_flush = time.monotonic()
        if not self._settle(block=True):
            return False
        if not self.messages and not self.buffer:
            return True
        if time.monotonic() < self.db_retry_at:
            return False
        events, messages = self.buffer, self.messages
        self.buffer, self.messages = [], []
        if not wait:
            events, held = self._hold_back(events)
            if held:
                # Their messages are acknowledged with the next batch, once every event they
                # carry is written (on RabbitMQ a consumer that dies meanwhile gets them again).
                self.buffer, self.messages, messages = held, messages, []
        self._writing = (events, messages, self._writer.submit(self._write, events))
        return self._settle(block=True) if wait else True

    def _hold_back(self, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Under load, split off the events of tasks that are neither ending nor held before.

        A flush with at least ``events.coalesce_above`` tasks writes now only the
        tasks that end in it (a terminal event) or were held by the flush before;
        the others' events wait one flush, so that a short task's start and end
        share one write instead of two.  A task is held once at most: what a
        long task is doing shows one flush later, its end is never delayed.
        """
        limit = self.config.events.coalesce_above
        ids = {e.get("uuid") for e in events}
        if not limit or len(ids) < limit:
            self._held = set()
            return events, []
        ending = {e.get("uuid") for e in events if ends_task(e)}
        hold = ids - ending - self._held
        self._held = hold
        if not hold:
            return events, []
        now = [e for e in events if e.get("uuid") not in hold]
        later = [e for e in events if e.get("uuid") in hold]
        return now, later

    def _announce(self, changed: list[dict[str, Any]]) -> None:
        """Queue written documents for the live feed (see :class:`FeedStage`)."""
        if changed and self.feed is not None:
            self.feed.put(changed)

    def _write(self, events: list[dict[str, Any]]) -> None:
        """On the writer thread: fold the events into their documents, then queue them for the feed."""
        changed = self.store.apply_events(events)
        if self.metrics is not None:
            self.metrics.on_written(events, changed)
        self._announce(changed)

    def _settle(self, block: bool) -> bool:
        """Finish the batch being written, if it is done (or ``block``): ack it, or take it back.

        False when it failed: its events go back in front of the buffer (the
        merge does not care about order or repeats) and the next write waits
        for the capped backoff.
        """
        if self._writing is None:
            return True
        events, messages, future = self._writing
        if not block and not future.done():
            return True
        self._writing = None
        try:
            future.result()
        except StoreError as exc:
            if self.metrics is not None:
                self.metrics.on_db_error()
            self.buffer[:0] = events
            self.messages[:0] = messages
            self.db_backoff = min(self.config.events.backoff_max, max(0.2, self.db_backoff * 2))
            self.db_retry_at = time.monotonic() + self.db_backoff
            log.warning(
                "database write failed (%s); %d events kept, retry in %.1fs",
                exc,
                len(self.buffer),
                self.db_backoff,
            )
            return False
        self.db_backoff = 0.0
        for message in messages:
            try:
                message.ack()
            except ACK_ERRORS as exc:
                # Received on a channel that has since been lost: the broker takes care of it
                # (redelivers it on RabbitMQ; nothing to ack on Redis pub/sub), and writing its
                # events again is harmless.  It must not kill the consumer.
                log.debug("ack of a message from a lost channel skipped: %s", exc)
        self.applied += len(events)
        if self.metrics is not None:
            self.metrics.on_batch(events)
        return True

    def check_workers(self) -> None:
        """Persist worker liveness; fail tasks whose worker is gone."""
        self.last_liveness = time.monotonic()
        now = time.time()
        try:
            if self.workers.dirty:
                self.store.record_workers(self.workers.dirty)
                self.workers.dirty = {}
            full = time.monotonic() - self.last_full_liveness >= FULL_LIVENESS_SCAN
            if not full and not self.workers.suspicious(now):
                return
            if full:
                self.last_full_liveness = time.monotonic()
            events = []
            for task in self.store.started_on_any():
                host = task.get("worker")
                reason = self.workers.verdict(host, task.get("start_time"), now) if host else None
                if reason:
                    events.append(
                        {
                            "type": "task-lost",
                            "uuid": task["celery_id"],
                            "timestamp": now,
                            "hostname": host,
                            "reason": f"WorkerLostError: {reason}",
                        }
                    )
            if events:
                reasons = sorted({e["reason"] for e in events})
                log.warning(
                    "marking %d task(s) FAILURE: their worker is gone (%s)",
                    len(events),
                    "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else ""),
                )
                changed = self.store.apply_events(events)
                self._announce(changed)
            self._give_back([e["uuid"] for e in events], now)
        except StoreError as exc:
            log.warning("worker liveness check failed: %s", exc)

    def _give_back(self, lost: list[str], now: float) -> None:
        """Return to their queues the messages that lost workers had reserved (Redis only).

        ``lost``: tasks just presumed lost (an ``acks_late`` one's message is
        still reserved); plus every task a gone or restarted worker had received
        but not started (:meth:`Redeliverer.give_back`); plus every message whose
        holder process is gone, whatever our task documents say
        (:meth:`Redeliverer.release_orphans`).
        """
        redeliverer = self.reconciler.redeliverer if self.reconciler is not None else None
        if redeliverer is None or not redeliverer.on_redis:
            return
        hosts = self.workers.to_release(now)
        held = self.store.received_by(hosts) if hosts else []
        try:
            redeliverer.release_orphans(lambda node, pid: self.workers.holds(node, pid, now))
            if lost or hosts:
                redeliverer.give_back(lost + held)
        except BROKER_ERRORS as exc:
            log.warning("could not give back reserved messages (%s); will retry", exc)
            return
        self.workers.mark_released(hosts)

    def stop(self) -> None:
        """Ask the consume loop to end; the last buffer is flushed by :meth:`run_forever`."""
        self.should_stop = True

    def run_forever(self) -> None:
        """Consume until :meth:`stop`, then flush what is buffered."""
        try:
            self.run()
        finally:
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - shutting down; unacked messages are redelivered
                log.warning("final flush failed: %s", exc)
            self._writer.shutdown(wait=False)
            if self.feed is not None:
                self.feed.close()
