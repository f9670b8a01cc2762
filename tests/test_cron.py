"""Next fire times of cron and interval schedules."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.cron import Cron, next_fire

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 9-17 * * mon-fri", at(2026, 11, 28, 10, 7), at(2026, 11, 30, 9, 0)),
        ("*/15 9-17 * * mon-fri", at(2026, 11, 30, 9, 0), at(2026, 11, 30, 9, 15)),
        ("0 0 1 * *", at(2026, 11, 29), at(2026, 12, 1)),
        ("30 2 * * 7", at(2026, 11, 29, 3, 0), at(2026, 12, 6, 2, 30)),
        ("30 2 * * 0", at(2026, 11, 29, 3, 0), at(2026, 12, 6, 2, 30)),
        ("0 12 29 feb *", at(2026, 3, 1), at(2028, 2, 29, 12, 0)),
        ("0 0 13 * fri", at(2026, 11, 1), at(2026, 11, 6)),
        ("5 4 * * *", at(2026, 12, 31, 23, 59), at(2027, 1, 1, 4, 5)),
    ],
)
def test_cron_examples(expr: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert Cron(expr).next_after(after) == expected


@pytest.mark.parametrize("expr", ["* * *", "61 * * * *", "* 25 * * *", "*/0 * * * *", "5-1 * * * *"])
def test_bad_expressions_raise(expr: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        Cron(expr)


@settings(max_examples=150, deadline=None)
@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    start=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1)),
)
def test_daily_cron_fires_within_a_day_at_its_time(minute: int, hour: int, start: dt.datetime) -> None:
    after = start.replace(tzinfo=UTC)
    fired = Cron(f"{minute} {hour} * * *").next_after(after)
    assert fired > after and fired - after <= dt.timedelta(days=1)
    assert (fired.hour, fired.minute, fired.second) == (hour, minute, 0)


def test_interval_schedule() -> None:
    assert next_fire({"interval": 60}, 1000.0) == 1060.0
    assert next_fire({"cron": "0 0 * * *"}, at(2026, 1, 1, 5).timestamp()) == at(2026, 1, 2).timestamp()
