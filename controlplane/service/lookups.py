"""Single-task lookups answered from memory, kept coherent by the live feed.

Clients poll one task at a time (``GET /api/celery_task/?celery_id=`` or
``GET /api/celery_task/{celery_id}/``), often many of them the same few
running tasks.  Each API process keeps the detail of recently looked-up tasks
in a bounded LRU, and the feed hub hands it every change it dispatches, so an
entry is as fresh as the live feed (the ordered, gap-free stream of
:mod:`controlplane.bus.feed`): milliseconds behind MongoDB.

Why an answer from here is never older than the feed
====================================================

* Entries are only *filled* from MongoDB, by a lookup that missed; the feed
  only *updates* entries that exist (a change for a task nobody looked up is
  not kept), always keeping the higher revision.
* A change dispatched while a lookup's read is in flight is remembered for that
  read (:meth:`LookupCache.begin`); when the read returns, the newer of the two
  is kept.  So a read that started before a change and returned after it cannot
  install the older state.
* A read whose revision the feed has not reached yet (``rev > high``) is
  answered but not kept: it may be a task whose creation is being rolled back
  (a create whose Celery publish failed is deleted, unannounced; if other
  changes passed its revision first, ``ttl`` bounds how long it is kept).
* This process's own writes (revokes) update its entries at once
  (:meth:`LookupCache.wrote`), before the feed brings them back.
* When the feed's Redis subscription drops, the cache is emptied and answers
  nothing until the hub has resubscribed and caught up (:meth:`suspend`,
  :meth:`resume`).

What the feed cannot see — a subscription that died silently, a writer that
died between its write and its publish (the hub's orphan sweep republishes
that change within ``feed.publish_timeout`` and a few seconds) — is bounded by
``ttl``: an entry neither read from MongoDB nor updated by the feed for
``ttl`` seconds is read again.

Besides the looked-up tasks, the cache holds the ``recent`` tasks the feed changed last
(a second bounded LRU, filled by the feed itself, and by this process's own creates once
their message is published), so a client polling the task it just created, or one that
just changed, is answered from memory on its first request.  A task only read long ago
costs one MongoDB read, as before.

The cache only exists when the feed does (``feed.lookup_cache`` > 0 and a
Redis URL for the feed); without it every lookup reads MongoDB.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _rev(detail: Mapping[str, Any] | None) -> int:
    rev = detail.get("rev") if detail is not None else None
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else -1


@dataclass
class _Entry:
    detail: dict[str, Any]
    expires: float


@dataclass(eq=False)
class Read:
    """One lookup's read of MongoDB in flight (see :meth:`LookupCache.begin`)."""

    celery_id: str
    generation: int
    seen: dict[str, Any] | None = None  # the newest change the feed dispatched meanwhile


class LookupCache:
    """Details of recently looked-up tasks, by celery_id; see the module docstring.

    Used from the IOLoop only (no locks).  ``size`` bounds the looked-up entries and
    ``recent`` the recently changed ones; ``ttl`` is in seconds; ``clock`` is for tests.
    """

    def __init__(
        self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic, recent: int = 0
    ) -> None:
        self.size = size
        self.recent = recent
        self.ttl = ttl
        self.clock = clock
        self.live = False
        self.high = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._recent: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._reads: dict[str, list[Read]] = {}

    def __len__(self) -> int:
        return len(self._entries) + len(self._recent)

    # -- lookups ---------------------------------------------------------------------

    def get(self, celery_id: str) -> dict[str, Any] | None:
        """The cached detail (shared: do not modify it), or None on a miss."""
        entry = self._entries.get(celery_id) if self.live else None
        if entry is None:
            entry = self._recent.get(celery_id) if self.live else None
        if entry is None or entry.expires <= self.clock():
            self.misses += 1
            return None
        if celery_id in self._entries:
            self._entries.move_to_end(celery_id)
        self.hits += 1
        return entry.detail

    def begin(self, celery_id: str) -> Read:
        """Announce a read of ``celery_id`` from MongoDB; pass its result to :meth:`end`."""
        read = Read(celery_id, self.generation)
        self._reads.setdefault(celery_id, []).append(read)
        return read

    def end(self, read: Read, detail: dict[str, Any] | None) -> dict[str, Any] | None:
        """The read returned ``detail`` (None: no such task); keeps and returns the newest state known."""
        self.abandon(read)
        if detail is None:
            return None
        newest = read.seen if read.seen is not None and _rev(read.seen) > _rev(detail) else detail
        if self.live and read.generation == self.generation and _rev(newest) <= self.high:
            self._put(read.celery_id, newest)
        return newest

    def abandon(self, read: Read) -> None:
        """The read is over (failed, or through :meth:`end`)."""
        reads = self._reads.get(read.celery_id)
        if reads is not None and read in reads:
            reads.remove(read)
            if not reads:
                del self._reads[read.celery_id]

    def _put(self, celery_id: str, detail: dict[str, Any]) -> None:
        current = self._entries.get(celery_id)
        if current is not None and _rev(current.detail) > _rev(detail):
            return
        self._entries[celery_id] = _Entry(detail, self.clock() + self.ttl)
        self._entries.move_to_end(celery_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    # -- the feed --------------------------------------------------------------------

    def observe(self, detail: Mapping[str, Any]) -> None:
        """A change the hub dispatched (revisions arrive in increasing order)."""
        self.high = max(self.high, _rev(detail))
        entry = self._update(detail)
        if entry is not None:
            entry.expires = self.clock() + self.ttl
        elif self.live and not self._holds(detail):
            self._remember(detail)

    def created(self, detail: Mapping[str, Any]) -> None:
        """A task this process created and published: known before the feed brings it back.

        Unlike a read of MongoDB ahead of the feed, a published create cannot be rolled back,
        so it is kept (as a recent change) although the feed has not reached its revision.
        """
        if self.live and self._update(detail) is None and not self._holds(detail):
            self._remember(detail)

    def _holds(self, detail: Mapping[str, Any]) -> bool:
        celery_id = detail.get("celery_id")
        return celery_id in self._entries or celery_id in self._recent

    def _remember(self, detail: Mapping[str, Any]) -> None:
        celery_id = detail.get("celery_id")
        if not self.recent or not isinstance(celery_id, str):
            return
        self._recent[celery_id] = _Entry(dict(detail), self.clock() + self.ttl)
        self._recent.move_to_end(celery_id)
        while len(self._recent) > self.recent:
            self._recent.popitem(last=False)

    def wrote(self, detail: Mapping[str, Any]) -> None:
        """A change this process wrote, before the feed brings it back (read-your-writes).

        Unlike :meth:`observe` it neither moves ``high`` (the feed has not
        reached it) nor extends the entry's life.
        """
        self._update(detail)

    def _update(self, detail: Mapping[str, Any]) -> _Entry | None:
        celery_id = detail.get("celery_id")
        if not isinstance(celery_id, str):
            return None
        rev = _rev(detail)
        for read in self._reads.get(celery_id, ()):
            if rev > _rev(read.seen):
                read.seen = dict(detail)
        entry = self._entries.get(celery_id)
        if entry is None:
            entry = self._recent.get(celery_id)
            if entry is not None:
                self._recent.move_to_end(celery_id)
        if entry is None or rev < _rev(entry.detail):
            return None
        if rev > _rev(entry.detail):
            entry.detail = dict(detail)
        return entry

    def suspend(self) -> None:
        """The feed's subscription dropped: forget everything, answer nothing."""
        self.live = False
        self.generation += 1
        self._entries.clear()
        self._recent.clear()

    def resume(self, high: int) -> None:
        """The hub is subscribed and caught up to ``high``: start (again) from empty."""
        if not self.live:
            self.generation += 1  # reads begun before this are not kept
            self._entries.clear()
            self._recent.clear()
            self.live = True
        self.high = max(self.high, high)
