"""Item 8: SIGTERM flushes and exits in bounded time; ``controlplane up`` leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from controlplane.runtime import embedded
from tests.reliability.conftest import Server, fast_stack, statuses, wait_consuming
from tests.stack import pids_mentioning, wait_for

pytestmark = pytest.mark.integration

BOUND = 15.0


def _sigterm(stack: Any, name: str) -> float:
    proc = stack.procs.pop(name)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return time.monotonic() - began


def test_sigterm_flushes_and_exits_in_bounded_time(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    # Nothing is written before a stop: the batch is large and the flush interval long.
    events = {"flush_interval": 60.0, "batch_size": 100_000, "reconcile_interval": 3600.0}
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, workers=1, events=events)
    try:
        stack.start()
        wait_consuming(stack)
        ids = [stack.create("noop_task", {"name": f"n{i}"}) for i in range(30)]
        backend = redis.Redis.from_url(own_redis.url)
        wait_for(
            lambda: all(backend.get(f"celery-task-meta-{c}") for c in ids), timeout=60, what="tasks done"
        )
        time.sleep(0.5)  # their events reached the consumer's buffer
        unwritten = sum(1 for s in statuses(stack, ids).values() if s != "SUCCESS")
        assert unwritten, "precondition: the consumer holds the outcomes in its buffer"
        ingest_took = _sigterm(stack, "ingest")
        after = statuses(stack, ids)
        assert all(s == "SUCCESS" for s in after.values()), after
        # A worker stopped with a task running finishes it first (warm shutdown), within the bound.
        stack.start_part("ingest", "ingest")
        wait_consuming(stack, count=2)
        running = stack.create("sleep_task", {"name": "running", "seconds": 2})
        wait_for(lambda: f"[{running}] received" in stack.log("worker0"), timeout=30, what="received")
        time.sleep(0.5)
        worker_took = _sigterm(stack, "worker0")
        serve_took = _sigterm(stack, "serve")
        _sigterm(stack, "ingest")
        assert statuses(stack, [running]) == {running: "SUCCESS"}
        for what, took in (("ingest", ingest_took), ("worker", worker_took), ("serve", serve_took)):
            assert took < BOUND, f"{what} took {took:.1f}s to stop"
        record(
            fault="SIGTERM to ingest (buffer unwritten), to a worker mid-task, to serve",
            load=f"{len(ids)} finished tasks held in the consumer's buffer; 1 running task",
            outcome=f"ingest wrote all {unwritten} buffered outcomes and exited in {ingest_took:.1f} s; "
            f"worker finished its task and exited in {worker_took:.1f} s; serve in {serve_took:.1f} s",
            lost=0,
            broker="Redis",
        )
    finally:
        stack.close()


def _http(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read())


class Up:
    """``controlplane up`` as a subprocess, with its console output in a file."""

    def __init__(self, root: Path, config: Path) -> None:
        self.out = root / "up.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CP_") and k != "CONTROLPLANE_CONFIG"}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.out, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controlplane.runtime.cli", "--config", str(config), "up"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, count: int) -> None:
        wait_for(
            lambda: self.text().count("control plane ready") >= count or self.proc.poll() is not None,
            timeout=120,
            what="controlplane up ready",
        )
        assert self.proc.poll() is None, self.text()[-3000:]

    def interrupt(self) -> float:
        began = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(90)
        return time.monotonic() - began


def test_up_stops_without_orphans_and_restarts_on_the_same_data(tmp_path: Path, record: Any) -> None:
    root = tmp_path / "up"
    data = root / "data"
    root.mkdir()
    port = embedded.free_port()
    config = {
        "data_dir": str(data),
        "api": {"port": port},
        "embedded": {"redis_port": embedded.free_port(), "mongo_port": embedded.free_port()},
        "tasks": {"noop_task": {"task": "workers.tasks.testing:noop", "label": "No-op (test)"}},
    }
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    up = Up(root, cfg)
    try:
        up.wait_ready(1)
        token = (data / "operator.token").read_text().strip()
        made = _http(
            port, token, "POST", "/api/celery_task/", {"task_type": "noop_task", "data": {"name": "x"}}
        )
        cid = made["data"]["celery_id"]
        wait_for(
            lambda: _http(port, token, "GET", f"/api/celery_task/{cid}/")["data"]["status"] == "SUCCESS",
            timeout=60,
            what="the task done",
        )
        first_stop = up.interrupt()
        assert up.proc.returncode == 0, up.text()[-2000:]
        wait_for(lambda: not pids_mentioning(str(root)), timeout=15, what="no process left behind")
        # Same data dir: starts cleanly (no stale lock or lease), and the earlier task is there.
        up = Up(root, cfg)
        started = time.monotonic()
        up.wait_ready(2)
        listed = _http(port, token, "GET", f"/api/celery_task/?celery_id={cid}")["data"]
        assert listed["total"] == 1 and listed["items"][0]["status"] == "SUCCESS", listed
        ingest_log = data / "logs" / "ingest.log"
        wait_for(
            lambda: ingest_log.read_text().count("holding the ingest lease") >= 2,
            timeout=8,
            what="the new consumer taking the lease at once (the old one released it)",
        )
        lease_after = time.monotonic() - started
        second_stop = up.interrupt()
        wait_for(lambda: not pids_mentioning(str(root)), timeout=15, what="no process left behind")
        record(
            fault="SIGINT to `controlplane up`, start it again on the same data dir",
            load="the whole stack (Redis, nx-27017, worker, ingest, API) and a finished task",
            outcome=f"stopped in {first_stop:.1f} s / {second_stop:.1f} s with no process left; restart "
            f"found the task; the new consumer held the lease {lease_after:.0f} s after start",
            lost=0,
            broker="Redis (embedded)",
            settings="defaults under `controlplane up` (only data dir and ports moved)",
        )
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
        for pid in pids_mentioning(str(root)):
            os.kill(pid, signal.SIGKILL)
