"""The consumer's last stage: what a batch write changed goes to the live feed, in order."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

Changes = Callable[[list[dict[str, Any]]], None]


class FeedStage:
    """Hands written changes to ``on_changes`` on a thread of its own, in the order given.

    At most ``depth`` batches wait or run; a caller that would exceed that waits
    for the oldest (backpressure, so a slow feed cannot hold unbounded memory).
    ``on_changes`` must not raise (the feed publisher never does: what it
    cannot publish, the serve processes' orphan sweep republishes); if it does,
    the error is logged and the stage goes on.
    """

    def __init__(self, on_changes: Changes, depth: int = 2) -> None:
        self.on_changes = on_changes
        self.depth = depth
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="event-feed")
        self._pending: deque[Future[None]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def put(self, changed: list[dict[str, Any]]) -> None:
        """Queue one batch of written documents (waits while ``depth`` batches are queued).

        After :meth:`close` (a write still finishing while the consumer stops) the
        batch is handed over on the caller's thread.
        """
        with self._lock:
            if self._closed:
                self._call(changed)
                return
            while self._pending and self._pending[0].done():
                self._pending.popleft()
            while len(self._pending) >= self.depth:
                self._pending.popleft().result()
            self._pending.append(self._thread.submit(self._call, changed))

    def drain(self) -> None:
        """Wait until every queued batch has been handed over."""
        with self._lock:
            while self._pending:
                self._pending.popleft().result()

    def close(self) -> None:
        """Hand over what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            while self._pending:
                self._pending.popleft().result()
        self._thread.shutdown(wait=True)

    def _call(self, changed: list[dict[str, Any]]) -> None:
        try:
            self.on_changes(changed)
        except Exception:
            log.exception("announcing %d change(s) failed", len(changed))
