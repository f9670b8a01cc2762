"""``controlplane up`` as a user runs it: the shipped config.yaml, moved only where tests must.

:class:`UpStack` copies ``config.yaml`` as shipped, changes only what lets several runs share
a machine (the data dir, the API and embedded ports) and adds the demo task types of
:mod:`workers.tasks.testing`; everything else (timeouts, leases, the worker pool) stays at its
default.  It starts ``controlplane up`` in a session of its own, as a terminal would, reads the
operator token ``up`` writes on first start, and can kill the whole process group with
SIGKILL, as a crash or an OOM kill of the unit would.  Used by the chaos tests and by
``bench/soak.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from controlplane.runtime import embedded

ROOT = Path(__file__).resolve().parents[1]
DEMO_TYPES = {
    "sleep_task": {"task": "workers.tasks.testing:sleep", "label": "Sleep"},
    "fail_task": {"task": "workers.tasks.testing:fail", "label": "Fail"},
    "noop_task": {"task": "workers.tasks.testing:noop", "label": "Noop"},
}
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


class UpStack:
    """One ``controlplane up`` with its own data dir and ports (see the module docstring)."""

    def __init__(
        self, workdir: Path, overrides: dict[str, Any] | None = None, data: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.data = data or workdir / "data"
        self.config_path = workdir / "config.yaml"
        self.port = embedded.free_port()
        config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        config["data_dir"] = str(self.data)
        config.setdefault("api", {})["port"] = self.port
        config.setdefault("embedded", {}).update(
            redis_port=embedded.free_port(), mongo_port=embedded.free_port()
        )
        config.setdefault("metrics", {})["ingest_port"] = 0
        config["tasks"] = {**(config.get("tasks") or {}), **DEMO_TYPES}
        for key, value in (overrides or {}).items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.token = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> UpStack:
        """Start ``up`` and wait until the API answers its health check."""
        self.starts += 1
        log = (self.workdir / f"up-{self.starts}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CP_") and k != "CONTROLPLANE_CONFIG"}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            embedded.controlplane_command("--config", str(self.config_path), "up"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=ROOT,
        )
        log.close()
        token_file = self.data / "operator.token"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"up exited with {self.proc.returncode}: {self.output()[-2000:]}")
            if token_file.exists() and not self.token:
                self.token = token_file.read_text(encoding="utf-8").strip()
            if self.token and self.healthy():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"up not ready after {timeout}s: {self.output()[-2000:]}")

    def output(self) -> str:
        return (self.workdir / f"up-{self.starts}.log").read_text(encoding="utf-8", errors="replace")

    def healthy(self) -> bool:
        """Whether the API answers its health check."""
        try:
            return self.request("GET", "/api/health/")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """``(HTTP status, parsed JSON)`` of one API call with the operator token."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, None

    def create(self, task_type: str, data: dict[str, Any]) -> str | None:
        """A task's celery_id when the API accepted it, else None (refused or unreachable)."""
        try:
            status, body = self.request("POST", "/api/celery_task/", {"task_type": task_type, "data": data})
        except OSError:
            return None
        if status == 200 and isinstance(body, dict) and body.get("code") == 200:
            return str(body["data"]["celery_id"])
        return None

    def status(self, celery_id: str) -> str | None:
        try:
            code, body = self.request("GET", f"/api/celery_task/{celery_id}/")
        except OSError:
            return None
        if code == 200 and isinstance(body, dict) and body.get("code") == 200:
            return str(body["data"].get("status"))
        return None

    def children(self) -> dict[str, psutil.Process]:
        """``up``'s children by part (redis, mongo, ingest, worker, scheduler, serve)."""
        if self.proc is None:
            return {}
        found: dict[str, psutil.Process] = {}
        try:
            kids = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return {}
        for kid in kids:
            try:
                line = " ".join(kid.cmdline())
            except psutil.Error:
                continue
            for part in ("ingest", "worker", "scheduler", "serve"):
                if line.endswith(f" {part}") or f" {part} " in line:
                    found[part] = kid
            if "redis" in line and "nx_server" not in line:
                found.setdefault("redis", kid)
            if "nx_server" in line or "nx-27017" in line:
                found.setdefault("mongo", kid)
        return found

    def kill_group(self) -> None:
        """SIGKILL ``up`` and every process of its session at once (a crash of the whole unit)."""
        if self.proc is None:
            return
        pids = [self.proc.pid]
        try:
            pids += [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:  # children that left the session (their own sessions) die too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=10)

    def stop(self) -> int | None:
        """SIGTERM ``up`` and wait for it (kill the group if it does not stop within 60 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill_group()
            return None


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
