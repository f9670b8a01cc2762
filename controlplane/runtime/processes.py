"""``controlplane serve`` with ``api.processes`` > 1: several API processes on one port.

The API keeps no state of its own (tasks live in MongoDB, the feed's order in
Redis), so it scales by processes, each with its own event loop and GIL.  The
parent forks the children before it has made a thread, a loop or a connection,
and each child binds the port with ``SO_REUSEPORT``: the kernel spreads new
connections over them.  The parent only supervises:

* SIGTERM / SIGINT are passed on to every child, and the parent returns once
  all have exited;
* a child that dies otherwise is started again, after a delay that doubles
  with each death in a row (capped at ``events.backoff_max``) and is reset
  once a child has lived a minute;
* every child gets ``PR_SET_PDEATHSIG``, so killing the parent outright
  (SIGKILL) takes the children with it.

What stays per process: rate-limit counters and the token file read at start
(as with several hosts behind a load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from types import FrameType

from controlplane.config import Config
from controlplane.runtime.embedded import die_with_parent
from controlplane.runtime.server import serve

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
HEALTHY_AFTER = 60.0  # seconds a child must live for its restart delay to reset


def _child(config: Config) -> int:
    die_with_parent()
    asyncio.run(serve(config, reuse_port=True))
    return 0


def supervise(config: Config) -> int:
    """Fork ``config.api.processes`` API processes and keep them running until told to stop."""
    children: dict[int, float] = {}  # pid -> start time
    stopping = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def start() -> None:
        # Signals wait until the child has dropped the parent's handler (else a SIGTERM
        # arriving right after the fork would run it in the child and be lost).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            code = 1
            try:
                code = _child(config)
            except BaseException:  # a child reports and exits, never returns to the parent
                log.exception("API process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_signal)
    for _ in range(config.api.processes):
        start()
    log.info("API: %d processes on port %d", config.api.processes, config.api.port)
    delay = 0.5
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        lived = time.monotonic() - started
        delay = 0.5 if lived > HEALTHY_AFTER else min(delay * 2, config.events.backoff_max)
        log.error(
            "API process %d ended (%s) after %.0fs; starting another in %.1fs",
            pid,
            _describe(status),
            lived,
            delay,
        )
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if not stopping:
            start()
    return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
