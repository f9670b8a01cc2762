"""Any Celery client is welcome: a plain ``send_task`` runs, keeps its fields, and a bad one says why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from controlplane.core.messages import fields_of_message
from tests.conftest import make_stack
from tests.stack import Stack
from workers.register import MalformedMessage, message_data

DATA = {"name": "foreign-one", "target": "a.example", "seconds": 0.1}
ARL = {"options": {"celery_action": "sleep_task", "data": DATA}}


def test_message_data_takes_arls_shape_and_names_what_is_wrong() -> None:
    assert message_data("sleep_task", (), ARL) == DATA
    assert message_data("sleep_task", (), {"options": {}}) == {}
    for args, kwargs, words in [
        ((1,), {}, "positional arguments"),
        ((), {"data": {}}, "unexpected keyword argument(s) 'data'"),
        ((), {"options": []}, "'options' must be an object"),
        ((), {"options": {"celery_action": "ip_task"}}, "celery_action is 'ip_task'"),
        ((), {"options": {"data": "x"}}, "options.data must be an object, not str"),
    ]:
        with pytest.raises(MalformedMessage, match=words.replace("(", r"\(").replace(")", r"\)")):
            message_data("sleep_task", args, kwargs)


def test_fields_of_a_message_from_json_or_a_python_repr() -> None:
    want = {"name": "foreign-one", "target": "a.example", "data": DATA}
    assert fields_of_message(repr(ARL)) == want
    assert (
        fields_of_message(
            '{"options": {"data": {"name": "foreign-one", "target": "a.example", "seconds": 0.1}}}'
        )
        == want
    )
    assert fields_of_message("{'options': {'data': {'options': {'port_scan': True}}}}")["options"] == {
        "port_scan": True
    }
    for junk in (None, "", "{'options': ...", "__import__('os').system('true')", "[1, 2]", "{'options': 1}"):
        assert fields_of_message(junk) == {}


@pytest.fixture(scope="module")
def fstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("foreign"), mongo_server)
    try:
        s.start()
        yield s
    finally:
        s.close()


def plain_client(stack: Stack) -> Celery:
    """A Celery app as another team would write it: the broker URL and nothing of ours."""
    return Celery("someone-else", broker=stack.broker_url, set_as_current=False)


def seen(stack: Stack, cid: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = stack.request("GET", f"/api/celery_task/{cid}/")
        if resp.status == 200 and resp.data.get("status") in ("SUCCESS", "FAILURE"):
            return dict(resp.data)
        time.sleep(0.2)
    raise AssertionError(f"task {cid} not final after {timeout}s")


def test_a_plain_send_task_without_a_queue_runs_and_shows_its_fields(fstack: Stack) -> None:
    client = plain_client(fstack)
    cid = str(uuid.uuid4())
    try:
        client.send_task("controlplane.sleep_task", kwargs=ARL, task_id=cid)  # lands on "celery"
    finally:
        client.close()
    shown = seen(fstack, cid)
    assert shown["status"] == "SUCCESS", shown
    assert shown["task_type"] == "sleep_task"
    assert shown["name"] == "foreign-one" and shown["target"] == "a.example", shown
    assert "passed on to" in fstack.log("worker0")


def test_a_badly_shaped_message_fails_saying_what_shape_is_expected(fstack: Stack) -> None:
    client = plain_client(fstack)
    cid = str(uuid.uuid4())
    try:
        client.send_task("controlplane.sleep_task", args=[1, 2], task_id=cid)
    finally:
        client.close()
    shown = seen(fstack, cid)
    assert shown["status"] == "FAILURE", shown
    assert "MalformedMessage" in shown["exception"] and "positional arguments" in shown["exception"], shown
    assert "TypeError" not in str(shown["traceback"])


def test_celerys_own_command_line_reaches_the_workers(fstack: Stack) -> None:
    env = {**os.environ, "CONTROLPLANE_CONFIG": str(fstack.config_path)}
    celery = Path(sys.executable).with_name("celery")
    out = subprocess.run(
        [str(celery), "-A", "workers", "inspect", "ping", "--timeout", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pong" in out.stdout
