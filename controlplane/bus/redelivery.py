"""Resend tasks whose message never reached a worker: lost by a Redis broker, or never sent.

kombu's Redis transport pops a message (``BRPOP``) and only then records it as
unacknowledged; a connection that breaks in between (a Redis restart under
load) loses the message.  Its task would stay PENDING forever: nothing is
queued, nothing runs, no event comes.  So, every reconciliation pass, a task
that is still PENDING (never received by a worker) ``events.lost_after``
seconds after it was created and has no result-backend entry is looked for in
the broker: its queue's lists and the unacknowledged hash.  Found nowhere, it
is published again with the same celery_id and arguments (at most
``MAX_RESENDS`` times; then it fails with the reason).  The unacknowledged
hash is read before and after the lists, so a message moving from a list to
the hash during the search is still seen.

The same transport keeps what a worker reserved (a message received but not
started, or an ``acks_late`` task running) in that hash until the worker
acknowledges it; a worker killed outright never does, and kombu puts such
messages back only after ``visibility_timeout`` (hours).  So when the consumer
presumes a worker dead (or back as a new process), :meth:`Redeliverer.give_back`
restores the messages of the tasks that worker held, at once.  That is what the
broker would do after the timeout, and what RabbitMQ does when the worker's
connection drops.

On RabbitMQ the broker keeps what it accepted, but a message can still be
missing: an API process killed between storing a task and publishing its
message leaves a PENDING task with nothing in any queue (on Redis the search
above finds that too).  RabbitMQ queues cannot be searched, so there a task is
lost when, on two passes at least :data:`CONFIRM_AFTER` seconds apart, it was
still unreceived while its queue held no ready message and the events queue
none either (no worker can hold the message: a worker that receives one says
so with an event, and events wait in the durable events queue until written).
A task queued behind others is left alone until its queue drains.

Giving back a dead worker's reserved messages is for Redis only: RabbitMQ
redelivers unacknowledged messages itself when the worker's connection drops.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery

from controlplane.bus.control import task_kwargs
from controlplane.celeryapp.redis_transport import holder_of
from controlplane.config import Config
from controlplane.core.tasktypes import Registry
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

MAX_RESENDS = 3
#: RabbitMQ: seconds between the two passes that must both find a task's queue empty.
CONFIRM_AFTER = 5.0
#: Queues longer than this are not searched (their tasks are presumably just waiting).
MAX_SEARCH = 20_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message_id(raw: Any) -> str | None:
    """The task id in a kombu message as the Redis transport stores it (JSON), or None."""
    try:
        payload = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if isinstance(payload, list) and payload:  # unacked entries: [message, exchange, routing_key]
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers")
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


class Redeliverer:
    """Finds PENDING tasks whose message is nowhere in the broker, and publishes them again."""

    def __init__(self, app: Celery, store: TaskStore, config: Config) -> None:
        self.app = app
        self.store = store
        self.config = config
        self.registry = Registry.from_config(config)
        # RabbitMQ: celery_id → when its queue was first seen empty while it was unreceived.
        self._suspects: dict[str, float] = {}

    @property
    def on_redis(self) -> bool:
        """Whether the broker is Redis (searchable; reserved messages in the unacked hash)."""
        return self.config.broker.url.startswith(("redis://", "rediss://", "redis+socket://"))

    @property
    def on_amqp(self) -> bool:
        """Whether the broker speaks AMQP (RabbitMQ)."""
        return self.config.broker.url.startswith(("amqp://", "amqps://", "pyamqp://"))

    def enabled(self) -> bool:
        """For a Redis or an AMQP broker."""
        return self.on_redis or self.on_amqp

    def run_once(self, now: float | None = None) -> list[str]:
        """One pass; returns the celery_ids it published again."""
        if not self.enabled():
            return []
        now = time.time() if now is None else now
        candidates = self.store.unreceived(older_than=now - self.config.events.lost_after)
        if not candidates:
            self._suspects = {}
            return []
        with self.app.connection_for_write() as conn:
            if self.on_redis:
                present = self._present(conn.default_channel, {self._queue(t) for t in candidates})
                lost = [
                    t
                    for t in candidates
                    if t["celery_id"] not in present and self._queue(t) in present.searched
                ]
            else:
                lost = self._confirmed_lost(conn, candidates, now)
        lost_ids = {t["celery_id"] for t in lost}
        self.flag_unconsumed([t for t in candidates if t["celery_id"] not in lost_ids])
        if not lost:
            return []
        backend = self._with_backend_entry([t["celery_id"] for t in lost])
        resent = []
        for task in lost:
            if task["celery_id"] in backend:
                continue
            resent.append(self._resend(task, now))
        return [cid for cid in resent if cid]

    def _confirmed_lost(
        self, conn: Any, candidates: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """RabbitMQ: the candidates whose queue was empty now and on a pass ``CONFIRM_AFTER`` or more ago."""
        empty = self._empty_queues(conn, {self._queue(t) for t in candidates})
        if empty is None:  # task events wait to be consumed: nothing can be concluded yet
            self._suspects = {}
            return []
        self._suspects = {
            t["celery_id"]: self._suspects.get(t["celery_id"], now)
            for t in candidates
            if self._queue(t) in empty
        }
        return [t for t in candidates if now - self._suspects.get(t["celery_id"], now) >= CONFIRM_AFTER]

    def _empty_queues(self, conn: Any, queues: Iterable[str]) -> set[str] | None:
        """Which of ``queues`` hold no ready message (or do not exist); None while task events wait."""
        empty = set()
        for name in [self.config.events.queue, *sorted(queues)]:
            channel = conn.channel()
            try:
                ready = int(channel.queue_declare(queue=name, passive=True).message_count)
            except conn.channel_errors:
                ready = 0  # no such queue (the failed declare closed the channel)
            else:
                channel.close()
            if name == self.config.events.queue:
                if ready:
                    return None
            elif not ready:
                empty.add(name)
        return empty

    def give_back(self, celery_ids: Iterable[str]) -> list[str]:
        """Put these tasks' reserved messages back on their queues; returns the ids given back.

        Each restore is kombu's own (a transaction watching the hash: a message
        acknowledged meanwhile is left alone); a task with nothing in the hash
        (acknowledged at start, or already back) is skipped.
        """
        wanted = set(celery_ids)
        if not wanted or not self.on_redis:
            return []
        restored = []
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            client = channel.client
            for tag, raw in client.hscan_iter(channel.unacked_key):
                cid = _message_id(raw)
                if cid is not None and cid in wanted:
                    channel.qos.restore_by_tag(tag.decode() if isinstance(tag, bytes) else tag, client)
                    restored.append(cid)
        if restored:
            log.warning("gave back %d message(s) reserved by a lost worker: %s", len(restored), restored[:5])
        return restored

    def release_orphans(self, holds: Callable[[str, int], bool]) -> list[str]:
        """Give back every reserved message whose holder process is gone; returns their task ids.

        Holder records are written by workers' transport (see
        :mod:`controlplane.celeryapp.redis_transport`).  An entry is an orphan when its
        worker node runs as another process now, or ``holds(node, pid)`` says that
        process is gone.  Records whose message was acknowledged meanwhile are dropped.
        """
        if not self.on_redis:
            return []
        restored: list[str] = []
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            client = channel.client
            holders = client.hgetall(channel.holders_key)
            if not holders:
                return []
            current = {_text(k): _text(v) for k, v in client.hgetall(channel.incarnations_key).items()}
            tags = list(holders)
            entries = client.hmget(channel.unacked_key, tags)
            for tag, raw in zip(tags, entries, strict=True):
                name = _text(tag)
                if raw is None:
                    client.hdel(channel.holders_key, name)
                    continue
                holder = holder_of(holders[tag])
                if holder is None:
                    continue
                node, pid, incarnation = holder
                if current.get(node, incarnation) == incarnation and holds(node, pid):
                    continue
                channel.qos.restore_by_tag(name, client)
                restored.append(_message_id(raw) or name)
        if restored:
            log.warning(
                "gave back %d message(s) whose worker process is gone: %s", len(restored), restored[:5]
            )
        return restored

    def flag_unconsumed(self, waiting: list[dict[str, Any]]) -> list[str]:
        """Mark tasks still waiting whose queue no live worker consumes (``waiting`` on the document).

        Asks the workers which queues they consume (one broadcast, ``api.inspect_timeout``),
        only when some task has waited past ``events.lost_after``.  A task whose queue gains
        a consumer loses the mark on the next pass.  Returns the ids newly marked.
        """
        if not waiting:
            return []
        replies = self.app.control.inspect(timeout=self.config.api.inspect_timeout).active_queues() or {}
        consumed = {
            q.get("name") for queues in replies.values() for q in (queues or []) if isinstance(q, dict)
        }
        marked = []
        for task in waiting:
            queue = self._queue(task)
            reason = None if queue in consumed else f"no live worker consumes queue {queue!r}"
            if task.get("waiting") == reason:
                continue
            self.store.set_status_fields(str(task["celery_id"]), {"waiting": reason})
            if reason is not None:
                marked.append(str(task["celery_id"]))
        if marked:
            log.warning("%d task(s) wait on a queue no live worker consumes: %s", len(marked), marked[:5])
        return marked

    def _queue(self, task: dict[str, Any]) -> str:
        return self.config.task_config(str(task.get("task_type"))).queue

    def _present(self, channel: Any, queues: Iterable[str]) -> _Present:
        client = channel.client
        found = _Present()
        found.update(self._unacked(client, channel))
        for queue in queues:
            names = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
            if sum(int(client.llen(name)) for name in names) > MAX_SEARCH:
                continue
            for name in names:
                found.update(i for i in map(_message_id, client.lrange(name, 0, -1)) if i)
            found.searched.add(queue)
        found.update(self._unacked(client, channel))
        return found

    @staticmethod
    def _unacked(client: Any, channel: Any) -> set[str]:
        return {i for i in map(_message_id, client.hvals(channel.unacked_key)) if i}

    def _with_backend_entry(self, celery_ids: list[str]) -> set[str]:
        backend = self.app.backend
        client = getattr(backend, "client", None)
        if client is None or not hasattr(backend, "get_key_for_task"):
            return set()
        values = client.mget([backend.get_key_for_task(cid) for cid in celery_ids])
        return {cid for cid, raw in zip(celery_ids, values, strict=True) if raw}

    def _resend(self, task: dict[str, Any], now: float) -> str | None:
        cid = str(task["celery_id"])
        times = int(task.get("resent") or 0)
        if times >= MAX_RESENDS:
            reason = f"the broker lost the task's message {times + 1} times"
            self.store.apply_events([{"type": "task-lost", "uuid": cid, "timestamp": now, "reason": reason}])
            log.error("task %s: %s; marked FAILURE", cid, reason)
            return None
        kind = self.registry.get(str(task.get("task_type")))
        if kind is None or not task.get("data"):
            return None  # not submitted through this API: its arguments are unknown
        self.store.set_status_fields(cid, {"resent": times + 1})
        self.app.send_task(
            kind.celery_name,
            kwargs=task_kwargs(kind, task.get("data") or {}),
            task_id=cid,
            queue=self._queue(task),
        )
        log.warning("task %s: its message was nowhere in the broker; published it again", cid)
        return cid


class _Present(set[str]):
    """Task ids found in the broker, and which queues were searched."""

    def __init__(self) -> None:
        super().__init__()
        self.searched: set[str] = set()
