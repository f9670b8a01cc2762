"""The live feed's bus side: publish task changes in revision order, fan them out.

Design (why the feed is gap-free)
=================================

Every change of a task document gets a new global revision ``rev`` from the
counter in MongoDB.  Revisions are allocated *before* a write lands, and the
API and the consumer write concurrently, so revisions can land — and would be
published — out of order.  A client that saw rev 11 and reconnects with
``since=11`` would then never hear of a rev 10 that landed after it.

The fix is an **ordering gate** in Redis.  A writer publishes only *after* its
write landed, through one Lua script that runs atomically in Redis::

    if first_rev > last_published: last_published = last_rev; PUBLISH batch
    else: reject (and say what last_published is)

So the published stream is strictly increasing in ``rev`` and, because Redis
delivers pub/sub messages in publish order on each connection, every serve
process sees it in that order.  A rejected writer *restamps* its documents
(:meth:`TaskStore.restamp`: new revisions, conditioned on the revision it
wrote, so a document that moved on is left to its newer writer) and goes
through the gate again.  Consequences, used by :mod:`controlplane.service.feedhub`:

* every published revision ``r`` landed in MongoDB before ``r`` was published,
  and so did every revision published before it;
* a document still carrying a revision ``≤ last_published`` that was never
  published can never be published with it — it gets a fresh, higher revision
  first (by its writer, or by a serve process's orphan sweep if the writer
  died between its write and its publish).

Hence, for a client that has received revision ``L``: every change with a
revision ``≤ L`` was published before ``L`` and is either in MongoDB (found by
the ``since`` query) or already delivered; changes it has not seen all carry
revisions ``> L``.  See :mod:`controlplane.service.feedhub` for the resume seam.

The feed needs Redis (``feed.url``, or the broker when the broker is Redis):
the gate and the publish must be one atomic step, which Redis scripts give and
an AMQP fanout does not.  Without a Redis URL the feed is disabled.

Messages on the channel are JSON ``{"docs": [detail, ...]}``, revisions
ascending, ``detail`` being :func:`controlplane.core.documents.detail`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
import redis.exceptions

from controlplane.config import Config
from controlplane.core import documents
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

# KEYS[1]: last published revision; ARGV: channel, first rev, last rev, payload.
# Returns 0 when published, else the last published revision (the batch is stale).
GATE_SCRIPT = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > last then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('PUBLISH', ARGV[1], ARGV[4])
  return 0
end
return last
"""


def channel_name(config: Config) -> str:
    """The pub/sub channel of one deployment (channels are global across Redis databases)."""
    return f"controlplane:feed:{config.mongo.database}"


def gate_key(config: Config) -> str:
    """The Redis key holding the last published revision."""
    return f"controlplane:feed:{config.mongo.database}:last"


def feed_url(config: Config) -> str:
    """The Redis URL of the feed, or ``""`` when the feed is disabled."""
    return config.feed.redis_url(config.broker.url)


def encode(docs: Iterable[Mapping[str, Any]]) -> str:
    """The channel payload for already-written documents (revisions ascending)."""
    details = [documents.detail(d) for d in sorted(docs, key=lambda d: int(d.get("rev") or 0))]
    return json.dumps({"docs": details}, ensure_ascii=False, default=str, separators=(",", ":"))


def decode(payload: bytes | str) -> list[dict[str, Any]]:
    """Detail documents of one channel message (malformed messages give ``[]``)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return []
    docs = body.get("docs") if isinstance(body, dict) else None
    if not isinstance(docs, list):
        return []
    return [d for d in docs if isinstance(d, dict) and isinstance(d.get("rev"), int)]


class FeedPublisher:
    """Publishes written documents through the ordering gate (blocking; thread-safe)."""

    def __init__(self, config: Config, store: TaskStore, client: redis.Redis | None = None) -> None:
        self.config = config
        self.store = store
        url = feed_url(config)
        self.enabled = bool(url) or client is not None
        self.client: redis.Redis | None = client
        if client is None and url:
            self.client = redis.Redis.from_url(
                url, socket_timeout=config.feed.publish_timeout, socket_connect_timeout=2.0
            )
        self.channel = channel_name(config)
        self.key = gate_key(config)
        self._script = self.client.register_script(GATE_SCRIPT) if self.client is not None else None
        self.published = 0
        self.restamped = 0

    def close(self) -> None:
        """Release the Redis connections."""
        if self.client is not None:
            self.client.close()

    def initialize_gate(self, revision: int) -> int:
        """Start a missing gate at ``revision`` (documents at or below it are restamped to publish)."""
        if self.client is None:
            return 0
        self.client.set(self.key, revision, nx=True)
        return int(self.client.get(self.key) or 0)

    def publish(self, docs: list[dict[str, Any]]) -> bool:
        """Publish documents that have just been written; True when all were published.

        Never raises: a change that cannot be published is picked up from
        MongoDB by the serve processes' orphan sweep.
        """
        if not docs or self._script is None:
            return True
        pending = [d for d in docs if isinstance(d.get("rev"), int) and d.get("celery_id")]
        deadline = time.monotonic() + self.config.feed.publish_timeout
        delay = 0.05
        while pending:
            pending.sort(key=lambda d: int(d["rev"]))
            try:
                answer = int(
                    self._script(
                        keys=[self.key],
                        args=[self.channel, pending[0]["rev"], pending[-1]["rev"], encode(pending)],
                    )
                )
            except REDIS_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("feed publish of %d change(s) failed: %s", len(pending), exc)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if answer == 0:
                self.published += len(pending)
                return True
            # Stale: something with a higher revision was published first.  Documents
            # above the gate may go as they are; the others get fresh revisions.
            stale = [d for d in pending if int(d["rev"]) <= answer]
            fresh = [d for d in pending if int(d["rev"]) > answer]
            try:
                renewed = self.store.restamp(stale)
            except Exception as exc:  # noqa: BLE001 - the orphan sweep republishes these
                log.warning("feed restamp of %d change(s) failed: %s", len(stale), exc)
                renewed = []
            self.restamped += len(renewed)
            pending = fresh + renewed
        return True

    def __call__(self, docs: list[dict[str, Any]]) -> None:
        """The consumer's ``on_changes`` callback."""
        self.publish(docs)


class FeedSubscriber:
    """Receives the channel in a thread and hands each batch to a callback.

    ``on_docs(docs)`` is called from the subscriber thread (wrap it with
    ``loop.call_soon_threadsafe``); ``on_connect(last_published)`` is called
    after every (re)subscription with the gate's value read *after*
    subscribing, so the receiver can fetch what it missed while disconnected;
    ``on_disconnect()`` when the subscription is lost.  Reconnects with capped
    exponential backoff.
    """

    def __init__(
        self,
        config: Config,
        on_docs: Callable[[list[dict[str, Any]]], None],
        on_connect: Callable[[int], None],
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.url = feed_url(config)
        self.on_docs = on_docs
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.channel = channel_name(config)
        self.key = gate_key(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed-subscriber", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within a second)."""
        self._stop.set()

    def join(self, timeout: float = 2.0) -> None:
        """Wait for the thread."""
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_connect_timeout=2.0, health_check_interval=10)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                # Read the gate only once Redis confirmed the subscription: every
                # revision published after that value reaches us on the channel.
                deadline = time.monotonic() + 5
                while True:
                    confirm = pubsub.get_message(timeout=0.2)
                    if confirm is not None and confirm.get("type") == "subscribe":
                        break
                    if time.monotonic() > deadline:
                        raise redis.exceptions.TimeoutError("no subscribe confirmation")
                last = int(client.get(self.key) or 0)
                self.on_connect(last)
                self.connected.set()
                delay = 0.2
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        docs = decode(message["data"])
                        if docs:
                            self.on_docs(docs)
            except REDIS_ERRORS as exc:
                self.connected.clear()
                if self.on_disconnect is not None:
                    self.on_disconnect()
                log.warning("feed subscription lost (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.events.backoff_max)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except REDIS_ERRORS:
                    pass
