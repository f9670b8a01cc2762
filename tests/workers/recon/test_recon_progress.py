"""Progress of a real ``ip_task`` reaches the caller early and keeps coming during long stages.

The task runs as a worker runs it (TaskContext, task-progress events) against loopback targets
built to make two stages long: a port scan of every port of many addresses (cut by its deadline)
and service detection of a tarpit that accepts connections and never answers (the stage's count
does not move for seconds). Event times are measured; the assertions are cadence properties with
wide margins (the product aims at a first report within a second and one at least every second).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.store.tasks import TaskStore
from tests.lab import Lab, MongoServer
from tests.lab.ports import wildcard_listeners
from tests.lab.support import Worker, lab_config
from workers.recon.nmap import nmap_path
from workers.tasks.ip import ip_task

FIRST_WITHIN = 3.0
MAX_GAP = 3.0
"""At least one progress event in every window of this many seconds, start and end included."""


class Tarpit:
    """A listener on ``ip`` (at a low port: a scan finds it early) that accepts every connection
    and never sends a byte."""

    def __init__(self, ip: str) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        busy = wildcard_listeners()
        port = next(p for p in range(1100, 2000) if p not in busy)
        self.listener.bind((ip, port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        while not self.stopped.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.fixture
def worker(mongo_server: MongoServer, lab: Lab) -> Iterator[Worker]:
    config = lab_config(mongo_server, lab)
    config.recon.connect_timeout = 2.5
    store = TaskStore(config.mongo)
    yield Worker(config, store)
    store.close()


def timed_run(worker: Worker, data: dict[str, Any]) -> tuple[float, float, list[tuple[float, str, int, int]]]:
    """Run ``ip_task`` and return its start, its end and every progress event with its arrival time."""
    ctx = worker.start("ip_task", data)
    events: list[tuple[float, str, int, int]] = []

    def send_event(kind: str, **fields: Any) -> None:
        if kind == "task-progress":
            events.append((time.monotonic(), fields["stage"], fields["done"], fields["total"]))

    ctx.send_event = send_event
    started = time.monotonic()
    ip_task(data, ctx)
    return started, time.monotonic(), events


def assert_cadence(started: float, ended: float, events: list[tuple[float, str, int, int]]) -> None:
    assert events, "no progress at all"
    assert events[0][0] - started <= FIRST_WITHIN, f"first progress after {events[0][0] - started:.1f} s"
    times = [started, *(e[0] for e in events), ended]
    gaps = [(b - a, i) for i, (a, b) in enumerate(itertools.pairwise(times))]
    worst, where = max(gaps)
    assert worst <= MAX_GAP, (
        f"{worst:.1f} s without progress before event {where}: {events[max(0, where - 1)]}"
    )


def test_progress_comes_early_and_every_few_seconds_through_long_stages(worker: Worker) -> None:
    host = "127.66.40.1"
    tarpit = Tarpit(host)
    try:
        data: dict[str, Any] = {
            "targets": [host, "127.66.41.0/26"],
            "options": {
                "port_scan": True,
                "port_scan_type": "all",
                "port_scan_timeout": 6,
                "service_detection": True,
                "site_identify": False,
                "ssl_cert": False,
                "file_leak": False,
            },
        }
        started, ended, events = timed_run(worker, data)
    finally:
        tarpit.close()
    assert_cadence(started, ended, events)
    by_stage = {stage: [e for e in events if e[1] == stage] for stage in ("port_scan", "service_detection")}
    assert len(by_stage["port_scan"]) >= 4
    scan_done = [e[2] for e in by_stage["port_scan"]]
    assert scan_done == sorted(scan_done) and len(set(scan_done)) >= 3, "the scan's count moves"
    detection = by_stage["service_detection"]
    # The tarpit holds the stage's count still for seconds: only heartbeats show the task alive.
    assert detection[-1][0] - detection[0][0] >= MAX_GAP
    longest_still = max(len(list(run)) for _, run in itertools.groupby(e[2] for e in detection))
    assert longest_still >= 3, "the unchanged count is repeated while the stage waits"


def test_progress_of_an_nmap_scan_moves_while_nmap_runs(worker: Worker) -> None:
    if nmap_path() is None:
        pytest.skip("nmap is not installed (apt-get install nmap)")
    data: dict[str, Any] = {
        "targets": ["127.66.42.0/29"],
        "options": {
            "port_scan": True,
            "port_scan_type": "all",
            "use_nmap": True,
            "service_detection": False,
            "site_identify": False,
            "ssl_cert": False,
            "file_leak": False,
        },
    }
    started, ended, events = timed_run(worker, data)
    assert_cadence(started, ended, events)
    done = [e[2] for e in events if e[1] == "port_scan"]
    assert done == sorted(done) and len(set(done)) >= 3, "nmap's own progress is passed on"
