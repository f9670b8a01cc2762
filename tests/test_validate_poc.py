"""run_risk_cruising's template options: accepted as given, refused with the field named."""

from __future__ import annotations

import pytest

from controlplane.config import Config
from controlplane.core.errors import InvalidParam
from controlplane.core.validate import limits_for, parse_severities, validate_task_data

LIMITS = limits_for(Config().limits, "run_risk_cruising")


def risk(options: dict[str, object]) -> dict[str, object]:
    data = {"name": "t", "target": "http://a.example", "options": options}
    return validate_task_data("run_risk_cruising", data, LIMITS)["options"]  # type: ignore[no-any-return]


def test_template_options_are_accepted() -> None:
    options = {
        "ids": ["a", "b", "a"],
        "exclude_ids": ["c"],
        "tags": ["panel", "exposure"],
        "exclude_tags": [],
        "severity": ["high", "critical"],
        "host_concurrency": 4,
        "max_requests_per_host": 40,
        "max_host_errors": 5,
    }
    assert risk(options) == {**options, "ids": ["a", "b"]}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"severity": ["urgent"]}, "severity"),
        ({"severity": []}, "severity"),
        ({"tags": []}, "tags"),
        ({"tags": ["x" * 65]}, "tags[0]"),
        ({"host_concurrency": 0}, "host_concurrency"),
        ({"max_requests_per_host": 100_001}, "max_requests_per_host"),
        ({"max_host_errors": "9"}, "max_host_errors"),
        ({"templates": ["x"]}, "templates"),
    ],
)
def test_bad_template_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        risk(options)
    assert caught.value.data["field"].endswith(field), caught.value.data


def test_severity_query_parameter() -> None:
    assert parse_severities(None) is None
    assert parse_severities("high, critical,high") == ["high", "critical"]
    with pytest.raises(InvalidParam):
        parse_severities("high,urgent")
