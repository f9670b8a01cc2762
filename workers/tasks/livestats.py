"""A task's ``statistic`` kept current while its pipeline runs, so a killed task still has one.

A revoke with ``terminate`` signals the pool process running the task, which dies at once: the
pipeline never returns and :meth:`~workers.context.TaskContext.finish` never writes the final
statistic.  :class:`LiveStatistic` writes the per-collection counts of what the task stored so
far (marked ``partial``) every few seconds while they change, so a task stopped that way, or one
whose process was killed outright, keeps a statistic at most one interval old.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from workers.context import TaskContext

log = logging.getLogger(__name__)

INTERVAL = 2.0
"""Seconds between two looks at the counts (a write happens only when they changed)."""


class LiveStatistic:
    """Use as ``with LiveStatistic(ctx, kinds): stats = run_pipeline(...)``; then ``ctx.finish(stats)``.

    A background thread counts the task's documents in each collection of ``kinds`` every
    ``interval`` seconds (and in each of ``optional`` too, shown only when it holds any, as the
    pipelines do) and, when the counts changed and something was found, writes them as the
    task's ``statistic`` with ``partial: true``.  Leaving the block stops the thread before the
    caller writes the final statistic, so the final one is never overwritten.
    """

    def __init__(
        self, ctx: TaskContext, kinds: Iterable[str], optional: Iterable[str] = (), interval: float = INTERVAL
    ) -> None:
        self.ctx = ctx
        self.kinds = tuple(kinds)
        self.optional = tuple(optional)
        self.interval = interval
        self.written: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"livestats-{ctx.celery_id}", daemon=True)

    def __enter__(self) -> LiveStatistic:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def counts(self) -> dict[str, int]:
        """How many documents each collection holds for the task (index-served ``count`` commands)."""
        db, query = self.ctx.store.db, {"task_id": {"$eq": self.ctx.task_id}}
        out: dict[str, int] = {}
        for kind in (*self.kinds, *self.optional):
            reply: dict[str, Any] = db.command({"count": kind, "query": query})
            if kind in self.kinds or reply["n"]:
                out[kind] = int(reply["n"])
        return out

    def update(self) -> bool:
        """Write the counts when they changed and are not all zero; True when written."""
        counts = self.counts()
        if counts == self.written or not any(counts.values()):
            return False
        self.ctx.store.set_status_fields(self.ctx.celery_id, {"statistic": counts, "partial": True})
        self.written = counts
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # a missed update is retried at the next interval
                log.warning("live statistic of %s not written", self.ctx.celery_id, exc_info=True)
