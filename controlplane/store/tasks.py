"""The task store: the only module that speaks MongoDB for task documents.

Two faces over the same collections:

* :class:`TaskStore` (blocking pymongo) — used by the event consumer, the
  workers and, through an executor, by the API for the few writes that go
  through the event merge.  :meth:`TaskStore.apply_events` is the single
  write path for event-derived state: read the documents of a batch, fold the
  events in with :func:`controlplane.core.merge.merge`, and write back only what
  changed, conditioned on the revision read (optimistic concurrency, retried).
* :class:`AsyncTaskStore` (pymongo's asyncio client) — the API's reads,
  task creation and revoke flags.

Only features of a single-node MongoDB are used: no transactions, no change
streams.  Every write that moves a task between (status, task type, worker)
cells also keeps the tally, the exact counts behind the list's broad totals
(:mod:`controlplane.store.tally`: ``_c`` and ``_j`` on each document, a journal
entry opened before and closed after the write).  Queries stick to forms the embedded server
and mongod answer identically (equality, ``$in``, ``$nin``, ``$gt`` on a
present field); ``$ne: null`` and ``$exists`` are avoided because the embedded
server treats missing fields differently from mongod there.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, cast

from bson import ObjectId
from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteOne,
    MongoClient,
    ReplaceOne,
    ReturnDocument,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from controlplane.config import MongoConfig
from controlplane.core.documents import TaskDocument, TaskFilter
from controlplane.core.merge import NON_TERMINAL, PENDING, STARTED, TASK_EVENT_TYPES, fold, status_of
from controlplane.core.messages import fields_of_message
from controlplane.store import tally
from controlplane.store.recent import RecentTasks
from controlplane.store.results import DUPLICATE_KEY
from controlplane.store.tallywriter import COUNTERS, TallyWriter

log = logging.getLogger(__name__)

TASKS = "tasks"
_REV = {"_id": "rev"}  # the revision counter's document
WORKERS = "workers"
LEASES = "leases"
SCHEDULES = "schedules"

# Fields the API owns; the merge never writes them.
_HIDDEN = {"_m"}
_LIST_PROJECTION = {"_m": 0, "data": 0, "outcome": 0, "_c": 0, "_j": 0}


INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    ([("celery_id", ASCENDING)], {"unique": True, "name": "celery_id_unique"}),
    ([("created_time", DESCENDING)], {"name": "newest"}),
    ([("status", ASCENDING), ("created_time", DESCENDING)], {"name": "status_newest"}),
    ([("task_type", ASCENDING), ("created_time", DESCENDING)], {"name": "type_newest"}),
    (
        [("status", ASCENDING), ("task_type", ASCENDING), ("created_time", DESCENDING)],
        {"name": "status_type_newest"},
    ),
    ([("rev", ASCENDING)], {"name": "rev"}),
    # The list's worker filter and its started and runtime orders, per status: a query without
    # a status asks each status in turn (controlplane.store.listing); and its search (q), name
    # and target prefixes.  Every index costs each document write (the consumer's), so few.
    (
        [("status", ASCENDING), ("worker", ASCENDING), ("created_time", DESCENDING)],
        {"name": "status_worker_newest"},
    ),
    (
        [("status", ASCENDING), ("start_time", DESCENDING), ("created_time", DESCENDING)],
        {"name": "status_started"},
    ),
    (
        [("status", ASCENDING), ("outcome.runtime", DESCENDING), ("created_time", DESCENDING)],
        {"name": "status_runtime"},
    ),
    ([("name", ASCENDING), ("target", ASCENDING)], {"name": "name_target"}),
    ([("target", ASCENDING)], {"name": "target"}),
    # Documents the tally does not count yet (``_c`` missing): while there are any, totals are counted.
    ([("_c", ASCENDING)], {"name": "tally_cell"}),
]


def _client_kwargs(config: MongoConfig) -> dict[str, Any]:
    return {
        "serverSelectionTimeoutMS": config.timeout_ms,
        "connectTimeoutMS": config.timeout_ms,
        "socketTimeoutMS": max(config.timeout_ms * 4, 10_000),
        "tz_aware": False,
        "retryWrites": False,
    }


def task_oid(celery_id: str) -> ObjectId:
    """The document id of a task, derived from its celery_id (12 bytes of BLAKE2b).

    Anyone holding a celery_id can address the document by ``_id``: the consumer
    reads a whole batch with one ``_id $in`` query, which the embedded server
    answers from its primary key, whereas ``$in`` (or an update) on any other
    field makes it scan the collection.
    """
    return ObjectId(hashlib.blake2b(celery_id.encode("utf-8"), digest_size=12).digest())


def new_task_document(
    *,
    celery_id: str,
    task_type: str,
    data: Mapping[str, Any],
    created_time: float,
    rev: int,
) -> TaskDocument:
    """A PENDING task document as written before its message is published."""
    return {
        "_id": task_oid(celery_id),
        "celery_id": celery_id,
        "task_type": task_type,
        "name": data.get("name"),
        "target": data.get("target"),
        "type": data.get("type"),
        "task_tag": data.get("task_tag"),
        "options": data.get("options") or {},
        "data": dict(data),
        "status": PENDING,
        "created_time": created_time,
        "start_time": None,
        "end_time": None,
        "rev": rev,
        "_m": {},
    }


def _foreign_document(celery_id: str, events: list[Mapping[str, Any]]) -> TaskDocument:
    """A document for a task first seen through its events (another producer sent it)."""
    name = next((e.get("name") for e in events if e.get("name")), None)
    task_type = "external"
    if isinstance(name, str) and name.startswith("controlplane."):
        task_type = name.split(".", 1)[1]
    stamps = [float(e["timestamp"]) for e in events if isinstance(e.get("timestamp"), int | float)]
    said = next((f for f in (fields_of_message(e.get("kwargs")) for e in events) if f), {})
    doc: TaskDocument = {
        "_id": task_oid(celery_id),
        "celery_id": celery_id,
        "task_type": task_type,
        "name": said.get("name", name),
        "target": said.get("target"),
        "type": said.get("type"),
        "task_tag": said.get("task_tag"),
        "options": said.get("options", {}),
        "status": PENDING,
        "created_time": min(stamps) if stamps else time.time(),
        "start_time": None,
        "end_time": None,
        "rev": 0,
        "_m": {},
    }
    if "data" in said:
        doc["data"] = said["data"]
    return doc


def _group(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        cid = event.get("uuid")
        if event.get("type") in TASK_EVENT_TYPES and isinstance(cid, str) and cid:
            by_id[cid].append(event)
    return by_id


class TaskStore(TallyWriter):
    """Blocking access to the task collections (consumer, workers, executor writes)."""

    def __init__(
        self,
        config: MongoConfig,
        client: MongoClient[Any] | None = None,
        recent: RecentTasks | None = None,
    ) -> None:
        self.config = config
        self.client: MongoClient[Any] = client or MongoClient(config.url, **_client_kwargs(config))
        self.db = self.client[config.database]
        self.tasks = self.db[TASKS]
        # The consumer's memory of what it wrote last (off unless given; see controlplane.store.recent).
        self.recent = recent if recent is not None else RecentTasks(0)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def ping(self) -> None:
        """Raise a StoreError unless the server answers."""
        self.client.admin.command("ping")

    def ensure_indexes(self) -> None:
        """Create every index the queries rely on (idempotent)."""
        for keys, opts in INDEXES:
            self.tasks.create_index(keys, **opts)
        self.db[WORKERS].create_index("hostname", unique=True)

    def next_revisions(self, count: int) -> int:
        """Reserve ``count`` revisions; returns the first (revisions are global and monotonic).

        The counter is created by the first reservation; after that the update
        goes without ``upsert``, which the embedded server answers faster.
        """
        counters = self.db[COUNTERS]
        inc = {"$inc": {"value": count}}
        doc = counters.find_one_and_update(_REV, inc, return_document=ReturnDocument.AFTER)
        if doc is None:
            doc = counters.find_one_and_update(_REV, inc, upsert=True, return_document=ReturnDocument.AFTER)
        if doc is None:
            raise RuntimeError("revision counter upsert returned nothing")
        return int(doc["value"]) - count + 1

    def apply_events(self, events: Iterable[Mapping[str, Any]], attempts: int = 8) -> list[dict[str, Any]]:
        """Fold a batch of Celery events into their task documents.

        Returns the documents that changed, as written.  Safe to call again with
        the same events (idempotent), and concurrent writers are detected by the
        revision check and merged again.
        """
        pending = _group(events)
        changed: list[dict[str, Any]] = []
        for attempt in range(attempts):
            if not pending:
                break
            pending, written = self._apply_once(pending, by_key_only=attempt == 0)
            changed.extend(written)
        if pending:
            raise RuntimeError(f"could not apply events for {len(pending)} tasks after {attempts} attempts")
        return changed

    def insert_new(self, docs: Sequence[Mapping[str, Any]]) -> dict[int, DuplicateKeyError]:
        """Insert new task documents in one round trip; returns ``{index: error}`` of duplicates.

        Any other write error raises (a duplicate celery_id is the one failure
        that is the caller's, not the database's).  The documents are counted in the
        tally (:mod:`controlplane.store.tally`): they get ``_c`` and ``_j`` here.
        """
        if not docs:
            return {}
        items: list[tally.Item] = [[d["_id"], None, None, tally.cell(d)] for d in docs]
        entry, _open = self._open_entry(items)
        for doc, item in zip(docs, items, strict=True):
            # Given to the caller's documents, as ``insert_many`` gives them their ``_id``.
            cast(MutableMapping[str, Any], doc).update(_c=item[3], _j=[entry])
        duplicates = self._insert(docs)
        try:
            self._close_entry(entry, [item for i, item in enumerate(items) if i not in duplicates])
        except PyMongoError as exc:
            # The tasks are stored and must be published: the entry stays open until it is
            # repaired (its writes are judged by the documents), and the list counts meanwhile.
            log.warning("list counters not updated for %d new task(s), repaired later: %s", len(docs), exc)
        return duplicates

    def _insert(self, docs: Sequence[Mapping[str, Any]]) -> dict[int, DuplicateKeyError]:
        """``insert_many`` of new documents; ``{index: error}`` of duplicates, any other error raises."""
        if not docs:
            return {}
        try:
            self.tasks.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {
                int(e["index"]): DuplicateKeyError(str(e.get("errmsg", "duplicate key")), DUPLICATE_KEY, e)
                for e in errors
            }
        return {}

    def delete_new(self, celery_ids: list[str]) -> None:
        """Delete the documents of tasks that were stored but never published (by ``_id``).

        Each delete is conditioned on the revision read and uncounts the task in the tally.  A
        document whose insert's tally entry is still open (its writer failed midway) is kept
        until that entry is repaired: this raises a StoreError and the caller retries.
        """
        self.recent.forget(celery_ids)
        if not celery_ids:
            return
        found = list(
            self.tasks.find({"_id": {"$in": [task_oid(c) for c in celery_ids]}}, {"rev": 1, "_c": 1, "_j": 1})
        )
        if not found:
            return
        self.repair_tally()
        still_open = set((self.db[COUNTERS].find_one(tally.TALLY, {"since": 1}) or {}).get("since") or {})
        if any(set(d.get("_j") or ()) & still_open for d in found):
            raise OperationFailure("a task's count entry is still open; delete it again later")
        items: list[tally.Item] = [[d["_id"], d.get("rev"), d.get("_c"), None] for d in found]
        counted = [i for i in items if i[2] is not None]
        entry = self._open_entry(counted)[0] if counted else None
        self.tasks.bulk_write([DeleteOne({"_id": i[0], "rev": i[1]}) for i in items], ordered=False)
        if entry is not None:
            ids = [i[0] for i in counted]
            left = {d["_id"] for d in self.tasks.find({"_id": {"$in": ids}}, {"_id": 1})}
            self._close_entry(entry, [i for i in counted if i[0] not in left])

    def _apply_once(
        self, by_id: dict[str, list[Mapping[str, Any]]], by_key_only: bool
    ) -> tuple[dict[str, list[Mapping[str, Any]]], list[dict[str, Any]]]:
        # First attempt: start from what this store wrote last where it remembers it (a
        # stale guess fails the conditional write below and is read on the next attempt).
        current = self.recent.take(by_id) if by_key_only else {}
        if len(current) < len(by_id):
            current.update(self._read([c for c in by_id if c not in current], by_key_only))
        inserts: list[dict[str, Any]] = []
        updates: list[tuple[str, int, dict[str, Any]]] = []  # (celery_id, revision read, merged)
        for cid, evs in by_id.items():
            old = current.get(cid)
            if old is None:
                merged = fold(evs, _foreign_document(cid, list(evs)))
                inserts.append(merged)
                continue
            merged = fold(evs, old)
            if any(k != "_id" and old.get(k) != v for k, v in merged.items()):
                updates.append((cid, int(old.get("rev") or 0), merged))
        total = len(inserts) + len(updates)
        if total == 0:
            return {}, []
        entry, items = self._count_writes(inserts, [(current[cid], merged) for cid, _r, merged in updates])
        rev = self.next_revisions(total)
        retry: dict[str, list[Mapping[str, Any]]] = {}
        written: list[dict[str, Any]] = []
        for doc in inserts:
            doc["rev"] = rev
            rev += 1
        duplicates = self._insert(inserts)  # written meanwhile by someone else: merge again
        for i, doc in enumerate(inserts):
            if i in duplicates:
                retry[doc["celery_id"]] = by_id[doc["celery_id"]]
            else:
                written.append(doc)
        if updates:
            ops = []
            for _cid, old_rev, merged in updates:
                merged["rev"] = rev
                rev += 1
                # The whole document, conditioned on the revision it was merged from: every
                # writer of a task document gives it a new revision, so a match means nothing
                # else changed it meanwhile.  By _id: the embedded server scans the collection
                # for any other filter on update, and it replaces faster than it applies $set.
                ops.append(ReplaceOne({"_id": merged["_id"], "rev": old_rev}, merged))
            result = self.tasks.bulk_write(ops, ordered=False)
            if result.matched_count == len(ops):
                written.extend(merged for _, _, merged in updates)
            else:
                wanted = {cid: merged["rev"] for cid, _, merged in updates}
                ids = [merged["_id"] for _, _, merged in updates]
                landed = {
                    d["celery_id"]
                    for d in self.tasks.find({"_id": {"$in": ids}}, {"celery_id": 1, "rev": 1})
                    if d.get("rev") == wanted[d["celery_id"]]
                }
                for cid, _, merged in updates:
                    if cid in landed:
                        written.append(merged)
                    else:
                        retry[cid] = by_id[cid]
        if entry is not None:
            done = {id(d) for d in written}
            self._close_entry(entry, [item for doc, item in items if id(doc) in done])
        self.recent.forget(retry)
        self.recent.remember(written)
        return retry, written

    def _read(self, celery_ids: list[str], by_key_only: bool = True) -> dict[str, dict[str, Any]]:
        """Documents by celery_id: one ``_id $in`` query on the derived ids (see :func:`task_oid`).

        With ``by_key_only`` false, ids not found that way are also looked up by
        ``celery_id`` (a document written with another ``_id``, e.g. by an older
        version); the apply loop does that only after an insert met a duplicate.
        """
        found = {
            d["celery_id"]: d for d in self.tasks.find({"_id": {"$in": [task_oid(c) for c in celery_ids]}})
        }
        if not by_key_only:
            for cid in celery_ids:
                if cid not in found:
                    doc = self.tasks.find_one({"celery_id": cid})
                    if doc is not None:
                        found[cid] = doc
        return found

    def restamp(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give already written documents fresh revisions (the live feed's ordering gate).

        Each update is conditioned on the revision the document was written
        with; a document that changed since (a newer revision landed) is left
        alone and dropped from the result, because its newer writer publishes
        it.  Returns the documents that now carry their new revision.
        """
        if not docs:
            return []
        self.recent.forget(d["celery_id"] for d in docs)  # their revisions change here
        first = self.next_revisions(len(docs))
        wanted: dict[str, tuple[int, dict[str, Any]]] = {}
        ops = []
        for i, doc in enumerate(sorted(docs, key=lambda d: int(d.get("rev") or 0))):
            new_rev = first + i
            key = {"_id": doc["_id"]} if "_id" in doc else {"celery_id": doc["celery_id"]}
            ops.append(UpdateOne({**key, "rev": doc.get("rev")}, {"$set": {"rev": new_rev}}))
            wanted[doc["celery_id"]] = (new_rev, doc)
        result = self.tasks.bulk_write(ops, ordered=False)
        if result.matched_count == len(ops):
            landed = set(wanted)
        else:
            found = self._read(list(wanted))
            landed = {cid for cid, d in found.items() if d.get("rev") == wanted[cid][0]}
        out = []
        for cid, (new_rev, doc) in wanted.items():
            if cid in landed:
                out.append({**doc, "rev": new_rev})
        return out

    def max_revision(self) -> int:
        """The highest revision any task document carries (0 when there are none)."""
        doc = self.tasks.find_one({"rev": {"$gt": 0}}, {"rev": 1}, sort=[("rev", DESCENDING)])
        return int(doc["rev"]) if doc else 0

    def _find(self, celery_id: str, projection: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """One task's document by its derived ``_id``, else by ``celery_id`` (older documents)."""
        return self.tasks.find_one({"_id": task_oid(celery_id)}, projection) or self.tasks.find_one(
            {"celery_id": celery_id}, projection
        )

    def get(self, celery_id: str) -> dict[str, Any] | None:
        """The whole document of one task, or None."""
        return self._find(celery_id)

    def revoke_requested(self, celery_id: str) -> bool:
        """True when a revoke of this task has been persisted (checked by workers)."""
        doc = self._find(celery_id, {"revoke": 1})
        revoke = (doc or {}).get("revoke")
        return isinstance(revoke, dict) and bool(revoke.get("time"))

    def revoked_ids(self, since: float, limit: int = 50_000) -> list[str]:
        """Ids of tasks whose revoke was requested after ``since`` (newest first)."""
        cursor = (
            self.tasks.find({"revoke.time": {"$gt": since}}, {"celery_id": 1, "_id": 0})
            .sort("created_time", DESCENDING)
            .limit(limit)
        )
        return [d["celery_id"] for d in cursor]

    # The periodic queries below run in the consumer's loop.  They are asked as aggregations:
    # the embedded server answers a filtered ``find`` in Python over every document, an
    # aggregation as one indexed SQL query (at 280k tasks: STARTED tasks 2.0 s as a find,
    # 0.1 s as an aggregation; unreceived 2.0 s vs 0.2 s).  Both are plain MongoDB.

    def _match(
        self, query: dict[str, Any], projection: dict[str, Any], limit: int = 0
    ) -> list[dict[str, Any]]:
        pipeline: list[dict[str, Any]] = [{"$match": query}]
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$project": projection})
        return list(self.tasks.aggregate(pipeline))

    def non_terminal(self, older_than: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Tasks not in a terminal status, created before ``older_than``.

        One equality query per non-terminal status: nx-27017 answers those from the
        ``status_newest`` index, but ``$nin``/``$in`` by reading every document in
        Python (350 ms at 43k tasks, growing with the collection, on the consume loop).
        """
        fields = ("celery_id", "status", "worker", "task_type", "created_time", "revoke")
        projection = dict.fromkeys(fields, 1)
        found: list[dict[str, Any]] = []
        for status in NON_TERMINAL:
            if limit and len(found) >= limit:
                break
            query = {"status": status, "created_time": {"$lt": older_than}}
            found += self._match(query, projection, limit - len(found) if limit else 0)
        return found

    def unreceived(self, older_than: float, limit: int = 1000) -> list[dict[str, Any]]:
        """PENDING tasks created before ``older_than`` that no worker has received yet."""
        found = self._match(
            {"status": PENDING, "created_time": {"$lt": older_than}},
            {"celery_id": 1, "task_type": 1, "data": 1, "resent": 1, "received_time": 1, "waiting": 1},
            limit,
        )
        return [d for d in found if d.get("received_time") is None]

    def received_by(self, hosts: Mapping[str, float | None]) -> list[str]:
        """celery_ids of PENDING tasks a worker of ``hosts`` received but did not start.

        ``hosts``: hostname → only what it received before that time (None: all).  One
        query for every host (reserved tasks are few; queued ones have no ``received_time``).
        """
        found = self._match(
            {"status": PENDING, "received_time": {"$gt": 0}},
            {"celery_id": 1, "worker": 1, "received_time": 1},
            limit=100_000,
        )
        out = []
        for d in found:
            host = d.get("worker")
            if isinstance(host, str) and host in hosts:
                before = hosts[host]
                if before is None or d["received_time"] < before:
                    out.append(d["celery_id"])
        return out

    def started_on_any(self) -> list[dict[str, Any]]:
        """Every task currently STARTED, with the worker running it."""
        return self._match({"status": STARTED}, {"celery_id": 1, "worker": 1, "status": 1, "start_time": 1})

    def record_workers(self, seen: Mapping[str, Mapping[str, Any]]) -> None:
        """Upsert worker liveness (hostname → {last_heartbeat, online, ...})."""
        if not seen:
            return
        ops = [
            UpdateOne({"hostname": h}, {"$set": {"hostname": h, **v}}, upsert=True) for h, v in seen.items()
        ]
        self.db[WORKERS].bulk_write(ops, ordered=False)

    def workers(self) -> list[dict[str, Any]]:
        """Every worker ever seen, with its last heartbeat."""
        return list(self.db[WORKERS].find({}, {"_id": 0}))

    def set_status_fields(self, celery_id: str, fields: Mapping[str, Any], attempts: int = 5) -> bool:
        """Set API-owned fields (never the merged ones) on one task; False if there is no such task.

        Like every write of a task document it gives the document a new revision
        (never a lower one than it has), which is how the consumer's conditional
        writes notice that the document changed.  The new revision reaches the
        live feed with the task's next change, or the feed's orphan sweep.
        """
        self.recent.forget([celery_id])
        found = self._find(celery_id, {"_id": 1})  # then update by _id
        if found is None:
            return False
        for _ in range(attempts):
            rev = self.next_revisions(1)
            result = self.tasks.update_one(
                {"_id": found["_id"], "rev": {"$lt": rev}}, {"$set": {**fields, "rev": rev}}
            )
            if result.matched_count:
                return True
            if self.tasks.find_one({"_id": found["_id"]}, {"_id": 1}) is None:
                return False
        raise RuntimeError(f"task {celery_id}: fields not set after {attempts} attempts")

    def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the named lease; True when ``owner`` holds it now."""
        now = time.time()
        leases = self.db[LEASES]
        try:
            doc = leases.find_one_and_update(
                {"_id": name, "$or": [{"owner": owner}, {"expires": {"$lt": now}}]},
                {"$set": {"owner": owner, "expires": now + seconds}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False
        return bool(doc and doc.get("owner") == owner)

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up (on clean shutdown)."""
        self.db[LEASES].delete_one({"_id": name, "owner": owner})


__all__ = [
    "INDEXES",
    "TaskFilter",
    "TaskStore",
    "new_task_document",
    "status_of",
]
