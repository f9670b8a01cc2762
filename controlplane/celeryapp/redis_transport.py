"""kombu's Redis transport, with reserved messages that come back however their worker died.

When the connection to a Redis broker drops, Celery discards the messages the
worker had reserved (but not started), counting on the broker to deliver them
again; kombu tries to push them back onto their queue as the channel closes,
which fails because Redis is the thing that is gone.  They then sit in Redis's
``unacked`` hash until ``visibility_timeout`` (hours), and their tasks look
PENDING all that time.  This transport remembers the delivery tags it could not
restore and restores them as soon as a channel of this process works again.
Restoring by tag is idempotent (a tag no longer in the hash is a no-op).

A worker killed outright cannot give anything back, and nothing in kombu's
``unacked`` hash says which process reserved a message.  So a worker process that
calls :func:`hold_as` writes, in the same transaction as the hash entry, who holds
it (``<unacked_key>_holders``: delivery tag → ``node|pid|start``), and keeps its
current incarnation in ``<unacked_key>_incarnations`` (node → ``pid|start``).  The
event consumer gives back every entry whose holder is not the node's current
incarnation or is not alive (:meth:`controlplane.bus.redelivery.Redeliverer.release_orphans`):
a decision from the worker's identity and process start, not from task documents.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

_unrestored: set[str] = set()
_lock = threading.Lock()
_identity: tuple[str, str] | None = None  # (node, "pid|start") of this worker process, see hold_as


def hold_as(node: str) -> None:
    """Record from now on that this process (worker ``node``) holds the messages it reserves."""
    global _identity
    _identity = (node, f"{os.getpid()}|{time.time():.6f}")


def holder_of(value: Any) -> tuple[str, int, str] | None:
    """``(node, pid, "pid|start")`` of a holder record, or None when it cannot be read."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    node, _, incarnation = text.rpartition("|")
    node, _, pid = node.rpartition("|")
    if not node or not pid.isdigit():
        return None
    return node, int(pid), f"{pid}|{incarnation}"


class QoS(redis.QoS):  # type: ignore[misc]
    """Records who holds each reserved message, and the tags it could not give back.

    The holder record is written with the ``unacked`` entry (one transaction) and
    removed with it (ack, reject, restore), so an entry never outlives its record.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        if _identity is None:
            super().append(message, delivery_tag)
            return
        node, incarnation = _identity
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
                self.unacked_key, delivery_tag, raw
            ).hset(self.channel.holders_key, delivery_tag, f"{node}|{incarnation}").hset(
                self.channel.incarnations_key, node, incarnation
            ).execute()
            virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        return super()._remove_from_indices(delivery_tag, pipe).hdel(self.channel.holders_key, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        tags = list(self._delivered)
        try:
            super().restore_unacked(client)
        except (*self.channel.connection_errors, AttributeError):
            # AttributeError: the channel closes on a connection error after its pool was
            # dropped and while the connection is being released, so kombu rebuilding the
            # pool finds no connection details (seen in test_broker_outage_under_load: the
            # message then stayed in the unacked hash and its task PENDING for hours).
            with _lock:
                _unrestored.update(tags)
            self._delivered.clear()
            log.warning("broker unreachable: %d reserved message(s) will be restored on reconnect", len(tags))


class Channel(redis.Channel):  # type: ignore[misc]
    """Restores an earlier channel's leftovers when it starts consuming."""

    QoS = QoS

    @property
    def holders_key(self) -> str:
        """The hash of who holds each reserved message (delivery tag → ``node|pid|start``)."""
        return f"{self.unacked_key}_holders"

    @property
    def incarnations_key(self) -> str:
        """The hash of each worker node's current process (node → ``pid|start``)."""
        return f"{self.unacked_key}_incarnations"

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        tag = super().basic_consume(queue, *args, **kwargs)
        if _identity is not None:
            with self.conn_or_acquire() as client:
                client.hset(self.incarnations_key, _identity[0], _identity[1])
        self.restore_leftovers()
        return tag

    def restore_leftovers(self) -> None:
        """Give back the messages an earlier, broken channel of this process could not."""
        with _lock:
            tags = list(_unrestored)
        if not tags:
            return
        qos = self.qos
        restored = 0
        for tag in tags:
            try:
                qos.restore_by_tag(tag)
            except self.connection_errors:
                return
            with _lock:
                _unrestored.discard(tag)
            restored += 1
        log.info("restored %d message(s) reserved before the broker connection was lost", restored)


class Transport(redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel` (``broker_url`` scheme via controlplane.celeryapp)."""

    Channel = Channel
