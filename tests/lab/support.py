"""Helpers of the recon tests: a lab worker config and task contexts started like a worker's."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from controlplane.config import Config, load_config
from controlplane.store.tasks import TaskStore, new_task_document
from tests.lab import Lab, MongoServer
from workers.context import TaskContext


def lab_config(mongo_server: MongoServer, lab: Lab) -> Config:
    """A worker config on the lab: its Mongo server and resolvers, loopback in scope, short timeouts."""
    config = load_config(None, env={})
    config.mongo.url = mongo_server.url
    config.mongo.database = "recon2_tests"
    config.recon.resolvers = lab.resolvers
    config.recon.connect_timeout = 0.5
    config.recon.http_timeout = 2.0
    config.recon.concurrency = 50
    config.scope.allow_loopback = True
    config.scope.allow_private = True
    config.scope.denied_cidrs = ["fd00::/8", "127.88.9.0/24"]
    return config


@dataclass
class Worker:
    """Starts tasks the way a worker would: a stored task document and a real TaskContext."""

    config: Config
    store: TaskStore
    events: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)

    def start(self, task_type: str, data: dict[str, Any]) -> TaskContext:
        """Store a STARTED task document for ``data`` and return its context (``data.task_id`` set)."""
        celery_id = str(uuid.uuid4())
        doc = new_task_document(
            celery_id=celery_id, task_type=task_type, data=data, created_time=time.time(), rev=1
        )
        doc["status"] = "STARTED"
        self.store.tasks.insert_one(doc)
        log: list[tuple[str, dict[str, Any]]] = []
        self.events[celery_id] = log
        ctx = TaskContext(
            celery_id=celery_id,
            task_id=str(doc["_id"]),
            task_type=task_type,
            config=self.config,
            store=self.store,
            send_event=lambda kind, **fields: log.append((kind, fields)),
            progress_interval=0.0,
            stop_interval=0.2,
        )
        data["task_id"] = ctx.task_id
        return ctx

    def revoke(self, ctx: TaskContext) -> None:
        """Persist a revoke of the task, as the API does."""
        change = {"revoke": {"time": time.time()}, "rev": self.store.next_revisions(1)}
        self.store.tasks.update_one({"celery_id": ctx.celery_id}, {"$set": change})

    def progress(self, ctx: TaskContext, stage: str) -> list[tuple[int, int]]:
        """The (done, total) progress events of ``stage`` the task sent."""
        return [
            (f["done"], f["total"])
            for kind, f in self.events[ctx.celery_id]
            if kind == "task-progress" and f["stage"] == stage
        ]
