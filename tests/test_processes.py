"""``api.processes`` > 1: several API processes on one port, supervised, stopped together."""

from __future__ import annotations

import http.client
import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import make_stack
from tests.stack import OPERATOR_TOKEN, Stack, wait_for

pytestmark = pytest.mark.integration


def _children(stack: Stack) -> list[psutil.Process]:
    return psutil.Process(stack.procs["serve"].pid).children()


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Any:
    stack = make_stack(
        tmp_path_factory.mktemp("multi"), mongo_server, workers=1, extra_config={"api": {"processes": 2}}
    )
    stack.start()
    yield stack
    stack.close()


def _owner(children: list[psutil.Process], client_port: int) -> int | None:
    """The API process holding the server side of our connection from ``client_port``."""
    for child in children:
        for conn in child.net_connections("tcp"):
            if conn.raddr and conn.raddr.port == client_port:
                return child.pid
    return None


def test_two_processes_serve_one_port_and_both_take_connections(multi: Stack) -> None:
    children = wait_for(lambda: len(_children(multi)) == 2 and _children(multi), what="two API processes")
    owners: set[int | None] = set()
    connections = []
    for _ in range(40):  # SO_REUSEPORT spreads connections by hash: 40 land on both
        conn = http.client.HTTPConnection("127.0.0.1", multi.port, timeout=10)
        conn.request("GET", "/api/health")
        assert conn.getresponse().read() and conn.sock is not None
        connections.append(conn)
        owners.add(_owner(children, conn.sock.getsockname()[1]))
    for conn in connections:
        conn.close()
    assert owners == {c.pid for c in children}


def test_tasks_created_through_several_processes_all_run(multi: Stack) -> None:
    ids = [multi.create("sleep_task", {"name": f"mp{i}", "seconds": 0.05}) for i in range(20)]
    assert len(set(ids)) == 20
    for cid in ids:
        multi.wait_status(cid, "SUCCESS")


def test_a_killed_process_is_replaced_and_the_port_keeps_answering(multi: Stack) -> None:
    before = wait_for(lambda: len(_children(multi)) == 2 and _children(multi), what="two API processes")
    victim = before[0]
    os.kill(victim.pid, signal.SIGKILL)
    after = wait_for(
        lambda: (
            len(_children(multi)) == 2
            and victim.pid not in {c.pid for c in _children(multi)}
            and _children(multi)
        ),
        timeout=15,
        what="a replacement API process",
    )
    assert victim.pid not in {c.pid for c in after}
    cid = multi.create("sleep_task", {"name": "after-kill", "seconds": 0.05})
    multi.wait_status(cid, "SUCCESS")


def test_sigterm_to_the_parent_stops_every_process(tmp_path: Path, mongo_server: str) -> None:
    stack = make_stack(tmp_path, mongo_server, workers=0, extra_config={"api": {"processes": 2}})
    try:
        stack.start_api()
        children = wait_for(lambda: len(_children(stack)) == 2 and _children(stack), what="two API processes")
        parent = stack.procs["serve"]
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=20) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        stack.close()


def test_processes_below_one_is_a_config_error(tmp_path: Path) -> None:
    from controlplane.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("api:\n  processes: 0\n")
    with pytest.raises(ConfigError, match=r"api\.processes"):
        load_config(str(path))


def _listening(stack: Stack) -> list[psutil.Process]:
    """The API processes once there are two and both listen on the stack's port, else []."""
    children = _children(stack)
    listening = [
        c
        for c in children
        if any(
            k.status == psutil.CONN_LISTEN and k.laddr.port == stack.port for k in c.net_connections("tcp")
        )
    ]
    return children if len(children) == 2 == len(listening) else []


def test_a_tokens_rate_limit_holds_across_api_processes(
    tmp_path_factory: pytest.TempPathFactory, mongo_server: str
) -> None:
    """``rate_limit`` is per token for the deployment: two processes do not double it."""
    stack = make_stack(
        tmp_path_factory.mktemp("multi-rate"),
        mongo_server,
        workers=0,
        extra_config={"api": {"processes": 2}, "rate_limit": {"create_per_minute": 1, "create_burst": 3}},
    )
    try:
        stack.start_api()
        children = wait_for(lambda: _listening(stack), what="two listening API processes")
        body = json.dumps({"task_type": "sleep_task", "data": {"name": "limited", "seconds": 0.01}})
        statuses, owners = [], set()
        for _ in range(16):  # a new connection each: SO_REUSEPORT spreads them over both
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
            conn.request("GET", "/api/health/")  # answered on this kept-alive connection first,
            assert conn.getresponse().read() and conn.sock is not None  # so its process is known
            owners.add(_owner(children, conn.sock.getsockname()[1]))
            headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": "application/json"}
            conn.request("POST", "/api/celery_task/", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            conn.close()
        assert owners == {c.pid for c in children}  # both processes answered some of them
        assert statuses.count(200) == 3 and statuses.count(429) == 13, statuses
    finally:
        stack.close()
