"""Cooperative control of a running pipeline: rate-limited progress reports and stop handling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProgressReporter:
    """Forward ``(stage, done, total)`` reports to a callback at most once per ``min_interval`` seconds.

    Reports arriving faster are coalesced: only the latest value per stage is kept and sent later by
    :meth:`ticker` (or :meth:`drain` at the end), so a stage's final count is never lost.
    """

    def __init__(
        self,
        callback: Callable[[str, int, int], None],
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._min_interval = min_interval
        self._clock = clock
        self._last_emit = float("-inf")
        self._pending: dict[str, tuple[int, int]] = {}

    def report(self, stage: str, done: int, total: int) -> None:
        """Record progress; sends it at once if the rate limit allows, otherwise queues it."""
        self._pending.pop(stage, None)
        self._pending[stage] = (done, total)
        self.flush_due()

    def flush_due(self) -> None:
        """Send the oldest queued report if the rate limit allows."""
        if not self._pending or self._clock() - self._last_emit < self._min_interval:
            return
        stage = next(iter(self._pending))
        done, total = self._pending.pop(stage)
        self._last_emit = self._clock()
        try:
            self._callback(stage, done, total)
        except Exception:
            log.exception("progress callback failed")

    async def ticker(self) -> None:
        """Flush queued reports forever, one per interval (run as a background task)."""
        while True:
            await asyncio.sleep(self._min_interval / 2)
            self.flush_due()

    async def drain(self) -> None:
        """Send every queued report, still respecting the rate limit."""
        while self._pending:
            wait = self._min_interval - (self._clock() - self._last_emit)
            if wait > 0:
                await asyncio.sleep(wait)
            self.flush_due()


class StopSignal:
    """Poll a ``should_stop`` callable and cancel the running step as soon as it returns true."""

    def __init__(self, should_stop: Callable[[], bool], poll_interval: float = 0.1) -> None:
        self._should_stop = should_stop
        self._poll_interval = poll_interval
        self.event = asyncio.Event()

    @property
    def stopped(self) -> bool:
        """True once a stop was requested (or a step hit its deadline and asked to stop)."""
        return self.event.is_set()

    def check(self) -> bool:
        """Ask ``should_stop`` now; sets :attr:`event` when it says yes. Returns :attr:`stopped`."""
        if not self.event.is_set():
            try:
                if self._should_stop():
                    self.event.set()
            except Exception:
                log.exception("should_stop callback failed")
        return self.event.is_set()

    async def watch(self) -> None:
        """Poll ``should_stop`` until it returns true (run as a background task)."""
        while not self.check():
            await asyncio.sleep(self._poll_interval)

    async def run(self, step: Coroutine[Any, Any, T], timeout: float | None = None) -> tuple[bool, T | None]:
        """Run ``step`` until it finishes, a stop is requested, or ``timeout`` seconds pass.

        Returns ``(finished, result)``. On stop or timeout the step is cancelled and awaited, so
        whatever it already stored into its collectors stays there; ``result`` is then None.
        """
        if self.check():
            step.close()
            return False, None
        task = asyncio.ensure_future(step)
        stopper = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        await _settle(task)
        return False, None


async def _settle(task: Awaitable[Any]) -> None:
    """Await a cancelled task, swallowing its cancellation (and logging any other error)."""
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("step failed while being cancelled")


async def run_pool(items: Iterable[Any], worker: Callable[[Any], Awaitable[None]], concurrency: int) -> None:
    """Run ``worker`` over ``items`` with at most ``concurrency`` in flight."""
    queue = iter(list(items))

    async def drain() -> None:
        for item in queue:
            await worker(item)

    await asyncio.gather(*(drain() for _ in range(max(1, concurrency))))
