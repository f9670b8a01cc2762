"""Asset scopes: the long-lived inventory that finished tasks' results are merged into.

Each kind of asset has its collection (``asset_domain``, ``asset_ip``, ``asset_site``)
with one document per (``scope_id``, key) — a unique index enforces it.  A document
keeps the fields of the result it came from plus ``scope_id``, ``first_seen_task``,
``last_seen_task``, ``created_time`` and ``updated_time`` (epoch seconds).

Merging is idempotent and avoids upserts (an upsert that inserts is very slow on the
embedded nx-27017 server): new keys go in with one unordered ``insert_many`` per batch,
duplicate-key errors ignored, and keys already known get their ``last_seen_task`` and
``updated_time`` moved forward with one ``update_many`` per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from controlplane.store.results import BATCH_SIZE, insert_new

ASSET_KEYS: dict[str, str] = {"domain": "domain", "ip": "ip", "site": "site"}
"""Asset kind -> the field that identifies an asset of that kind within a scope.

The kind is also the name of the recon result collection the assets are copied from.
"""

_DROPPED_FIELDS = ("_id", "task_id", "partial")


def asset_collection(kind: str) -> str:
    """The collection holding a scope's assets of ``kind`` (``asset_<kind>``)."""
    if kind not in ASSET_KEYS:
        raise ValueError(f"unknown asset kind {kind!r}; expected one of {', '.join(ASSET_KEYS)}")
    return "asset_" + kind


def ensure_asset_indexes(db: Database[Any]) -> None:
    """Create the unique (scope_id, key) index of every asset collection (idempotent)."""
    for kind, key in ASSET_KEYS.items():
        db[asset_collection(kind)].create_index(
            [("scope_id", ASCENDING), (key, ASCENDING)], unique=True, name=f"uniq_scope_id_{key}"
        )


def merge_assets(
    db: Database[Any], kind: str, scope_id: str, task_id: str, results: Iterable[Mapping[str, Any]]
) -> tuple[int, int]:
    """Merge result documents of ``kind`` seen by task ``task_id`` into scope ``scope_id``.

    Returns (assets added, existing assets whose ``last_seen_task`` moved to ``task_id``).
    Results without the kind's key field are skipped.  Call :func:`ensure_asset_indexes` first.
    """
    key = ASSET_KEYS[kind]
    collection = db[asset_collection(kind)]
    added = updated = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal added, updated
        now = time.time()
        keys = list(dict.fromkeys(doc[key] for doc in batch))
        fresh = (
            {
                **doc,
                "scope_id": scope_id,
                "first_seen_task": task_id,
                "last_seen_task": task_id,
                "created_time": now,
                "updated_time": now,
            }
            for doc in batch
        )
        added += insert_new(collection, fresh)
        result = collection.update_many(
            {"scope_id": scope_id, key: {"$in": keys}, "last_seen_task": {"$ne": task_id}},
            {"$set": {"last_seen_task": task_id, "updated_time": now}},
        )
        updated += result.modified_count

    for result_doc in results:
        value = result_doc.get(key)
        if value is None or value == "":
            continue
        batch.append({k: v for k, v in result_doc.items() if k not in _DROPPED_FIELDS})
        if len(batch) >= BATCH_SIZE:
            flush()
            batch = []
    if batch:
        flush()
    return added, updated


def sync_results(
    db: Database[Any], source_task_id: str, scope_id: str, *, result_tags: Iterable[str] = ()
) -> dict[str, int]:
    """Copy the ``domain``, ``ip`` and ``site`` results of a task into an asset scope.

    ``source_task_id`` is the ``task_id`` the results are tagged with (also recorded as
    ``first_seen_task``/``last_seen_task``); ``result_tags`` adds other tags the same task's
    results may carry.  Running it again adds and changes nothing.  Returns, per kind, how
    many assets were added (``domain``, ``ip``, ``site``) and how many known ones were seen
    again (``domain_updated``, ...).
    """
    if not scope_id:
        raise ValueError("scope_id is required to sync results into an asset scope")
    ensure_asset_indexes(db)
    tags = list(dict.fromkeys([source_task_id, *result_tags]))
    stats: dict[str, int] = {}
    for kind, key in ASSET_KEYS.items():
        cursor = db[kind].find({"task_id": {"$in": tags}}).sort(key, ASCENDING)
        added, updated = merge_assets(db, kind, scope_id, source_task_id, cursor)
        stats[kind] = added
        stats[f"{kind}_updated"] = updated
    return stats


def scope_assets(db: Database[Any], scope_id: str, kind: str, limit: int = 0) -> list[dict[str, Any]]:
    """The assets of ``kind`` in scope ``scope_id``, ordered by their key (``limit`` 0: all)."""
    cursor = (
        db[asset_collection(kind)].find({"scope_id": scope_id}, {"_id": 0}).sort(ASSET_KEYS[kind], ASCENDING)
    )
    return list(cursor.limit(limit) if limit else cursor)


def scope_counts(db: Database[Any], scope_id: str) -> dict[str, int]:
    """How many assets of each kind scope ``scope_id`` holds."""
    return {kind: db[asset_collection(kind)].count_documents({"scope_id": scope_id}) for kind in ASSET_KEYS}


def task_scope_id(data: Mapping[str, Any]) -> str:
    """The scope a task's results go to: ``options.scope_id``, else ``scope_id`` ("" for none)."""
    options = data.get("options") or {}
    found = options.get("scope_id") if isinstance(options, Mapping) else None
    return str(found or data.get("scope_id") or "").strip()


def sync_into_scope(db: Database[Any], task_id: str, scope_id: str) -> dict[str, int]:
    """At the end of a task given a ``scope_id``: merge its domain, IP and site results into the scope.

    This is what ARL does for a task created for an asset group.  It runs for a stopped task too
    (its results are partial but real).  Returns ``asset_<kind>`` (assets added) and
    ``asset_<kind>_updated`` (known assets seen again) per kind; nothing without a scope.
    """
    if not scope_id:
        return {}
    return {f"asset_{name}": count for name, count in sync_results(db, task_id, scope_id).items()}
