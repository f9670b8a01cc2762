"""`controlplane watch`: the text output's progress bar (pure), and giving up on an
unreachable feed (a real closed port, the real console script)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from controlplane.runtime import embedded
from controlplane.runtime.feedclient import FeedUnreachable, TaskFeed, progress_bar


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (
            {"stage": "port_scan", "done": 350, "total": 1000},
            " [#######.............]  35% port_scan 350/1000",
        ),
        ({"stage": "sleep", "done": 10, "total": 10}, " [####################] 100% sleep 10/10"),
        ({"stage": "poc", "done": 0, "total": 4}, " [....................]   0% poc 0/4"),
        ({"stage": "odd", "done": 12, "total": 10}, " [####################] 100% odd 12/10"),
        ({"stage": "resolve"}, " resolve"),
        ({"done": 3, "total": 0}, ""),
        ({"done": True, "total": 2}, ""),
        ({}, ""),
    ],
)
def test_progress_bar(progress: dict, expected: str) -> None:
    assert progress_bar(progress) == expected


def test_feed_gives_up_after_its_retries() -> None:
    port = embedded.free_port()  # nothing listens there
    feed = TaskFeed(f"http://127.0.0.1:{port}", retries=2, max_backoff=0.05)

    async def first() -> None:
        async for _ in feed:
            pass

    with pytest.raises(FeedUnreachable) as caught:
        asyncio.run(first())
    assert str(caught.value).startswith(f"cannot reach ws://127.0.0.1:{port}/api/celery_task/ws/: ")
    assert str(caught.value).endswith("(3 attempt(s) in a row)") and feed.connections == 0


def test_watch_of_an_unreachable_url_exits_3_with_one_line() -> None:
    port = embedded.free_port()
    proc = subprocess.run(
        embedded.controlplane_command("watch", "--url", f"http://127.0.0.1:{port}", "--retries", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CP_") and k != "CONTROLPLANE_CONFIG"},
    )
    assert proc.returncode == 3 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"controlplane watch: cannot reach ws://127.0.0.1:{port}/api/celery_task/ws/: ")
    assert "(2 attempt(s) in a row)" in line
