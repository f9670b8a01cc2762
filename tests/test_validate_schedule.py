"""Schedules given at create are checked for every task type: a bad one is a 400, never a 500."""

from __future__ import annotations

import pytest

from controlplane.core.errors import InvalidParam
from controlplane.core.validate import parse_schedule_patch, validate_task_data


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"interval": "x"}, "data.schedule.interval"),
        ({"interval": 0}, "data.schedule.interval"),
        ({"cron": "0 0 30 2 *"}, "data.schedule.cron"),
        ({"every": 5}, "data.schedule.every"),
        ("hourly", "data.schedule"),
    ],
)
def test_an_extra_types_bad_schedule_is_a_400_naming_it(schedule: object, field: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        validate_task_data("my_scan", {"name": "n", "target": "t", "schedule": schedule}, custom=True)
    assert caught.value.data["field"] == field


def test_an_extra_type_may_run_every_second() -> None:
    data = validate_task_data(
        "my_scan", {"name": "n", "target": "t", "schedule": {"interval": 1}}, custom=True
    )
    assert data["schedule"] == {"interval": 1}


def test_a_cron_that_never_fires_is_refused_at_create_and_in_a_patch() -> None:
    data = {"name": "m", "target": "a.example.com", "scope_id": "s1", "schedule": {"cron": "0 0 31 4 *"}}
    with pytest.raises(InvalidParam, match="never fires"):
        validate_task_data("domain_exec_task", data)
    with pytest.raises(InvalidParam, match="never fires"):
        parse_schedule_patch({"cron": "0 0 30 2 *"})
