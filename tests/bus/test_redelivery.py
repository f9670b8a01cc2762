"""A task whose message a Redis broker lost is published again; a queued one is left alone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from controlplane.bus.redelivery import _message_id
from tests.conftest import make_stack
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_message_ids_are_read_from_list_and_unacked_entries() -> None:
    message = {"body": "…", "headers": {"id": "abc", "task": "controlplane.ip_task"}, "properties": {}}
    assert _message_id(json.dumps(message)) == "abc"
    assert _message_id(json.dumps([message, "", "recon"])) == "abc"
    assert _message_id(b"not json") is None
    assert _message_id(json.dumps({"headers": "x"})) is None


@pytest.fixture
def no_worker_stack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    stack = make_stack(
        tmp_path_factory.mktemp("redelivery"),
        mongo_server,
        extra_config={"events": {"lost_after": 1.0, "reconcile_interval": 0.5}},
    )
    try:
        stack.start_part("ingest", "ingest")
        stack.start_api()
        yield stack
    finally:
        stack.close()


def queued_ids(client: redis.Redis, queue: str) -> list[str]:
    return [i for i in (_message_id(raw) for raw in client.lrange(queue, 0, -1)) if i]


def test_lost_message_is_resent_and_the_task_runs(no_worker_stack: Stack) -> None:
    stack = no_worker_stack
    queue = stack.config["task_defaults"]["queue"]
    client = redis.Redis.from_url(stack.broker_url)
    waiting = stack.create("sleep_task", {"name": "waiting", "seconds": 0})
    lost = stack.create("sleep_task", {"name": "lost", "seconds": 0})
    assert queued_ids(client, queue) == [lost, waiting]
    client.lrem(queue, 1, client.lindex(queue, 0))  # the broker loses the newest message
    assert queued_ids(client, queue) == [waiting]

    wait_for(lambda: lost in queued_ids(client, queue), timeout=30, what="the lost task to be queued again")
    assert sorted(queued_ids(client, queue)) == sorted([lost, waiting]), "the queued task was not resent"
    assert stack.db.tasks.find_one({"celery_id": lost})["resent"] == 1
    assert not stack.db.tasks.find_one({"celery_id": waiting}).get("resent")
    assert f"task {lost}: its message was nowhere in the broker" in stack.log("ingest")

    stack.start_worker(0)
    stack.wait_workers(1)
    assert stack.wait_status(lost, "SUCCESS")["status"] == "SUCCESS"
    assert stack.wait_status(waiting, "SUCCESS")["status"] == "SUCCESS"
