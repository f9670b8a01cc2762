"""Task registration: pipelines by type, loud failure for missing ones, config callables."""

from __future__ import annotations

import pytest

from controlplane.core.tasktypes import SPEC_TYPES
from workers.register import PipelineNotImplemented, builtin_pipeline, load_callable
from workers.tasks import PIPELINES


def test_a_type_without_a_pipeline_fails_loudly() -> None:
    pipeline = builtin_pipeline("no_such_type")
    with pytest.raises(PipelineNotImplemented, match="not implemented"):
        pipeline({}, None)  # type: ignore[arg-type]


def test_every_spec_type_has_a_pipeline() -> None:
    missing = [t.value for t in SPEC_TYPES if not callable(PIPELINES.get(t.value))]
    assert missing == []


def test_config_callables_are_checked() -> None:
    assert load_callable("workers.tasks.testing:sleep").__name__ == "sleep"
    for bad in ("workers.tasks.testing", "workers.tasks.testing:", ":sleep"):
        with pytest.raises(ValueError, match=r"package\.module:function"):
            load_callable(bad)
    with pytest.raises(AttributeError):
        load_callable("workers.tasks.testing:nope")
