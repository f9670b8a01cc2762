"""``controlplane up``: the whole stack on one machine, on embedded defaults, supervised.

Starts, as child processes: an embedded Redis and the embedded MongoDB-wire
server (data under ``data_dir``), then the event consumer, one Celery worker,
the scheduler and the API.

* **Private.**  The data dir is made mode 700 and what is in it owner-only;
  ``up`` and its children run with umask 077, so every file they write is too.
  Redis requires a password and the database listens on a Unix socket in the
  data dir (see :mod:`controlplane.runtime.embedded`).
* **Honest start.**  ``up`` refuses at once, in one line, when another ``up``
  holds the data dir or a port it needs is taken, and prints "control plane
  ready" only once every child passes its own check (:class:`Probes`).
* **Supervised.**  A child that exits is started again after a delay (0.5 s,
  doubling with each failure in a row up to ``embedded.restart_delay_max``, back
  to 0.5 s once it has run a minute), with a log line naming it, its exit code
  or signal and the delay; the others wait for it meanwhile (they retry, and the
  API answers 503).  A child failing ``embedded.restart_limit`` times within
  ``embedded.restart_window`` seconds stops everything, and ``up`` exits 1.
* **Orderly stop.**  Each child leads a session of its own, so a terminal's
  Ctrl-C reaches ``up`` alone; on SIGINT, SIGTERM or SIGHUP it stops the API
  and the scheduler, then the worker, then the consumer, then Redis and the
  database, and exits 0.  If ``up`` is killed outright its children still die
  with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import redis
from celery import Celery
from pymongo import MongoClient

from controlplane.bus.events import LEASE
from controlplane.config import Config, EmbeddedConfig
from controlplane.runtime import embedded
from controlplane.runtime.logs import formatter
from controlplane.runtime.processes import HEALTHY_AFTER
from controlplane.service.auth import (
    OPERATOR_TOKEN_FILE,
    ensure_operator_token,
    token_file_path,
    warn_if_disabled,
)
from controlplane.store.tasks import LEASES

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5  # seconds before the first restart of a child
START_TIMEOUT = 120.0  # seconds each start-up phase may take
PROBE_INTERVAL = 1.0  # seconds between checks of a child that is not healthy yet
STOP_ORDER: tuple[tuple[str, ...], ...] = (
    ("serve", "scheduler"),
    ("worker",),
    ("ingest",),
    ("redis", "mongo"),
)
STOP_TIMEOUT = {"worker": 20.0}  # a warm shutdown lets running tasks finish; others get 10 s


class StartError(Exception):
    """``up`` cannot start (or did not get ready); the message is one line for the operator."""


class GiveUp(Exception):
    """A child failed ``embedded.restart_limit`` times within ``embedded.restart_window``."""


@dataclass
class Child:
    """One supervised child process: how to start it, how to tell it works, its failures."""

    name: str
    command: list[str]
    log_path: Path
    check: Callable[[Child], bool]
    prepare: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    healthy: bool = False
    probed: float = 0.0
    failures: deque[float] = field(default_factory=deque)


def describe(returncode: int) -> str:
    """``exited with code 1`` / ``was killed by signal 9 (SIGKILL)``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def last_line(path: Path) -> str:
    """The last non-empty line of a log file (what a crashing child said last), or ''."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 2048))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


class Supervisor:
    """Starts the children, restarts those that exit (backoff, limit) and stops them in order."""

    def __init__(self, policy: EmbeddedConfig, env: dict[str, str]) -> None:
        self.policy = policy
        self.env = env
        self.children: dict[str, Child] = {}

    def start(self, child: Child) -> None:
        """Start (or start again) ``child``."""
        if child.prepare is not None:
            child.prepare()
        child.proc = embedded.spawn(child.command, log_path=child.log_path, env=self.env, new_session=True)
        child.started = time.monotonic()
        child.restart_at = None
        child.healthy = False
        child.probed = 0.0
        self.children[child.name] = child

    def tick(self) -> None:
        """Notice exits, start again the children whose delay is over, check the unhealthy ones."""
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.proc is not None and child.proc.poll() is not None:
                self._failed(child, now)
            elif child.restart_at is not None and now >= child.restart_at:
                self.start(child)
                child.restarts += 1
                log.warning("%s started again (pid %d)", child.name, child.proc.pid if child.proc else 0)
            elif child.proc is not None and not child.healthy and now - child.probed >= PROBE_INTERVAL:
                child.probed = now
                if child.check(child):
                    child.healthy = True
                    if child.restarts:
                        log.warning("%s is healthy again", child.name)

    def _failed(self, child: Child, now: float) -> None:
        assert child.proc is not None
        pid, code = child.proc.pid, child.proc.returncode
        lived = now - child.started
        child.proc = None
        child.healthy = False
        child.failures.append(now)
        while child.failures and now - child.failures[0] > self.policy.restart_window:
            child.failures.popleft()
        said = last_line(child.log_path) if code > 0 else ""  # what it said before exiting on its own
        said = f" (its last log line: {said})" if said else ""
        if len(child.failures) >= self.policy.restart_limit:
            raise GiveUp(
                f"{child.name} (pid {pid}) {describe(code)} after {lived:.1f}s{said}; "
                f"{len(child.failures)} failures within {self.policy.restart_window:g}s "
                "(embedded.restart_limit, embedded.restart_window): giving up"
            )
        if not child.delay or lived >= HEALTHY_AFTER:
            child.delay = FIRST_DELAY
        else:
            child.delay = min(child.delay * 2, self.policy.restart_delay_max)
        child.restart_at = now + child.delay
        log.error(
            "%s (pid %d) %s after %.1fs%s; restarting it in %.1fs",
            child.name,
            pid,
            describe(code),
            lived,
            said,
            child.delay,
        )

    def wait_healthy(self, names: Iterable[str], stopping: Callable[[], bool], timeout: float) -> bool:
        """Supervise until every child of ``names`` is healthy (True) or a stop is asked (False)."""
        wanted = [self.children[n] for n in names]
        deadline = time.monotonic() + timeout
        while not stopping():
            self.tick()
            if all(c.healthy for c in wanted):
                return True
            if time.monotonic() > deadline:
                late = next(c for c in wanted if not c.healthy)
                raise StartError(f"{late.name} was not ready after {timeout:g}s (see {late.log_path})")
            time.sleep(0.1)
        return False

    def stop_all(self) -> None:
        """Stop every child in :data:`STOP_ORDER`, each group together, and wait for it."""
        for group in STOP_ORDER:
            running = [c for name in group if (c := self.children.get(name)) is not None]
            for child in running:
                child.restart_at = None
                if child.proc is not None and child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
            for child in running:
                if child.proc is not None:
                    embedded.stop(child.proc, timeout=STOP_TIMEOUT.get(child.name, 10.0))


class Probes:
    """Each child's own health check, bounded by about a second; every failure is False."""

    def __init__(self, config: Config, urls: embedded.StackUrls, worker_name: str) -> None:
        self.database = config.mongo.database
        self.worker_name = worker_name
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(config.api.host, config.api.host)
        self.api_url = f"http://{f'[{host}]' if ':' in host else host}:{config.api.port}"
        self.redis_client = redis.Redis.from_url(urls.broker, socket_timeout=1, socket_connect_timeout=1)
        self.mongo_client: MongoClient[dict[str, Any]] = MongoClient(
            urls.mongo, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, socketTimeoutMS=2000
        )
        self.celery = Celery(broker=urls.broker, set_as_current=False)
        self.celery.conf.update(
            broker_connection_timeout=1,
            broker_connection_retry=False,
            broker_transport_options={"socket_timeout": 1, "socket_connect_timeout": 1},
        )

    @staticmethod
    def _safely(check: Callable[[], Any]) -> bool:
        try:
            return bool(check())
        except Exception:  # noqa: BLE001 - a failed check is an answer, not an error
            return False

    def redis(self, child: Child) -> bool:
        """Redis answers PING (with the password)."""
        return self._safely(self.redis_client.ping)

    def mongo(self, child: Child) -> bool:
        """The database answers ``ping``."""
        return self._safely(lambda: self.mongo_client.admin.command("ping").get("ok"))

    def ingest(self, child: Child) -> bool:
        """The consumer holds the ingest lease (its owner names the child's pid)."""

        def held() -> bool:
            doc = self.mongo_client[self.database][LEASES].find_one({"_id": LEASE}) or {}
            parts = str(doc.get("owner", "")).rsplit(":", 2)
            alive = float(doc.get("expires", 0)) > time.time()
            return alive and len(parts) == 3 and child.proc is not None and parts[1] == str(child.proc.pid)

        return self._safely(held)

    def worker(self, child: Child) -> bool:
        """The worker answers a Celery ping (only asked while Redis is up)."""
        return self._safely(
            lambda: self.celery.control.ping(destination=[self.worker_name], timeout=1.0, limit=1)
        )

    def api(self, child: Child) -> bool:
        """``GET /api/health/`` answers 200."""

        def health() -> bool:
            with urllib.request.urlopen(f"{self.api_url}/api/health/", timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)

        return self._safely(health)

    def close(self) -> None:
        """Release the probes' connections."""
        for close in (self.redis_client.close, self.mongo_client.close, self.celery.close):
            with contextlib.suppress(Exception):
                close()


def _operator_token(config: Config, data: Path) -> str | None:
    """A new operator token on first start (stored in the data dir, owner-only); None afterwards."""
    if not config.auth.enabled:
        warn_if_disabled(config, log)
        return None
    if config.auth.token_file:
        token_file = token_file_path(config)
    else:
        token_file = data / "tokens.yaml"
    return ensure_operator_token(data, token_file)


def lock_down(data: Path) -> None:
    """Create the data dir and its ``logs`` (mode 700) and take group and other bits off
    everything in it that this user owns (symbolic links are left alone)."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data / "logs").mkdir(mode=0o700, exist_ok=True)
    uid = os.geteuid()
    for root, dirs, files in os.walk(data):
        for path in (root, *(os.path.join(root, name) for name in dirs + files)):
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or not st.st_mode & 0o077:
                continue
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)


def lock_data_dir(data: Path) -> TextIO:
    """Hold ``<data>/up.pid`` (an exclusive lock, our pid inside) while ``up`` runs."""
    fh = open(data / embedded.UP_LOCK_FILE, "a+", encoding="utf-8")  # held until exit
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "?"
        fh.close()
        raise StartError(f"another `controlplane up` (pid {other}) is running with data dir {data}") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def needed_ports(config: Config) -> list[tuple[str, str, int]]:
    """(config key, host, port) of every TCP port ``up`` listens on."""
    ports = [
        ("api.port", config.api.host, config.api.port),
        ("embedded.redis_port", "127.0.0.1", config.embedded.redis_port),
    ]
    if not config.embedded.mongo_socket:
        ports.append(("embedded.mongo_port", "127.0.0.1", config.embedded.mongo_port))
    if config.metrics.ingest_port:
        ports.append(("metrics.ingest_port", config.metrics.ingest_host, config.metrics.ingest_port))
    return ports


def check_ports(config: Config) -> None:
    """Raise :class:`StartError` naming the first port that is shared or already taken."""
    seen: dict[int, str] = {}
    for key, host, port in needed_ports(config):
        if port in seen:
            raise StartError(f"{seen[port]} and {key} are both {port}; give each its own port")
        seen[port] = key
        try:
            taken = embedded.port_in_use(host or "0.0.0.0", port)
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port} ({key}): {exc.strerror}") from None
        if taken:
            raise StartError(
                f"port {port} ({key}) on {host} is already in use; stop what holds it or set another port"
            )


def _children(
    config: Config, config_path: str | None, data: Path, urls: embedded.StackUrls, probes: Probes
) -> tuple[list[Child], list[Child]]:
    """The servers, then the parts that depend on them."""
    logs = data / "logs"
    mongo_dir = data / "mongo"
    servers = [
        Child(
            "redis",
            embedded.redis_command(config.embedded.redis_port, data / "redis", password=urls.redis_password),
            data / "redis" / "redis.log",
            probes.redis,
        ),
        Child(
            "mongo",
            embedded.mongo_command(config.embedded.mongo_port, mongo_dir, unix_socket=urls.mongo_socket),
            mongo_dir / "server.log",
            probes.mongo,
            # A server killed outright leaves its pid file; only this `up` uses the data dir.
            prepare=lambda: (mongo_dir / "nx-27017.pid").unlink(missing_ok=True),
        ),
    ]
    cfg = ["--config", config_path] if config_path else []

    def part(name: str, check: Callable[[Child], bool], *args: str) -> Child:
        return Child(name, embedded.controlplane_command(*cfg, *args), logs / f"{name}.log", check)

    redis_child = servers[0]
    parts = [
        part("ingest", probes.ingest, "ingest"),
        part(
            "worker",
            lambda c: redis_child.healthy and probes.worker(c),
            "worker",
            "--name",
            probes.worker_name,
        ),
        part("scheduler", lambda c: True, "scheduler"),
        part("serve", probes.api, "serve"),
    ]
    return servers, parts


def _ready_banner(config: Config, data: Path, first_token: str | None, probes: Probes) -> None:
    base = probes.api_url
    print(
        f"control plane ready: dashboard {base}/dashboard/ · API docs {base}/api/docs/ "
        f"· API {base}/api/celery_task/",
        flush=True,
    )
    if first_token:
        print(f"operator API token (shown once; also in {data / OPERATOR_TOKEN_FILE}, mode 600):", flush=True)
        print(f"    {first_token}", flush=True)
        print("    curl -H 'Authorization: Bearer <token>' ...", flush=True)
    print(f"logs in {data / 'logs'}; Ctrl-C stops everything", flush=True)


def run_up(config: Config, config_path: str | None) -> int:
    """Run everything until told to stop (0) or a child fails too often or start-up fails (1)."""
    os.umask(0o077)
    data = embedded.data_dir(config)
    try:
        lock_down(data)
        lock = lock_data_dir(data)
        check_ports(config)
        urls = embedded.stack_urls(config, create_password=True)
        if urls.mongo_socket is not None and urls.mongo_socket.parent != data / "mongo":
            embedded.private_socket_dir(urls.mongo_socket)
    except (StartError, RuntimeError, OSError) as exc:  # OSError: a data dir we may not write
        print(f"controlplane up: {exc}", file=sys.stderr, flush=True)
        return 1
    file_log = logging.FileHandler(data / "logs" / "up.log")
    file_log.setFormatter(formatter(config))
    logging.getLogger().addHandler(file_log)
    stopping = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    host = socket.gethostname()
    probes = Probes(config, urls, worker_name=f"worker-{host}@{host}")
    supervisor = Supervisor(config.embedded, urls.environ(data))
    servers, parts = _children(config, config_path, data, urls, probes)
    first_token = _operator_token(config, data)
    try:
        print(
            f"starting embedded Redis on 127.0.0.1:{config.embedded.redis_port} (password required)",
            flush=True,
        )
        where = urls.mongo_socket or f"127.0.0.1:{config.embedded.mongo_port}"
        print(f"starting embedded MongoDB-wire server on {where}", flush=True)
        for child in servers:
            supervisor.start(child)
        if not supervisor.wait_healthy(("redis", "mongo"), lambda: stopping, START_TIMEOUT):
            return 0
        for child in parts:
            supervisor.start(child)
        if not supervisor.wait_healthy([c.name for c in parts], lambda: stopping, START_TIMEOUT):
            return 0
        _ready_banner(config, data, first_token, probes)
        while not stopping:
            supervisor.tick()
            time.sleep(0.2)
        return 0
    except (GiveUp, StartError) as exc:
        log.error("%s; stopping the stack", exc)
        return 1
    finally:
        print("stopping", flush=True)
        supervisor.stop_all()
        probes.close()
        print("stopped", flush=True)
        logging.getLogger().removeHandler(file_log)
        file_log.close()
        lock.close()
