"""How the task list is asked of the database: only queries an index serves.

On the embedded server (SQLite under nx-27017) a condition an index does not cover costs a
read and JSON parse of the whole document, about 12 µs a task (12 s at 1M tasks), and SQLite
picks the index of an equality over a range or an order.  So the list is answered with plain
equalities and ranges that an index of :data:`controlplane.store.tasks.INDEXES` serves, in
one of three plans:

Totals of filters made of status, task type and worker alone (the spec's default listing, a
worker, any order) are read from the tally (:mod:`controlplane.store.tally`) when it is
trusted; the others are counted.

* **one query** — the spec's filters and the created-time range with the default order, or
  one status with ``worker`` or any order: a ``count`` and a ``find`` sorted on an index;
* **one query per status** — several statuses, ``sort=status``, or ``worker`` or a
  started/runtime order without one status (their indexes begin with the status: one index
  less for every document write to keep up): the per-status totals add up, pages of
  ``sort=status`` are cut from the groups in order, and other orders merge the groups' first
  ``skip + size`` tasks (past :data:`MERGE_LIMIT`, one ``$in`` query where the newest-first
  index serves it, else a 400 past :data:`DEPTH_LIMIT`);
* **a search** (``q``) — a case-insensitive prefix of the name or the target.  The spellings
  of the prefix that occur in the data are found with a few index seeks (a loose index scan),
  then each spelling is an exact index range: totals are the ranges' counts less the tasks
  found through both fields (index-only counts), pages merge the ranges' first tasks.  The
  other filters are written ``$in`` there, which the embedded server checks per document
  instead of choosing their index over the range.  Reading a range's tasks in order costs a
  document read each (12 µs), so a page of a search that matches many tasks, newest or oldest
  first, is instead read from the newest-first index and checked here, when that reads fewer
  tasks (the expected number is known from the counts; :data:`SCAN_ROWS` at most).

Everything is plain MongoDB, and gives the same answers on mongod.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from controlplane.core.documents import TaskFilter
from controlplane.core.errors import InvalidParam
from controlplane.core.merge import STATUSES
from controlplane.store import tally

MERGE_LIMIT = 200
"""``skip + size`` up to which the pages of several statuses are merged from their first tasks."""
DEPTH_LIMIT = 2_000
"""``skip + size`` a per-status plan without a one-query form can be paged to."""
SEARCH_LIMIT = 10_000
"""``skip + size`` a search can be paged to (its pages merge the first tasks of each spelling)."""
MAX_SPELLINGS = 4
"""Spellings of a search prefix (per field) that may occur in the data: as typed, lower, ..."""
MAX_SEEKS = 24
SEARCH_FIELDS = ("name", "target")
SEEK_BATCH = 4
SCAN_ROWS = 2_000
"""Most tasks a search page reads from the newest-first index (else it reads its ranges)."""
SCAN_COST = 8
"""A task read in order and checked here costs about this many tasks of a range read and sorted."""


class Reader(Protocol):
    """What the plans need of the store (:class:`controlplane.store.asynctasks.AsyncTaskStore`)."""

    async def count(self, query: Mapping[str, Any]) -> int:
        """Exact number of tasks matching ``query``."""

    async def find_page(
        self,
        query: Mapping[str, Any],
        order: Sequence[tuple[str, int]],
        skip: int,
        limit: int,
        projection: Mapping[str, Any] = ...,
    ) -> list[dict[str, Any]]:
        """Tasks matching ``query`` in ``order``."""

    async def values_from(self, field: str, value: str, limit: int) -> list[str]:
        """The ``limit`` smallest string values of ``field`` at least ``value``, ascending."""

    async def by_ids(self, ids: Sequence[Any]) -> dict[Any, dict[str, Any]]:
        """List views by ``_id``."""

    async def total_tasks(self) -> int:
        """About how many tasks there are (for plans; may be a minute old)."""

    async def tally_cells(self) -> dict[str, Any] | None:
        """The tally's cells when they can be read as totals, else None (:mod:`controlplane.store.tally`)."""


async def run(store: Reader, flt: TaskFilter, skip: int, size: int) -> tuple[int, list[dict[str, Any]]]:
    """``(total, page)`` for ``flt``, the page being ``size`` tasks after ``skip``."""
    if flt.q is not None:
        return await _search(store, flt, flt.q, skip, size)
    if _per_status(flt):
        return await _by_status(store, flt, skip, size)
    query = flt.query()
    total, docs = await asyncio.gather(
        _total(store, flt, query), store.find_page(query, flt.order(), skip, size)
    )
    return total, docs


# -- totals -----------------------------------------------------------------------------


def _tallied(flt: TaskFilter) -> bool:
    """Whether the tally holds ``flt``'s total: only status, task type and worker are asked."""
    return (
        flt.celery_id is None and flt.created_after is None and flt.created_before is None and flt.q is None
    )


async def _status_counts(store: Reader, flt: TaskFilter, statuses: Sequence[str]) -> list[int]:
    """Tasks matching ``flt`` in each of ``statuses``: from the tally where it holds them, else counted."""
    cells = await store.tally_cells() if _tallied(flt) else None
    if cells is not None:
        found = tally.by_status(cells, flt.task_type, flt.worker, statuses)
        return [found[s] for s in statuses]
    return list(await asyncio.gather(*(store.count(flt.query(status=s)) for s in statuses)))


async def _total(store: Reader, flt: TaskFilter, query: Mapping[str, Any]) -> int:
    """``flt``'s exact total: summed from the tally where it holds it, else counted."""
    cells = await store.tally_cells() if _tallied(flt) else None
    if cells is None:
        return await store.count(query)
    return tally.matching(cells, flt.task_type, flt.worker, flt.statuses or None)


# -- several statuses -------------------------------------------------------------------


def _per_status(flt: TaskFilter) -> bool:
    """Whether the indexes serve ``flt`` only one status at a time."""
    if len(flt.statuses) > 1 or flt.sort == "status":
        return True
    by_status = flt.worker is not None or flt.sort.lstrip("-") in ("started", "runtime")
    return not flt.statuses and by_status


async def _by_status(
    store: Reader, flt: TaskFilter, skip: int, size: int
) -> tuple[int, list[dict[str, Any]]]:
    statuses = flt.statuses or tuple(sorted(STATUSES))
    queries = [flt.query(status=s) for s in statuses]
    counts = await _status_counts(store, flt, statuses)
    total = sum(counts)
    if flt.sort == "status":
        # Groups in the order's status order, each newest first: cut the page from them.
        docs: list[dict[str, Any]] = []
        newest = (("created_time", -1),)
        for query, count in zip(queries, counts, strict=True):
            if len(docs) >= size:
                break
            if skip >= count:
                skip -= count
                continue
            docs += await store.find_page(query, newest, skip, min(size - len(docs), count - skip))
            skip = 0
        return total, docs
    order = flt.order()
    if skip + size > MERGE_LIMIT:
        if order[0][0] == "created_time" and flt.worker is None:
            return total, await store.find_page(flt.query(), order, skip, size)
        if skip + size > DEPTH_LIMIT:
            raise InvalidParam(
                "page", f"this filter and order can be paged through its first {DEPTH_LIMIT} tasks; narrow it"
            )
    firsts = await asyncio.gather(
        *(
            store.find_page(q, order, 0, min(skip + size, n), _keys(order))
            for q, n in zip(queries, counts, strict=True)
        )
    )
    return total, await _page(store, merge(firsts, order)[skip : skip + size])


# -- search -----------------------------------------------------------------------------


async def _search(
    store: Reader, flt: TaskFilter, q: str, skip: int, size: int
) -> tuple[int, list[dict[str, Any]]]:
    if skip + size > SEARCH_LIMIT:
        raise InvalidParam("page", f"a search can be paged through its first {SEARCH_LIMIT} tasks; narrow it")
    found = await asyncio.gather(*(spellings(store, field, q) for field in SEARCH_FIELDS))
    names, targets = found
    base = _unindexed(flt.query())
    ranges = [(f, s) for f, forms in zip(SEARCH_FIELDS, found, strict=True) for s in forms]
    if not ranges:
        return 0, []
    both = [{**base, "name": prefix_range(n), "target": prefix_range(t)} for n in names for t in targets]
    queries = [{**base, field: prefix_range(s)} for field, s in ranges]
    order = flt.order()
    counts = await asyncio.gather(*(store.count(query) for query in [*queries, *both]))
    in_ranges = sum(counts[: len(queries)])
    total = in_ranges - sum(counts[len(queries) :])
    if total == 0 or skip >= total:
        return total, []
    if len(order) == 1:  # newest or oldest first: maybe read in order and check here
        rows = -(-(skip + size) * max(await store.total_tasks(), total) * 2 // total)
        if rows <= SCAN_ROWS and rows * SCAN_COST < in_ranges:
            docs = await store.find_page(flt.query(), order, 0, rows)
            choices = _choices(q)
            hits = [d for d in docs if any(_spells(choices, d.get(f)) for f in SEARCH_FIELDS)]
            if len(hits) >= skip + size or len(docs) < rows:
                return total, hits[skip : skip + size]
    firsts = await asyncio.gather(
        *(store.find_page(query, order, 0, skip + size, _keys(order)) for query in queries)
    )
    return total, await _page(store, merge(firsts, order)[skip : skip + size])


def _unindexed(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` with equalities as one-value ``$in``: the same match, which the embedded server
    checks per document rather than picking its index over the search's range."""
    return {k: {"$in": [v["$eq"]]} if isinstance(v, dict) and "$eq" in v else v for k, v in query.items()}


def _choices(q: str) -> list[list[str]]:
    """Per character of ``q``, its spellings in ascending order (one for an uncased character)."""
    out = []
    for c in q:
        options = {c} | {v for v in (c.lower(), c.upper()) if len(v) == 1}
        out.append(sorted(options))
    return out


def _spells(choices: list[list[str]], text: Any) -> bool:
    """Whether ``text`` starts with a spelling of the search."""
    if not isinstance(text, str) or len(text) < len(choices):
        return False
    return all(text[i] in choices[i] for i in range(len(choices)))


def spelling_after(choices: list[list[str]], text: str) -> str | None:
    """The smallest spelling of the search (one character of ``choices`` a position) greater than
    ``text`` as strings, or None: where a loose index scan seeks next."""
    n = len(choices)
    fits = 0
    while fits < min(n, len(text)) and text[fits] in choices[fits]:
        fits += 1
    if fits == len(text) and fits < n:
        # ``text`` is a proper prefix of spellings: the smallest of those is greater.
        return text + "".join(c[0] for c in choices[fits:])
    for i in range(min(fits, n - 1), -1, -1):
        larger = [c for c in choices[i] if c > text[i]] if i < len(text) else choices[i]
        if larger:
            return text[:i] + larger[0] + "".join(c[0] for c in choices[i + 1 :])
    return None


async def spellings(store: Reader, field: str, q: str) -> list[str]:
    """The spellings of prefix ``q`` (case aside) that begin some value of ``field``, by index seeks."""
    choices = _choices(q)
    found: list[str] = []
    seek: str | None = "".join(c[0] for c in choices)
    for _ in range(MAX_SEEKS):
        if seek is None:
            return found
        values = await store.values_from(field, seek, SEEK_BATCH)
        for value in values:
            if seek is None or value < seek:
                continue  # passed over by a seek made from this batch already
            if _spells(choices, value):
                found.append(value[: len(choices)])
                if len(found) > MAX_SPELLINGS:
                    break
                seek = spelling_after(choices, found[-1])
            else:
                seek = spelling_after(choices, value)
        if len(found) > MAX_SPELLINGS:
            break
        if len(values) < SEEK_BATCH:
            return found
    raise InvalidParam("q", "is spelt in too many ways in the tasks' names or targets; type more of it")


def prefix_range(prefix: str) -> dict[str, str]:
    """The strings that start with ``prefix``, as an index range."""
    last = prefix.rstrip("\U0010ffff")
    if not last:
        return {"$gte": prefix}
    after = ord(last[-1]) + 1
    if 0xD800 <= after <= 0xDFFF:  # surrogates are no characters: the next one is U+E000
        after = 0xE000
    return {"$gte": prefix, "$lt": last[:-1] + chr(after)}


# -- merging ordered lists --------------------------------------------------------------


def _rank(value: Any) -> tuple[int, Any]:
    """A value's place in MongoDB's (and SQLite's) order: missing/null, numbers, strings, others."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (3, str(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, str(value))


def _field(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def merge(
    lists: Sequence[Sequence[dict[str, Any]]], order: Sequence[tuple[str, int]]
) -> list[dict[str, Any]]:
    """The tasks of ``lists`` (each in ``order``) in ``order``, each once."""

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for path, way in order:
            x, y = _rank(_field(a, path)), _rank(_field(b, path))
            if x != y:
                return way if x > y else -way
        return 0

    seen: set[Any] = set()
    unique = []
    for docs in lists:
        for doc in docs:
            if doc["_id"] not in seen:
                seen.add(doc["_id"])
                unique.append(doc)
    return sorted(unique, key=functools.cmp_to_key(compare))


def _keys(order: Sequence[tuple[str, int]]) -> dict[str, int]:
    """The projection a merge needs: the order's fields (and ``_id``); a nested field by its top
    field (the embedded server projects only top fields)."""
    return {path.split(".")[0]: 1 for path, _ in order}


async def _page(store: Reader, merged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The list views of a merged page's tasks, in its order (one query by ``_id``)."""
    if not merged:
        return []  # (``_id: {$in: []}`` is a scan of every task on the embedded server)
    found = await store.by_ids([d["_id"] for d in merged])
    return [found[d["_id"]] for d in merged if d["_id"] in found]
