"""``controlplane worker``: a Celery worker with every task type of the deployment."""

from __future__ import annotations

import signal
import socket
from typing import Any

from celery.signals import worker_process_init

from controlplane.config import Config
from workers.app import make_celery
from workers.proc import install_terminate_handler


def run_worker(config: Config, name: str | None = None, extra: list[str] | None = None) -> None:
    """Start the worker in this process (blocks until it shuts down)."""
    app = make_celery(config, register_tasks=True)
    terminate_sig = getattr(signal, config.worker.terminate_signal, signal.SIGTERM)

    @worker_process_init.connect(weak=False)
    def _child_init(**_: Any) -> None:
        install_terminate_handler(terminate_sig)

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
