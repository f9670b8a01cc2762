"""A scope's site assets (``asset_site``): adding fetched sites, and comparing a re-fetch with them.

Change records go to ``asset_site_change``, one per (task_id, site)::

    {"scope_id", "task_id", "site", "change": "changed" | "removed" | "new",
     "fields": {"status": {"old", "new"}, "title": {...}, "fingerprints": {"added", "removed"}},
     "time"}

``removed`` means the site no longer answers (the asset is kept, marked ``alive: false``); ``new``
means a site marked dead answers again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.database import Database

from workers.recon.assets import asset_collection, ensure_asset_indexes, merge_assets, scope_assets
from workers.recon.sites import SiteResult

CHANGE_COLLECTION = "asset_site_change"
UPDATED_FIELDS = (
    "hostname",
    "ip",
    "status",
    "title",
    "headers",
    "server",
    "content_type",
    "body_length",
    "final_url",
    "redirects",
    "favicon",
    "fingerprints",
    "finger",
)


def site_doc(site: SiteResult) -> dict[str, Any]:
    """The stored form of a fetched site (as the recon ``site`` collection holds it), marked alive."""
    return {**site.to_doc(), "alive": True}


def known_sites(db: Database[Any], scope_id: str) -> dict[str, dict[str, Any]]:
    """The scope's site assets by origin URL."""
    return {doc["site"]: doc for doc in scope_assets(db, scope_id, "site")}


def add_sites(db: Database[Any], scope_id: str, task_id: str, sites: Iterable[SiteResult]) -> int:
    """Add fetched sites to the scope (existing ones are left as they are); returns how many were new."""
    ensure_asset_indexes(db)
    added, _ = merge_assets(db, "site", scope_id, task_id, (site_doc(s) for s in sites))
    return added


def _fingerprints(doc: Mapping[str, Any]) -> list[str]:
    names = doc.get("fingerprints")
    if isinstance(names, list):
        return [str(n) for n in names]
    return [str(f.get("name")) for f in doc.get("finger") or [] if isinstance(f, dict)]


def diff_site(old: Mapping[str, Any], new: SiteResult | None) -> dict[str, Any] | None:
    """The change between a stored asset and its re-fetch (None = the fetch failed), or None if equal."""
    was_alive = bool(old.get("alive", True))
    if new is None:
        return {"change": "removed", "fields": {}} if was_alive else None
    fields: dict[str, Any] = {}
    for name, value in (("status", new.status), ("title", new.title)):
        if old.get(name) != value:
            fields[name] = {"old": old.get(name), "new": value}
    before, after = _fingerprints(old), list(new.fingerprints)
    added = [f for f in after if f not in before]
    removed = [f for f in before if f not in after]
    if added or removed:
        fields["fingerprints"] = {"added": added, "removed": removed}
    if not was_alive:
        return {"change": "new", "fields": fields}
    return {"change": "changed", "fields": fields} if fields else None


def apply_refresh(
    db: Database[Any], scope_id: str, task_id: str, old: Mapping[str, Any], new: SiteResult | None
) -> None:
    """Write a re-fetch into the asset: the new facts (or ``alive: false``), last seen by ``task_id``."""
    now = time.time()
    update: dict[str, Any] = {"updated_time": now, "last_checked_task": task_id}
    if new is None:
        update["alive"] = False
    else:
        fresh = site_doc(new)
        update.update({k: fresh[k] for k in UPDATED_FIELDS if k in fresh})
        update.update({"alive": True, "last_seen_task": task_id})
    db[asset_collection("site")].update_one({"scope_id": scope_id, "site": old["site"]}, {"$set": update})
