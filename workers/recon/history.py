"""ARL's ``arl_search``: subdomains earlier tasks and asset scopes already know, read from the store."""

from __future__ import annotations

import re
from typing import Any

from pymongo.database import Database

from workers.recon.assets import asset_collection

MAX_KNOWN = 10_000
"""At most this many names are taken from each collection (the rest would only repeat a brute force)."""


def known_subdomains(db: Database[Any], root: str, task_id: str, limit: int = MAX_KNOWN) -> list[str]:
    """Names under ``root`` (not ``root`` itself) found by other tasks or held by any asset scope.

    Sorted and deduplicated; at most ``limit`` from each of the ``domain`` results and the
    ``asset_domain`` assets.
    """
    pattern = {"$regex": "\\." + re.escape(root) + "$"}
    names: set[str] = set()
    for collection, query in (
        ("domain", {"domain": pattern, "task_id": {"$ne": task_id}}),
        (asset_collection("domain"), {"domain": pattern}),
    ):
        for doc in db[collection].find(query, {"domain": 1, "_id": 0}).limit(limit):
            name = str(doc.get("domain") or "").lower().rstrip(".")
            if name.endswith("." + root):
                names.add(name)
    return sorted(names)
