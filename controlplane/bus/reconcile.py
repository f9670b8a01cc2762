"""Reconciliation: correct non-terminal task documents from Celery's result backend.

On Redis, Celery's events are pub/sub: whatever is sent while no consumer
listens is gone.  So the consumer reconciles when it starts and then every
``events.reconcile_interval`` seconds: every task that is not terminal in the
store is looked up in the result backend, and what the backend knows is turned
into synthetic events and applied through the same merge (which is idempotent
and order-independent, so a reconciled event and a late real one agree).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

from controlplane.bus.control import BROKER_ERRORS
from controlplane.bus.redelivery import Redeliverer
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

BATCH = 500


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None


def events_from_meta(celery_id: str, meta: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Synthetic events equivalent to what a result-backend entry says (pure)."""
    status = meta.get("status")
    done = _epoch(meta.get("date_done")) or now
    base = {"uuid": celery_id, "source": "reconcile"}
    worker = meta.get("worker")
    if isinstance(worker, str) and worker:
        base["hostname"] = worker
    if status == "SUCCESS":
        result = meta.get("result")
        return [
            {**base, "type": "task-succeeded", "timestamp": done, "result": json.dumps(result, default=str)}
        ]
    if status == "FAILURE":
        result = meta.get("result")
        exc = (
            result.get("exc_type", "") + ": " + str(result.get("exc_message", ""))
            if isinstance(result, dict)
            else result
        )
        return [
            {
                **base,
                "type": "task-failed",
                "timestamp": done,
                "exception": exc,
                "traceback": meta.get("traceback"),
            }
        ]
    if status == "REVOKED":
        reason = "revoked (from the result backend)"
        return [{**base, "type": "task-revoked", "timestamp": done, "reason": reason}]
    if status == "STARTED":
        return [{**base, "type": "task-started", "timestamp": now}]
    if status == "RETRY":
        return [{**base, "type": "task-retried", "timestamp": now, "exception": str(meta.get("result"))}]
    return []


class Reconciler:
    """Looks up non-terminal tasks in the result backend and repairs their documents."""

    def __init__(
        self, app: Celery, store: TaskStore, min_age: float = 2.0, redeliverer: Redeliverer | None = None
    ) -> None:
        self.app = app
        self.store = store
        self.min_age = min_age
        self.redeliverer = redeliverer

    def metas(self, celery_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Result-backend entries of the ids that have one (one round trip on Redis)."""
        ids = list(celery_ids)
        backend = self.app.backend
        client = getattr(backend, "client", None)
        out: dict[str, dict[str, Any]] = {}
        if client is not None and hasattr(client, "mget") and hasattr(backend, "get_key_for_task"):
            keys = [backend.get_key_for_task(cid) for cid in ids]
            for cid, raw in zip(ids, client.mget(keys), strict=True):
                if raw:
                    out[cid] = backend.decode_result(raw)
            return out
        for cid in ids:
            meta = backend.get_task_meta(cid)
            if meta and meta.get("status") != "PENDING":
                out[cid] = meta
        return out

    def run_once(self, now: float | None = None) -> list[dict[str, Any]]:
        """One pass over every non-terminal task; returns the documents it changed."""
        now = time.time() if now is None else now
        if self.redeliverer is not None:
            try:
                self.redeliverer.run_once(now)
            except BROKER_ERRORS as exc:
                log.warning("redelivery check skipped, broker unavailable: %s", exc)
        if not self.app.conf.result_backend:
            return []
        changed: list[dict[str, Any]] = []
        pending = self.store.non_terminal(older_than=now - self.min_age, limit=100_000)
        for start in range(0, len(pending), BATCH):
            status = {t["celery_id"]: t.get("status") for t in pending[start : start + BATCH]}
            events: list[dict[str, Any]] = []
            for cid, meta in self.metas(list(status)).items():
                if meta.get("status") == status.get(cid):
                    # Already in that (non-terminal) state: a synthetic event stamped "now"
                    # would only move the bookkeeping and rewrite the document every pass.
                    continue
                events.extend(events_from_meta(cid, meta, now))
            if events:
                changed.extend(self.store.apply_events(events))
        if changed:
            log.info("reconciled %d task(s) from the result backend", len(changed))
        return changed
