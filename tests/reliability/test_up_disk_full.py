"""The data dir of ``controlplane up`` (shipped config.yaml) fills up under load, then frees.

The data dir is a small tmpfs of its own (mounted by the test, which needs root, as CI has);
a filler file takes all but a little of it while the load runs, so the database, Redis's
append-only file and the logs meet ENOSPC.  Then the filler goes.  Every task the API
accepted must reach its true final state, and the stack must take new work again.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.test_up_crash import Load, final_states, untrue
from tests.stack import wait_for
from tests.upstack import UpStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE_MB = 256
BOUND = 150.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_kb: int) -> Path:
    """A file taking all of ``disk`` but ``leave_kb`` KB."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    filler = disk / "filler"
    with filler.open("wb") as fh:
        fh.truncate(0)
        chunk = b"\0" * (1 << 20)
        remaining = max(0, free - leave_kb * 1024)
        while remaining > 0:
            try:
                fh.write(chunk[: min(len(chunk), remaining)])
            except OSError:
                break
            remaining -= len(chunk)
    return filler


def test_a_full_data_dir_refuses_work_then_recovers_without_losing_a_task(
    tmp_path: Path, small_disk: Path, record: Callable[..., None]
) -> None:
    rng = random.Random(11)
    stack = UpStack(tmp_path / "up", data=small_disk / "data").start()
    try:
        with Load(stack, rng) as load:
            time.sleep(3.0)
            filler = fill(small_disk, leave_kb=64)
            full_at = time.monotonic()
            wait_for(lambda: load.refusals >= 5, timeout=120, what="creates refused while the disk is full")
            refused_after = time.monotonic() - full_at
            time.sleep(5.0)
            filler.unlink()
            freed, freed_at = time.monotonic(), time.time()
            wait_for(lambda: load.accepted_since(freed) >= 5, timeout=120, what="creates accepted again")
            back_after = time.monotonic() - freed
        accepted = dict(load.accepted)
        details = final_states(stack, list(accepted), BOUND)
        # A part of the stack may die of the full disk (the worker does: it exits and up restarts
        # it), so a task created before the disk was freed may truly have lost its worker.
        wrong = {cid: untrue(kind, details.get(cid, {}), [freed_at]) for cid, kind in accepted.items()}
        wrong = {cid: why for cid, why in wrong.items() if why}
        assert not wrong, f"{len(wrong)} of {len(accepted)} tasks not in their true state: {wrong}"
        log = (small_disk / "data" / "logs" / "up.log").read_text(encoding="utf-8", errors="replace")
        restarted = sorted(
            {
                part
                for part in ("ingest", "worker", "serve", "scheduler", "redis", "mongo")
                if f"{part} started again" in log
            }
        )
        lost_worker = sum(1 for d in details.values() if "WorkerLost" in str(d.get("exception")))
        record(
            fault=f"fill `up`'s data dir (a {SIZE_MB} MB tmpfs) under load, free it 5 s later",
            load="~15 creates/s: sleep (0.1–1.5 s), noop and failing tasks",
            outcome=f"creates refused {refused_after:.0f} s after the disk filled ({load.refusals} refused); "
            f"accepted again {back_after:.0f} s after it was freed; restarted by up: "
            f"{', '.join(restarted) or 'none'}; all {len(accepted)} accepted tasks final, "
            f"{lost_worker} FAILURE (WorkerLostError)",
            lost=0,
            broker="Redis (embedded)",
            settings="shipped config.yaml under `controlplane up` (only data dir and ports moved)",
        )
    finally:
        stack.kill_group()
