"""`controlplane watch` text output: the progress bar (pure)."""

from __future__ import annotations

import pytest

from controlplane.runtime.feedclient import progress_bar


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
