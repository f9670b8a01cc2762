"""The consumer's memory of the task documents it wrote last: reads it can skip.

Under load most tasks' events span two or more of the consumer's batches: the
first batch writes the document, the next one has to read it back before it
can fold in the rest.  :class:`RecentTasks` keeps the last version this process
wrote of each unfinished task (a bounded LRU), so the next batch starts from
it instead of a database read.

It is only ever a guess at what is stored.  Every writer of a task document
gives it a new revision (the consumer, the API's creates and revoke flags, a
worker's statistics, the feed's restamping), and the consumer's writes are
conditioned on the revision they started from; so a remembered version that
is no longer current fails its write, is forgotten, and the task is read and
merged again like any other conflict.  Finished tasks are not kept: their
events have all arrived, or nearly so.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from controlplane.core.merge import TERMINAL


class RecentTasks:
    """At most ``capacity`` unfinished task documents by celery_id, least recently used out first.

    Thread-safe: the consumer's writer thread and its consume loop (lost
    tasks, reconciliation) write through the same store.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._docs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._docs)

    def take(self, celery_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The remembered documents among ``celery_ids`` (copies: callers may change them)."""
        found: dict[str, dict[str, Any]] = {}
        if not self.capacity:
            return found
        with self._lock:
            for cid in celery_ids:
                doc = self._docs.get(cid)
                if doc is None:
                    continue
                self._docs.move_to_end(cid)
                found[cid] = dict(doc)
        return found

    def remember(self, docs: Iterable[dict[str, Any]]) -> None:
        """Keep these documents as written (finished ones are dropped instead)."""
        if not self.capacity:
            return
        with self._lock:
            for doc in docs:
                cid = doc.get("celery_id")
                if not isinstance(cid, str):
                    continue
                if doc.get("status") in TERMINAL:
                    self._docs.pop(cid, None)
                    continue
                self._docs[cid] = dict(doc)
                self._docs.move_to_end(cid)
            while len(self._docs) > self.capacity:
                self._docs.popitem(last=False)

    def forget(self, celery_ids: Iterable[str]) -> None:
        """Drop these tasks (their stored version is not the one remembered)."""
        with self._lock:
            for cid in celery_ids:
                self._docs.pop(cid, None)
