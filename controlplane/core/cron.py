"""Next fire times of schedules: fixed intervals and 5-field cron expressions (UTC).

Expressions are the ones :mod:`controlplane.core.validate` accepts (``*``, lists,
ranges, steps, month and weekday names; day-of-week 0 and 7 are Sunday).  As in
classic cron, when both day-of-month and day-of-week are restricted, a day
matching either fires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, DAYS),
)
HORIZON_DAYS = 366 * 5


def _value(token: str, names: Mapping[str, int]) -> int:
    return int(token) if token.isdigit() else names[token]


def expand(part: str, lo: int, hi: int, names: Mapping[str, int]) -> frozenset[int]:
    """The set of values one cron field matches (raises ValueError/KeyError when malformed)."""
    values: set[int] = set()
    for piece in part.split(","):
        base, _, step_text = piece.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {piece!r}")
        if base == "*":
            start, end = lo, hi
        else:
            first, dash, last = base.partition("-")
            start = _value(first, names)
            end = _value(last, names) if dash else (hi if step_text else start)
        if not lo <= start <= end <= hi:
            raise ValueError(f"{piece!r} is out of range {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Cron:
    """A parsed 5-field cron expression."""

    def __init__(self, expression: str) -> None:
        parts = expression.lower().split()
        if len(parts) != 5:
            raise ValueError("a cron expression has 5 fields")
        sets = [expand(p, lo, hi, names) for p, (_, lo, hi, names) in zip(parts, FIELDS, strict=True)]
        self.minutes, self.hours, self.mdays, self.months, wdays = sets
        self.wdays = frozenset(d % 7 for d in wdays)
        self.mday_any = parts[2] == "*"
        self.wday_any = parts[4] == "*"

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.mdays
        in_week = (day.isoweekday() % 7) in self.wdays
        if self.mday_any and self.wday_any:
            return True
        if self.mday_any:
            return in_week
        if self.wday_any:
            return in_month
        return in_month or in_week

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``moment`` (aware UTC datetimes)."""
        start = moment.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        for _ in range(HORIZON_DAYS):
            if day.month in self.months and self._day_matches(day):
                first_hour = start.hour if day == start.date() else 0
                for hour in sorted(h for h in self.hours if h >= first_hour):
                    first_minute = start.minute if (day == start.date() and hour == start.hour) else 0
                    for minute in sorted(m for m in self.minutes if m >= first_minute):
                        return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
            day += dt.timedelta(days=1)
        raise ValueError("the cron expression never fires")


def next_fire(schedule: Mapping[str, Any], after: float) -> float:
    """Epoch seconds of the next run of ``{"interval": s}`` or ``{"cron": expr}`` after ``after``."""
    if "interval" in schedule:
        return after + float(schedule["interval"])
    moment = dt.datetime.fromtimestamp(after, tz=dt.UTC)
    return Cron(str(schedule["cron"])).next_after(moment).timestamp()
