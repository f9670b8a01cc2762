"""``controlplane worker``: a Celery worker with every task type of the deployment."""

from __future__ import annotations

import socket

from controlplane.config import Config
from workers.app import make_celery


def run_worker(config: Config, name: str | None = None, extra: list[str] | None = None) -> None:
    """Start the worker in this process (blocks until it shuts down)."""
    app = make_celery(config, register_tasks=True)
    argv = [
        "worker",
        "--loglevel",
        config.log_level,
        "--events",
        "--pool",
        config.worker.pool,
        "--concurrency",
        str(config.worker.concurrency),
        "--queues",
        ",".join(config.worker.queues),
        "--hostname",
        name or f"worker-{socket.gethostname()}@%h",
        "--without-gossip",
        "--without-mingle",
        *(extra or []),
    ]
    app.worker_main(argv)
