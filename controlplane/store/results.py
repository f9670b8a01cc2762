"""Result documents: the collections tasks write their findings to, and the one writer for them.

Every result document is tagged with the ``task_id`` of the task that wrote it; a unique index
per collection (:data:`RESULT_COLLECTIONS`) makes writing the same finding twice a no-op.  Most
collections also carry a ``partial`` flag: documents go in with ``partial: True`` and
:meth:`ResultWriter.finish` clears it when the task completed, so the results of a task that was
stopped or killed stay marked partial.

Writes avoid upserts (an upsert that inserts is very slow on the embedded nx-27017 server): new
documents go in with one unordered ``insert_many`` per batch, duplicate-key errors ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000
BATCH_SIZE = 500


@dataclass(frozen=True)
class ResultCollection:
    """One collection of result documents: its unique key and how its documents are tagged.

    ``keys`` are the fields of the unique index (named ``index``, by default ``uniq_`` and the
    fields joined by ``_``).  Every document gets the writing task's ``task_id``; with ``partial``
    also the partial flag, with ``stamped`` a ``time`` (epoch seconds) unless it brings its own.
    ``listed`` collections are the kinds of result the API serves (:data:`RESULT_KINDS`).
    """

    name: str
    keys: tuple[str, ...]
    index: str = ""
    partial: bool = True
    stamped: bool = False
    listed: bool = True
    #: Fields the results endpoint may filter on, each served by an index ``(task_id, field)``.
    filters: tuple[str, ...] = ()

    @property
    def index_name(self) -> str:
        """The name of the unique index."""
        return self.index or "uniq_" + "_".join(self.keys)

    def tag(self, doc: Mapping[str, Any], task_id: str, now: float) -> dict[str, Any]:
        """``doc`` as stored by task ``task_id`` at ``now``."""
        stored: dict[str, Any] = {"time": now} if self.stamped else {}
        stored.update(doc)
        stored["task_id"] = task_id
        if self.partial:
            stored["partial"] = True
        return stored


RESULT_COLLECTIONS: dict[str, ResultCollection] = {
    c.name: c
    for c in (
        ResultCollection("domain", ("task_id", "domain")),
        ResultCollection("ip", ("task_id", "ip")),
        ResultCollection("site", ("task_id", "site")),
        ResultCollection("cert", ("task_id", "host", "port")),
        # One record per leak of a service (ip:port), whatever host names it was reached under.
        ResultCollection("fileleak", ("task_id", "service", "path", "evidence")),
        ResultCollection("fofa", ("task_id", "host", "ip", "port"), partial=False),
        ResultCollection("url", ("task_id", "url"), filters=("source",)),
        ResultCollection("vhost", ("task_id", "host", "ip", "port", "scheme")),
        # One record per template match on a service, whatever host names it was reached under.
        ResultCollection(
            "vuln", ("task_id", "service", "poc_id", "evidence"), stamped=True, filters=("severity",)
        ),
        ResultCollection("github", ("task_id", "hash"), stamped=True),
        # One record per scope: a record another task of the scope found is not written again.
        ResultCollection("wih", ("scope_id", "hash"), stamped=True),
        ResultCollection("monitor_new", ("task_id", "kind", "value"), stamped=True),
        ResultCollection("asset_site_change", ("task_id", "site"), stamped=True),
        # What a GitHub monitor has reported already (its partial flag is never cleared).
        ResultCollection(
            "github_seen", ("monitor_id", "hash"), index="uniq_monitor_hash", stamped=True, listed=False
        ),
    )
}
"""Collection name -> how its result documents are keyed and tagged: the one list of them."""

RESULT_KINDS: tuple[str, ...] = tuple(name for name, c in RESULT_COLLECTIONS.items() if c.listed)
"""The result kinds a client may read (``GET .../result?kind=``), in the order the API names them."""

RESULT_FILTERS: dict[str, tuple[str, ...]] = {
    n: c.filters for n, c in RESULT_COLLECTIONS.items() if c.filters
}
"""The fields each served kind may be filtered on (see :attr:`ResultCollection.filters`)."""

RECON_KINDS: tuple[str, ...] = ("domain", "ip", "site", "cert", "fileleak")
"""The collections of the recon pipeline (``domain_task``, ``ip_task``); its statistic counts each."""


def insert_new(
    collection: Collection[Any], docs: Iterable[Mapping[str, Any]], batch_size: int = BATCH_SIZE
) -> int:
    """Insert ``docs`` in unordered batches, skipping those a unique index already holds.

    Returns how many were inserted; any error other than a duplicate key is raised.
    """
    added = 0
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(dict(doc))
        if len(batch) >= batch_size:
            added += _insert_batch(collection, batch)
            batch = []
    if batch:
        added += _insert_batch(collection, batch)
    return added


def _insert_batch(collection: Collection[Any], batch: list[dict[str, Any]]) -> int:
    try:
        return len(collection.insert_many(batch, ordered=False).inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(exc.details.get("nInserted", len(batch) - len(errors)))


class ResultWriter:
    """Writes one task's results into the result collections ``kinds`` (names of :data:`RESULT_COLLECTIONS`).

    Call :meth:`ensure_indexes` before the first insert, :meth:`insert` as findings come, and
    :meth:`finish` once the task ended.  ``inserted`` counts, per collection, the documents this
    writer added.
    """

    def __init__(self, db: Database[Any], task_id: str, kinds: Iterable[str]) -> None:
        self.db = db
        self.task_id = task_id
        self.kinds: dict[str, ResultCollection] = {}
        for name in kinds:
            if name not in RESULT_COLLECTIONS:
                raise ValueError(f"unknown result collection {name!r}")
            self.kinds[name] = RESULT_COLLECTIONS[name]
        self.inserted: dict[str, int] = dict.fromkeys(self.kinds, 0)

    def _kind(self, name: str) -> ResultCollection:
        if name not in self.kinds:
            raise ValueError(f"unknown result collection {name!r}")
        return self.kinds[name]

    def ensure_indexes(self) -> None:
        """Create the unique index of each of the writer's collections (idempotent)."""
        for kind in self.kinds.values():
            self.db[kind.name].create_index(
                [(f, ASCENDING) for f in kind.keys], unique=True, name=kind.index_name
            )
            for name in kind.filters:
                self.db[kind.name].create_index(
                    [("task_id", ASCENDING), (name, ASCENDING)], name=f"task_{name}"
                )

    def insert(self, name: str, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert ``docs`` into collection ``name``, tagged with the task; returns how many were new."""
        kind = self._kind(name)
        now = time.time()
        added = insert_new(self.db[name], (kind.tag(doc, self.task_id, now) for doc in docs))
        self.inserted[name] += added
        return added

    def finish(self, partial: bool) -> None:
        """Record the outcome: clear the ``partial`` flag of the task's results when it completed."""
        if partial:
            return
        for kind in self.kinds.values():
            if kind.partial:
                self.db[kind.name].update_many({"task_id": self.task_id}, {"$set": {"partial": False}})

    def count(self, name: str) -> int:
        """How many documents collection ``name`` holds for this task."""
        return self.db[self._kind(name).name].count_documents({"task_id": self.task_id})

    def counts(self) -> dict[str, int]:
        """How many documents each of the writer's collections holds for this task."""
        return {name: self.count(name) for name in self.kinds}
