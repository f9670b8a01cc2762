"""Build the Celery app from the one config object.

Producers (the API) and workers use the same builder, so serializers, queues,
routes and time limits never disagree.  Only JSON is accepted: no pickle of
anything a client sent, ever.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from controlplane.config import Config
from controlplane.core.tasktypes import Registry


def make_celery(config: Config, *, producer_only: bool = False) -> Celery:
    """A Celery app for this deployment, without tasks (workers add theirs: :mod:`workers.app`).

    ``producer_only`` (the API) leaves the result backend out: the API never reads
    results, and with a Redis backend Celery would subscribe to every task it sends
    (blocking the publish while Redis is unreachable).
    """
    app = Celery("controlplane", set_as_current=False)
    registry = Registry.from_config(config)
    queues = sorted({config.task_config(t.value).queue for t in registry} | set(config.worker.queues))
    routes = {t.celery_name: {"queue": config.task_config(t.value).queue} for t in registry}
    app.conf.update(
        broker_url=config.broker.url,
        result_backend=None if producer_only else (config.result_backend or None),
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # The API stores a task's document before publishing it, so its task-sent event
        # would tell the consumer nothing new; workers (retries) and other clients send it.
        task_send_sent_event=not producer_only,
        worker_send_task_events=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=False,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in queues],
        task_default_queue=config.task_defaults.queue,
        task_routes=routes,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=config.broker.connect_timeout,
        broker_transport_options={
            "visibility_timeout": 6 * 3600,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
        },
        result_backend_transport_options={"socket_timeout": 5, "socket_connect_timeout": 3},
        # A result store that fails while the backend (the broker, on Redis) is briefly down
        # is retried, or a task that succeeded would end FAILURE ("raised outside body").
        result_backend_always_retry=True,
        result_backend_max_retries=60,
        result_backend_max_sleep_between_retries_ms=2000,
        broker_heartbeat=10,
        event_queue_expires=60,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    if config.broker.url.startswith("redis://"):
        # Reserved messages go back to their queue after a lost connection (see the module).
        app.conf.broker_transport = "controlplane.celeryapp.redis_transport:Transport"
    app.cp_config = config  # type: ignore[attr-defined]
    app.cp_registry = registry  # type: ignore[attr-defined]
    return app


def task_options(config: Config, task_type: str) -> dict[str, Any]:
    """Per-type Celery task options from config (queue, limits, acks_late)."""
    tc = config.task_config(task_type)
    return {
        "soft_time_limit": tc.soft_time_limit or None,
        "time_limit": tc.time_limit or None,
        "acks_late": tc.acks_late,
        "reject_on_worker_lost": tc.acks_late,
        "queue": tc.queue,
    }
