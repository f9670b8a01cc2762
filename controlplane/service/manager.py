"""The task manager: what the REST handlers call.

It validates nothing about HTTP and knows nothing about envelopes: it takes
parsed values, talks to the store and the control bus, and raises domain
errors from :mod:`controlplane.core.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.bus.control import ControlBus
from controlplane.config import Config
from controlplane.core import documents
from controlplane.core.errors import (
    ApiError,
    CeleryIdNotFound,
    InvalidParam,
    NotFound,
    NotFoundTask,
    StoreError,
    TaskIsDone,
    TaskIsRunning,
)
from controlplane.core.merge import PENDING, RETRY, STATUSES, SUCCESS, TERMINAL
from controlplane.core.scope import ScopePolicy, custom_targets
from controlplane.core.tasktypes import Registry
from controlplane.core.validate import limits_for, validate_task_data
from controlplane.service import export
from controlplane.service.lookups import LookupCache
from controlplane.service.submitter import Submission, Submitter
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.results import RESULT_FILTERS, RESULT_KINDS
from controlplane.store.screenshots import Screenshot, ScreenshotReader
from controlplane.store.tasks import TaskFilter, TaskStore, new_task_document

log = logging.getLogger(__name__)

QUEUED = frozenset({PENDING, RETRY})


@dataclass
class RevokeOutcome:
    """What happened to one celery_id in a revoke request (``error`` None: revoked)."""

    celery_id: str
    error: ApiError | None = None

    def as_item(self) -> dict[str, Any]:
        """One entry of batch_revoke's ``results``: its own code, message and status."""
        if self.error is None:
            return {"celery_id": self.celery_id, "status": "revoked", "code": 200, "message": "success"}
        return {
            "celery_id": self.celery_id,
            "code": self.error.code,
            "message": self.error.message,
            **self.error.data,
        }


class TaskObserver(Protocol):
    """What :meth:`TaskManager.observe` calls after each create and revoke."""

    def submitted(self, task_type: Any, error: BaseException | None) -> None:
        """A create ended: accepted (``error`` None) or refused."""

    def revoked(self, requested: int, outcomes: list[RevokeOutcome], error: BaseException | None) -> None:
        """A revoke request for ``requested`` ids ended: one outcome per id, or ``error`` for all."""


class TaskManager:
    """Create, read, list, revoke and inspect tasks."""

    def __init__(
        self,
        config: Config,
        store: AsyncTaskStore,
        writer: TaskStore,
        bus: ControlBus,
        registry: Registry,
        *,
        feed: Callable[[list[dict[str, Any]]], Any] | None = None,
        cache: LookupCache | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.bus = bus
        self.registry = registry
        self.scope = ScopePolicy.from_config(config)
        self._db_pool = ThreadPoolExecutor(4, thread_name_prefix="store-write")
        self._cleanups: set[asyncio.Future[None]] = set()  # deletions of unpublished tasks
        # Publishes written documents to the live feed (a blocking FeedPublisher).
        self.feed = feed
        # Recent lookups kept fresh by the feed (controlplane.service.lookups).
        self.cache = cache
        self.observers: list[TaskObserver] = []
        self.submitter = Submitter(writer, bus, self._announce, self._forget)

    def close(self) -> None:
        """Release the write pool and the create batcher."""
        self.submitter.close()
        self._db_pool.shutdown(wait=False, cancel_futures=True)

    def types(self) -> dict[str, str]:
        """``{value: label}`` of every task type."""
        return self.registry.labels()

    def observe(self, observer: TaskObserver) -> None:
        """Tell ``observer`` of every create and revoke from now on (the API's metrics)."""
        self.observers.append(observer)

    async def create(
        self, task_type: Any, data: Any, *, celery_id: str | None = None, schedule_id: str | None = None
    ) -> dict[str, Any]:
        """Validate, store as PENDING, then publish; the document exists before any event can.

        ``data`` with a ``schedule`` also creates a schedule whose runs the scheduler
        submits through this same method (passing ``schedule_id`` and a celery_id
        derived from the run, so a run is never submitted twice).
        """
        try:
            reply = await self._create(task_type, data, celery_id=celery_id, schedule_id=schedule_id)
        except Exception as exc:
            for observer in self.observers:
                observer.submitted(task_type, exc)
            raise
        for observer in self.observers:
            observer.submitted(task_type, None)
        return reply

    async def _create(
        self, task_type: Any, data: Any, *, celery_id: str | None, schedule_id: str | None
    ) -> dict[str, Any]:
        if not isinstance(task_type, str) or not task_type:
            raise InvalidParam("task_type", "is required and must be a string", valid=self.registry.values())
        kind = self.registry.get(task_type)
        if kind is None:
            raise InvalidParam(
                "task_type",
                f"unknown task type {task_type[:64]!r}; valid: {', '.join(self.registry.values())}",
                valid=self.registry.values(),
            )
        limits = limits_for(self.config.limits, task_type)
        clean = validate_task_data(task_type, data, limits, custom=not kind.builtin)
        self._check_scope(clean, custom=not kind.builtin)
        if task_type == "domain_task_sync_task":
            await self._check_source_task(str(clean["task_id"]))
        celery_id = celery_id or str(uuid.uuid4())
        if schedule_id is None and clean.get("schedule"):
            schedule_id = await self.store.insert_schedule(
                task_type, dict(data), clean["schedule"], celery_id
            )
        if schedule_id is not None:
            clean["schedule_id"] = schedule_id
        doc = new_task_document(
            celery_id=celery_id, task_type=task_type, data=clean, created_time=time.time(), rev=0
        )
        if "task_id" in clean:
            # The sync type names its source task ``task_id``; the message's task_id is ours (ARL's shape).
            clean["source_task_id"] = clean.pop("task_id")
        clean["task_id"] = str(doc["_id"])
        doc["data"] = clean
        # Stored (with its revision), published, then announced on the feed, batched with
        # whatever other creates are waiting (see controlplane.service.submitter).
        await self.submitter.submit(Submission(kind, doc, clean))
        if self.cache is not None:
            self.cache.created(documents.detail(doc))
        reply = {"celery_id": celery_id, "status": PENDING, "task_id": clean["task_id"]}
        if schedule_id is not None:
            reply["schedule_id"] = schedule_id
        return reply

    async def _check_source_task(self, reference: str) -> None:
        """The task a sync copies from: 103 if unknown, 104 while it runs, 400 unless it succeeded."""
        source = await self.store.find_task(reference)
        if source is None:
            raise NotFoundTask({"task_id": reference})
        status = source.get("status")
        if status not in TERMINAL:
            raise TaskIsRunning({"task_id": reference, "status": status})
        if status != SUCCESS:
            raise InvalidParam(
                "data.task_id", f"the source task ended {status}; only a SUCCESS can be synced"
            )

    def _check_scope(self, clean: dict[str, Any], *, custom: bool) -> None:
        """Every target (and a webhook) must be inside ``scope``; else 400 naming the field and target.

        A built-in type's targets are its parsed ``targets``; a custom type's are the
        items of every ``target*`` field of its data and options (``custom_targets``).
        """
        if custom:
            for field, index, item in custom_targets(clean):
                reason = self.scope.target_reason(item)
                if reason is not None:
                    raise InvalidParam(field, f"out of scope: {reason}", index=index)
        else:
            bad = self.scope.check_targets(clean.get("targets", []))
            if bad is not None:
                index, reason = bad
                raise InvalidParam("data.target", f"out of scope: {reason}", index=index)
        webhook = clean.get("webhook")
        if webhook:
            why = self.scope.target_reason(str(webhook))
            if why is not None:
                raise InvalidParam("data.webhook", f"out of scope: {why}")

    async def get(self, celery_id: str) -> dict[str, Any]:
        """The detail view of one task."""
        shown = await self._lookup(celery_id)
        if shown is None:
            raise CeleryIdNotFound({"celery_id": celery_id})
        return shown

    async def _lookup(self, celery_id: str) -> dict[str, Any] | None:
        """One task's detail: from the lookup cache when it has it, else from the store."""
        cache = self.cache
        if cache is None:
            doc = await self.store.get(celery_id)
            return documents.detail(doc) if doc is not None else None
        shown = cache.get(celery_id)
        if shown is not None:
            return shown
        read = cache.begin(celery_id)
        try:
            doc = await self.store.get(celery_id)
        except BaseException:
            cache.abandon(read)
            raise
        return cache.end(read, documents.detail(doc) if doc is not None else None)

    async def list_tasks(self, flt: TaskFilter, page: int, size: int) -> dict[str, Any]:
        """One page in the filter's order (newest first unless it says otherwise), with the exact total.

        The filters and orders are :class:`controlplane.core.documents.TaskFilter`'s; the store asks
        only index-served queries (:mod:`controlplane.store.listing`).
        """
        bad = [s for s in flt.statuses if s not in STATUSES]
        if bad:
            raise InvalidParam("status", f"unknown status {bad[0][:64]!r}; valid: {', '.join(STATUSES)}")
        if flt.task_type is not None and flt.task_type not in self.registry and flt.task_type != "external":
            raise InvalidParam("task_type", f"unknown task type; valid: {', '.join(self.registry.values())}")
        if flt.celery_id is not None and flt.spec_only:
            # At most one task: its detail (often from the lookup cache) answers the page and the total.
            shown = await self._lookup(flt.celery_id)
            status = flt.statuses[0] if flt.statuses else None
            if shown is None or any(
                want is not None and shown.get(key) != want
                for key, want in (("status", status), ("task_type", flt.task_type))
            ):
                return {"total": 0, "page": page, "size": size, "items": []}
            items = [documents.list_item_of_detail(shown)] if page == 1 else []
            return {"total": 1, "page": page, "size": size, "items": items}
        total, docs = await self.store.listing(flt, page, size)
        return {"total": total, "page": page, "size": size, "items": [documents.list_item(d) for d in docs]}

    async def _task_id(self, celery_id: str, kind: str) -> str:
        """The document id of a task whose results of ``kind`` are asked (400 or 102 otherwise)."""
        if kind not in RESULT_KINDS:
            raise InvalidParam("kind", f"must be one of {', '.join(RESULT_KINDS)}")
        doc = await self.store.get(celery_id)
        if doc is None:
            raise CeleryIdNotFound({"celery_id": celery_id})
        return str(doc["_id"])

    async def results(
        self, celery_id: str, kind: str, page: int, size: int, severity: list[str] | None = None
    ) -> dict[str, Any]:
        """A page of what the task found, of one result kind (vulns: of the given severities)."""
        if severity is not None and "severity" not in RESULT_FILTERS.get(kind, ()):
            raise InvalidParam("severity", "filters vuln results only (kind=vuln)")
        task_id = await self._task_id(celery_id, kind)
        where = {"severity": severity} if severity is not None else None
        total, items = await self.store.results(task_id, kind, page, size, where)
        return {"total": total, "page": page, "size": size, "kind": kind, "items": items}

    async def export_results(self, celery_id: str, kind: str, fmt: str) -> export.Export:
        """Every result of one kind of a task as a CSV, JSON or XLSX file (see :mod:`.export`)."""
        if fmt not in export.FORMATS:
            raise InvalidParam("format", f"must be one of {', '.join(export.FORMATS)}")
        task_id = await self._task_id(celery_id, kind)
        total = await self.store.count_results(task_id, kind)
        if total > export.MAX_ROWS:
            raise InvalidParam(
                "kind",
                f"the task has {total} results of this kind; one export holds at most {export.MAX_ROWS} "
                "(page through them with the JSON endpoint)",
            )
        return export.Export(
            kind=kind,
            fmt=fmt,
            filename=f"{celery_id}-{kind}.{fmt}",
            total=total,
            batches=lambda: self.store.iter_results(task_id, kind),
        )

    async def screenshot(self, celery_id: str, site_id: str) -> Screenshot:
        """The PNG of one ``site`` result (its ``_id``) of a task: 102 for an unknown task, 404 when none."""
        doc = await self.store.get(celery_id)
        if doc is None:
            raise CeleryIdNotFound({"celery_id": celery_id})
        shot = await ScreenshotReader(self.store.db).read(str(doc["_id"]), site_id)
        if shot is None:
            raise NotFound(
                {"celery_id": celery_id, "site_id": site_id, "reason": "no screenshot of this site result"}
            )
        return shot

    async def revoke(self, celery_ids: list[str], terminate: bool) -> list[RevokeOutcome]:
        """Revoke each id as docs/design.md says; one broadcast for all that need one."""
        try:
            outcomes = await self._revoke(celery_ids, terminate)
        except Exception as exc:
            for observer in self.observers:
                observer.revoked(len(celery_ids), [], exc)
            raise
        for observer in self.observers:
            observer.revoked(len(celery_ids), outcomes, None)
        return outcomes

    async def _revoke(self, celery_ids: list[str], terminate: bool) -> list[RevokeOutcome]:
        docs = await self.store.get_many(celery_ids)
        outcomes: list[RevokeOutcome] = []
        queued: list[str] = []
        running: list[str] = []
        for cid in celery_ids:
            doc = docs.get(cid)
            if doc is None:
                outcomes.append(RevokeOutcome(cid, CeleryIdNotFound({"celery_id": cid})))
            elif doc.get("status") in TERMINAL:
                outcomes.append(RevokeOutcome(cid, TaskIsDone({"celery_id": cid, "status": doc["status"]})))
            elif doc.get("status") in QUEUED:
                queued.append(cid)
                outcomes.append(RevokeOutcome(cid))
            elif terminate:
                running.append(cid)
                outcomes.append(RevokeOutcome(cid))
            else:
                outcomes.append(
                    RevokeOutcome(cid, TaskIsRunning({"celery_id": cid, "status": doc.get("status")}))
                )
        targets = queued + running
        if not targets:
            return outcomes
        await self._to_feed(await self.store.request_revoke(targets, terminate))
        await self.bus.run(self.bus.revoke, targets, terminate)
        if queued:
            await self._mark_revoked(queued)
        return outcomes

    async def _mark_revoked(self, celery_ids: list[str]) -> None:
        """Queued tasks are REVOKED at once: a synthetic event through the same merge."""
        now = time.time()
        events = [
            {
                "type": "task-revoked",
                "uuid": cid,
                "timestamp": now,
                "source": "api",
                "reason": "revoked while queued",
            }
            for cid in celery_ids
        ]
        loop = asyncio.get_running_loop()
        changed = await loop.run_in_executor(self._db_pool, self.writer.apply_events, events)
        await self._to_feed(changed)

    def _forget(self, celery_id: str) -> None:
        """Delete the document of a task that was never published, retrying until the store answers."""

        async def delete() -> None:
            delay = 0.2
            while True:
                try:
                    await self.store.delete(celery_id)
                    return
                except StoreError as exc:
                    log.warning("unpublished task %s not deleted yet (%s); retrying", celery_id, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

        task = asyncio.ensure_future(delete())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _announce(self, docs: list[dict[str, Any]]) -> None:
        """Publish written documents to the live feed from a worker thread (never raises)."""
        if self.feed is None or not docs:
            return
        try:
            self.feed(docs)
        except Exception as exc:  # noqa: BLE001 - the feed's orphan sweep republishes it
            log.warning("feed publish failed: %s", exc)

    async def _to_feed(self, docs: list[dict[str, Any]]) -> None:
        """Publish documents this process wrote to the live feed (after the write; never raises)."""
        if self.cache is not None:
            for doc in docs:
                self.cache.wrote(documents.detail(doc))
        if self.feed is not None and docs:
            await asyncio.get_running_loop().run_in_executor(self._db_pool, self._announce, docs)

    async def active(self) -> list[dict[str, Any]]:
        """Merged inspect replies; no workers is an empty list."""
        timeout = self.config.api.inspect_timeout + self.config.broker.publish_timeout
        return await self.bus.run(self.bus.inspect, timeout=timeout)
