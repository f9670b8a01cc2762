"""Cooperative control of a running pipeline: rate-limited progress reports and stop handling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProgressReporter:
    """Forward ``(stage, done, total)`` reports to a callback at most once per ``min_interval`` seconds.

    Reports arriving faster are coalesced: only the latest value per stage is kept and sent later by
    :meth:`ticker` (or :meth:`drain` at the end), so a stage's final count is never lost. While a
    stage reports nothing new (one slow probe, a child process), the ticker repeats the latest
    report every ``heartbeat`` seconds, so a watcher sees the task alive and where it is.
    """

    def __init__(
        self,
        callback: Callable[[str, int, int], None],
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = 1.0,
    ) -> None:
        self._callback = callback
        self._min_interval = min_interval
        self._clock = clock
        self._heartbeat = max(heartbeat, min_interval)
        self._last_emit = float("-inf")
        self._pending: dict[str, tuple[int, int]] = {}
        self._latest: tuple[str, int, int] | None = None

    def report(self, stage: str, done: int, total: int) -> None:
        """Record progress; sends it at once if the rate limit allows, otherwise queues it."""
        self._pending.pop(stage, None)
        self._pending[stage] = (done, total)
        self._latest = (stage, done, total)
        self.flush_due()

    def _emit(self, stage: str, done: int, total: int) -> None:
        self._last_emit = self._clock()
        try:
            self._callback(stage, done, total)
        except Exception:
            log.exception("progress callback failed")

    def flush_due(self) -> None:
        """Send the oldest queued report if the rate limit allows."""
        if not self._pending or self._clock() - self._last_emit < self._min_interval:
            return
        stage = next(iter(self._pending))
        done, total = self._pending.pop(stage)
        self._emit(stage, done, total)

    def beat(self) -> None:
        """Repeat the latest report when nothing was sent for ``heartbeat`` seconds."""
        if self._pending or self._latest is None or self._clock() - self._last_emit < self._heartbeat:
            return
        self._emit(*self._latest)

    async def ticker(self) -> None:
        """Flush queued reports (one per interval) and send heartbeats, forever (a background task)."""
        while True:
            await asyncio.sleep(self._min_interval / 2)
            self.flush_due()
            self.beat()

    async def drain(self) -> None:
        """Send every queued report, still respecting the rate limit."""
        while self._pending:
            wait = self._min_interval - (self._clock() - self._last_emit)
            if wait > 0:
                await asyncio.sleep(wait)
            self.flush_due()


class Batcher(Generic[T]):
    """Hands items to ``write`` in batches: once ``size`` items wait, or ``interval`` seconds after
    the first of a batch arrived, or on :meth:`flush`.

    Used to stream results to the store as they are found; call :meth:`flush` when the producer
    ends (also when it was cancelled) so the last partial batch is written too.
    """

    def __init__(self, write: Callable[[list[T]], object], size: int = 500, interval: float = 1.0) -> None:
        self._write = write
        self._size = max(1, size)
        self._interval = interval
        self._items: list[T] = []
        self._timer: asyncio.TimerHandle | None = None
        self.written = 0

    def add(self, item: T) -> None:
        """Queue one item (writing the batch at once when it is full)."""
        self._items.append(item)
        if len(self._items) >= self._size:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._due)

    def _due(self) -> None:
        """The timer's flush: a failed write keeps its items for the next flush."""
        self._timer = None
        items = self._items
        try:
            self.flush()
        except Exception:
            log.exception("writing a batch of results failed; keeping it for the next flush")
            self._items = items + self._items

    def flush(self) -> None:
        """Write what is queued now (a failed write raises and drops the batch)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if items:
            self._write(items)
            self.written += len(items)


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
