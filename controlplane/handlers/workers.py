"""Workers and queues (``/api/workers/``, ``/api/queues/``): views for viewers, controls for operators.

The views come from :class:`~controlplane.service.workers.WorkersService`'s cached
snapshot; the controls (``POST``, operator role, audit-logged by
:meth:`~controlplane.handlers.base.APIHandler.on_finish`) reach one worker over the
control bus and answer what it replied.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.core.errors import InvalidParam
from controlplane.handlers.base import APIHandler
from controlplane.service.workers import WorkersService

#: Most processes one pool request may add or remove.
MAX_POOL_STEP = 64
#: A queue name a consumer request may name (what Celery and both brokers take without quoting).
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:@+-]{1,200}")


def parse_worker_name(value: str) -> str:
    """A worker's node name from the path (``name@host``); 400 naming ``name`` when unusable."""
    if not value or len(value) > 255 or not value.isprintable() or value.strip() != value:
        raise InvalidParam("name", "must be a worker's node name (printable, at most 255 characters)")
    return value


def parse_step(value: Any, field: str) -> int:
    """A pool step: a JSON integer 1..MAX_POOL_STEP."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParam(field, "must be an integer")
    if not 1 <= value <= MAX_POOL_STEP:
        raise InvalidParam(field, f"must be 1..{MAX_POOL_STEP}")
    return value


def parse_queue(value: Any, field: str) -> str:
    """A queue name: letters, digits and ``_.:@+-``, 1..200 characters."""
    if not isinstance(value, str) or not QUEUE_NAME.fullmatch(value):
        raise InvalidParam(field, "must be a queue name (letters, digits, _ . : @ + -; 1..200 characters)")
    return value


def one_of(body: dict[str, Any], keys: tuple[str, str]) -> str:
    """The one key of ``keys`` the body has; 400 naming ``body`` when it has neither or both."""
    given = [k for k in keys if k in body]
    if len(given) != 1:
        raise InvalidParam("body", f"must have exactly one of {keys[0]!r} and {keys[1]!r}")
    return given[0]


class WorkersBase(APIHandler):
    """Base of the workers and queues endpoints: gives them the workers service."""

    @property
    def workers(self) -> WorkersService:
        service: WorkersService = self.services["workers"]
        return service


class WorkersHandler(WorkersBase):
    """GET /api/workers/: every worker seen, with state, heartbeat age, pool, counts and queues."""

    async def get(self) -> None:
        self.reply(await self.workers.workers())


class WorkerHandler(WorkersBase):
    """GET /api/workers/{name}/: one worker."""

    async def get(self, name: str) -> None:
        self.reply(await self.workers.worker(parse_worker_name(name)))


class QueuesHandler(WorkersBase):
    """GET /api/queues/: depth and consumers of every queue."""

    async def get(self) -> None:
        self.reply(await self.workers.queues())


class PoolHandler(WorkersBase):
    """POST /api/workers/{name}/pool ``{"grow": n}`` or ``{"shrink": n}`` (operator)."""

    async def post(self, name: str) -> None:
        worker = parse_worker_name(name)
        body = self.json_body()
        key = one_of(body, ("grow", "shrink"))
        n = parse_step(body[key], key)
        if key == "grow":
            self.reply(await self.workers.pool(worker, grow=n))
        else:
            self.reply(await self.workers.pool(worker, shrink=n))


class ConsumersHandler(WorkersBase):
    """POST /api/workers/{name}/consumers ``{"add": "queue"}`` or ``{"cancel": "queue"}`` (operator)."""

    async def post(self, name: str) -> None:
        worker = parse_worker_name(name)
        body = self.json_body()
        key = one_of(body, ("add", "cancel"))
        queue = parse_queue(body[key], key)
        if key == "add":
            self.reply(await self.workers.consumer(worker, add=queue))
        else:
            self.reply(await self.workers.consumer(worker, cancel=queue))


class ShutdownHandler(WorkersBase):
    """POST /api/workers/{name}/shutdown (operator): the worker finishes its running tasks and exits."""

    async def post(self, name: str) -> None:
        worker = parse_worker_name(name)
        self.reply(await self.workers.shutdown(worker))
