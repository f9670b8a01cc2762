"""MongoDB result storage: one collection per asset kind, deduplicated per task by unique indexes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
BATCH_SIZE = 500

UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "domain": ("task_id", "domain"),
    "ip": ("task_id", "ip"),
    "site": ("task_id", "site"),
    "cert": ("task_id", "host", "port"),
    "fileleak": ("task_id", "url"),
}
"""Collection name -> fields of its unique index (the dedup key of a stored result)."""


class ResultStore:
    """Writes a task's results, tagging each document with ``task_id`` and a ``partial`` flag.

    Documents are inserted with ``partial: True`` and flipped to False by :meth:`finish` when the
    task completes, so results of a task that was stopped or killed stay marked partial.
    Re-inserting a key that already exists for the task is silently skipped.
    """

    def __init__(self, db: Database[Any], task_id: str) -> None:
        self.db = db
        self.task_id = task_id
        self.inserted: dict[str, int] = dict.fromkeys(UNIQUE_KEYS, 0)

    def ensure_indexes(self) -> None:
        """Create the unique index of every result collection (idempotent)."""
        for name, fields in UNIQUE_KEYS.items():
            self.db[name].create_index(
                [(f, ASCENDING) for f in fields], unique=True, name="uniq_" + "_".join(fields)
            )

    def insert(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert ``docs`` into ``collection`` in unordered batches; returns how many were new."""
        if collection not in UNIQUE_KEYS:
            raise ValueError(f"unknown result collection {collection!r}")
        batch: list[dict[str, Any]] = []
        added = 0
        for doc in docs:
            batch.append({**doc, "task_id": self.task_id, "partial": True})
            if len(batch) >= BATCH_SIZE:
                added += self._insert_batch(collection, batch)
                batch = []
        if batch:
            added += self._insert_batch(collection, batch)
        self.inserted[collection] += added
        return added

    def _insert_batch(self, collection: str, batch: list[dict[str, Any]]) -> int:
        try:
            return len(self.db[collection].insert_many(batch, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
            return int(exc.details.get("nInserted", len(batch) - len(errors)))

    def finish(self, partial: bool) -> None:
        """Record the outcome: clear the ``partial`` flag of every result when the task completed."""
        if partial:
            return
        for name in UNIQUE_KEYS:
            self.db[name].update_many({"task_id": self.task_id}, {"$set": {"partial": False}})

    def counts(self) -> dict[str, int]:
        """How many documents each collection holds for this task."""
        return {name: self.db[name].count_documents({"task_id": self.task_id}) for name in UNIQUE_KEYS}
