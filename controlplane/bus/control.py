"""Celery control: publish tasks, broadcast revokes, inspect and steer workers, count queues.

Every method here blocks (Celery's producer and broadcast APIs are
synchronous); the API calls them through :meth:`ControlBus.run`, which runs
them on a thread pool with a deadline so the IOLoop never waits on a broker.
Broker failures surface as :class:`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from controlplane.celeryapp import make_celery
from controlplane.config import Config
from controlplane.core.errors import ServiceUnavailable
from controlplane.core.redact import redact_message_kwargs
from controlplane.core.tasktypes import TaskType

log = logging.getLogger(__name__)

T = TypeVar("T")

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    KombuError,
    ConnectionError,
    socket.error,
    TimeoutError,
)
try:  # redis-py's errors are not OSErrors
    import redis.exceptions

    BROKER_ERRORS += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
except ImportError:  # pragma: no cover - redis is a hard dependency
    pass


class BrokerUnavailable(ServiceUnavailable):
    """The broker did not accept a message or a broadcast in time."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("broker", detail)


# One quick retry of a publish (a dropped connection reconnects); the caller's deadline bounds it.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}

STATES = ("active", "reserved", "scheduled")
#: The inspect commands of a survey of the workers (see :meth:`ControlBus.survey`).
SURVEY = ("stats", "active_queues", "reserved")


class ControlBus:
    """Publish, revoke and inspect over the deployment's broker."""

    def __init__(self, config: Config, app: Celery | None = None) -> None:
        self.config = config
        self.app = app or make_celery(config, producer_only=True)
        self.executor = ThreadPoolExecutor(config.api.executor_threads, thread_name_prefix="control")
        self._queues: dict[str, str] = {}  # task type -> queue
        # A Redis queue is a list that exists once pushed to (and Celery publishes to it
        # by name, through the anonymous exchange): declaring it on every publish costs
        # kombu a fifth of the publish and does nothing.  AMQP queues are declared.
        self._declare: dict[str, Any] = {"declare": []} if config.broker.url.startswith("redis") else {}

    def close(self) -> None:
        """Stop the thread pool and release broker connections."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.app.close()

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run a blocking call on the pool with a deadline; broker failures → BrokerUnavailable."""
        loop = asyncio.get_running_loop()
        deadline = timeout if timeout is not None else self.config.broker.publish_timeout
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.executor, fn, *args), deadline)
        except TimeoutError:
            raise BrokerUnavailable(f"no answer within {deadline:g}s") from None
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(type(exc).__name__) from None

    def publish_many(self, messages: list[tuple[TaskType, str, dict[str, Any]]]) -> None:
        """Send task messages (blocking) in ARL's shape, on one producer, batched where the transport can.

        On Redis, kombu's publish batch sends them all in one pipeline (one round
        trip); other transports publish one by one.  Raises on the first failure:
        the caller cannot know which of the messages reached the broker.
        """
        if not messages:
            return
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=len(messages) + 1):
            for task_type, celery_id, data in messages:
                queue = self._queues.get(task_type.value)
                if queue is None:
                    queue = self._queues[task_type.value] = self.config.task_config(task_type.value).queue
                kwargs = task_kwargs(task_type, data)
                self.app.send_task(
                    task_type.celery_name,
                    kwargs=kwargs,
                    # What workers report as the task's arguments (events, logs): JSON, as
                    # Celery's saferepr costs more than the rest of the publish, and without
                    # credentials (core.redact), which only the message itself carries.
                    argsrepr="()",
                    kwargsrepr=_short_json(redact_message_kwargs(kwargs)),
                    task_id=celery_id,
                    queue=queue,
                    producer=producer,
                    **self._declare,
                    retry=True,
                    retry_policy=RETRY_POLICY,
                )

    def revoke(self, celery_ids: list[str], terminate: bool) -> None:
        """One broadcast revoking every id (blocking)."""
        self.app.control.revoke(
            celery_ids, terminate=terminate, signal=self.config.worker.terminate_signal if terminate else None
        )

    def inspect(self) -> list[dict[str, Any]]:
        """Active, reserved and scheduled tasks of every worker, merged (blocking)."""
        timeout = self.config.api.inspect_timeout

        def ask(state: str) -> dict[str, Any]:
            reply = getattr(self.app.control.inspect(timeout=timeout), state)()
            return dict(reply or {})

        with ThreadPoolExecutor(len(STATES)) as pool:
            futures = {state: pool.submit(ask, state) for state in STATES}
            replies = {state: f.result() for state, f in futures.items()}
        tasks: list[dict[str, Any]] = []
        for state in STATES:
            for worker, entries in sorted(replies[state].items()):
                for entry in entries or []:
                    tasks.append(_flatten(entry, worker, state))
        return tasks

    # -- workers and queues (the API's workers page; see controlplane.service.workers) ----------

    def survey(self, expect: int | None = None) -> dict[str, dict[str, Any]]:
        """What each worker says of itself (blocking): ``{hostname: {"stats", "queues", "reserved"}}``.

        Three inspect broadcasts at once (``stats``, ``active_queues``, ``reserved``), each
        returning after ``expect`` replies or ``api.inspect_timeout``. ``stats`` is cut to
        what the view shows (never the broker's address or options); ``reserved`` is a count
        (the messages' arguments never leave this function).
        """
        timeout = self.config.api.inspect_timeout

        def ask(method: str) -> dict[str, Any]:
            reply = getattr(self.app.control.inspect(timeout=timeout, limit=expect or None), method)()
            return dict(reply or {})

        with ThreadPoolExecutor(len(SURVEY)) as pool:
            futures = {method: pool.submit(ask, method) for method in SURVEY}
            replies = {method: f.result() for method, f in futures.items()}
        out: dict[str, dict[str, Any]] = {}
        for method in SURVEY:
            for host, answer in replies[method].items():
                said = out.setdefault(str(host), {"stats": None, "queues": None, "reserved": None})
                if method == "stats" and isinstance(answer, dict):
                    said["stats"] = _stats_summary(answer)
                elif method == "active_queues" and isinstance(answer, list):
                    said["queues"] = queue_names(answer)
                elif method == "reserved" and isinstance(answer, list):
                    said["reserved"] = len(answer)
        return out

    def queue_depths(self, names: list[str]) -> tuple[str, dict[str, dict[str, int | None]]]:
        """The transport and each queue's ``{"depth", "consumers"}`` as the broker counts them (blocking).

        Redis: the lengths of the queue's lists, priority lists included (kombu's names for
        them), and no consumer count (Redis does not know it). RabbitMQ: a passive declare's
        message and consumer counts; a queue the broker does not have is ``None``.
        """
        out: dict[str, dict[str, int | None]] = {}
        with self.app.connection_for_read() as conn:
            kind = str(conn.transport.driver_type)
            channel = conn.default_channel
            for name in names:
                depth: int | None = None
                consumers: int | None = None
                if kind == "redis":
                    depth = int(channel._size(name))
                elif kind == "amqp":
                    try:
                        _, depth, consumers = channel.queue_declare(queue=name, passive=True)
                    except conn.channel_errors:
                        channel = conn.channel()  # a failed passive declare closes the channel
                out[name] = {"depth": depth, "consumers": consumers}
        return kind, out

    def control(
        self, name: str, command: str, arguments: dict[str, Any] | None = None, *, reply: bool = True
    ) -> dict[str, Any] | None:
        """Send ``command`` to worker ``name`` alone and return its reply (blocking).

        None: no reply within ``api.inspect_timeout`` (or ``reply=False``, as for
        ``shutdown``, which Celery's workers never answer).
        """
        replies = self.app.control.broadcast(
            command,
            arguments=arguments or {},
            destination=[name],
            reply=reply,
            timeout=self.config.api.inspect_timeout,
            limit=1 if reply else None,
        )
        for answer in replies or []:
            if isinstance(answer, dict) and isinstance(answer.get(name), dict):
                return dict(answer[name])
        return None

    def pool_grow(self, name: str, n: int) -> dict[str, Any] | None:
        """Add ``n`` processes (threads) to worker ``name``'s pool; its reply (blocking)."""
        return self.control(name, "pool_grow", {"n": n})

    def pool_shrink(self, name: str, n: int) -> dict[str, Any] | None:
        """Remove ``n`` processes (threads) from worker ``name``'s pool; its reply (blocking)."""
        return self.control(name, "pool_shrink", {"n": n})

    def add_consumer(self, name: str, queue: str) -> dict[str, Any] | None:
        """Make worker ``name`` consume ``queue`` too; its reply (blocking)."""
        return self.control(name, "add_consumer", {"queue": queue})

    def cancel_consumer(self, name: str, queue: str) -> dict[str, Any] | None:
        """Make worker ``name`` stop consuming ``queue``; its reply (blocking)."""
        return self.control(name, "cancel_consumer", {"queue": queue})

    def shutdown(self, name: str) -> None:
        """Ask worker ``name`` to shut down warmly (it finishes its running tasks; no reply)."""
        self.control(name, "shutdown", reply=False)

    def active_queues(self, name: str) -> list[str] | None:
        """The queues worker ``name`` consumes now, or None when it did not answer (blocking)."""
        replies = self.app.control.inspect(
            destination=[name], timeout=self.config.api.inspect_timeout, limit=1
        ).active_queues()
        answer = (replies or {}).get(name)
        return queue_names(answer) if isinstance(answer, list) else None


def queue_names(active_queues: list[Any]) -> list[str]:
    """The names in an ``active_queues`` reply."""
    return [str(q["name"]) for q in active_queues if isinstance(q, dict) and q.get("name")]


def _stats_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What the workers view shows of a ``stats`` reply: pool, processes, counts, uptime."""
    raw_pool, raw_total = stats.get("pool"), stats.get("total")
    pool: dict[str, Any] = raw_pool if isinstance(raw_pool, dict) else {}
    total: dict[str, Any] = raw_total if isinstance(raw_total, dict) else {}
    processes = pool.get("processes")
    return {
        "pid": stats.get("pid"),
        "uptime": stats.get("uptime"),
        "prefetch_count": stats.get("prefetch_count"),
        "pool": str(pool.get("implementation") or ""),
        "max_concurrency": pool.get("max-concurrency"),
        "processes": len(processes) if isinstance(processes, list) else None,
        "processed": sum(int(v) for v in total.values() if isinstance(v, int)),
    }


def task_kwargs(task_type: TaskType, data: dict[str, Any]) -> dict[str, Any]:
    """A task message's kwargs in ARL's shape: ``{"options": {"celery_action", "data"}}``."""
    return {"options": {"celery_action": task_type.value, "data": data}}


def _short_json(value: Any, limit: int = 1024) -> str:
    """JSON of ``value``, cut to ``limit`` characters (Celery's repr limit) with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(entry: dict[str, Any], worker: str, state: str) -> dict[str, Any]:
    item = dict(entry)
    request = item.pop("request", None)
    if state == "scheduled" and isinstance(request, dict):
        item = {**request, "eta": entry.get("eta"), "priority": entry.get("priority")}
    if "kwargs" in item:
        item["kwargs"] = redact_message_kwargs(item["kwargs"])  # inspect answers the raw message
    item["worker"] = worker
    item["state"] = state
    item.setdefault("hostname", worker)
    return item
