"""The API's asynchronous view of the task collections (reads, lists, revoke requests, schedules).

The same collections, ``_id`` rule and error translation as :class:`controlplane.store.tasks.TaskStore`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    ReturnDocument,
)
from pymongo.errors import OperationFailure

from controlplane.config import MongoConfig
from controlplane.core.cron import next_fire
from controlplane.core.documents import TaskFilter
from controlplane.store import listing, tally
from controlplane.store.errors import TranslatesErrors
from controlplane.store.schedules import ScheduleStore
from controlplane.store.tasks import (
    _LIST_PROJECTION,
    _REV,
    COUNTERS,
    TASKS,
    WORKERS,
    _client_kwargs,
    task_oid,
)


class AsyncTaskStore(TranslatesErrors):
    """The API's asynchronous view of the task collections."""

    def __init__(self, config: MongoConfig) -> None:
        self.config = config
        self.client: AsyncMongoClient[Any] = AsyncMongoClient(config.url, **_client_kwargs(config))
        self.db = self.client[config.database]
        self.tasks = self.db[TASKS]
        self._total: tuple[int, float] | None = None  # (tasks, when counted): total_tasks
        self.schedules = ScheduleStore(self.db)

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()

    async def ping(self) -> None:
        """Raise a StoreError unless the server answers."""
        await self.client.admin.command("ping")

    async def next_revisions(self, count: int) -> int:
        """Reserve ``count`` revisions (see :meth:`TaskStore.next_revisions`)."""
        counters = self.db[COUNTERS]
        inc = {"$inc": {"value": count}}
        doc = await counters.find_one_and_update(_REV, inc, return_document=ReturnDocument.AFTER)
        if doc is None:
            doc = await counters.find_one_and_update(
                _REV, inc, upsert=True, return_document=ReturnDocument.AFTER
            )
        if doc is None:
            raise RuntimeError("revision counter upsert returned nothing")
        return int(doc["value"]) - count + 1

    async def _find(self, celery_id: str, projection: Mapping[str, Any]) -> dict[str, Any] | None:
        """One task's document by its derived ``_id``, else by ``celery_id`` (older documents)."""
        doc = await self.tasks.find_one({"_id": task_oid(celery_id)}, projection)
        return doc or await self.tasks.find_one({"celery_id": celery_id}, projection)

    async def get(self, celery_id: str) -> dict[str, Any] | None:
        """One task document, or None."""
        return await self._find(celery_id, {"_m": 0})

    async def find_task(self, reference: str) -> dict[str, Any] | None:
        """A task by its celery_id or by its document id (``task_id``), or None."""
        if ObjectId.is_valid(reference) and len(reference) == 24:
            return await self.tasks.find_one({"_id": ObjectId(reference)}, {"_m": 0, "data": 0})
        return await self.get(reference)

    async def get_many(self, celery_ids: list[str], older: bool = True) -> dict[str, dict[str, Any]]:
        """Documents by celery_id (missing ids are absent from the result).

        One query by derived ``_id`` (the embedded server scans the collection for ``$in``
        on other fields); then, with ``older``, one indexed lookup for each id not found
        that way (documents written with another ``_id``) — not for ids a client made up.
        """
        cursor = self.tasks.find({"_id": {"$in": [task_oid(c) for c in celery_ids]}}, {"_m": 0, "data": 0})
        found = {d["celery_id"]: d async for d in cursor}
        missing = [cid for cid in celery_ids if cid not in found] if older else []
        docs = await asyncio.gather(
            *(self.tasks.find_one({"celery_id": cid}, {"_m": 0, "data": 0}) for cid in missing)
        )
        found.update({d["celery_id"]: d for d in docs if d is not None})
        return found

    async def listing(self, flt: TaskFilter, page: int, size: int) -> tuple[int, list[dict[str, Any]]]:
        """The exact total for the filter and one page of it, in the filter's order.

        Only index-served queries are sent (see :mod:`controlplane.store.listing` for the
        plans): one query, one per status, or one per spelling of a search's prefix; totals of
        status, task type and worker alone come from the tally (:meth:`tally_cells`).
        (The API answers a spec-only celery_id filter with one lookup instead:
        :meth:`controlplane.service.manager.TaskManager.list_tasks`.)
        """
        return await listing.run(self, flt, (page - 1) * size, size)

    async def count(self, query: Mapping[str, Any]) -> int:
        """Exact number of tasks matching ``query`` (the ``count`` command).

        The embedded server answers it with one SQL ``COUNT`` on the index; an aggregation
        costs it a count of the whole collection first (60 ms at 1M tasks).
        """
        reply = await self.db.command({"count": TASKS, "query": dict(query)})
        return int(reply["n"])

    async def find_page(
        self,
        query: Mapping[str, Any],
        order: Sequence[tuple[str, int]],
        skip: int,
        limit: int,
        projection: Mapping[str, Any] = _LIST_PROJECTION,
    ) -> list[dict[str, Any]]:
        """``limit`` tasks matching ``query`` after ``skip``, in ``order`` (one SQL query on the embedded
        server: no aggregation, whose planning counts the whole collection first)."""
        if limit <= 0:
            return []
        found = self.tasks.find(dict(query), dict(projection)).sort(list(order)).skip(skip).limit(limit)
        return [d async for d in found]

    async def values_from(self, field: str, value: str, limit: int) -> list[str]:
        """The ``limit`` smallest string values of ``field`` that are at least ``value`` (index seeks)."""
        found = self.tasks.find({field: {"$gte": value}}, {field: 1}).sort([(field, ASCENDING)]).limit(limit)
        return [d[field] async for d in found if isinstance(d.get(field), str)]

    async def total_tasks(self) -> int:
        """How many tasks there are, counted at most once a minute (a plan's estimate)."""
        now = time.monotonic()
        if self._total is None or now - self._total[1] > 60.0:
            self._total = (await self.count({}), now)
        return self._total[0]

    async def by_ids(self, ids: Sequence[Any]) -> dict[Any, dict[str, Any]]:
        """List views of tasks by document ``_id`` (one primary-key query)."""
        cursor = self.tasks.find({"_id": {"$in": list(ids)}}, _LIST_PROJECTION)
        return {d["_id"]: d async for d in cursor}

    async def results(
        self, task_id: str, kind: str, page: int, size: int, where: Mapping[str, list[str]] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of a task's results of one kind (oldest first) and their exact total.

        ``where`` keeps the results whose field is one of the given values (plain strings).
        """
        query: dict[str, Any] = {"task_id": {"$eq": task_id}}
        for name, values in (where or {}).items():
            query[name] = {"$in": [str(v) for v in values]}
        total = int((await self.db.command({"count": kind, "query": query}))["n"])
        found = self.db[kind].find(query).sort("_id", ASCENDING).skip((page - 1) * size).limit(size)
        items = []
        async for doc in found:
            doc["_id"] = str(doc["_id"])
            items.append(doc)
        return total, items

    async def count_results(self, task_id: str, kind: str) -> int:
        """How many results of one kind a task has."""
        reply = await self.db.command({"count": kind, "query": {"task_id": {"$eq": task_id}}})
        return int(reply["n"])

    async def iter_results(
        self, task_id: str, kind: str, batch: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every result of one kind of a task, oldest first, in batches of ``batch`` (one cursor)."""
        cursor = self.db[kind].find({"task_id": {"$eq": task_id}}).sort("_id", ASCENDING).batch_size(batch)
        chunk: list[dict[str, Any]] = []
        async for doc in cursor:
            doc["_id"] = str(doc["_id"])
            chunk.append(doc)
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def insert_schedule(
        self, task_type: str, data: dict[str, Any], schedule: dict[str, Any], first_run: str
    ) -> str:
        """Store a schedule whose first run (``first_run``, a celery_id) the caller submits now
        (see :class:`controlplane.store.schedules.ScheduleStore`, ``self.schedules``)."""
        next_run = next_fire(schedule, time.time())
        return await self.schedules.insert(task_type, data, schedule, first_run, next_run)

    async def request_revoke(self, celery_ids: list[str], terminate: bool) -> list[dict[str, Any]]:
        """Persist a revoke request; workers check it before starting a task.

        Each document gets a new revision (never a lower one than it has);
        returns the documents as written, for the live feed.
        """
        request = {"time": time.time(), "terminate": terminate}
        written: list[dict[str, Any]] = []
        pending = list(celery_ids)
        for _ in range(5):
            if not pending:
                break
            first = await self.next_revisions(len(pending))
            retry = []
            for i, cid in enumerate(pending):
                found = await self.tasks.find_one({"celery_id": cid}, {"_id": 1})
                if found is None:
                    continue
                doc = await self.tasks.find_one_and_update(
                    {"_id": found["_id"], "rev": {"$lt": first + i}},
                    {"$set": {"revoke": request, "rev": first + i}},
                    projection={"_m": 0},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is not None:
                    written.append(doc)
                else:
                    retry.append(cid)
            pending = retry
        return written

    async def changed_since(
        self, since: int, upto: int, query: Mapping[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        """Documents whose revision is in ``(since, upto]`` and that match ``query``, oldest first."""
        cursor = (
            self.tasks.find({**query, "rev": {"$gt": since, "$lte": upto}}, {"_m": 0})
            .sort([("rev", ASCENDING)])
            .limit(limit)
        )
        return [d async for d in cursor]

    async def count_by_type_and_status(self) -> dict[tuple[str, str], int]:
        """``{(task_type, status): n}`` in one aggregation over the task collection."""
        # A compound ``_id`` of field paths is standard, but the embedded server groups only on
        # scalars; ``$concat`` works on both (a missing field makes the key null: "unknown").
        pipeline = [{"$group": {"_id": {"$concat": ["$task_type", "|", "$status"]}, "n": {"$sum": 1}}}]
        cursor = await self.tasks.aggregate(pipeline)
        out: dict[tuple[str, str], int] = {}
        async for row in cursor:
            task_type, _, status = str(row.get("_id") or "unknown|unknown").rpartition("|")
            key = (task_type[:64] or "unknown", status[:16] or "unknown")
            out[key] = out.get(key, 0) + int(row["n"])
        return out

    async def workers(self) -> list[dict[str, Any]]:
        """Every worker the consumer has seen: whether it is online and its last heartbeat."""
        return list(
            await self.db[WORKERS].find({}, {"_id": 0, "online": 1, "last_heartbeat": 1}).to_list(None)
        )

    async def max_revision(self) -> int:
        """The highest revision any task document carries (0 when there are none)."""
        doc = await self.tasks.find_one({"rev": {"$gt": 0}}, {"rev": 1}, sort=[("rev", DESCENDING)])
        return int(doc["rev"]) if doc else 0

    async def delete(self, celery_id: str) -> None:
        """Remove a task document (only for a submission that never reached the broker).

        Conditioned on the revision read, and uncounted in the tally like
        :meth:`controlplane.store.tasks.TaskStore.delete_new` (a StoreError while the
        insert's tally entry is still open: the caller retries).
        """
        found = await self._find(celery_id, {"_id": 1, "rev": 1, "_c": 1, "_j": 1})
        if found is None:
            return
        counters = self.db[COUNTERS]
        open_now = set(((await counters.find_one(tally.TALLY, {"since": 1})) or {}).get("since") or {})
        if set(found.get("_j") or ()) & open_now:
            raise OperationFailure("the task's count entry is still open; delete it again later")
        item: tally.Item = [found["_id"], found.get("rev"), found.get("_c"), None]
        entry = tally.new_entry()
        if item[2] is not None:
            update = tally.open_update(entry, [item], tally.now())
            await counters.update_one(tally.TALLY, update, upsert=True)
        deleted = await self.tasks.delete_one({"_id": found["_id"], "rev": found.get("rev")})
        if item[2] is not None:
            landed = [item] if deleted.deleted_count else []
            await counters.update_one(tally.close_filter(entry), tally.close_update(entry, landed))

    async def tally_cells(self) -> dict[str, Any] | None:
        """The tally's cells (:mod:`controlplane.store.tally`) when they can be read as totals: no
        entry open too long and no task document it does not count; else None (count instead).

        Writes of entries still open are added where they landed, when they are few (a quiet
        system: the total is exact the moment a write lands); a loaded system's in-flight
        batches show when their writers close them.
        """
        counters = self.db[COUNTERS]
        for _ in range(3):
            doc, uncounted = await asyncio.gather(
                counters.find_one(tally.TALLY, {"cells": 1, "since": 1, "size": 1}),
                self.tasks.find_one({"_c": {"$eq": None}}, {"_id": 1}),
            )
            if uncounted is not None or doc is None or not tally.trusted(doc, tally.now()):
                return None
            cells = dict(doc.get("cells") or {})
            since = set(doc.get("since") or {})
            sizes = (doc.get("size") or {}).values()
            if not since or sum(int(n) for n in sizes) > tally.ADJUST_LIMIT:
                return cells
            entries: dict[str, list[tally.Item]] = (
                (await counters.find_one(tally.TALLY, {"open": 1})) or {}
            ).get("open") or {}
            if not since <= set(entries):
                continue  # one closed meanwhile: its deltas are in the cells now
            items = [(entry, item) for entry in since for item in entries[entry]]
            ids = list({item[0] for _, item in items})
            found = {d["_id"]: d async for d in self.tasks.find({"_id": {"$in": ids}}, {"rev": 1, "_j": 1})}
            after = await counters.find_one(tally.TALLY, {"since": 1})
            if since <= set((after or {}).get("since") or {}):  # none closed meanwhile
                return tally.with_landed(cells, [i for e, i in items if tally.landed(e, i, found)])
        return None
