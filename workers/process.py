"""Process helpers for workers: find and stop every process a task spawned.

Celery's ``terminate`` signals the pool child that runs a task; anything that
child started (nmap, shell pipelines, ...) would live on.  A prefork pool
child installs :func:`install_terminate_handler` when a task starts; on the
terminate signal it stops the child's whole process tree first and then exits
with that signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType


def _stat_fields(stat: str) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` line after the command name: state, ppid, pgrp, ...

    The command name is in parentheses and may itself contain spaces or ')'.
    """
    return stat[stat.rfind(")") + 2 :].split()


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, :func:`_stat_fields`) of every process whose stat could be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), _stat_fields(stat)


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, fields in _proc_stats():
        if len(fields) < 2:
            continue
        tree.setdefault(int(fields[1]), []).append(pid)
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first, then theirs)."""
    tree = _children_map()
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt: list[int] = []
        for p in frontier:
            for child in tree.get(p, []):
                if child not in out:
                    out.append(child)
                    nxt.append(child)
        frontier = nxt
    return out


def kill_tree(pid: int, grace: float = 0.5) -> list[int]:
    """SIGTERM every descendant of ``pid``, then SIGKILL those still alive; returns them."""
    victims = descendants(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for child in victims:
            try:
                os.kill(child, sig)
                alive.append(child)
            except ProcessLookupError:
                continue
        if not alive or sig == signal.SIGKILL:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(c) for c in alive):
            time.sleep(0.02)
        victims = descendants(pid) + [c for c in alive if _alive(c)]
    return victims


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return _stat_fields(state)[0] != "Z"


def _terminate_handler(sig: int, frame: FrameType | None) -> None:
    kill_tree(os.getpid())
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def install_terminate_handler(signum: int = signal.SIGTERM) -> None:
    """In a pool child: on ``signum``, stop our process tree, then die of that signal.

    billiard resets signal handlers after the pool initializer runs, so this is
    called when a task starts (cheap when already installed).
    """
    if signal.getsignal(signum) is not _terminate_handler:
        signal.signal(signum, _terminate_handler)


def _proc_table() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process."""
    return [
        (pid, int(fields[1]), int(fields[2]))
        for pid, fields in _proc_stats()
        if len(fields) >= 3 and fields[0] != "Z"
    ]


def lead_own_group(signum: int = signal.SIGTERM) -> None:
    """In a new pool process (``worker_process_init``): own a process group, die with the worker.

    Everything a task starts inherits the group, so whoever outlives the pool
    process can stop all of it (:func:`reap_orphan_groups`; billiard's hard time
    limit kills a group leader's whole group).  Celery makes pool processes die
    by SIGKILL with the worker, which would orphan a task's children; the
    parent-death signal becomes ``signum`` instead, whose handler stops the tree.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    install_terminate_handler(signum)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG


def reap_orphan_groups(stop: threading.Event, interval: float = 0.5) -> None:
    """In the worker's main process: kill what is left of the groups of dead pool processes.

    A pool process killed outright (kill -9, the out-of-memory killer) cannot stop
    the processes its task started; they keep its process group, which this loop
    kills once the group's leader is gone.
    """
    known: set[int] = set()
    while not stop.wait(interval):
        me = os.getpid()
        table = _proc_table()
        living = {pid for pid, _, _ in table}
        known.update(pid for pid, ppid, pgid in table if ppid == me and pgid == pid)
        for group in sorted(known - living):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                known.discard(group)
            except OSError:
                known.discard(group)
