"""Controllable task bodies for tests and demos, registered through config.

Example ``config.yaml`` entry::

    tasks:
      sleep_task: {task: "workers.tasks.testing:sleep", label: "Sleep"}
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from workers.context import TaskContext


def sleep(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleep ``data.seconds`` (default 1) in small steps, reporting progress, stoppable."""
    seconds = float(data.get("seconds", 1))
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        ctx.check_stop()
        ctx.progress("sleep", i, steps)
        time.sleep(seconds / steps)
    ctx.progress("sleep", steps, steps, force=True)
    return {"slept": seconds}


def busy(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleep ``data.seconds`` without ever checking for a revoke (only terminate stops it)."""
    time.sleep(float(data.get("seconds", 1)))
    return {"slept": data.get("seconds", 1)}


def fail(data: dict[str, Any], ctx: TaskContext) -> None:
    """Raise ``ValueError(data.message)``."""
    raise ValueError(str(data.get("message", "planned failure")))


def flaky(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fail with a retry ``data.times`` times (default 2), then succeed."""
    times = int(data.get("times", 2))
    if ctx.attempt < times and ctx.retry is not None:
        raise ctx.retry(exc=RuntimeError(f"attempt {ctx.attempt} failed"), countdown=0.2, max_retries=times)
    return {"attempts": ctx.attempt + 1}


def spawn(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Start a child that sleeps ``data.seconds``; write "<child pid> <our pid>" to ``data.pidfile``; wait."""
    seconds = float(data.get("seconds", 30))
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    pidfile = data.get("pidfile")
    if pidfile:
        with open(str(pidfile), "w", encoding="utf-8") as fh:
            fh.write(f"{child.pid} {os.getpid()}")
    child.wait()
    return {"child": child.pid}


def noop(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Return at once (load tests: thousands of these)."""
    return {"ok": True}


def stubborn(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleep ``data.seconds``, ignoring the soft time limit (only the hard limit stops it)."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + float(data.get("seconds", 30))
    ignored = 0
    while time.monotonic() < deadline:
        try:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        except SoftTimeLimitExceeded:
            ignored += 1
    return {"ignored_soft_limits": ignored}
