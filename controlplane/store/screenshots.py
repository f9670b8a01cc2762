"""Site screenshots: PNG files in GridFS, one per site result, and a note on the site document.

A screenshot is stored in the GridFS bucket :data:`BUCKET` (collections ``screenshot.files`` and
``screenshot.chunks``) with the ``_id`` of the ``site`` result it shows, and ``metadata`` naming
the task and the site.  The site document gets a ``screenshot`` field: ``{"width", "height",
"bytes", "scale", ...}`` when one was stored, ``{"skipped": reason}`` when none could be.

The embedded server (nx-27017) supports GridFS's collections through its own adapter: uploads,
downloads by ``_id``, lookups of ``files`` documents and deletes work, with two differences from
MongoDB that this module stays clear of: counting a bucket's collections fails, and deleting a file
that does not exist raises :class:`~pymongo.errors.OperationFailure` rather than ``NoFile``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket, GridFSBucket
from gridfs.errors import NoFile
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from controlplane.store.errors import TranslatesErrors

BUCKET = "screenshot"
"""The GridFS bucket of site screenshots."""
SITES = "site"
CONTENT_TYPE = "image/png"


def site_oid(site_id: str) -> ObjectId | None:
    """The ObjectId a site result's ``_id`` string names, or None when it names none."""
    try:
        return ObjectId(site_id)
    except (InvalidId, TypeError):
        return None


class ScreenshotWriter(TranslatesErrors):
    """Stores one task's site screenshots (blocking; the workers' side)."""

    def __init__(self, db: Database[Any], task_id: str) -> None:
        self.db = db
        self.task_id = task_id
        self.bucket = GridFSBucket(db, bucket_name=BUCKET)

    def site_id(self, site: str) -> ObjectId | None:
        """The ``_id`` of the task's site document for ``site`` (its origin URL), if stored."""
        doc = self.db[SITES].find_one({"task_id": self.task_id, "site": site}, {"_id": 1})
        return doc["_id"] if doc else None

    def store(self, site: str, png: bytes, info: Mapping[str, Any]) -> bool:
        """Store ``png`` for ``site`` and note ``info`` on its site document.

        False when the site document does not exist.  A screenshot stored before for the same
        site result (a redelivered task) is kept: the note is rewritten, the file is not.
        """
        oid = self.site_id(site)
        if oid is None:
            return False
        if self.db[f"{BUCKET}.files"].find_one({"_id": oid}, {"_id": 1}) is None:
            metadata = {"task_id": self.task_id, "site": site, "content_type": CONTENT_TYPE}
            self.bucket.upload_from_stream_with_id(oid, f"{oid}.png", png, metadata=metadata)
        note = {**info, "bytes": len(png)}
        self.db[SITES].update_one({"_id": oid}, {"$set": {"screenshot": note}})
        return True

    def skip(self, site: str, reason: str) -> None:
        """Note on ``site``'s document why it has no screenshot."""
        self.db[SITES].update_one(
            {"task_id": self.task_id, "site": site}, {"$set": {"screenshot": {"skipped": reason}}}
        )


@dataclass(frozen=True)
class Screenshot:
    """One stored screenshot: the PNG and what a response needs to describe it."""

    data: bytes
    site_id: str
    site: str
    content_type: str = CONTENT_TYPE

    @property
    def etag(self) -> str:
        """A strong validator: the file never changes once stored, so its id is enough."""
        return f'"{self.site_id}-{len(self.data)}"'


class ScreenshotReader(TranslatesErrors):
    """Reads site screenshots for the API (asynchronous)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET)

    async def read(self, task_id: str, site_id: str) -> Screenshot | None:
        """The screenshot of site result ``site_id`` of task ``task_id`` (its document id), or None."""
        oid = site_oid(site_id)
        if oid is None:
            return None
        files = self.db[f"{BUCKET}.files"]
        found = await files.find_one({"_id": oid, "metadata.task_id": task_id})
        if found is None:
            return None
        try:
            stream = await self.bucket.open_download_stream(oid)
        except NoFile:
            return None
        data = await stream.read()
        metadata = found.get("metadata") or {}
        return Screenshot(
            data=data,
            site_id=str(oid),
            site=str(metadata.get("site", "")),
            content_type=str(metadata.get("content_type") or CONTENT_TYPE),
        )
