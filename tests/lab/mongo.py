"""Start an embedded MongoDB-wire server (nx-27017) as a child process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
from pymongo.errors import PyMongoError


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _executable() -> str:
    candidate = Path(sys.executable).with_name("nx-27017")
    return str(candidate) if candidate.exists() else "nx-27017"


class MongoServer:
    """An nx-27017 child process with its data, log and pid files under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The connection string."""
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> MongoServer:
        """Launch the server and wait until it answers ``ping``."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.port = _free_tcp_port()
        command = [
            _executable(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--data-dir", str(data),
            "--log-file", str(self.workdir / "nx.log"),
            "--pid-file", str(self.workdir / "nx.pid"),
        ]  # fmt: skip
        output = open(self.workdir / "nx.out", "wb")
        self.process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited early; see {self.workdir / 'nx.out'}")
            try:
                client: pymongo.MongoClient[dict[str, Any]]
                with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                return self
            except PyMongoError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("nx-27017 did not answer ping in time")

    def client(self) -> pymongo.MongoClient[dict[str, Any]]:
        """A new client for this server."""
        return pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)

    def stop(self) -> None:
        """Terminate the child (kill it if it lingers)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
