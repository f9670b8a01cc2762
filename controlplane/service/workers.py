"""Workers and queues: one cached view for every request, and the operators' controls.

The view is a snapshot built from three sources:

* the store's ``workers`` collection, which the event consumer keeps from heartbeats and
  task events: online or not, last heartbeat, pid, processed and active counts (and load
  average and software version when the consumer records them);
* a survey of the workers over the control bus (``stats``, ``active_queues``, ``reserved``):
  pool, concurrency, prefetch, reserved count, the queues each one consumes;
* the broker's queue depths (Redis: the lengths of a queue's lists, priority lists
  included; RabbitMQ: a passive declare's message and consumer counts).

A snapshot is rebuilt at most once per ``api.workers_cache_seconds`` in one API process,
by one task whose result every request waiting meanwhile shares (a failure too), so page
views and scrapes never add broadcasts. The controls (pool grow and shrink, add and cancel
a consumer, shutdown) go to one worker over the control bus and answer what it replied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from controlplane.bus.control import ControlBus
from controlplane.config import Config
from controlplane.core.documents import iso
from controlplane.core.errors import ServiceUnavailable, WorkerNotFound
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
#: Heartbeat fields shown as they are when the consumer recorded them.
HEARTBEAT_FIELDS = ("loadavg", "sw_ver", "sw_ident", "sw_sys")


def worker_online(info: Mapping[str, Any], now: float, timeout: float) -> bool:
    """Whether a worker document (from the consumer) shows a live worker: online, heard within ``timeout``."""
    beat = info.get("last_heartbeat")
    return bool(info.get("online")) and isinstance(beat, int | float) and now - float(beat) <= timeout


def configured_queues(config: Config, task_queues: list[str]) -> set[str]:
    """Every queue the deployment's config names: task types', workers' and the foreign one."""
    names = {config.task_defaults.queue, *task_queues, *config.worker.queues}
    if config.worker.foreign_queue:
        names.add(config.worker.foreign_queue)
    return {n for n in names if n}


def pool_name(implementation: str) -> str | None:
    """``celery.concurrency.prefork:TaskPool`` → ``prefork`` (None when unknown)."""
    module = implementation.partition(":")[0]
    return module.rsplit(".", 1)[-1] or None


def worker_view(
    name: str, doc: Mapping[str, Any] | None, said: Mapping[str, Any] | None, now: float, timeout: float
) -> dict[str, Any]:
    """One worker as the API shows it, from its stored heartbeat (``doc``) and its survey reply (``said``).

    Online: its last heartbeat is within ``events.worker_timeout`` and it did not say
    goodbye, or it answered the survey just now (a consumer that is down records no heartbeats).
    """
    doc = doc or {}
    stats = (said or {}).get("stats") or {}
    raw_beat = doc.get("last_heartbeat")
    heard = isinstance(raw_beat, int | float)
    beat = float(raw_beat) if isinstance(raw_beat, int | float) else 0.0
    online = worker_online(doc, now, timeout) or said is not None
    processes = stats.get("processes")
    concurrency = processes if isinstance(processes, int) else stats.get("max_concurrency")
    processed = doc.get("processed")
    if not isinstance(processed, int):
        processed = stats.get("processed")
    view: dict[str, Any] = {
        "name": name,
        "state": ONLINE if online else OFFLINE,
        "heartbeat_age": round(max(0.0, now - beat), 1) if heard else None,
        "last_heartbeat": iso(beat) if heard else None,
        "online_since": iso(doc.get("online_since")),
        "pid": stats.get("pid") or doc.get("pid"),
        "pool": pool_name(str(stats.get("pool") or "")),
        "concurrency": concurrency,
        "prefetch_count": stats.get("prefetch_count"),
        "processed": processed,
        "active": doc.get("active") if online else None,
        "reserved": (said or {}).get("reserved"),
        "queues": (said or {}).get("queues"),
        "uptime": stats.get("uptime"),
        "replied": said is not None,
    }
    for key in HEARTBEAT_FIELDS:
        view[key] = doc.get(key)
    return view


def queue_view(name: str, counted: Mapping[str, Any] | None, consumers: list[str]) -> dict[str, Any]:
    """One queue: its depth, the workers consuming it (from their ``active_queues``) and, on
    RabbitMQ, the broker's own consumer count."""
    counted = counted or {}
    return {
        "name": name,
        "depth": counted.get("depth"),
        "consumers": consumers,
        "consumer_count": len(consumers),
        "broker_consumers": counted.get("consumers"),
    }


@dataclass
class Snapshot:
    """The workers and queues as one refresh found them, at ``taken``."""

    taken: float
    workers: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    broker: str = ""

    def worker(self, name: str) -> dict[str, Any] | None:
        """The view of worker ``name``, if the snapshot has it."""
        return next((w for w in self.workers if w["name"] == name), None)


class WorkersService:
    """Cached views of workers and queues, and operator controls over the control bus."""

    def __init__(
        self,
        config: Config,
        bus: ControlBus,
        store: TaskStore,
        task_queues: list[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.bus = bus
        self.store = store
        self.task_queues = list(task_queues)
        self.clock = clock
        self.interval = config.api.workers_cache_seconds
        self.refreshes = 0  # snapshots started (each one survey of the workers)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="workers-view")
        self._task: asyncio.Future[Snapshot] | None = None
        self._started = 0.0

    def close(self) -> None:
        """Release the store-read thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the cached view -----------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The current snapshot: rebuilt when older than ``api.workers_cache_seconds``, else shared.

        The rebuild runs as a task of its own: a request that goes away does not cancel it,
        and every request arriving meanwhile waits for the same one.
        """
        task = self._task
        now = self.clock()
        if task is None or (task.done() and now - self._started >= self.interval):
            self._started = now
            self.refreshes += 1
            task = self._task = asyncio.ensure_future(self._build())
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _stored_workers(self) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.store.workers)

    async def _build(self) -> Snapshot:
        timeout = self.config.events.worker_timeout
        docs = {str(d["hostname"]): d for d in await self._stored_workers() if d.get("hostname")}
        expect = sum(1 for d in docs.values() if worker_online(d, self.clock(), timeout))
        deadline = self.config.api.inspect_timeout + self.config.broker.publish_timeout
        said = await self.bus.run(self.bus.survey, expect, timeout=deadline)
        names = configured_queues(self.config, self.task_queues)
        for reply in said.values():
            names.update(reply.get("queues") or [])
        broker, counted = await self.bus.run(self.bus.queue_depths, sorted(names))
        now = self.clock()
        workers = [worker_view(n, docs.get(n), said.get(n), now, timeout) for n in sorted({*docs, *said})]
        workers.sort(key=lambda w: (w["state"] != ONLINE, w["name"]))
        consumers: dict[str, list[str]] = {n: [] for n in names}
        for host, reply in sorted(said.items()):
            for queue in reply.get("queues") or []:
                consumers[queue].append(host)
        queues = [queue_view(n, counted.get(n), consumers[n]) for n in sorted(names)]
        return Snapshot(now, workers, queues, broker)

    async def workers(self) -> dict[str, Any]:
        """Every worker seen, online ones first."""
        snap = await self.snapshot()
        return {
            "workers": snap.workers,
            "total": len(snap.workers),
            "online": sum(1 for w in snap.workers if w["state"] == ONLINE),
            "updated": iso(snap.taken),
        }

    async def queues(self) -> dict[str, Any]:
        """Every queue the deployment or its workers name, with depth and consumers."""
        snap = await self.snapshot()
        return {"queues": snap.queues, "broker": snap.broker, "updated": iso(snap.taken)}

    async def worker(self, name: str) -> dict[str, Any]:
        """One worker: from the snapshot, else (seen since) from its stored heartbeat alone."""
        snap = await self.snapshot()
        found = snap.worker(name)
        if found is not None:
            return {**found, "updated": iso(snap.taken)}
        doc = await self._stored(name)
        now = self.clock()
        return {**worker_view(name, doc, None, now, self.config.events.worker_timeout), "updated": iso(now)}

    async def _stored(self, name: str) -> dict[str, Any]:
        """The stored heartbeat document of ``name``; WorkerNotFound when there is none."""
        for doc in await self._stored_workers():
            if doc.get("hostname") == name:
                return doc
        raise WorkerNotFound({"worker": name})

    async def _known(self, name: str) -> None:
        """WorkerNotFound unless the last snapshot or the store knows ``name`` (never broadcasts)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is None:
            if task.result().worker(name) is not None:
                return
        await self._stored(name)

    # -- controls ------------------------------------------------------------------

    async def _control(self, name: str, command: str, call: Callable[..., Any], *args: Any) -> dict[str, Any]:
        await self._known(name)
        deadline = self.config.api.inspect_timeout + self.config.broker.publish_timeout
        reply = await self.bus.run(call, name, *args, timeout=deadline)
        if reply is None:
            raise ServiceUnavailable(
                "worker", f"{name} did not reply within {self.config.api.inspect_timeout:g}s"
            )
        log.info("worker %s: %s%s -> %s", name, command, f" {args[0]}" if args else "", reply)
        return {"worker": name, "command": command, "ok": "error" not in reply, "reply": reply}

    async def pool(self, name: str, *, grow: int = 0, shrink: int = 0) -> dict[str, Any]:
        """Grow or shrink worker ``name``'s pool by ``grow`` or ``shrink`` processes."""
        if grow:
            return await self._control(name, "pool_grow", self.bus.pool_grow, grow)
        return await self._control(name, "pool_shrink", self.bus.pool_shrink, shrink)

    async def consumer(self, name: str, *, add: str = "", cancel: str = "") -> dict[str, Any]:
        """Make worker ``name`` consume queue ``add``, or stop consuming ``cancel``.

        The answer also carries the queues the worker says it consumes afterwards
        (``queues``; None if it did not answer that question in time).
        """
        if add:
            out = await self._control(name, "add_consumer", self.bus.add_consumer, add)
        else:
            out = await self._control(name, "cancel_consumer", self.bus.cancel_consumer, cancel)
        deadline = self.config.api.inspect_timeout + self.config.broker.publish_timeout
        out["queues"] = await self.bus.run(self.bus.active_queues, name, timeout=deadline)
        return out

    async def shutdown(self, name: str) -> dict[str, Any]:
        """Ask worker ``name`` to shut down warmly (Celery's workers send no reply to this)."""
        await self._known(name)
        deadline = self.config.api.inspect_timeout + self.config.broker.publish_timeout
        await self.bus.run(self.bus.shutdown, name, timeout=deadline)
        log.info("worker %s: shutdown requested", name)
        return {"worker": name, "command": "shutdown", "ok": True, "reply": None}


def _retrieve(task: asyncio.Future[Snapshot]) -> None:
    """Mark a failed refresh's exception as seen (it is re-raised to every request that shares it)."""
    if not task.cancelled():
        task.exception()
