"""The task store's side of the tally: journal entries, repair and adoption (:mod:`controlplane.store.tally`).

A mixin of :class:`controlplane.store.tasks.TaskStore`, whose writers call it around every write
that moves task documents between cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from controlplane.store import tally
from controlplane.store.errors import TranslatesErrors
from controlplane.store.recent import RecentTasks

COUNTERS = "counters"


class TallyWriter(TranslatesErrors):
    """Opening and closing tally entries, repairing those of dead writers, adopting uncounted
    documents; needs the store's ``db``, ``tasks``, ``recent`` and ``next_revisions``."""

    db: Database[Any]
    tasks: Collection[Any]
    recent: RecentTasks
    next_revisions: Callable[[int], int]

    def _open_entry(self, items: list[tally.Item]) -> tuple[str, set[str]]:
        """Open a journal entry for ``items``; returns its id and the ids of every open entry."""
        entry, now = tally.new_entry(), tally.now()
        counters = self.db[COUNTERS]
        update = tally.open_update(entry, items, now)
        after = ReturnDocument.AFTER
        doc = counters.find_one_and_update(tally.TALLY, update, {"since": 1}, return_document=after)
        if doc is None:
            doc = counters.find_one_and_update(
                tally.TALLY, update, {"since": 1}, upsert=True, return_document=after
            )
        if tally.stale_entries(doc, now):
            self.repair_tally()
        return entry, set((doc or {}).get("since") or {})

    def _close_entry(self, entry: str, landed: list[tally.Item]) -> bool:
        """Add the landed items to the tally and remove the entry (once: False if it was repaired)."""
        result = self.db[COUNTERS].update_one(tally.close_filter(entry), tally.close_update(entry, landed))
        return bool(result.matched_count)

    def repair_tally(self, older_than: float = tally.REPAIR_AFTER) -> int:
        """Close the entries open for longer than ``older_than`` seconds (their writers died), adding
        the writes that landed and fencing off the others; returns how many were closed."""
        doc = self.db[COUNTERS].find_one(tally.TALLY, {"since": 1})
        now = tally.now()
        since = (doc or {}).get("since") or {}
        stale = [e for e, t in since.items() if now - float(t or 0) > older_than]
        closed = 0
        for entry in stale:
            found = self.db[COUNTERS].find_one(tally.TALLY, {"open": 1})  # (nx-27017 projects top fields)
            items = ((found or {}).get("open") or {}).get(entry)
            if items is None:
                continue
            landed: list[tally.Item] = []
            for _ in range(5):
                more, fence = tally.judge(entry, items, self._evidence([i[0] for i in items]))
                landed += more
                items = [i for i in fence if not self._fence(i[0], i[1])]
                if not items:
                    break
            else:
                raise RuntimeError(f"tally entry {entry}: documents kept changing while it was repaired")
            closed += self._close_entry(entry, landed)
        return closed

    def _evidence(self, ids: list[Any]) -> dict[Any, dict[str, Any]]:
        """The revision and ``_j`` of those documents that exist."""
        return {d["_id"]: d for d in self.tasks.find({"_id": {"$in": ids}}, {"rev": 1, "_j": 1})}

    def _fence(self, _id: Any, rev: int) -> bool:
        """Give the document at revision ``rev`` a new one, so that a write conditioned on ``rev`` fails."""
        new = self.next_revisions(1)
        result = self.tasks.update_one({"_id": _id, "rev": rev}, {"$set": {"rev": new}})
        return bool(result.matched_count)

    def adopt_uncounted(self, limit: int = 1000) -> int:
        """Count up to ``limit`` documents the tally does not count yet (written around the store,
        ``_c`` missing); returns how many were adopted.  Each gets a new revision, like any write."""
        fields = {"status": 1, "task_type": 1, "worker": 1, "rev": 1, "celery_id": 1, "_j": 1}
        found = list(self.tasks.find({"_c": {"$eq": None}}, fields).limit(limit))
        if not found:
            return 0
        self.recent.forget(d["celery_id"] for d in found)
        items: list[tally.Item] = [[d["_id"], d.get("rev"), None, tally.cell(d)] for d in found]
        entry, still_open = self._open_entry(items)
        first = self.next_revisions(len(found))
        ops = [
            UpdateOne(
                {"_id": d["_id"], "rev": d.get("rev")},
                {"$set": {"_c": i[3], "_j": tally.carried(d.get("_j"), still_open, entry), "rev": first + n}},
            )
            for n, (d, i) in enumerate(zip(found, items, strict=True))
        ]
        self.tasks.bulk_write(ops, ordered=False)
        landed = self._evidence([i[0] for i in items])
        done = [i for i in items if entry in (landed.get(i[0], {}).get("_j") or ())]
        self._close_entry(entry, done)
        return len(done)

    def _count_writes(
        self, inserts: list[dict[str, Any]], updates: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[str | None, list[tuple[dict[str, Any], tally.Item]]]:
        """Open a tally entry for the documents of a write that change cell (none: ``None``), and
        give them their ``_c`` and ``_j``; returns the entry and ``(document, item)`` pairs."""
        items: list[tuple[dict[str, Any], tally.Item]] = []
        for doc in inserts:
            items.append((doc, [doc["_id"], None, None, tally.cell(doc)]))
        for old, merged in updates:
            new = tally.cell(merged)
            if old.get("_c") != new:
                items.append((merged, [merged["_id"], int(old.get("rev") or 0), old.get("_c"), new]))
        if not items:
            return None, []
        entry, still_open = self._open_entry([item for _, item in items])
        for doc, item in items:
            doc["_c"], doc["_j"] = item[3], tally.carried(doc.get("_j"), still_open, entry)
        return entry, items
