"""Item 7: per-type soft and hard time limits from config; past the hard one the task is killed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Server, fast_stack

pytestmark = pytest.mark.integration


def test_hard_time_limit_kills_the_task_and_frees_its_slot(
    tmp_path: Path, own_redis: Server, mongo_server: str, record: Any
) -> None:
    tasks = {
        # Ignores SoftTimeLimitExceeded: only the hard limit stops it.
        "stubborn_task": {
            "task": "workers.tasks.testing:stubborn",
            "label": "Stubborn (test)",
            "soft_time_limit": 1,
            "time_limit": 2,
        },
        "short_sleep_task": {
            "task": "workers.tasks.testing:sleep",
            "label": "Short sleep (test)",
            "soft_time_limit": 1,
            "time_limit": 5,
        },
    }
    stack = fast_stack(tmp_path / "stack", own_redis.url, mongo_server, workers=1, concurrency=1, tasks=tasks)
    try:
        stack.start()
        began = time.monotonic()
        hard = stack.create("stubborn_task", {"name": "stubborn", "seconds": 60})
        # Queued behind it on the only slot: runs once the hard limit frees the slot.
        after = stack.create("noop_task", {"name": "after"})
        done = stack.wait_status(hard, "SUCCESS", "FAILURE", "REVOKED", timeout=30)
        killed_after = time.monotonic() - began
        assert done["status"] == "FAILURE" and "TimeLimitExceeded" in done["exception"], done
        assert stack.wait_status(after, "SUCCESS", "FAILURE", timeout=30)["status"] == "SUCCESS"
        soft = stack.create("short_sleep_task", {"name": "soft", "seconds": 30})
        soft_done = stack.wait_status(soft, "SUCCESS", "FAILURE", "REVOKED", timeout=30)
        assert soft_done["status"] == "FAILURE" and "SoftTimeLimitExceeded" in soft_done["exception"]
        assert stack.db.tasks.count_documents({"status": "STARTED"}) == 0
        record(
            fault="a task past its hard time limit (soft 1 s / hard 2 s, from config)",
            load="1 worker slot, a stubborn task with a task queued behind it",
            outcome=f'FAILURE "{done["exception"][:60]}" {killed_after:.0f} s after submission; '
            "the queued task then ran (slot freed); a task past its soft limit ends "
            "FAILURE SoftTimeLimitExceeded",
            lost=0,
            broker="Redis",
        )
    finally:
        stack.close()
