"""Schemathesis fuzzes every operation of ``/api/openapi.json`` against a real ``controlplane serve``.

Checks: no 5xx (``not_a_server_error``), and every response conforms to the
document (status code, content type, body schema). ``CP_FUZZ_EXAMPLES`` sets
the examples per operation (a bounded number by default; ``make fuzz`` runs
many more). The API runs without workers, so nothing created here is executed.

Beside the document, Hypothesis sends nested JSON (up to 120,000 levels, closed or not,
with brackets and escaped quotes inside strings) as request bodies and feed messages:
never a 5xx or a dropped socket, and anything deeper than ``api.max_json_depth`` is a 400
naming ``body`` (or an error frame naming ``message``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.sync.client import connect as ws_connect

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


MAX_JSON_DEPTH = 32  # api.max_json_depth's default


@st.composite
def nested_json(draw: Any, most: int) -> tuple[bytes, int]:
    """JSON nested ``depth`` deep (arrays and objects mixed), maybe never closed; and its depth."""
    depth = draw(st.one_of(st.integers(0, 2 * MAX_JSON_DEPTH), st.integers(0, most)))
    kinds = draw(st.lists(st.sampled_from(["[", '{"k": ']), min_size=1, max_size=4))
    inner = json.dumps(draw(st.text(alphabet='[]{}"\\ a', max_size=24)))
    opens = "".join(kinds[i % len(kinds)] for i in range(depth))
    closes = "".join("]" if kinds[i % len(kinds)] == "[" else "}" for i in reversed(range(depth)))
    text = opens + inner + (closes if draw(st.booleans()) else "")
    return text.encode(), depth


@pytest.mark.parametrize(
    "path", ["/api/celery_task/", "/api/celery_task/revoke/", "/api/celery_task/batch_revoke/"]
)
def test_nested_bodies_are_400_never_5xx(fuzz_stack: Stack, path: str) -> None:
    @given(body=nested_json(120_000))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(body: tuple[bytes, int]) -> None:
        raw, depth = body
        resp = fuzz_stack.request("POST", path, raw=raw, timeout=30)
        assert resp.status == 400 and set(resp.json) == {"code", "message", "data"}, resp
        nested = resp.data["field"] == "body" and resp.data.get("limit") == MAX_JSON_DEPTH
        assert nested == (depth > MAX_JSON_DEPTH), (depth, resp)

    run()
    assert "Traceback" not in fuzz_stack.log("serve")


def test_nested_feed_messages_get_an_error_and_the_socket_stays(fuzz_stack: Stack) -> None:
    url = f"ws://127.0.0.1:{fuzz_stack.port}/api/celery_task/ws/?token={OPERATOR_TOKEN}"
    with ws_connect(url, max_size=None, open_timeout=20) as ws:

        def reply(kind: str) -> dict[str, Any]:
            while True:
                msg = json.loads(ws.recv(timeout=20))
                if msg["type"] == kind:
                    return dict(msg)

        @given(message=nested_json(9_000))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(message: tuple[bytes, int]) -> None:
            raw, depth = message
            ws.send(raw.decode())
            err = reply("error")
            assert err["code"] == 400
            assert (err["data"]["field"] == "message" and err["data"].get("limit") == MAX_JSON_DEPTH) == (
                depth > MAX_JSON_DEPTH
            ), (depth, err)
            ws.send(json.dumps({"action": "ping"}))
            reply("pong")

        run()
    assert "Traceback" not in fuzz_stack.log("serve")
