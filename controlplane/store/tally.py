"""Exact task counts per (status, task_type, worker) kept beside the tasks: the list's totals in O(1).

Counting on the embedded server is linear in the tasks counted (about 40 ns an index entry: 40 ms
for a million), so a broad filter's exact ``total`` cannot come from ``count`` quickly.  The
*tally* is one document of the ``counters`` collection holding, per cell
``status|task_type|worker``, how many task documents are counted under it; a total of a filter
made of those three fields is the sum of the cells it selects.

What keeps it exact without transactions (plain single-node MongoDB):

* every counted task document carries ``_c``, the cell it is counted under (``None`` or missing:
  not counted), written in the same document write that changes the cell — so the document
  always says what the tally should hold for it;
* a writer whose batch moves documents between cells first *opens* a journal entry in the tally
  document (``open.<id>``: each document's id, the revision it was read at, the old and the new
  cell; ``since.<id>``: when; ``size.<id>``: how many), then writes the documents, each
  carrying the entry's id in ``_j`` (with the ids of entries still open that it carried
  already), then *closes* the entry: one update of the tally
  document that adds the deltas of the writes that landed and removes the entry, conditioned on
  the entry being there, so that it happens once;
* an entry left open by a writer that died is *repaired* (``TaskStore.repair_tally``, :func:`judge`) after
  :data:`REPAIR_AFTER` seconds by whoever sees it: a write landed if the document carries the
  entry's id in ``_j`` (a deleted document: if it is gone); one that did not land yet is fenced
  off by giving the document a new revision, which fails the dead writer's conditional write.
  Then the entry is closed like a live writer closes it.

Readers trust the tally only while no entry is older than :data:`STALE` seconds and no task
document lacks ``_c`` (documents written around the store: older versions, a bulk load); else
they count.  Limits: a new document's insert is taken as not landed when it is absent at repair
(an insert still in flight :data:`REPAIR_AFTER` seconds after it was sent would be missed), and a
task deleted after an update whose writer died leaves no evidence of that update; deletes are of
tasks never published, which no other writer updates.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TALLY = {"_id": "tally"}
"""The tally document's filter (in the ``counters`` collection)."""
STALE = 10.0
"""Seconds after which a reader stops trusting the tally while an entry is still open."""
REPAIR_AFTER = 120.0
"""Seconds after which an open entry is taken as its writer's death and repaired."""
UNSET = "~"
"""A missing field's part of a cell key."""

Item = list[Any]
"""A journal item: ``[document _id, revision read (None: a new document), old cell, new cell]``."""


def _part(value: Any) -> str:
    if value is None:
        return UNSET
    text = str(value)
    # Map keys may hold neither '.' nor a leading '$'; '|' separates the parts, '~' is a missing one.
    for c in "%.$|~":
        text = text.replace(c, f"%{ord(c):02X}")
    return text


def _unpart(text: str) -> str | None:
    if text == UNSET:
        return None
    for c in "~|$.%":
        text = text.replace(f"%{ord(c):02X}", c)
    return text


def cell(doc: Mapping[str, Any]) -> str:
    """The cell a task document is counted under."""
    return "|".join(_part(doc.get(f)) for f in ("status", "task_type", "worker"))


def fields(key: str) -> tuple[str | None, str | None, str | None]:
    """``(status, task_type, worker)`` of a cell key."""
    status, task_type, worker = (_unpart(p) for p in key.split("|"))
    return status, task_type, worker


def deltas(items: Iterable[Item]) -> dict[str, int]:
    """The ``$inc`` of the tally's cells for journal items that landed (zero deltas left out)."""
    out: Counter[str] = Counter()
    for _id, _rev, old, new in items:
        if old is not None:
            out[old] -= 1
        if new is not None:
            out[new] += 1
    return {f"cells.{k}": v for k, v in out.items() if v}


def new_entry() -> str:
    """A fresh journal entry id."""
    return uuid.uuid4().hex[:16]


def open_update(entry: str, items: Sequence[Item], now: float) -> dict[str, Any]:
    """The update that opens ``entry`` (upserting the tally document on first use)."""
    return {"$set": {f"open.{entry}": items, f"since.{entry}": now, f"size.{entry}": len(items)}}


def close_filter(entry: str) -> dict[str, Any]:
    """The tally document while ``entry`` is open (so that it is closed once)."""
    return {**TALLY, f"since.{entry}": {"$gt": 0}}


def close_update(entry: str, landed: Iterable[Item]) -> dict[str, Any]:
    """Add the landed items' deltas and remove the entry."""
    update: dict[str, Any] = {"$unset": {f"open.{entry}": "", f"since.{entry}": "", f"size.{entry}": ""}}
    inc = deltas(landed)
    if inc:
        update["$inc"] = inc
    return update


def carried(previous: Any, still_open: Iterable[str], entry: str) -> list[str]:
    """A written document's ``_j``: ``entry`` and the ids of ``previous`` that are still open."""
    live = set(still_open)
    return [entry, *(j for j in previous or () if isinstance(j, str) and j in live and j != entry)]


def trusted(tally: Mapping[str, Any] | None, now: float) -> bool:
    """Whether the tally document's cells may be read as totals (no entry open too long)."""
    if tally is None:
        return False
    since = tally.get("since") or {}
    return all(isinstance(t, int | float) and now - t < STALE for t in since.values())


def stale_entries(tally: Mapping[str, Any] | None, now: float) -> list[str]:
    """Entries open for longer than :data:`REPAIR_AFTER`: their writers are taken as dead."""
    since = (tally or {}).get("since") or {}
    return [e for e, t in since.items() if not isinstance(t, int | float) or now - t > REPAIR_AFTER]


def by_status(
    cells: Mapping[str, Any], task_type: str | None, worker: str | None, statuses: Sequence[str]
) -> dict[str, int]:
    """Tasks per status of ``statuses`` with that task type and worker (None: any)."""
    out = dict.fromkeys(statuses, 0)
    for key, n in cells.items():
        status, t, w = fields(key)
        if status in out and (task_type is None or t == task_type) and (worker is None or w == worker):
            out[status] += int(n)
    return out


def matching(
    cells: Mapping[str, Any], task_type: str | None, worker: str | None, statuses: Sequence[str] | None
) -> int:
    """Tasks with that task type, worker and one of ``statuses`` (None: any)."""
    n = 0
    for key, count in cells.items():
        status, t, w = fields(key)
        if statuses is None or status in statuses:
            if (task_type is None or t == task_type) and (worker is None or w == worker):
                n += int(count)
    return n


ADJUST_LIMIT = 256
"""Most items of open entries a reader checks to add the writes that landed already."""


def landed(entry: str, item: Item, found: Mapping[Any, Mapping[str, Any]]) -> bool:
    """Whether an open entry's write has landed (``found``: the existing documents by ``_id``)."""
    doc = found.get(item[0])
    if item[3] is None:
        return doc is None
    return doc is not None and entry in (doc.get("_j") or ())


def with_landed(cells: Mapping[str, Any], items: Iterable[Item]) -> dict[str, int]:
    """``cells`` with the deltas of ``items`` added."""
    out = {k: int(v) for k, v in cells.items()}
    for path, n in deltas(items).items():
        key = path.removeprefix("cells.")
        out[key] = out.get(key, 0) + n
    return out


def judge(
    entry: str, items: Sequence[Item], found: Mapping[Any, Mapping[str, Any]]
) -> tuple[list[Item], list[Item]]:
    """A dead writer's items that landed, and those to fence (still at the revision they were
    read at: a new revision makes their conditional write fail for good); the rest never land.

    ``found``: ``{_id: {"rev", "_j"}}`` of the items' documents that exist.
    """
    done: list[Item] = []
    fence: list[Item] = []
    for item in items:
        doc = found.get(item[0])
        if landed(entry, item, found):  # a delete landed when the document is gone
            done.append(item)
        elif doc is not None and item[1] is not None and doc.get("rev") == item[1]:
            fence.append(item)
    return done, fence


def now() -> float:
    """Wall-clock seconds (journal entries' age is compared across processes)."""
    return time.time()
