"""Workers and queues (``/api/workers/``, ``/api/queues/``) against real workers.

One stack with two Celery worker processes on different queues (``wa`` on the stack's
queue with concurrency 2, ``wb`` on a side queue with concurrency 1), a task type routed to
a queue nobody consumes, and a Redis server of its own: the survey broadcasts reach every
worker on a Redis database, and a concurrent test run's workers on a shared one would answer
too. The tests run in file order: the controls change ``wb``, the last two stop both workers.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from controlplane.bus.control import ControlBus
from controlplane.config import Config
from controlplane.runtime import embedded
from controlplane.service.workers import WorkersService, worker_view
from controlplane.store.tasks import TaskStore
from tests.conftest import in_process_config, require_rabbitmq
from tests.stack import OPERATOR_TOKEN, TEST_TASKS, VIEWER_TOKEN, Response, Stack, wait_for

pytestmark = pytest.mark.integration

PARKED = f"parked-{uuid.uuid4().hex[:8]}"


def start_named_worker(stack: Stack, key: str, **env: str) -> str:
    """Start ``controlplane worker`` as ``<key>-<database>@<host>`` with config overrides in ``env``."""
    proc = embedded.spawn(
        stack.command("worker", "--name", f"{key}-{stack.database}@%h"),
        log_path=stack.workdir / f"worker-{key}.log",
        env={**stack.env(), **env},
    )
    stack.procs[f"worker-{key}"] = proc
    return key


@pytest.fixture(scope="module")
def wstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("workers")
    port = embedded.free_port()
    redis_proc = embedded.start_redis(port, tmp / "redis", persist=False)
    tasks = {**TEST_TASKS, "parked_task": {"task": "workers.tasks.testing:sleep", "queue": PARKED}}
    s = Stack(
        tmp / "stack",
        f"redis://127.0.0.1:{port}/0",
        mongo_server,
        workers=0,
        extra_config={"api": {"workers_cache_seconds": 0.5}, "tasks": tasks},
    )
    try:
        s.start()
        start_named_worker(s, "wa", CP_WORKER_CONCURRENCY="2")
        start_named_worker(s, "wb", CP_WORKER_CONCURRENCY="1", CP_WORKER_QUEUES=f"side-{s.database}")
        s.wait_workers(2)
        yield s
    finally:
        s.close()
        embedded.stop(redis_proc)


def full_name(stack: Stack, key: str) -> str:
    """The node name of worker ``key`` as the API lists it (``<key>-<database>@<host>``)."""
    prefix = f"{key}-{stack.database}@"

    def find() -> str | None:
        names = [w["name"] for w in stack.request("GET", "/api/workers/").data["workers"]]
        return next((n for n in names if n.startswith(prefix)), None)

    return str(wait_for(find, timeout=30, what=f"worker {key} listed"))


def worker(stack: Stack, name: str, token: str = OPERATOR_TOKEN) -> dict[str, Any]:
    resp = stack.request("GET", f"/api/workers/{name}/", token=token)
    assert resp.status == 200 and resp.code == 200, resp
    return dict(resp.data)


def queues(stack: Stack) -> dict[str, dict[str, Any]]:
    resp = stack.request("GET", "/api/queues/", token=VIEWER_TOKEN)
    assert resp.status == 200 and resp.code == 200, resp
    return {q["name"]: q for q in resp.data["queues"]}


def assert_error(resp: Response, status: int, code: int, field: str | None = None) -> None:
    assert resp.status == status and resp.code == code, resp
    assert set(resp.json) == {"code", "message", "data"}
    if field is not None:
        assert resp.data["field"] == field, resp


# -- the views --------------------------------------------------------------------------------


def test_two_workers_on_different_queues_are_listed_online(wstack: Stack) -> None:
    a, b = full_name(wstack, "wa"), full_name(wstack, "wb")
    stack_queue, side = f"recon-{wstack.database}", f"side-{wstack.database}"

    def both_surveyed() -> dict[str, dict[str, Any]] | None:
        resp = wstack.request("GET", "/api/workers/", token=VIEWER_TOKEN)
        assert resp.status == 200, resp
        found = {w["name"]: w for w in resp.data["workers"]}
        ok = all(found.get(n, {}).get("replied") and found[n]["heartbeat_age"] is not None for n in (a, b))
        return found if ok else None

    found = wait_for(both_surveyed, timeout=30, what="both workers surveyed and heard")
    wa, wb = found[a], found[b]
    for w in (wa, wb):
        assert w["state"] == "online" and w["pool"] == "prefork"
        assert 0 <= w["heartbeat_age"] <= 6.0
        assert isinstance(w["processed"], int) and isinstance(w["reserved"], int)
        assert isinstance(w["pid"], int) and w["last_heartbeat"].endswith("Z")
        assert isinstance(w["sw_ver"], str) and w["sw_ver"], w  # from the heartbeats the consumer keeps
        assert isinstance(w["loadavg"], list) and len(w["loadavg"]) == 3, w
    assert wa["concurrency"] == 2 and wb["concurrency"] == 1
    assert stack_queue in wa["queues"] and side not in wa["queues"]
    assert side in wb["queues"] and stack_queue not in wb["queues"]

    assert worker(wstack, a, token=VIEWER_TOKEN)["concurrency"] == 2
    view = queues(wstack)
    assert view[stack_queue]["consumers"] == [a] and view[side]["consumers"] == [b]
    assert view[PARKED]["consumers"] == [] and view[PARKED]["consumer_count"] == 0
    assert view[stack_queue]["depth"] == 0


def test_the_depth_of_a_queue_nobody_consumes_grows(wstack: Stack) -> None:
    assert queues(wstack)[PARKED]["depth"] == 0
    ids = [wstack.create("parked_task", {"name": f"parked-{i}", "seconds": 0}) for i in range(3)]
    wait_for(lambda: queues(wstack)[PARKED]["depth"] == 3, timeout=15, what="parked depth 3")
    assert all(wstack.detail(cid)["status"] == "PENDING" for cid in ids)
    text = wstack.request("GET", "/metrics", token=VIEWER_TOKEN).raw.decode()
    assert f'controlplane_queue_depth{{queue="{PARKED}"}} 3.0' in text
    assert f'controlplane_queue_consumers{{queue="{PARKED}"}} 0.0' in text


# -- refused requests -------------------------------------------------------------------------


def test_a_viewer_may_not_use_the_controls(wstack: Stack) -> None:
    b = full_name(wstack, "wb")
    before = worker(wstack, b)
    for path, body in (
        ("pool", {"grow": 1}),
        ("consumers", {"add": "viewer-queue"}),
        ("shutdown", None),
    ):
        resp = wstack.request("POST", f"/api/workers/{b}/{path}", body, token=VIEWER_TOKEN)
        assert_error(resp, 403, 403)
    assert worker(wstack, b)["concurrency"] == before["concurrency"]
    assert wstack.procs["worker-wb"].poll() is None


def test_an_unknown_worker_is_an_error_envelope(wstack: Stack) -> None:
    unknown = f"nobody-{uuid.uuid4().hex[:6]}@nowhere"
    assert_error(wstack.request("GET", f"/api/workers/{unknown}/"), 404, 106)
    assert wstack.request("GET", f"/api/workers/{unknown}/").json["message"] == "WorkerNotFound"
    for path, body in (("pool", {"grow": 1}), ("consumers", {"add": "q"}), ("shutdown", None)):
        assert_error(wstack.request("POST", f"/api/workers/{unknown}/{path}", body), 404, 106)


def test_bad_control_input_is_400_naming_the_field(wstack: Stack) -> None:
    b = full_name(wstack, "wb")
    pool, consumers = f"/api/workers/{b}/pool", f"/api/workers/{b}/consumers"
    assert_error(wstack.request("POST", pool, {"grow": 0}), 400, 400, "grow")
    assert_error(wstack.request("POST", pool, {"shrink": "1"}), 400, 400, "shrink")
    assert_error(wstack.request("POST", pool, {"grow": True}), 400, 400, "grow")
    assert_error(wstack.request("POST", pool, {"grow": 1000}), 400, 400, "grow")
    assert_error(wstack.request("POST", pool, {}), 400, 400, "body")
    assert_error(wstack.request("POST", pool, {"grow": 1, "shrink": 1}), 400, 400, "body")
    assert_error(wstack.request("POST", pool, raw=b"{not json"), 400, 400, "body")
    assert_error(wstack.request("POST", consumers, {"add": "bad queue!"}), 400, 400, "add")
    assert_error(wstack.request("POST", consumers, {"cancel": 7}), 400, 400, "cancel")
    assert_error(wstack.request("POST", consumers, {"remove": "q"}), 400, 400, "body")
    assert worker(wstack, b)["concurrency"] == 1


# -- the controls -----------------------------------------------------------------------------


def test_growing_and_shrinking_the_pool(wstack: Stack) -> None:
    b = full_name(wstack, "wb")
    grown = wstack.request("POST", f"/api/workers/{b}/pool", {"grow": 1})
    assert grown.status == 200 and grown.code == 200, grown
    assert grown.data == {"worker": b, "command": "pool_grow", "ok": True, "reply": {"ok": "pool will grow"}}
    wait_for(lambda: worker(wstack, b)["concurrency"] == 2, timeout=15, what="concurrency 2")
    assert "audit: test-operator (operator) POST /api/workers/" in wstack.log("serve")

    shrunk = wstack.request("POST", f"/api/workers/{b}/pool", {"shrink": 1})
    assert shrunk.code == 200 and shrunk.data["reply"] == {"ok": "pool will shrink"}, shrunk
    wait_for(lambda: worker(wstack, b)["concurrency"] == 1, timeout=15, what="concurrency 1")


def test_adding_and_cancelling_a_consumer(wstack: Stack) -> None:
    b = full_name(wstack, "wb")
    extra = f"extra-{wstack.database}"
    added = wstack.request("POST", f"/api/workers/{b}/consumers", {"add": extra})
    assert added.code == 200 and added.data["ok"] is True, added
    assert added.data["reply"] == {"ok": f"add consumer {extra}"}
    assert extra in added.data["queues"]
    wait_for(lambda: extra in (worker(wstack, b)["queues"] or []), timeout=15, what="extra consumed")
    assert queues(wstack)[extra]["consumers"] == [b]

    cancelled = wstack.request("POST", f"/api/workers/{b}/consumers", {"cancel": extra})
    assert cancelled.code == 200 and cancelled.data["reply"] == {"ok": f"no longer consuming from {extra}"}
    assert extra not in cancelled.data["queues"]
    wait_for(lambda: extra not in (worker(wstack, b)["queues"] or [extra]), timeout=15, what="extra gone")


def test_a_killed_worker_shows_offline_after_the_timeout(wstack: Stack) -> None:
    a = full_name(wstack, "wa")
    assert worker(wstack, a)["state"] == "online"
    proc = wstack.procs.pop("worker-wa")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    gone = wait_for(
        lambda: (lambda w: w if w["state"] == "offline" else None)(worker(wstack, a)),
        timeout=40,
        what="killed worker offline",
    )
    assert gone["heartbeat_age"] >= 6.0 and gone["replied"] is False  # (rounded to 0.1 s)
    assert a not in queues(wstack)[f"recon-{wstack.database}"]["consumers"]


def test_shutdown_stops_the_worker(wstack: Stack) -> None:
    b = full_name(wstack, "wb")
    resp = wstack.request("POST", f"/api/workers/{b}/shutdown")
    assert resp.status == 200 and resp.data == {"worker": b, "command": "shutdown", "ok": True, "reply": None}
    proc = wstack.procs["worker-wb"]
    wait_for(lambda: proc.poll() is not None, timeout=30, what="worker process exit")
    assert proc.returncode == 0
    wait_for(lambda: worker(wstack, b)["state"] == "offline", timeout=20, what="shut-down worker offline")
    listing = wstack.request("GET", "/api/workers/").data
    assert listing["online"] == 0 and {b, full_name(wstack, "wa")} <= {w["name"] for w in listing["workers"]}


# -- RabbitMQ ---------------------------------------------------------------------------------


@pytest.mark.amqp
def test_queue_depths_and_consumers_on_rabbitmq(tmp_path: Path, mongo_server: str) -> None:
    """On RabbitMQ a queue's depth and consumer count are a passive declare's (the broker's own)."""
    url = require_rabbitmq()
    parked = f"parked-{uuid.uuid4().hex[:8]}"
    tasks = {**TEST_TASKS, "parked_task": {"task": "workers.tasks.testing:sleep", "queue": parked}}
    s = Stack(
        tmp_path / "amqp",
        url,
        mongo_server,
        extra_config={"api": {"workers_cache_seconds": 0.5}, "tasks": tasks},
    )
    try:
        s.start()
        name = full_name(s, "w0")
        for i in range(2):
            s.create("parked_task", {"name": f"parked-{i}", "seconds": 0})
        own = f"recon-{s.database}"

        def counted() -> dict[str, dict[str, Any]] | None:
            view = queues(s)
            ready = view.get(parked, {}).get("depth") == 2 and name in view[own]["consumers"]
            return view if ready else None

        view = wait_for(counted, timeout=30, what="parked depth 2 and the worker consuming its queue")
        assert s.request("GET", "/api/queues/").data["broker"] == "amqp"
        assert view[parked]["broker_consumers"] == 0 and view[parked]["consumers"] == []
        assert (view[own]["broker_consumers"] or 0) >= 1 and view[own]["depth"] == 0
        assert worker(s, name)["pool"] == "prefork"
    finally:
        s.close()
        with Connection(url, connect_timeout=3) as conn:
            conn.channel().queue_delete(parked)


# -- the cache --------------------------------------------------------------------------------


def test_requests_share_one_refresh_per_interval(mongo_server: str, tmp_path: Path) -> None:
    """Many requests at once, and more within the interval, cost one survey; later ones a new one."""
    config: Config = in_process_config(mongo_server, "wv")
    config.api.workers_cache_seconds = 30.0
    now = [1000.0]
    bus, store = ControlBus(config), TaskStore(config.mongo)
    service = WorkersService(config, bus, store, ["recon"], clock=lambda: now[0])

    async def scenario() -> None:
        views = [service.workers() for _ in range(8)] + [service.queues() for _ in range(4)]
        first = await asyncio.gather(*views)
        assert service.refreshes == 1
        assert {q["name"] for q in first[-1]["queues"]} >= {"recon", "celery"}
        now[0] += 29.0
        await service.workers()
        assert service.refreshes == 1
        now[0] += 2.0
        await asyncio.gather(service.workers(), service.queues())
        assert service.refreshes == 2

    try:
        asyncio.run(scenario())
    finally:
        service.close()
        bus.close()
        store.close()


def test_worker_view_rules() -> None:
    """Online: a fresh heartbeat without a goodbye, or a survey reply; the pool's size is its processes."""
    doc = {"hostname": "w@h", "online": True, "last_heartbeat": 100.0, "processed": 7, "active": 1}
    said = {"stats": {"pool": "celery.concurrency.prefork:TaskPool", "max_concurrency": 2, "processes": 3}}
    assert worker_view("w@h", doc, None, 105.0, 15.0)["state"] == "online"
    assert worker_view("w@h", doc, None, 116.0, 15.0)["state"] == "offline"
    assert worker_view("w@h", {**doc, "online": False}, None, 101.0, 15.0)["state"] == "offline"
    view = worker_view("w@h", doc, said, 116.0, 15.0)
    assert view["state"] == "online" and view["pool"] == "prefork" and view["concurrency"] == 3
    assert view["processed"] == 7 and view["heartbeat_age"] == 16.0
    assert worker_view("w@h", None, said, 0.0, 15.0)["heartbeat_age"] is None
