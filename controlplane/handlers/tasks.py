"""The eight endpoints of the spec, each a few lines over :class:`TaskManager`, and the results.

The list (``GET /api/celery_task/``) takes the spec's ``celery_id``, ``status`` and
``task_type`` with the spec's defaults, and beyond them: ``status`` with several statuses
(comma-separated, as the live feed takes them), ``q`` (a case-insensitive prefix of the name
or target), ``worker``, ``created_after`` / ``created_before`` (ISO 8601 or epoch seconds) and
``sort``.  Unknown query arguments are ignored, as they always were.
"""

from __future__ import annotations

from typing import Any, ClassVar

from controlplane.core.documents import TaskFilter
from controlplane.core.errors import InvalidParam
from controlplane.core.validate import (
    parse_created,
    parse_int,
    parse_page,
    parse_search,
    parse_severities,
    parse_sort,
    parse_statuses,
    parse_uuid,
    parse_worker,
)
from controlplane.handlers.base import APIHandler
from controlplane.service.manager import TaskManager


def parse_terminate(body: dict[str, Any]) -> bool:
    """``terminate`` is optional, defaults to true, and must be a JSON boolean."""
    value = body.get("terminate", True)
    if not isinstance(value, bool):
        raise InvalidParam("terminate", "must be true or false")
    return value


class TaskHandler(APIHandler):
    """Base of the task endpoints: gives them the manager."""

    @property
    def manager(self) -> TaskManager:
        manager: TaskManager = self.services["manager"]
        return manager

    async def _revoke_one(self, celery_id: str, terminate: bool) -> None:
        (outcome,) = await self.manager.revoke([celery_id], terminate)
        if outcome.error is not None:
            raise outcome.error
        self.reply({"celery_id": celery_id, "status": "revoked"})


class TypesHandler(TaskHandler):
    """GET /api/celery_task/types/"""

    def get(self) -> None:
        self.reply({"task_types": self.manager.types()})


class CollectionHandler(TaskHandler):
    """GET (list) and POST (create) /api/celery_task/"""

    rate_limited: ClassVar[dict[str, str]] = {"POST": "create"}

    async def get(self) -> None:
        celery_id = self.query_arg("celery_id")
        after = parse_created(self.query_arg("created_after"), "created_after")
        before = parse_created(self.query_arg("created_before"), "created_before")
        if after is not None and before is not None and before <= after:
            raise InvalidParam("created_before", "must be later than created_after")
        flt = TaskFilter(
            celery_id=parse_uuid(celery_id, "celery_id") if celery_id is not None else None,
            status=parse_statuses(self.query_arg("status")),
            task_type=self.query_arg("task_type"),
            worker=parse_worker(self.query_arg("worker")),
            created_after=after,
            created_before=before,
            q=parse_search(self.query_arg("q")),
            sort=parse_sort(self.query_arg("sort")),
        )
        size = parse_int(self.query_arg("size"), "size", 1, 100, 10)
        page = parse_page(self.query_arg("page"), size)
        self.reply(await self.manager.list_tasks(flt, page, size))

    async def post(self) -> None:
        body = self.json_body()
        if "data" not in body:
            raise InvalidParam("data", "is required")
        self.reply(await self.manager.create(body.get("task_type"), body["data"]))


class ItemHandler(TaskHandler):
    """GET (detail) and DELETE (terminate) /api/celery_task/{celery_id}/"""

    rate_limited: ClassVar[dict[str, str]] = {"DELETE": "revoke"}

    async def get(self, celery_id: str) -> None:
        self.reply(await self.manager.get(parse_uuid(celery_id, "celery_id")))

    async def delete(self, celery_id: str) -> None:
        await self._revoke_one(parse_uuid(celery_id, "celery_id"), terminate=True)


class RevokeHandler(TaskHandler):
    """POST /api/celery_task/revoke/"""

    rate_limited: ClassVar[dict[str, str]] = {"POST": "revoke"}

    async def post(self) -> None:
        body = self.json_body()
        if "celery_id" not in body:
            raise InvalidParam("celery_id", "is required")
        await self._revoke_one(parse_uuid(body["celery_id"], "celery_id"), parse_terminate(body))


class BatchRevokeHandler(TaskHandler):
    """POST /api/celery_task/batch_revoke/"""

    rate_limited: ClassVar[dict[str, str]] = {"POST": "revoke"}

    async def post(self) -> None:
        body = self.json_body()
        ids = body.get("celery_ids")
        if not isinstance(ids, list):
            raise InvalidParam("celery_ids", "is required and must be a list of strings")
        if not ids:
            raise InvalidParam("celery_ids", "must not be empty")
        limit = self.config.api.max_batch
        if len(ids) > limit:
            raise InvalidParam("celery_ids", f"at most {limit} ids per request")
        parsed = [parse_uuid(v, f"celery_ids[{i}]") for i, v in enumerate(ids)]
        unique = list(dict.fromkeys(parsed))
        outcomes = await self.manager.revoke(unique, parse_terminate(body))
        self.reply({"results": [o.as_item() for o in outcomes]})


class ActiveHandler(TaskHandler):
    """GET /api/celery_task/active/"""

    async def get(self) -> None:
        self.reply({"active_tasks": await self.manager.active()})


class ResultsHandler(TaskHandler):
    """GET /api/celery_task/{celery_id}/results/?kind=site&page=&size= (a page, in the envelope)
    and ?kind=site&format=csv|json|xlsx (every result of the kind, as a file)."""

    async def get(self, celery_id: str) -> None:
        cid = parse_uuid(celery_id, "celery_id")
        kind = self.query_arg("kind") or "site"
        fmt = self.query_arg("format")
        if fmt is not None:
            await self._export(cid, kind, fmt)
            return
        size = parse_int(self.query_arg("size"), "size", 1, 100, 10)
        page = parse_page(self.query_arg("page"), size)
        severity = parse_severities(self.query_arg("severity"))
        self.reply(await self.manager.results(cid, kind, page, size, severity))

    async def _export(self, celery_id: str, kind: str, fmt: str) -> None:
        """Stream the file; a failure before its first byte is an envelope, after it a cut connection."""
        export = await self.manager.export_results(celery_id, kind, fmt)
        self.set_header("Content-Type", export.content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{export.filename}"')
        self.set_header("X-Result-Count", str(export.total))
        async for chunk in export.chunks():
            self.write(chunk)
            await self.flush()
        self.finish()


class ScreenshotHandler(TaskHandler):
    """GET /api/celery_task/{celery_id}/results/site/{site_id}/screenshot.png: a site's screenshot.

    ``site_id`` is the ``_id`` of the site result (``GET .../results/?kind=site``).  The answer is
    the PNG itself; a missing one (no such task, site or screenshot) is the usual envelope.  A
    screenshot never changes once stored: private caching for a day, and ``If-None-Match`` gets 304.
    """

    async def get(self, celery_id: str, site_id: str) -> None:
        shot = await self.manager.screenshot(parse_uuid(celery_id, "celery_id"), site_id)
        self.set_header("Cache-Control", "private, max-age=86400, immutable")
        self.set_header("ETag", shot.etag)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", shot.content_type)
        self.set_header("Content-Disposition", f'inline; filename="{shot.site_id}.png"')
        self.finish(shot.data)
