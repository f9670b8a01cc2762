"""Shared machinery of the recon pipelines: running async bodies under stop/progress, and scoped
host resolution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from workers.recon.context import ReconContext, ScopeCheck
from workers.recon.control import ProgressReporter, StopSignal
from workers.recon.dns import DnsClient
from workers.recon.targets import is_ip

Locator = Callable[[str], Awaitable[str | None]]
"""Maps a host to the in-scope IP to connect to, or None (a :class:`HostLocator` or a run's own)."""


class HostLocator:
    """Maps a host (name or IP literal) to an in-scope IP to connect to, or None.

    The name itself and the address it resolves to must both pass ``scope_check``; answers are
    cached for the run. Names resolve through the task's resolvers (first in-scope address wins).
    """

    def __init__(self, ctx: ReconContext) -> None:
        self.ctx = ctx
        self._cache: dict[str, str | None] = {}
        self.in_scope = ScopeCheck(ctx)
        self._dns: DnsClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self.resolved: dict[str, list[str]] = {}

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

    def settle(self, partial: bool) -> None:
        """Called once the body ended (``partial`` when it was cut short), before the last progress."""

    async def run(self, body: Callable[[], Awaitable[Any]]) -> bool:
        """Await ``body`` with the stop watcher and progress ticker alive; True if it completed."""
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
            self.settle(self.partial)
            if self.partial:
                self.progress.flush_due()
            else:
                await self.progress.drain()
        return not self.partial

    def execute(self, body: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``body`` in a new event loop (see :meth:`run`); True if it completed."""
        return asyncio.run(self.run(body))
