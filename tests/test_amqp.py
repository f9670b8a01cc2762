"""The core flows on RabbitMQ: create, run, revoke queued and running tasks, active, foreign tasks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from tests.conftest import require_rabbitmq
from tests.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.amqp]


@pytest.fixture(scope="module")
def amqp_stack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("amqp"), require_rabbitmq(), mongo_server)
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def test_tasks_run_to_their_final_status_on_rabbitmq(amqp_stack: Stack) -> None:
    ok = amqp_stack.create("sleep_task", {"name": "ok", "seconds": 0.2})
    bad = amqp_stack.create("fail_task", {"name": "bad", "message": "amqp-fail"})
    flaky = amqp_stack.create("flaky_task", {"name": "flaky", "times": 1})
    assert amqp_stack.wait_status(ok, "SUCCESS")["progress"]["stage"] == "sleep"
    assert "amqp-fail" in amqp_stack.wait_status(bad, "FAILURE")["exception"]
    assert amqp_stack.wait_status(flaky, "SUCCESS")["retries"] == 1


def test_revoke_queued_and_terminate_running_on_rabbitmq(amqp_stack: Stack) -> None:
    busy = [amqp_stack.create("busy_task", {"name": f"busy{i}", "seconds": 30}) for i in range(2)]
    for cid in busy:
        amqp_stack.wait_status(cid, "STARTED")
    queued = amqp_stack.create("sleep_task", {"name": "queued", "seconds": 0.1})
    active = amqp_stack.request("GET", "/api/celery_task/active/")
    assert {e["id"] for e in active.data["active_tasks"] if e["state"] == "active"} >= set(busy)
    resp = amqp_stack.request("POST", "/api/celery_task/batch_revoke/", {"celery_ids": [queued, *busy]})
    assert [r["code"] for r in resp.data["results"]] == [200, 200, 200]
    for cid in busy:
        assert amqp_stack.wait_status(cid, "REVOKED")["revoke"]["terminated"] is True
    assert amqp_stack.detail(queued)["status"] == "REVOKED"
    done = amqp_stack.create("sleep_task", {"name": "after", "seconds": 0})
    amqp_stack.wait_status(done, "SUCCESS")
    assert amqp_stack.detail(queued)["start_time"] is None, "the revoked queued task never ran"


def test_task_from_another_producer_appears_on_rabbitmq(amqp_stack: Stack) -> None:
    app = Celery(broker=amqp_stack.broker_url, set_as_current=False)
    app.conf.task_send_sent_event = True
    try:
        sent = app.send_task(
            "controlplane.sleep_task",
            kwargs={"options": {"data": {"seconds": 0}}},
            queue=f"recon-{amqp_stack.database}",
        )
    finally:
        app.close()
    wait_for(
        lambda: amqp_stack.request("GET", f"/api/celery_task/{sent.id}/").code == 200, what="foreign task"
    )
    assert amqp_stack.wait_status(sent.id, "SUCCESS")["task_type"] == "sleep_task"
