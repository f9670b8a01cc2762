"""The serve side of the live feed: one hub per API process, many clients.

The hub receives the ordered change stream of :mod:`controlplane.bus.feed`
(strictly increasing revisions, every one already in MongoDB) on the IOLoop,
and offers each change to every client whose filter matches.

The resume seam (why a reconnect with ``since=L`` misses nothing and repeats nothing)
==================================================================================

A client is *registered* with the hub before anything is read, and at that
moment the hub's ``high`` — the last revision it has dispatched — is taken as
``H``.  Registration and ``H`` are read in the same IOLoop step, so every change
dispatched afterwards has a revision ``> H`` and lands in the client's queue.

1. Replay: documents matching the filter with ``L < rev ≤ H``, from MongoDB,
   oldest first.  All of them landed before ``H`` was published (the gate only
   publishes landed writes, in revision order), so the query sees them all; a
   document that changed again shows its newer state — either still ``≤ H``
   (replayed) or ``> H`` (queued live).
2. Live: queued changes with ``rev > max(L, H)`` — the *floor*.  Nothing at
   or below the floor is sent live, so nothing is sent twice.

A change the client has not seen has a revision ``> L`` (see the gate's
argument in :mod:`controlplane.bus.feed`), and it is either ``≤ H`` and in
MongoDB, or ``> H`` and in the queue.  Per connection every (celery_id, rev)
goes out at most once and revisions only grow within the live part.

The hub keeps itself complete: when its Redis subscription drops, it reads the
gate after resubscribing (``G``) and dispatches MongoDB's ``(high, G]`` before
the live messages buffered meanwhile.  An *orphan sweep* republishes (with a
fresh revision, through the gate) any document whose revision is below what
has been published for a while but that never reached the channel (its writer
died between the write and the publish, or Redis was unreachable for longer
than ``feed.publish_timeout``).

Leaving a filter
================

A filtered client that was sent a task is told when the task stops matching:
``{"type": "leave", "rev", "task"}`` with the new state.  The hub remembers the
state it last sent to a filtered client for up to ``feed.leave_tracking`` tasks
(the least recently changed are forgotten first); a change of such a task that
matched a client's filter before and does not now is a leave for that client.
A resuming client names the tasks it holds (``holding``): the held tasks that
no longer match are sent as leaves during the replay (in revision order), and
a later live change of one that stops matching is a leave for it even if this
process never sent it the task.

Backpressure: each client's queue holds at most ``feed.client_queue``
messages.  Offering to a full queue marks the client *overflowed*: it is sent
``{"type": "resync"}`` and closed; dispatch never waits on a client.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.bus.feed import FeedPublisher, FeedSubscriber, feed_url
from controlplane.core import documents
from controlplane.core.errors import InvalidParam
from controlplane.core.merge import STATUSES
from controlplane.core.validate import parse_uuid
from controlplane.service.lookups import LookupCache

log = logging.getLogger(__name__)

FILTER_KEYS = ("celery_id", "task_type", "status")
MAX_FILTER_VALUES = 100
#: At most this many task ids in ``holding``.
MAX_HOLDING = 1000
# What a change is for a client (see FeedHub._offer).
CHANGE, LEAVE = 1, 2
MAX_VALUE_LENGTH = 256


@dataclass(frozen=True)
class FeedFilter:
    """Which tasks a client wants; an empty set means "any"."""

    celery_id: frozenset[str] = frozenset()
    task_type: frozenset[str] = frozenset()
    status: frozenset[str] = frozenset()

    @property
    def narrows(self) -> bool:
        """Whether the filter can exclude a task (an empty one never does, so never needs a leave)."""
        return bool(self.celery_id or self.task_type or self.status)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether a (detail or stored) task document passes the filter."""
        if self.celery_id and doc.get("celery_id") not in self.celery_id:
            return False
        if self.task_type and doc.get("task_type") not in self.task_type:
            return False
        return not (self.status and doc.get("status", "PENDING") not in self.status)

    def query(self) -> dict[str, Any]:
        """The MongoDB filter (plain ``$in`` over string values)."""
        q: dict[str, Any] = {}
        for key in FILTER_KEYS:
            values = getattr(self, key)
            if values:
                q[key] = {"$in": sorted(values)}
        return q

    def as_dict(self) -> dict[str, list[str]]:
        """The filter as JSON (sorted lists)."""
        return {key: sorted(getattr(self, key)) for key in FILTER_KEYS}

    @classmethod
    def parse(cls, raw: Mapping[str, Any], task_types: Iterable[str]) -> FeedFilter:
        """Build from query arguments or a subscribe message; raises InvalidParam naming the field.

        Each value may be a string (comma-separated values allowed) or a list of
        strings; absent or empty means "any". ``celery_id`` values must be UUIDs (as in the
        REST list's filter), kept lowercased.
        """
        valid_types = set(task_types) | {"external"}
        found: dict[str, frozenset[str]] = {}
        for key in FILTER_KEYS:
            value = raw.get(key)
            if value is None:
                found[key] = frozenset()
                continue
            values = _strings(key, value, MAX_FILTER_VALUES, ("a value", "values"))
            if key == "status":
                bad = sorted(values - set(STATUSES))
                if bad:
                    raise InvalidParam(key, f"unknown status {bad[0][:64]!r}; valid: {', '.join(STATUSES)}")
            if key == "task_type":
                bad = sorted(values - valid_types)
                if bad:
                    raise InvalidParam(key, f"unknown task type {bad[0][:64]!r}")
            if key == "celery_id":
                values = frozenset(parse_uuid(v, key) for v in sorted(values))
            found[key] = frozenset(values)
        return cls.shared(**found)

    @classmethod
    def shared(cls, **values: frozenset[str]) -> FeedFilter:
        """The one instance of this filter in the process (equal filters are the same object, so
        the hub judges a change once per distinct filter, by identity)."""
        flt = cls(**values)
        return _FILTERS.setdefault(flt, flt)


_FILTERS: weakref.WeakValueDictionary[FeedFilter, FeedFilter] = weakref.WeakValueDictionary()


def _strings(field: str, value: Any, limit: int, names: tuple[str, str]) -> frozenset[str]:
    """A string (comma-separated values allowed) or a list of strings, as a set of at most
    ``limit`` values; InvalidParam naming ``field`` otherwise (``names``: one value, many)."""
    items = value if isinstance(value, list) else [value]
    found: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise InvalidParam(field, "must be a string or a list of strings")
        for part in item.split(","):
            part = part.strip()
            if len(part) > MAX_VALUE_LENGTH:
                raise InvalidParam(field, f"{names[0]} is too long")
            if part:
                found.add(part)
    if len(found) > limit:
        raise InvalidParam(field, f"at most {limit} {names[1]}")
    return frozenset(found)


def parse_holding(value: Any) -> frozenset[str]:
    """The task ids a resuming client holds: a string (comma-separated) or a list of strings."""
    return _strings("holding", value, MAX_HOLDING, ("a task id", "task ids"))


def change_message(kind: str, doc: Mapping[str, Any]) -> str:
    """One feed message: ``{"type", "rev", "task"}`` with the detail-shaped document."""
    return json.dumps(
        {"type": kind, "rev": int(doc.get("rev") or 0), "task": doc},
        ensure_ascii=False,
        default=str,
        separators=(",", ":"),
    )


@dataclass
class Entry:
    """A queued message: its revision (None for control messages), the document, the text."""

    rev: int | None
    doc: Mapping[str, Any] | None
    text: str
    leave: bool = False


@dataclass(eq=False)
class FeedClient:
    """One connection's subscription: filter, bounded queue, and the seam's floor."""

    filter: FeedFilter
    limit: int
    on_overflow: Callable[[FeedClient], None]
    queue: collections.deque[Entry] = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    floor: int = 0
    overflowed: bool = False
    sent: int = 0
    # Tasks the client said it holds (on resume) and has not been told about since.
    holding: set[str] = field(default_factory=set)

    def offer(self, entry: Entry) -> None:
        """Queue a message without ever waiting; a full queue overflows the client."""
        if self.overflowed:
            return
        if len(self.queue) >= self.limit:
            self.overflowed = True
            self.queue.clear()
            self.on_overflow(self)
            return
        self.queue.append(entry)
        self.wakeup.set()

    def take(self) -> list[Entry]:
        """Everything queued that is still due: above the floor and matching the current filter
        (a leave: not matching it)."""
        out = []
        while self.queue:
            entry = self.queue.popleft()
            if entry.rev is not None:
                if (
                    entry.rev <= self.floor
                    or entry.doc is None
                    or self.filter.matches(entry.doc) == entry.leave
                ):
                    continue
            out.append(entry)
        return out


class Seam:
    """Pure bookkeeping of one resume: replay ``(since, high]``, then live above the floor."""

    def __init__(self, since: int, high: int) -> None:
        self.since = max(0, since)
        self.high = high
        self.floor = max(self.since, high)

    @property
    def replay_range(self) -> tuple[int, int] | None:
        """``(since, high]`` to read from MongoDB, or None when there is nothing to replay."""
        return (self.since, self.high) if self.high > self.since else None

    def live(self, rev: int) -> bool:
        """Whether a live change of revision ``rev`` is sent."""
        return rev > self.floor


class FeedHub:
    """Dispatches the ordered change stream to the clients of one API process.

    ``store`` is an :class:`controlplane.store.tasks.AsyncTaskStore`; ``republish``
    (blocking, run in an executor) sends orphans through the gate.
    """

    def __init__(
        self,
        store: Any,
        *,
        client_queue: int = 1000,
        max_replay: int = 100_000,
        settle: float = 7.0,
        republish: Callable[[list[dict[str, Any]]], Any] | None = None,
        cache: LookupCache | None = None,
        leave_tracking: int = 100_000,
    ) -> None:
        self.store = store
        self.cache = cache
        self.leave_tracking = leave_tracking
        # celery_id → (status, task_type) last sent to a filtered client; oldest change first.
        self.shown: dict[str, tuple[Any, Any]] = {}
        self.client_queue = client_queue
        self.max_replay = max_replay
        self.settle = settle
        self.republish = republish
        self.clients: set[FeedClient] = set()
        self.high = 0
        self.disconnects = 0
        self.ready = asyncio.Event()
        self.dispatched = 0
        self.ignored = 0
        self._catching_up = False
        self._held: list[list[dict[str, Any]]] = []
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._received: set[int] = set()
        self._swept = 0
        self._sweeping = False

    # -- clients -----------------------------------------------------------------

    def register(self, flt: FeedFilter, on_overflow: Callable[[FeedClient], None]) -> FeedClient:
        """Add a client; its floor is set by :meth:`begin` (same IOLoop step as reading ``high``)."""
        client = FeedClient(flt, self.client_queue, on_overflow)
        self.clients.add(client)
        return client

    def begin(self, client: FeedClient, since: int | None, holding: Iterable[str] = ()) -> Seam:
        """Start (or restart) a client's stream after ``since`` (None: live changes only).

        ``holding``: tasks the client holds; any of them that stops matching its
        filter from now on is sent as a leave (see :meth:`departed` for before now).
        """
        client.queue.clear()
        client.holding = set(holding)
        seam = Seam(self.high if since is None else since, self.high)
        client.floor = seam.floor
        return seam

    async def departed(self, seam: Seam, client: FeedClient) -> list[dict[str, Any]]:
        """Held tasks whose state up to the seam no longer matches the client's filter, by revision.

        They are no longer held (a later change of one is sent only if it matches again).
        """
        if not client.holding:
            return []
        found = await self.store.get_many(sorted(client.holding), older=False)
        gone = [
            d for d in found.values() if int(d.get("rev") or 0) <= seam.high and not client.filter.matches(d)
        ]
        client.holding.difference_update(d["celery_id"] for d in gone)
        return sorted(gone, key=lambda d: int(d.get("rev") or 0))

    def unregister(self, client: FeedClient) -> None:
        """Forget a client."""
        self.clients.discard(client)

    def broadcast(self, text: str) -> None:
        """Queue a control message (heartbeat) to every client."""
        entry = Entry(None, None, text)
        for client in list(self.clients):
            client.offer(entry)

    async def replay(self, seam: Seam, flt: FeedFilter, page: int = 500) -> Any:
        """Yield pages of replay documents ``(since, high]`` matching ``flt``, oldest first."""
        rng = seam.replay_range
        if rng is None:
            return
        low, high = rng
        left = self.max_replay
        while left > 0:
            docs = await self.store.changed_since(low, high, flt.query(), min(page, left))
            if not docs:
                return
            yield docs
            left -= len(docs)
            low = int(docs[-1]["rev"])
            if len(docs) < page:
                return
        raise OverflowError("more changes than feed.max_replay")

    # -- the stream ----------------------------------------------------------------

    def on_docs(self, docs: list[dict[str, Any]]) -> None:
        """A channel message (on the IOLoop)."""
        if self._catching_up or not self.ready.is_set():
            self._held.append(docs)
            return
        self._dispatch(docs)

    def _dispatch(self, docs: Iterable[Mapping[str, Any]]) -> None:
        for doc in sorted(docs, key=lambda d: int(d.get("rev") or 0)):
            rev = int(doc.get("rev") or 0)
            if rev <= self.high:
                self.ignored += 1
                continue
            self.high = rev
            self._received.add(rev)
            if self.cache is not None:
                self.cache.observe(doc)
            self._offer(rev, doc)
            self.dispatched += 1
        self._samples.append((time.monotonic(), self.high))

    def _offer(self, rev: int, doc: Mapping[str, Any]) -> None:
        """Queue one change for every client it matches, and a leave for every client it left.

        Clients mostly share a few filters (one object each, see :meth:`FeedFilter.shared`):
        each is judged once per change.
        """
        cid = doc.get("celery_id")
        before = self.shown.pop(cid, None) if isinstance(cid, str) else None
        was = {"celery_id": cid, "status": before[0], "task_type": before[1]} if before else None
        change = leave = None  # each encoded once, and only if a client wants it
        verdicts: dict[int, int] = {}  # id of a filter → CHANGE, LEAVE or 0
        narrowing = False
        for client in list(self.clients):
            flt = client.filter
            verdict = verdicts.get(id(flt))
            if verdict is None:
                verdict = CHANGE if flt.matches(doc) else LEAVE if was and flt.matches(was) else 0
                verdicts[id(flt)] = verdict
                narrowing = narrowing or (verdict == CHANGE and flt.narrows)
            if verdict == CHANGE:
                change = change or Entry(rev, doc, change_message("change", doc))
                client.offer(change)
            elif verdict == LEAVE or (client.holding and cid in client.holding):
                leave = leave or Entry(rev, doc, change_message("leave", doc), leave=True)
                client.offer(leave)
            else:
                continue
            if client.holding:
                client.holding.discard(cid)  # type: ignore[arg-type]
        if narrowing and isinstance(cid, str) and self.leave_tracking > 0:
            self.shown[cid] = (doc.get("status"), doc.get("task_type"))
            if len(self.shown) > self.leave_tracking:
                del self.shown[next(iter(self.shown))]

    def on_disconnect(self) -> None:
        """The subscription dropped (on the IOLoop): the lookup cache stops answering until caught up."""
        self.disconnects += 1
        if self.cache is not None:
            self.cache.suspend()

    async def on_connect(self, last: int, disconnects: int | None = None) -> None:
        """After every (re)subscription: catch up ``(high, last]`` from MongoDB, then the held messages.

        ``disconnects``: :attr:`disconnects` when the subscription was made; the lookup
        cache resumes only if it has not dropped again since.
        """
        caught_up = True
        if not self.ready.is_set():
            self.high = max(self.high, last)
            self._swept = self.high
            self.ready.set()
        elif last > self.high:
            self._catching_up = True
            try:
                missed = await self.store.changed_since(self.high, last, {}, self.max_replay + 1)
                if len(missed) > self.max_replay:
                    log.warning(
                        "feed: %d changes missed while disconnected; clients must resync", len(missed)
                    )
                    for client in list(self.clients):
                        client.overflowed = True
                        client.on_overflow(client)
                    self.high = last
                else:
                    self._dispatch([documents.detail(d) for d in missed])
                    self.high = max(self.high, last)
            except Exception as exc:  # noqa: BLE001 - keep serving; the next reconnect retries
                log.warning("feed catch-up failed: %s", exc)
                caught_up = False
            finally:
                self._catching_up = False
        held, self._held = self._held, []
        for docs in held:
            self._dispatch(docs)
        if self.cache is not None and caught_up and (disconnects is None or disconnects == self.disconnects):
            self.cache.resume(self.high)

    # -- orphan sweep ----------------------------------------------------------------

    def settled_high(self, now: float | None = None) -> int:
        """The highest revision dispatched at least ``settle`` seconds ago."""
        cutoff = (time.monotonic() if now is None else now) - self.settle
        samples = self._samples
        while len(samples) >= 2 and samples[1][0] <= cutoff:
            samples.popleft()
        if samples and samples[0][0] <= cutoff:
            return samples[0][1]
        return self._swept

    async def sweep(self) -> int:
        """Republish documents that landed with a revision that was skipped on the channel."""
        if self._sweeping or not self.ready.is_set() or self.republish is None:
            return 0
        upto = self.settled_high()
        if upto <= self._swept:
            return 0
        self._sweeping = True
        try:
            found = await self.store.changed_since(self._swept, upto, {}, 10_000)
            orphans = [d for d in found if int(d["rev"]) not in self._received]
            if found and len(found) == 10_000:
                upto = int(found[-1]["rev"])
            self._received = {r for r in self._received if r > upto}
            self._swept = upto
            if orphans:
                log.warning("feed: republishing %d change(s) that never reached the channel", len(orphans))
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.republish, orphans)
            return len(orphans)
        finally:
            self._sweeping = False


class FeedService:
    """What one API process runs for the feed: the hub, its subscriber thread, the timers.

    ``publisher`` is also what the API's own writes (create, revoke) publish with.
    Disabled (``hub`` is None) when there is no Redis URL for the feed.
    """

    def __init__(self, config: Any, store: Any, writer: Any) -> None:
        self.config = config
        self.publisher = FeedPublisher(config, writer)
        self.hub: FeedHub | None = None
        self.cache: LookupCache | None = None  # only with the feed: it is what keeps the cache fresh
        self.subscriber: FeedSubscriber | None = None
        self.writer = writer
        self._timers: list[asyncio.Task[None]] = []
        if not feed_url(config):
            log.warning(
                "the live feed is disabled: it needs a Redis URL (feed.url) when the broker is not Redis"
            )
            return
        fc = config.feed
        self.cache = (
            LookupCache(fc.lookup_cache, fc.lookup_ttl, recent=fc.lookup_recent)
            if fc.lookup_cache > 0
            else None
        )
        self.hub = FeedHub(
            store,
            client_queue=fc.client_queue,
            max_replay=fc.max_replay,
            settle=fc.publish_timeout + 2 * fc.poll_interval,
            republish=self.publisher.publish,
            cache=self.cache,
            leave_tracking=fc.leave_tracking,
        )
        self.subscriber = FeedSubscriber(
            config, self._from_thread_docs, self._from_thread_connect, self._from_thread_disconnect
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    def _from_thread_docs(self, docs: list[dict[str, Any]]) -> None:
        if self._loop is not None and self.hub is not None:
            self._loop.call_soon_threadsafe(self.hub.on_docs, docs)

    def _from_thread_disconnect(self) -> None:
        if self._loop is not None and self.hub is not None:
            self._loop.call_soon_threadsafe(self.hub.on_disconnect)

    def _from_thread_connect(self, last: int) -> None:
        if last == 0:
            # A fresh gate (new deployment, or Redis lost its data): start it above every stored revision.
            try:
                last = self.publisher.initialize_gate(self.writer.max_revision())
            except Exception as exc:  # noqa: BLE001 - the gate starts at 0 then; writers restamp as needed
                log.warning("feed: could not initialise the gate: %s", exc)
        if self._loop is not None and self.hub is not None:
            hub = self.hub
            self._loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(hub.on_connect(last, hub.disconnects))
            )

    def start(self) -> None:
        """Start the subscriber thread, the heartbeat and the orphan sweep (on the running loop)."""
        if self.hub is None or self.subscriber is None:
            return
        self._loop = asyncio.get_running_loop()
        self.subscriber.start()
        self._timers.append(asyncio.ensure_future(self._every(self.config.feed.heartbeat, self._heartbeat)))
        self._timers.append(asyncio.ensure_future(self._every(self.config.feed.poll_interval, self._sweep)))

    async def _every(self, seconds: float, fn: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a timer must survive a database blip
                log.warning("feed timer %s failed: %s", getattr(fn, "__name__", fn), exc)

    def _heartbeat(self) -> None:
        if self.hub is not None:
            text = json.dumps({"type": "heartbeat", "rev": self.hub.high, "time": round(time.time(), 3)})
            self.hub.broadcast(text)

    async def _sweep(self) -> None:
        if self.hub is not None:
            await self.hub.sweep()

    async def close(self) -> None:
        """Stop the timers and the subscriber; release Redis."""
        for timer in self._timers:
            timer.cancel()
        if self.subscriber is not None:
            self.subscriber.stop()
            await asyncio.get_running_loop().run_in_executor(None, self.subscriber.join, 2.0)
        self.publisher.close()
