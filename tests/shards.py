"""Run the test suite as two pytest sessions side by side (``make pytest``).

Most of the suite's time is spent waiting on real processes (a stack starting, a fault's timeout,
an outage), so two sessions share a 2-core machine well. They are kept apart:

* Redis: each session flushes and uses only its own database indexes (``CP_TEST_REDIS_DBS``);
* RabbitMQ: every test that uses it is in the first session, so two stacks never share the
  broker's exchanges at once (a consumer would see the other stack's task events);
* MongoDB: each session starts its own nx-27017 server; each stack has a database of its own;
* temporary directories and ports: pytest numbers each session's base directory, and every
  server and stack takes a free port.

The first session runs :data:`FIRST` (the RabbitMQ users and the long fault tests); the second
runs every other test, so a new test file lands there unless it is added to :data:`FIRST`. Each
session's output is printed whole when it ends; the exit status is the first non-zero one.

Usage: ``python tests/shards.py [pytest options]`` (for example ``-q -rs -m "not slow"``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST = [
    "tests/reliability",
    "tests/bus",
    "tests/test_amqp.py",
    "tests/test_workers_api.py",
    "tests/test_up.py",
    "tests/test_cli.py",
    "tests/test_outage_api.py",
    "tests/test_worker_restart.py",
    "tests/test_security_tokens.py",
    "tests/test_schedules_api.py",
    "tests/test_feed.py",
]
"""Paths of the first session: every test that uses RabbitMQ, and long fault tests to balance."""

REDIS_DBS = ("1-7", "8-15")
"""The Redis database indexes of each session (see tests/conftest.py)."""


def commands(options: list[str]) -> list[list[str]]:
    """The two pytest command lines: :data:`FIRST`, then the rest of ``tests``."""
    pytest = [sys.executable, "-m", "pytest", *options]
    ignored = [f"--ignore={path}" for path in FIRST]
    return [[*pytest, *FIRST], [*pytest, *ignored, "tests"]]


def main(options: list[str]) -> int:
    """Run both sessions at once; print each one's output when it ends; return the exit status."""
    running: list[tuple[int, subprocess.Popen[bytes], Path, float]] = []
    with tempfile.TemporaryDirectory(prefix="cp-shards-") as tmp:
        for index, (command, dbs) in enumerate(zip(commands(options), REDIS_DBS, strict=True), 1):
            out = Path(tmp) / f"session{index}.txt"
            env = {**os.environ, "CP_TEST_REDIS_DBS": dbs}
            with out.open("wb") as fh:
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
            print(f"pytest session {index} started: {' '.join(command[1:])}", flush=True)
            running.append((index, proc, out, time.monotonic()))
        status = 0
        while running:
            for entry in list(running):
                index, proc, out, began = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                took = time.monotonic() - began
                print(f"\n== pytest session {index}: exit {proc.returncode}, {took:.0f} s ==", flush=True)
                sys.stdout.write(out.read_text(encoding="utf-8", errors="replace"))
                sys.stdout.flush()
                status = status or proc.returncode
            time.sleep(0.5)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
