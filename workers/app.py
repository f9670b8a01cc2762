"""The workers' Celery app: the shared builder (:mod:`controlplane.celeryapp`) plus every task type."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from controlplane.celeryapp import make_celery
from controlplane.celeryapp.redis_transport import hold_as
from controlplane.config import Config
from workers.register import register_all


def make_worker_app(config: Config) -> Celery:
    """A Celery app for this deployment with a task registered for every configured task type.

    A worker started from it records, on a Redis broker, that its process holds the
    messages it reserves (:func:`~controlplane.celeryapp.redis_transport.hold_as`), so
    the event consumer can give them back if the process dies.
    """
    app = make_celery(config)
    register_all(app, config, app.cp_registry)
    worker_init.connect(_hold_reserved, weak=False, dispatch_uid="controlplane.hold_reserved")
    return app


def _hold_reserved(sender: Any = None, **_: Any) -> None:
    hold_as(str(sender.hostname))
