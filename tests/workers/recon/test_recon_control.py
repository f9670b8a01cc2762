"""Heartbeats of the progress reporter and the result batcher, on a fake clock / a real loop."""

from __future__ import annotations

import asyncio

from workers.recon.control import Batcher, ProgressReporter


def test_heartbeat_repeats_the_latest_report_only_when_nothing_was_sent() -> None:
    now = [0.0]
    sent: list[tuple[str, int, int]] = []
    reporter = ProgressReporter(
        lambda *a: sent.append(a), min_interval=0.2, clock=lambda: now[0], heartbeat=1.0
    )
    reporter.beat()
    assert sent == [], "nothing to repeat before the first report"
    reporter.report("service_detection", 3, 10)
    now[0] = 0.9
    reporter.beat()
    assert sent == [("service_detection", 3, 10)]
    now[0] = 1.0
    reporter.beat()
    assert sent[-1] == ("service_detection", 3, 10) and len(sent) == 2
    reporter.report("service_detection", 4, 10)
    now[0] = 1.1
    reporter.beat()
    assert len(sent) == 2, "a queued report is sent by flush_due, not repeated by a heartbeat"
    now[0] = 1.3
    reporter.flush_due()
    now[0] = 2.5
    reporter.beat()
    assert sent[-2:] == [("service_detection", 4, 10), ("service_detection", 4, 10)]


def test_batcher_writes_full_batches_at_once_and_the_rest_on_its_timer_or_flush() -> None:
    async def scenario() -> list[list[int]]:
        written: list[list[int]] = []
        batch: Batcher[int] = Batcher(written.append, size=3, interval=0.05)
        for i in range(7):
            batch.add(i)
        assert written == [[0, 1, 2], [3, 4, 5]]
        await asyncio.sleep(0.2)
        assert written[-1] == [6], "the partial batch goes out on its timer"
        batch.add(7)
        batch.flush()
        assert written[-1] == [7] and batch.written == 8
        return written

    asyncio.run(scenario())


def test_batcher_keeps_a_batch_whose_timed_write_failed() -> None:
    async def scenario() -> list[list[int]]:
        written: list[list[int]] = []
        failures = [True]

        def write(items: list[int]) -> None:
            if failures.pop() if failures else False:
                raise RuntimeError("store down")
            written.append(items)

        batch: Batcher[int] = Batcher(write, size=10, interval=0.02)
        batch.add(1)
        await asyncio.sleep(0.1)
        assert written == []
        batch.add(2)
        batch.flush()
        return written

    assert asyncio.run(scenario()) == [[1, 2]]
