"""Writing grouped results while a stage runs: a record is inserted once, its lists grow after.

Leaks and vulns are one record per service, listing the host names they were found under
(:mod:`workers.recon.fileleak`, :mod:`workers.recon.nuclei.findings`). Written only when the
stage ends, a task stopped or killed during it would lose them; :class:`GroupedWriter` stores a
new record at the next :meth:`~GroupedWriter.flush` and rewrites the lists of one already
stored (``$set``, never an upsert) at most every ``interval`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne

from controlplane.store.results import ResultWriter


class GroupedWriter:
    """Streams the records of one collection ``kind``, identified by ``key_fields``, whose
    ``update_fields`` (host name lists, and what follows from them) may change after they were
    first written.
    """

    def __init__(
        self,
        store: ResultWriter,
        kind: str,
        key_fields: Sequence[str],
        update_fields: Sequence[str],
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.kind = kind
        self.key_fields = tuple(key_fields)
        self.update_fields = tuple(update_fields)
        self.interval = interval
        self.written: set[tuple[Any, ...]] = set()
        self._fresh: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._grown: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._last = 0.0

    def put(self, doc: Mapping[str, Any]) -> None:
        """Note ``doc`` as new or grown; the next due :meth:`flush` writes its latest state."""
        key = tuple(doc[f] for f in self.key_fields)
        if key in self.written:
            self._grown[key] = doc
        else:
            self._fresh[key] = doc

    def flush(self, force: bool = False) -> None:
        """Insert the new records; rewrite the grown ones' fields when ``interval`` passed or ``force``."""
        now = time.monotonic()
        if not (self._fresh or force or (self._grown and now - self._last >= self.interval)):
            return
        self._last = now
        fresh, grown = self._fresh, self._grown
        self._fresh, self._grown = {}, {}
        self.store.insert(self.kind, (dict(doc) for doc in fresh.values()))
        self.written.update(fresh)
        updates = [
            UpdateOne(
                {"task_id": self.store.task_id, **dict(zip(self.key_fields, key, strict=True))},
                {"$set": {f: _copy(doc[f]) for f in self.update_fields}},
            )
            for key, doc in grown.items()
        ]
        if updates:
            self.store.db[self.kind].bulk_write(updates, ordered=False)


def _copy(value: Any) -> Any:
    """A list field as a new list (the caller keeps growing its own), anything else as it is."""
    return list(value) if isinstance(value, list) else value
