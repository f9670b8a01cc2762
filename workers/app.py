"""The workers' Celery app: the shared builder (:mod:`controlplane.celeryapp`) plus every task type."""

from __future__ import annotations

from celery import Celery

from controlplane.celeryapp import make_celery
from controlplane.config import Config
from workers.register import register_all


def make_worker_app(config: Config) -> Celery:
    """A Celery app for this deployment with a task registered for every configured task type."""
    app = make_celery(config)
    register_all(app, config, app.cp_registry)
    return app
