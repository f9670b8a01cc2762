"""Shared machinery of the recon2 pipelines: running async bodies under stop/progress, scoped host
resolution, and result collections tagged with the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from workers.recon.assets import insert_new
from workers.recon.control import ProgressReporter, StopSignal
from workers.recon.dns import DnsClient
from workers.recon.scan import ReconContext
from workers.recon.targets import is_ip

log = logging.getLogger(__name__)


class HostLocator:
    """Maps a host (name or IP literal) to an in-scope IP to connect to, or None.

    The name itself and the address it resolves to must both pass ``scope_check``; answers are
    cached for the run. Names resolve through the task's resolvers (first in-scope address wins).
    """

    def __init__(self, ctx: ReconContext) -> None:
        self.ctx = ctx
        self._cache: dict[str, str | None] = {}
        self._scope: dict[str, bool] = {}
        self._dns: DnsClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self.resolved: dict[str, list[str]] = {}

    def in_scope(self, host: str) -> bool:
        """Cached ``scope_check``; a failing check counts as out of scope."""
        if host not in self._scope:
            try:
                self._scope[host] = bool(self.ctx.scope_check(host))
            except Exception:
                log.exception("scope_check failed for %s", host)
                self._scope[host] = False
        return self._scope[host]

    async def addresses(self, host: str) -> list[str]:
        """Every address ``host`` resolves to (the host itself for an IP literal)."""
        host = host.strip("[]").lower()
        if is_ip(host):
            return [host]
        if host not in self.resolved:
            if self._dns is None and self.ctx.resolvers:
                self._dns = DnsClient(
                    self.ctx.resolvers, self.ctx.dns_timeout, min(self.ctx.concurrency, 100)
                )
            record = await self._dns.lookup(host, source="locate") if self._dns else None
            self.resolved[host] = record.ips if record else []
        return self.resolved[host]

    async def __call__(self, host: str) -> str | None:
        host = host.strip("[]").lower()
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            if host not in self._cache:
                ip = None
                if self.in_scope(host):
                    ip = next((a for a in await self.addresses(host) if self.in_scope(a)), None)
                self._cache[host] = ip
            return self._cache[host]


class Run:
    """One pipeline execution: a stop signal, a progress reporter, and ``partial`` bookkeeping.

    Use :meth:`execute` from synchronous code; inside the body, wrap each cancellable step in
    :meth:`step`, which returns False (and marks the run partial) when a stop cut it short.
    """

    def __init__(self, ctx: ReconContext) -> None:
        self.ctx = ctx
        self.progress = ProgressReporter(ctx.progress)
        self.partial = False
        self._stop: StopSignal | None = None

    @property
    def stopped(self) -> bool:
        """True once a stop was requested."""
        return self._stop is not None and self._stop.stopped

    def reporter(self, stage: str, total: int) -> Callable[[int], None]:
        """A ``done -> None`` progress callback for ``stage`` with a fixed total (reports 0 at once)."""
        self.progress.report(stage, 0, total)
        return lambda done: self.progress.report(stage, done, total)

    async def step(self, body: Coroutine[Any, Any, Any], timeout: float | None = None) -> bool:
        """Run one cancellable step; False when a stop (or ``timeout``) cut it short."""
        assert self._stop is not None
        finished, _ = await self._stop.run(body, timeout)
        if not finished:
            self.partial = True
        return finished

    def execute(self, body: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``body`` in a new event loop with the stop watcher and progress ticker; True if complete."""

        async def main() -> None:
            self._stop = StopSignal(self.ctx.should_stop)
            background = [
                asyncio.ensure_future(self._stop.watch()),
                asyncio.ensure_future(self.progress.ticker()),
            ]
            try:
                await body()
            finally:
                for task in background:
                    task.cancel()
                if self.partial or self._stop.stopped:
                    self.partial = True
                    self.progress.flush_due()
                else:
                    await self.progress.drain()

        asyncio.run(main())
        return not self.partial


class TaggedCollection:
    """A result collection whose documents carry ``task_id`` and a ``partial`` flag.

    ``keys`` are the fields of its unique index (``task_id`` first); inserting a key twice is a no-op.
    Documents go in with ``partial: True``; :meth:`finish` clears the flag when the task completed.
    """

    def __init__(self, db: Database[Any], name: str, task_id: str, keys: Sequence[str]) -> None:
        self.collection = db[name]
        self.task_id = task_id
        self.keys = tuple(keys)
        self.inserted = 0

    def ensure_index(self) -> None:
        """Create the unique index (idempotent)."""
        self.collection.create_index(
            [(k, ASCENDING) for k in self.keys], unique=True, name="uniq_" + "_".join(self.keys)
        )

    def insert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert ``docs`` tagged with the task; returns how many were new."""
        now = time.time()
        added = insert_new(
            self.collection,
            ({"time": now, **doc, "task_id": self.task_id, "partial": True} for doc in docs),
        )
        self.inserted += added
        return added

    def finish(self, partial: bool) -> None:
        """Clear the ``partial`` flag of this task's documents when the task completed."""
        if not partial:
            self.collection.update_many({"task_id": self.task_id}, {"$set": {"partial": False}})

    def count(self) -> int:
        """How many documents this task holds in the collection."""
        return self.collection.count_documents({"task_id": self.task_id})
