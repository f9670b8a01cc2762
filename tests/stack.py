"""A real stack for integration tests: API, consumer and workers as separate processes.

Everything talks over real sockets: the machine's Redis (or RabbitMQ), the
MongoDB-wire server the session started, Celery worker processes started with
``controlplane worker``.  Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from controlplane.config import Config
from controlplane.runtime import embedded
from controlplane.service.auth import token_entry

# The stacks' API tokens (hashed into their config with few PBKDF2 iterations, for speed).
OPERATOR_TOKEN = "cp_00000000000000a1_operator-test-secret-0123456789abcdef"
VIEWER_TOKEN = "cp_00000000000000b2_viewer-test-secret-0123456789abcdef"
#: Every Stack built in this process, in order (the reliability table names each test's settings).
CREATED: list[Stack] = []
#: Sections whose timing settings a row of the reliability table must state when they differ.
TIMING_SECTIONS = ("broker", "mongo", "events", "embedded", "task_defaults")
_NOT_TIMING = {"url", "database", "queue", "durable"}


TEST_AUTH = {
    "enabled": True,
    "tokens": [
        token_entry("test-operator", "operator", OPERATOR_TOKEN, iterations=1000),
        token_entry("test-viewer", "viewer", VIEWER_TOKEN, iterations=1000),
    ],
}
# The local lab lives on loopback and private addresses.
TEST_SCOPE = {"allow_private": True, "allow_loopback": True}

TEST_TASKS = {
    "sleep_task": {"task": "workers.tasks.testing:sleep", "label": "Sleep (test)"},
    "busy_task": {"task": "workers.tasks.testing:busy", "label": "Busy (test)"},
    "fail_task": {"task": "workers.tasks.testing:fail", "label": "Fail (test)"},
    "spawn_task": {"task": "workers.tasks.testing:spawn", "label": "Spawn child (test)"},
    "flaky_task": {"task": "workers.tasks.testing:flaky", "label": "Retry then succeed (test)"},
}


class Response:
    """An HTTP answer: status, headers and the parsed JSON envelope."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def code(self) -> Any:
        return self.json["code"] if isinstance(self.json, dict) else None

    @property
    def data(self) -> Any:
        return self.json["data"] if isinstance(self.json, dict) else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.raw[:300]!r}>"


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


class Stack:
    """Processes of one test deployment, with a private database and broker namespace."""

    def __init__(
        self,
        workdir: Path,
        broker_url: str,
        mongo_url: str,
        *,
        workers: int = 1,
        concurrency: int = 2,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker_url = broker_url
        self.mongo_url = mongo_url
        self.database = f"t_{uuid.uuid4().hex[:10]}"
        self.port = embedded.free_port()
        self.n_workers = workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        config: dict[str, Any] = {
            "data_dir": str(workdir / "data"),
            "log_level": "INFO",
            "broker": {"url": broker_url, "publish_timeout": 3.0, "connect_timeout": 2.0},
            "mongo": {"url": mongo_url, "database": self.database, "timeout_ms": 2000},
            "api": {"host": "127.0.0.1", "port": self.port, "inspect_timeout": 1.0},
            "events": {
                "queue": f"cp.events.{self.database}",
                "flush_interval": 0.1,
                "worker_timeout": 6.0,
                "lease_seconds": 4.0,
            },
            "worker": {"concurrency": concurrency, "queues": [f"recon-{self.database}"]},
            "task_defaults": {"queue": f"recon-{self.database}"},
            "tasks": dict(TEST_TASKS),
            "auth": dict(TEST_AUTH),
            "scope": dict(TEST_SCOPE),
        }
        for key, value in (extra_config or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config = config
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        self.db = self.mongo[self.database]
        CREATED.append(self)

    def shortened(self) -> list[str]:
        """The timing settings this stack changed from the defaults, as ``key=value (default d)``."""
        defaults = Config()
        out = []
        for section in TIMING_SECTIONS:
            for key, value in sorted((self.config.get(section) or {}).items()):
                if key in _NOT_TIMING:
                    continue
                default = getattr(getattr(defaults, section), key, None)
                if default is not None and value != default:
                    out.append(
                        f"{section}.{key}={value:g} (default {default:g})"
                        if isinstance(value, int | float)
                        else f"{section}.{key}={value} (default {default})"
                    )
        out.append(f"worker.concurrency={(self.config.get('worker') or {}).get('concurrency')}")
        return out

    # -- processes -------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return embedded.controlplane_command("--config", str(self.config_path), *args)

    def start_part(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``controlplane <args>`` as ``name``; its log goes to the work dir."""
        proc = embedded.spawn(self.command(*args), log_path=self.workdir / f"{name}.log", env=self.env())
        self.procs[name] = proc
        return proc

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("CP_") and k != "CONTROLPLANE_CONFIG"}
        keep["PYTHONUNBUFFERED"] = "1"
        return keep

    def start_api(self) -> Stack:
        """Only ``controlplane serve`` (for tests of the API against a dead broker or database)."""
        self.start_part("serve", "serve")
        embedded.wait_port(self.port, 30, self.procs["serve"])
        return self

    def start(self) -> Stack:
        """API, consumer and workers; returns when the API answers and the workers are up."""
        self.start_part("ingest", "ingest")
        for i in range(self.n_workers):
            self.start_worker(i)
        self.start_part("serve", "serve")
        embedded.wait_port(self.port, 30, self.procs["serve"])
        self.wait_workers(self.n_workers)
        return self

    def start_extra_api(self, name: str = "serve2") -> int:
        """Another ``controlplane serve`` of the same deployment on a free port; returns the port."""
        port = embedded.free_port()
        env = {**self.env(), "CP_API_PORT": str(port)}
        proc = embedded.spawn(self.command("serve"), log_path=self.workdir / f"{name}.log", env=env)
        self.procs[name] = proc
        embedded.wait_port(port, 30, proc)
        return port

    def start_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        return self.start_part(f"worker{index}", "worker", "--name", f"w{index}-{self.database}@%h")

    def wait_workers(self, count: int, timeout: float = 40.0) -> None:
        """Until ``count`` workers of this stack answer a ping (each ping returns at ``count`` replies)."""
        from celery import Celery

        app = Celery(broker=self.broker_url, set_as_current=False)

        def answering() -> int:
            replies = app.control.ping(timeout=0.5, limit=count) or []
            return len([n for n in replies if self.database in str(n)])

        try:
            wait_for(lambda: answering() >= count, timeout=timeout, what=f"{count} worker(s)")
        finally:
            app.close()

    def stop_part(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        return embedded.stop(proc, timeout=timeout, sig=sig)

    def kill_part(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def close(self) -> None:
        """Stop every part at once (workers get a cold shutdown: tests leave long tasks behind),
        drop the database, and delete the stack's RabbitMQ queues."""
        stopping = {
            proc: signal.SIGQUIT if name.startswith("worker") else signal.SIGTERM
            for name, proc in self.procs.items()
        }
        self.procs.clear()
        stop_together(stopping, timeout=10)
        try:
            self.mongo.drop_database(self.database)
        except PyMongoError:
            pass  # a test that points the stack at a dead database
        finally:
            self.mongo.close()
        if self.broker_url.startswith("amqp"):
            self._delete_amqp_queues()

    def _delete_amqp_queues(self) -> None:
        """Durable queues outlive the test on RabbitMQ; remove this stack's."""
        from kombu import Connection

        with Connection(self.broker_url, connect_timeout=3) as conn:
            channel = conn.channel()
            for name in (self.config["events"]["queue"], f"recon-{self.database}"):
                try:
                    channel.queue_delete(name)
                except Exception:
                    channel = conn.channel()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- HTTP ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15.0,
        token: str | None = OPERATOR_TOKEN,
    ) -> Response:
        """A real HTTP request to the API; never raises on HTTP error statuses.

        Sends ``Authorization: Bearer <token>`` (the operator's unless ``token``
        says otherwise; None sends no credentials) unless ``headers`` carry their own.
        """
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        given = {k.lower() for k in headers or {}}
        if token is not None and not given & {"authorization", "token"}:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def create(self, task_type: str, data: dict[str, Any]) -> str:
        """POST a task; returns its celery_id."""
        resp = self.request("POST", "/api/celery_task/", {"task_type": task_type, "data": data})
        assert resp.status == 200 and resp.code == 200, resp
        return str(resp.data["celery_id"])

    def detail(self, celery_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/api/celery_task/{celery_id}/")
        assert resp.code == 200, resp
        return dict(resp.data)

    def wait_status(self, celery_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the detail endpoint until the task reaches one of ``statuses``."""
        found: dict[str, Any] = {}

        def check() -> bool:
            found.update(self.detail(celery_id))
            return found.get("status") in statuses

        wait_for(check, timeout=timeout, what=f"{celery_id} in {statuses}")
        return found


def stop_together(procs: Mapping[subprocess.Popen[bytes], int], timeout: float) -> None:
    """Send each process its signal, then wait for all of them; SIGKILL those alive after ``timeout``.

    The same as :func:`embedded.stop` one after the other, but the processes shut down side by side.
    """
    for proc, sig in procs.items():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def pids_mentioning(needle: str) -> list[int]:
    """Live, non-zombie processes whose command line or environment mentions ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and (needle.encode() in cmd or needle.encode() in env):
            found.append(int(entry))
    return found
