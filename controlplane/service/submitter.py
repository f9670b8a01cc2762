"""Group commit for new tasks: store, publish and announce many creates at once.

A create has to be in MongoDB before its message reaches the broker (so no
event can arrive for a task the store does not know), and it has to reach the
live feed in revision order.  Done one request at a time, that is a revision
reservation, an insert, a publish and a feed publish per task, and concurrent
requests finishing out of revision order make the feed's ordering gate reject
and re-stamp most of them (see :mod:`controlplane.bus.feed`).

:class:`Submitter` queues the creates of one API process and commits them in
batches, one batch at a time on its own thread: one revision reservation for
the whole batch, one ``insert_many``, the messages published in order on one
producer, then one feed publish of contiguous revisions.  A batch holds
whatever queued up while the previous one was being committed, so under light
load a batch is one task (no added latency) and under heavy load the database
and feed round trips are shared by many.

Failures are per task where they can be: a duplicate celery_id fails that task
alone; a broker that refuses the batch's messages fails every task of the batch
(the caller cannot know which messages got through before the error), and
their documents, never published, are deleted before the requests are answered
(or, if the database is failing too, by the caller's retrying clean-up).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from controlplane.bus.control import BROKER_ERRORS, BrokerUnavailable, ControlBus
from controlplane.core.documents import TaskDocument
from controlplane.core.errors import StoreError
from controlplane.core.tasktypes import TaskType
from controlplane.store.errors import DatabaseUnavailable
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """One task to create: its document (revision not yet set) and its message."""

    kind: TaskType
    doc: TaskDocument
    message: dict[str, Any]
    error: BaseException | None = None
    unpublished: bool = False  # written but not published: the caller deletes it again
    future: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def celery_id(self) -> str:
        """The task's celery_id."""
        return str(self.doc["celery_id"])


class Submitter:
    """Queues creates and commits them in batches, storing one while publishing another.

    Two single-thread stages: *store* (reserve revisions, insert) and *publish*
    (send the messages, announce on the feed).  A batch is published only after
    it is stored, and batches go through each stage in order, so every message
    follows its document and the feed sees revisions in order; the database
    work of one batch overlaps the broker work of the one before it.
    """

    def __init__(
        self,
        writer: TaskStore,
        bus: ControlBus,
        announce: Callable[[list[dict[str, Any]]], Any],
        forget: Callable[[str], None],
        max_batch: int = 256,
        max_publishing: int = 2,
    ) -> None:
        self.writer = writer
        self.bus = bus
        self.announce = announce
        self.forget = forget
        self.max_batch = max_batch
        self.max_publishing = max_publishing
        self._queue: list[Submission] = []
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="submit-store")
        self._publish_thread = ThreadPoolExecutor(1, thread_name_prefix="submit-publish")
        self.batches = 0  # batches committed (how many round trips the creates shared)

    def close(self) -> None:
        """Stop the batch loop and its threads (queued creates fail with BrokerUnavailable)."""
        if self._runner is not None:
            self._runner.cancel()
        for item in self._queue:
            if item.future is not None and not item.future.done():
                item.future.set_exception(BrokerUnavailable("the API is stopping"))
        self._queue.clear()
        self._store_thread.shutdown(wait=False, cancel_futures=True)
        self._publish_thread.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Submission) -> None:
        """Queue one create and wait until it is stored and published (or failed)."""
        loop = asyncio.get_running_loop()
        item.future = loop.create_future()
        self._queue.append(item)
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._runner = loop.create_task(self._run())
        assert self._wake is not None
        self._wake.set()
        await item.future

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        publishing: list[asyncio.Future[None]] = []
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    await loop.run_in_executor(self._store_thread, self.store, batch)
                except Exception as exc:
                    log.exception("storing a task batch failed")
                    for item in batch:
                        item.error = item.error or exc
                self._fail_waiting_if_unreachable(batch)
                stage = loop.run_in_executor(self._publish_thread, self.publish, batch)
                stage.add_done_callback(functools.partial(self._finish, batch))
                publishing = [f for f in publishing if not f.done()] + [stage]
                if len(publishing) >= self.max_publishing:
                    await asyncio.wait(publishing, return_when=asyncio.FIRST_COMPLETED)

    def _fail_waiting_if_unreachable(self, batch: list[Submission]) -> None:
        """When ``batch`` found the database unreachable, fail the creates queued meanwhile too.

        They arrived while that attempt was waiting out ``mongo.timeout_ms``; a second wait
        of their own would answer them only after twice the timeout.  Nothing of theirs was
        written, so they fail as the batch did, at once, and a create after this tries again.
        """
        error = batch[0].error if batch else None
        if not isinstance(error, DatabaseUnavailable) or not all(i.error is error for i in batch):
            return
        waiting, self._queue = self._queue, []
        for item in waiting:
            if item.future is not None and not item.future.done():
                item.future.set_exception(error)

    def _finish(self, batch: list[Submission], done: asyncio.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.error("publishing a task batch failed: %r", error)
        self.batches += 1
        for item in batch:
            if error is not None and item.error is None:
                item.error, item.unpublished = error, True
            if item.unpublished:
                self.forget(item.celery_id)
            if item.future is not None and not item.future.done():
                if item.error is None:
                    item.future.set_result(None)
                else:
                    item.future.set_exception(item.error)

    def store(self, batch: list[Submission]) -> None:
        """Reserve revisions and insert the batch's documents (blocking); failures set on items."""
        try:
            rev = self.writer.next_revisions(len(batch))
        except StoreError as exc:
            for item in batch:
                item.error = exc
            return
        for i, item in enumerate(batch):
            item.doc["rev"] = rev + i
        try:
            failed = self.writer.insert_new([item.doc for item in batch])
        except DatabaseUnavailable as exc:
            # The server may have written some before the connection broke.
            for item in batch:
                item.error, item.unpublished = exc, True
            return
        except StoreError as exc:
            for item in batch:
                item.error = exc
            return
        for i, error in failed.items():
            batch[i].error = error

    def publish(self, batch: list[Submission]) -> None:
        """Send the stored tasks' messages, then announce them on the feed (blocking)."""
        ready = [item for item in batch if item.error is None]
        if not ready:
            return
        try:
            self.bus.publish_many([(item.kind, item.celery_id, item.message) for item in ready])
        except Exception as exc:  # every task of the batch fails alike
            error: BaseException = exc
            if isinstance(exc, BROKER_ERRORS):
                log.warning("broker refused %d task(s): %s", len(ready), exc)
                error = BrokerUnavailable(type(exc).__name__)
            else:
                log.exception("publishing %d task(s) failed", len(ready))
            for item in ready:
                item.error = error
            # Deleted before the requests are answered, so no caller sees them; if the
            # database fails too, the caller's retrying clean-up takes over.
            try:
                self.writer.delete_new([item.celery_id for item in ready])
            except StoreError as db_exc:
                log.warning("unpublished tasks not deleted yet (%s); retrying in the background", db_exc)
                for item in ready:
                    item.unpublished = True
            return
        self.announce(cast(list[dict[str, Any]], [item.doc for item in ready]))
