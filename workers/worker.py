"""``controlplane worker``: a Celery worker with every task type of the deployment."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from celery.signals import worker_init, worker_process_init
from celery.worker import state as worker_state
from pymongo.errors import PyMongoError

from controlplane.config import Config
from controlplane.store.tasks import TaskStore
from workers.app import make_worker_app
from workers.process import lead_own_group, reap_orphan_groups

log = logging.getLogger(__name__)

REVOKE_MEMORY_SECONDS = 7 * 24 * 3600


def preload_revoked(config: Config) -> int:
    """Put every persisted revoke into this worker's revoked set before it consumes.

    Celery keeps revoked ids in worker memory only; a restarted worker would
    otherwise accept (and announce as started) a task revoked while it was
    down.  With the set preloaded, Celery discards such messages before they
    reach the pool; :class:`workers.context.ControlledTask` remains the backstop.
    """
    store = TaskStore(config.mongo)
    try:
        ids = store.revoked_ids(since=time.time() - REVOKE_MEMORY_SECONDS)
    except PyMongoError as exc:
        log.warning("could not preload revoked tasks (%s); relying on the per-task check", exc)
        return 0
    finally:
        store.close()
    worker_state.revoked.update(ids)
    log.info("preloaded %d revoked task id(s)", len(ids))
    return len(ids)


def run_worker(
    config: Config,
    name: str | None = None,
    extra: list[str] | None = None,
    *,
    concurrency: int | None = None,
    queues: list[str] | None = None,
) -> None:
    """Start the worker in this process (blocks until it shuts down).

    ``name``, ``concurrency`` and ``queues`` override ``worker.*`` of the config for this
    worker (``controlplane worker -n/-c/-Q``); ``worker.foreign_queue`` is consumed either way.
    """
    app = make_worker_app(config)

    @worker_init.connect(weak=False)
    def _preload(**_: Any) -> None:
        preload_revoked(config)
        if config.worker.pool == "prefork":
            # A task's processes must not outlive a pool process killed outright.
            stop = threading.Event()
            threading.Thread(target=reap_orphan_groups, args=(stop,), name="reaper", daemon=True).start()

    @worker_process_init.connect(weak=False)
    def _own_group(**_: Any) -> None:
        lead_own_group()

    foreign = config.worker.foreign_queue
    argv = [
        "worker",
        "--loglevel",
        config.log_level,
        "--events",
        "--pool",
        config.worker.pool,
        "--concurrency",
        str(concurrency or config.worker.concurrency),
        "--queues",
        ",".join(dict.fromkeys([*(queues or config.worker.queues), *filter(None, [foreign])])),
        "--hostname",
        name or f"worker-{socket.gethostname()}@%h",
        "--without-gossip",
        "--without-mingle",
        *(extra or []),
    ]
    app.worker_main(argv)
