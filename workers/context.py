"""The base class every control-plane task runs under, and the context it hands to pipelines.

Before a task body runs, the worker asks the store whether a revoke of the task
was persisted; if so the task is not run (Celery's own revoked list lives in
worker memory only and is forgotten on restart).  While it runs, a pipeline
reports progress with :meth:`TaskContext.progress` (sent as ``task-progress``
events, rate-limited) and polls :meth:`TaskContext.should_stop`, which turns
true within about a second of a revoke.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from pymongo.errors import PyMongoError

from controlplane.config import Config
from controlplane.store.tasks import TaskStore
from workers.process import install_terminate_handler

log = logging.getLogger(__name__)

_stores: dict[int, TaskStore] = {}
_stores_lock = threading.Lock()


def store_for(config: Config) -> TaskStore:
    """One TaskStore per process (pool children make their own after fork)."""
    import os

    pid = os.getpid()
    with _stores_lock:
        store = _stores.get(pid)
        if store is None:
            store = TaskStore(config.mongo)
            _stores[pid] = store
        return store


class TaskRevoked(Exception):
    """Raised inside a pipeline when it notices it has been revoked."""


@dataclass
class TaskContext:
    """What a pipeline gets besides its data: identity, progress, stop checks, the store."""

    celery_id: str
    task_id: str
    task_type: str
    config: Config
    store: TaskStore
    send_event: Callable[..., Any]
    retry: Callable[..., Any] | None = None
    attempt: int = 0
    progress_interval: float = 0.2
    stop_interval: float = 0.5
    _last_progress: float = field(default=0.0, repr=False)
    _last_stop_check: float = field(default=0.0, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def progress(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        """Report the current stage and done/total (at most every ``progress_interval`` s)."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_interval and done < total:
            return
        self._last_progress = now
        try:
            self.send_event("task-progress", stage=stage, done=int(done), total=int(total))
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the task goes on
            log.warning("progress event for %s not sent: %s", self.celery_id, exc)

    def should_stop(self) -> bool:
        """True once a revoke of this task has been persisted (checked at most twice a second)."""
        if self._stopped:
            return True
        now = time.monotonic()
        if now - self._last_stop_check < self.stop_interval:
            return False
        self._last_stop_check = now
        try:
            self._stopped = self.store.revoke_requested(self.celery_id)
        except PyMongoError:
            return False
        return self._stopped

    def finish(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Record a pipeline's per-collection ``statistic`` (and whether it was cut short) on the
        task document, then raise :class:`TaskRevoked` if the run was stopped by a revoke."""
        statistic = {k: v for k, v in stats.items() if k != "partial"}
        self.store.set_status_fields(
            self.celery_id, {"statistic": statistic, "partial": bool(stats.get("partial"))}
        )
        self.check_stop()
        return stats

    def check_stop(self) -> None:
        """Raise :class:`TaskRevoked` when :meth:`should_stop` is true."""
        if self.should_stop():
            raise TaskRevoked(self.celery_id)


class ControlledTask(Task):  # type: ignore[misc]
    """Celery Task base: persisted-revoke check before running, context for the body."""

    abstract = True
    cp_task_type: str = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        config: Config = self.app.cp_config
        if config.worker.pool == "prefork" and threading.current_thread() is threading.main_thread():
            install_terminate_handler(getattr(signal, config.worker.terminate_signal, signal.SIGTERM))
        store = store_for(config)
        celery_id = self.request.id
        if celery_id:
            try:
                revoked = store.revoke_requested(celery_id)
            except PyMongoError as exc:
                log.warning("revoke check for %s failed (%s); retrying later", celery_id, exc)
                raise self.retry(countdown=5, max_retries=None) from exc
            if revoked:
                self._announce_revoked(celery_id)
                raise Ignore()
        return super().__call__(*args, **kwargs)

    def _announce_revoked(self, celery_id: str) -> None:
        log.info("task %s was revoked before it started; not running it", celery_id)
        try:
            self.send_event("task-revoked", terminated=False, expired=False, reason="revoked before start")
        except Exception as exc:  # noqa: BLE001 - the store check already stopped the run
            log.warning("revoked event for %s not sent: %s", celery_id, exc)
        try:
            self.update_state(state="REVOKED", meta={"reason": "revoked before start"})
        except Exception as exc:  # noqa: BLE001 - result backends are optional
            log.debug("result backend not updated for %s: %s", celery_id, exc)

    def context(self, data: dict[str, Any]) -> TaskContext:
        """The pipeline context of the current request."""
        config: Config = self.app.cp_config
        return TaskContext(
            celery_id=self.request.id or "",
            task_id=str(data.get("task_id") or self.request.id or ""),
            task_type=self.cp_task_type,
            config=config,
            store=store_for(config),
            send_event=self.send_event,
            retry=self.retry,
            attempt=int(self.request.retries or 0),
        )
