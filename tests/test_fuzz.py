"""Schemathesis fuzzes every operation of ``/api/openapi.json`` against a real ``controlplane serve``.

Checks: no 5xx (``not_a_server_error``), and every response conforms to the
document (status code, content type, body schema). ``CP_FUZZ_EXAMPLES`` sets
the examples per operation (a bounded number by default; ``make fuzz`` runs
many more). The API runs without workers, so nothing created here is executed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controlplane.service import openapi
from tests.conftest import fresh_redis_url
from tests.stack import OPERATOR_TOKEN, Stack

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CP_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("fuzz"),
        fresh_redis_url(),
        mongo_server,
        extra_config={
            "rate_limit": {"create_per_minute": 0, "revoke_per_minute": 0},
            "api": {"inspect_timeout": 0.2},
        },
    )
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# Every operation with positive data; those that take input also with negative (schema-violating) data.
OPERATIONS = [
    (method.upper(), path, mode)
    for path, item in openapi.operations().items()
    for method, op in item.items()
    if method != "parameters" and not op.get("x-websocket")
    for mode in (
        (POSITIVE, NEGATIVE)
        if "requestBody" in op or "parameters" in op or "parameters" in item
        else (POSITIVE,)
    )
]


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzz_stack.port}/api/openapi.json")


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_api_conforms_and_never_fails(
    api_schema: Any, fuzz_stack: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    base = f"http://127.0.0.1:{fuzz_stack.port}"
    token = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base, headers=token, checks=CHECKS, timeout=20)

    run()
    assert "Traceback" not in fuzz_stack.log("serve")
