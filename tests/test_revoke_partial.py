"""A port scan revoked part-way through a real worker keeps what it found, marked partial, and
its statistic says so (issue #19: a scan stopped at 31 % kept ``statistic {}`` and no ``ip``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration

TARGET = "127.88.5.0/28"
"""Sixteen loopback addresses: a full port scan of them takes the worker many seconds."""
OPEN_IP = "127.88.5.1"
LOW_PORTS = range(1024, 1200)
"""Where the planted port goes: the scan tries low ports first, so it finds it in its first second."""


def listen_low() -> socket.socket:
    """A listening socket on OPEN_IP at the first free port of LOW_PORTS."""
    for port in LOW_PORTS:
        try:
            return socket.create_server((OPEN_IP, port), backlog=512)
        except OSError:
            continue
    raise RuntimeError(f"no free port in {LOW_PORTS} on {OPEN_IP}")


@pytest.fixture
def planted() -> Iterator[socket.socket]:
    """A listener on OPEN_IP at a low port that accepts and closes every connection."""
    server = listen_low()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join()
    server.close()


def test_a_port_scan_revoked_part_way_keeps_its_ip_results_and_statistic(
    stack: Stack, planted: socket.socket
) -> None:
    options = {"port_scan_type": "all", "service_detection": False, "site_identify": False}
    cid = stack.create("ip_task", {"name": "revoked scan", "target": TARGET, "options": options})
    task_id = stack.wait_status(cid, "STARTED")["task_id"]
    wait_for(
        lambda: stack.detail(cid)["statistic"].get("ip"),
        timeout=30,
        what="the statistic of the open ports found while the scan runs",
    )
    progress = stack.detail(cid)["progress"]
    assert progress["stage"] == "port_scan" and progress["done"] < progress["total"], progress
    assert stack.request("DELETE", f"/api/celery_task/{cid}/").code == 200
    done = stack.wait_status(cid, "REVOKED", timeout=15)
    assert done["revoke"]["terminated"] is True
    found = {d["ip"]: d for d in stack.db["ip"].find({"task_id": task_id})}
    assert planted.getsockname()[1] in {p["port"] for p in found[OPEN_IP]["ports"]}
    assert all(d["partial"] for d in found.values()), "results of a stopped task are marked partial"
    assert 1 <= done["statistic"]["ip"] <= len(found), (done["statistic"], sorted(found))
    task = stack.db.tasks.find_one({"celery_id": cid}, {"partial": 1})
    assert task is not None and task["partial"], "the statistic is marked partial"
