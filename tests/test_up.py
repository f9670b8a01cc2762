"""``controlplane up`` as users run it: private, honest about start-up, supervised, stopped in order.

Every test runs the real ``controlplane up`` on the shipped ``config.yaml``, with only the
data dir and the ports moved (and the demo task types added), as a process of its own
session, as a terminal starts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import yaml

from controlplane.config import EmbeddedConfig, load_config
from controlplane.runtime import embedded, up
from tests.stack import pids_mentioning, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DEMO_TYPES = {"sleep_task": {"task": "workers.tasks.testing:sleep", "label": "Sleep (test)"}}


class Up:
    """``controlplane up`` on the shipped config.yaml, its data dir and ports moved under ``root``."""

    def __init__(self, root: Path, overrides: dict[str, Any] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        self.port = embedded.free_port()
        config["data_dir"] = str(self.data)
        config["api"]["port"] = self.port
        config["embedded"].update(redis_port=embedded.free_port(), mongo_port=embedded.free_port())
        config["tasks"] = dict(DEMO_TYPES)
        for key, value in (overrides or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        self.config = config
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = root / "up.out"
        self.token = ""

    def command(self, *args: str) -> list[str]:
        return embedded.controlplane_command("--config", str(self.config_path), *args)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CP_") and k != "CONTROLPLANE_CONFIG"}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> Up:
        with open(self.out, "ab") as fh:
            self.proc = subprocess.Popen(
                self.command("up"),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                start_new_session=True,  # the foreground process group of a terminal
            )
        return self

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def wait_ready(self, count: int = 1, timeout: float = 150.0) -> Up:
        assert self.proc is not None
        proc = self.proc
        wait_for(
            lambda: self.text().count("control plane ready") >= count or proc.poll() is not None,
            timeout=timeout,
            what="controlplane up ready",
        )
        assert proc.poll() is None, self.text()[-3000:]
        self.token = (self.data / "operator.token").read_text().strip()
        return self

    def ctrl_c(self, timeout: float = 90.0) -> int:
        """SIGINT to the whole process group, as a terminal's Ctrl-C; returns the exit code."""
        assert self.proc is not None
        os.killpg(os.getpgid(self.proc.pid), signal.SIGINT)
        return self.proc.wait(timeout)

    def child_pid(self, name: str) -> int:
        """The pid of ``up``'s child ``name`` (its command line names the part or server)."""
        assert self.proc is not None
        mark = {"redis": "redis-server", "mongo": "nx_server"}.get(name, f" {name}")
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if mark in " ".join(child.cmdline()):
                    return int(child.pid)
        raise AssertionError(f"no child {name} of up")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except OSError:
            return 0, None

    def run_task(self, name: str, timeout: float = 90.0) -> None:
        """Create a sleep task (retrying while the API answers 503) and wait for SUCCESS."""
        made: dict[str, Any] = {}

        def create() -> bool:
            task = {"task_type": "sleep_task", "data": {"name": name, "seconds": 0.1}}
            status, body = self.request("POST", "/api/celery_task/", task)
            if status == 200:
                made.update(body["data"])
            return status == 200

        wait_for(create, timeout=timeout, interval=0.5, what=f"task {name} created")
        cid = made["celery_id"]

        def done() -> bool:
            status, body = self.request("GET", f"/api/celery_task/{cid}/")
            return status == 200 and body["data"]["status"] == "SUCCESS"

        wait_for(done, timeout=timeout, interval=0.3, what=f"task {name} SUCCESS")

    def logs(self) -> dict[Path, str]:
        return {p: p.read_text(errors="replace") for p in self.data.rglob("*.log")}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
            self.proc.wait(10)
        for pid in pids_mentioning(str(self.root)):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_up(tmp_path: Path) -> Iterator[Any]:
    made: list[Up] = []

    def make(name: str = "up", **overrides: Any) -> Up:
        made.append(Up(tmp_path / name, overrides))
        return made[-1]

    yield make
    for u in made:
        u.close()


def run_until_exit(u: Up, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(u.command(*args), env=u.env(), capture_output=True, text=True, timeout=timeout)


# -- a taken port: one line, non-zero, nothing started ------------------------------------------


@pytest.mark.parametrize("key", ["api.port", "embedded.redis_port"])
def test_a_taken_port_is_named_and_up_exits_non_zero(make_up: Any, key: str) -> None:
    u = make_up()
    section, name = key.split(".")
    port = u.config[section][name]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = run_until_exit(u, "up")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "control plane ready" not in out and "Traceback" not in out, out
    assert f"port {port} ({key})" in done.stderr and "already in use" in done.stderr, out
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not pids_mentioning(str(u.data)), "a child was started"


def test_a_data_dir_up_cannot_create_is_one_line(make_up: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    u = make_up(data_dir=str(blocker / "data"))
    done = run_until_exit(u, "up")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("controlplane up: ") and len(done.stderr.strip().splitlines()) == 1


def test_serve_on_a_taken_port_says_so_in_one_line(make_up: Any) -> None:
    u = make_up()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", u.port))
        holder.listen()
        done = run_until_exit(u, "serve")
    assert done.returncode == 1
    line = f"controlplane serve: port {u.port} (api.port) on 127.0.0.1 is already in use"
    assert done.stderr.strip() == line


# -- private, working, stopped by Ctrl-C in order -------------------------------------------------


def _modes_open_to_others(data: Path) -> list[str]:
    loose = []
    for path in [data, *data.rglob("*")]:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            loose.append(f"{oct(stat.S_IMODE(st.st_mode))} {path}")
    return loose


def test_up_is_private_works_and_ctrl_c_stops_it_cleanly(make_up: Any) -> None:
    u = make_up()
    u.data.mkdir(parents=True)
    u.data.chmod(0o755)
    (u.data / "logs").mkdir()
    stale = u.data / "logs" / "ingest.log"
    stale.write_text("an earlier run's log\n")
    stale.chmod(0o644)
    u.start().wait_ready()
    # The data dir and every file in it are owner-only, those from before included.
    assert _modes_open_to_others(u.data) == []
    password_file = u.data / "redis.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password and password not in u.text()
    # Redis refuses a client without the password, or with a wrong one.
    redis_port = u.config["embedded"]["redis_port"]
    for wrong in (None, "guess"):
        client = redis.Redis(port=redis_port, password=wrong, socket_timeout=3)
        with pytest.raises(redis.RedisError, match=r"(?i)auth|password"):
            client.ping()
        client.close()
    assert redis.Redis(port=redis_port, password=password).ping()
    # The database listens on no TCP port: only on a socket inside the data dir.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", u.config["embedded"]["mongo_port"])) != 0
    assert stat.S_ISSOCK((u.data / "mongo" / "nx-27017.sock").stat().st_mode)
    # The ready line names the dashboard and the API reference.
    base = f"http://127.0.0.1:{u.port}"
    ready = next(line for line in u.text().splitlines() if "control plane ready" in line)
    assert f"{base}/dashboard/" in ready and f"{base}/api/docs/" in ready
    u.run_task("private")
    # `controlplane check` with the same config finds up's servers (not 6379/27017).
    checked = run_until_exit(u, "check", "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], report
    assert {c["name"] for c in report["checks"]} >= {"mode", "broker", "database", "api"}
    # Ctrl-C in the terminal: up alone gets it and stops the children in order.
    began = time.monotonic()
    assert u.ctrl_c() == 0, u.text()[-3000:]
    assert time.monotonic() - began < 60
    wait_for(lambda: not pids_mentioning(str(u.data)), timeout=15, what="no process left behind")
    assert u.text().rstrip().endswith("stopped"), u.text()[-2000:]
    tracebacks = [str(p) for p, text in u.logs().items() if "Traceback" in text]
    assert tracebacks == [], tracebacks
    # Stopped, `check --up` knows where up's servers would be, and fails on each of them.
    checked = run_until_exit(u, "check", "--json", "--up", "--timeout", "1")
    failed = {c["name"] for c in json.loads(checked.stdout)["checks"] if not c["ok"]}
    assert checked.returncode == 1 and failed >= {"broker", "database", "api"}, checked.stdout
    # Started again: the same password, and everything works.
    u.start().wait_ready(count=2)
    assert password_file.read_text().strip() == password
    u.run_task("again")
    assert u.ctrl_c() == 0


# -- supervision ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_children_are_restarted_and_tasks_still_finish(make_up: Any) -> None:
    u = make_up()
    u.start().wait_ready()
    for name in ("ingest", "redis", "mongo"):
        pid = u.child_pid(name)
        os.kill(pid, signal.SIGKILL)
        said = rf"{name} \(pid {pid}\) was killed by signal 9 \(SIGKILL\) after [\d.]+s; "
        said += r"restarting it in 0\.5s"
        wait_for(lambda: re.search(said, u.text()), timeout=20, what=f"{name}'s restart in the log")  # noqa: B023
        back = f"{name} is healthy again"
        wait_for(lambda: back in u.text(), timeout=60, what=f"{name} back")  # noqa: B023
        u.run_task(f"after-{name}")
    assert u.proc is not None and u.proc.poll() is None
    up_log = (u.data / "logs" / "up.log").read_text()
    assert up_log.count("started again") == 3, up_log
    assert u.ctrl_c() == 0


@pytest.mark.slow
def test_a_child_that_always_crashes_ends_up_with_a_non_zero_exit(make_up: Any) -> None:
    # An unknown pool: the worker exits 1 at every start.
    u = make_up(worker={"pool": "bogus"}, embedded={"restart_limit": 3, "restart_window": 60})
    u.start()
    assert u.proc is not None
    code = u.proc.wait(150)
    text = u.text()
    assert code == 1, text[-3000:]
    assert "control plane ready" not in text
    assert text.count("worker (pid") == 3 and "exited with code 1" in text, text[-3000:]
    assert "restarting it in 0.5s" in text and "restarting it in 1.0s" in text, text[-3000:]
    assert "3 failures within 60s (embedded.restart_limit, embedded.restart_window): giving up" in text
    assert "'bogus' is not one of" in text  # the worker's own last words
    wait_for(lambda: not pids_mentioning(str(u.data)), timeout=15, what="no process left behind")


def test_supervisor_backoff_doubles_to_the_cap_and_gives_up_at_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = EmbeddedConfig(restart_delay_max=1.0, restart_limit=4, restart_window=60.0)
    supervisor = up.Supervisor(policy, embedded.environ())
    crash = up.Child(
        "crash", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "crash.log", lambda c: False
    )
    caplog.set_level(logging.ERROR, logger="controlplane.runtime.up")
    supervisor.start(crash)
    with pytest.raises(up.GiveUp, match=r"crash \(pid \d+\) exited with code 3 .*4 failures within 60s"):
        wait_for(lambda: supervisor.tick(), timeout=30, interval=0.05, what="give up")  # type: ignore[func-returns-value]
    delays = re.findall(r"restarting it in ([\d.]+)s", caplog.text)
    assert delays == ["0.5", "1.0", "1.0"], caplog.text


def test_the_restart_delay_is_reset_after_a_healthy_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "HEALTHY_AFTER", 0.3)
    supervisor = up.Supervisor(EmbeddedConfig(restart_limit=4), embedded.environ())
    lives = up.Child(
        "lives", [sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path / "l.log", lambda c: True
    )
    caplog.set_level(logging.ERROR, logger="controlplane.runtime.up")
    supervisor.start(lives)

    def three_restarts() -> bool:
        supervisor.tick()
        return caplog.text.count("restarting it in") >= 3

    wait_for(three_restarts, timeout=30, interval=0.05, what="three restarts")
    supervisor.stop_all()
    assert set(re.findall(r"restarting it in ([\d.]+)s", caplog.text)) == {"0.5"}, caplog.text


def test_restart_keys_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("embedded:\n  restart_limit: 0\n")
    with pytest.raises(Exception, match=r"embedded\.restart_limit"):
        load_config(str(path), env={})
