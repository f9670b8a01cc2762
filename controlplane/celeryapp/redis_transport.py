"""kombu's Redis transport, but a worker that loses Redis gives its reserved messages back.

When the connection to a Redis broker drops, Celery discards the messages the
worker had reserved (but not started), counting on the broker to deliver them
again; kombu tries to push them back onto their queue as the channel closes,
which fails because Redis is the thing that is gone.  They then sit in Redis's
``unacked`` hash until ``visibility_timeout`` (hours), and their tasks look
PENDING all that time.  This transport remembers the delivery tags it could not
restore and restores them as soon as a channel of this process works again.
Restoring by tag is idempotent (a tag no longer in the hash is a no-op).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu.transport import redis

log = logging.getLogger(__name__)

_unrestored: set[str] = set()
_lock = threading.Lock()


class QoS(redis.QoS):  # type: ignore[misc]
    """Records the delivery tags it could not give back, for :meth:`Channel.restore_leftovers`."""

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

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        tag = super().basic_consume(queue, *args, **kwargs)
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
