"""Results reach the store while a task runs: a revoke mid-stage keeps them, marked partial.

Real ``ip_task`` / ``domain_task`` runs through a worker's TaskContext against loopback listeners
and a lab DNS server; the revoke is persisted the way the API does it, as soon as a watcher sees the
first findings in MongoDB. Without streaming those findings would only be written at the end of
the stage, which these runs never reach.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controlplane.store.tasks import TaskStore
from tests.lab import Lab, MongoServer
from tests.lab.fastdns import FastDNSServer, wildcard_zone
from tests.lab.ports import PlantedPorts
from tests.lab.support import Worker, lab_config
from workers.context import TaskContext, TaskRevoked
from workers.recon.datafiles import load_wordlist
from workers.tasks.domain import domain_task
from workers.tasks.ip import ip_task

SAFETY = 120.0
"""A watcher that never sees the findings revokes the task after this many seconds anyway."""

ONLY_SCAN = {
    "port_scan": True,
    "service_detection": False,
    "site_identify": False,
    "ssl_cert": False,
    "file_leak": False,
}


@pytest.fixture
def worker(mongo_server: MongoServer, lab: Lab) -> Iterator[Worker]:
    config = lab_config(mongo_server, lab)
    store = TaskStore(config.mongo)
    yield Worker(config, store)
    store.close()


class RevokeWhen:
    """Watches the store from a thread; persists a revoke once ``seen()`` holds (or at SAFETY)."""

    def __init__(self, worker: Worker, ctx: TaskContext, seen: Callable[[], bool]) -> None:
        self.worker = worker
        self.ctx = ctx
        self.seen = seen
        self.by_finding = False
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        deadline = time.monotonic() + SAFETY
        while time.monotonic() < deadline:
            if self.seen():
                self.by_finding = True
                break
            time.sleep(0.1)
        self.worker.revoke(self.ctx)

    def __enter__(self) -> RevokeWhen:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(SAFETY + 5)


def test_revoke_mid_port_scan_keeps_the_open_ports_found_so_far(worker: Worker) -> None:
    host = "127.66.20.1"
    planted = PlantedPorts([host], per_host=4, low=1024, high=2500, seed=3).start()
    try:
        data: dict[str, Any] = {
            "targets": [host, "127.66.21.0/24"],
            "options": {**ONLY_SCAN, "port_scan_type": "all"},
        }
        ctx = worker.start("ip_task", data)
        results = worker.store.db["ip"]

        def all_planted_stored() -> bool:
            doc = results.find_one({"task_id": ctx.task_id, "ip": host})
            return doc is not None and {p["port"] for p in doc["ports"]} >= planted.planted[host]

        with RevokeWhen(worker, ctx, all_planted_stored) as watcher, pytest.raises(TaskRevoked):
            ip_task(data, ctx)
        assert watcher.by_finding, "no open port was stored while the scan ran"
        doc = results.find_one({"task_id": ctx.task_id, "ip": host})
        assert doc is not None and doc["partial"] is True
        assert {p["port"] for p in doc["ports"]} >= planted.planted[host]
        assert doc["port_count"] == len(doc["ports"])
        task = worker.store.tasks.find_one({"celery_id": ctx.celery_id})
        assert task is not None and task["partial"] and task["statistic"]["ip"] >= 1
        scanned = worker.progress(ctx, "port_scan")
        assert scanned and scanned[-1][0] < scanned[-1][1], "the scan was cut short"
    finally:
        planted.stop()


def test_revoke_mid_brute_force_keeps_the_names_found_so_far(worker: Worker) -> None:
    labels = load_wordlist("big")
    early = {labels[40]: "127.66.30.1", labels[90]: "127.66.30.2"}
    # A slow server: the 14,938 names take far longer than finding the two early ones.
    server = FastDNSServer([wildcard_zone("slow.test", "127.66.30.9", early)], delay=0.05).start()
    try:
        worker.config.recon.resolvers = [server.address]
        worker.config.recon.concurrency = 20
        data: dict[str, Any] = {
            "targets": ["slow.test"],
            "options": {**ONLY_SCAN, "port_scan": False, "domain_brute": True, "domain_brute_type": "big"},
        }
        ctx = worker.start("domain_task", data)
        results = worker.store.db["domain"]
        names = {f"{label}.slow.test" for label in early}

        def early_names_stored() -> bool:
            stored = results.find({"task_id": ctx.task_id}, {"domain": 1})
            return names <= {d["domain"] for d in stored}

        with RevokeWhen(worker, ctx, early_names_stored) as watcher, pytest.raises(TaskRevoked):
            domain_task(data, ctx)
        assert watcher.by_finding, "no name was stored while the brute force ran"
        stored = {d["domain"]: d for d in results.find({"task_id": ctx.task_id})}
        assert set(stored) == names
        assert all(d["partial"] is True for d in stored.values())
        assert stored[f"{labels[40]}.slow.test"]["ips"] == ["127.66.30.1"]
        brute = worker.progress(ctx, "domain_brute")
        assert brute and brute[-1][0] < brute[-1][1], "the brute force was cut short"
    finally:
        server.stop()
