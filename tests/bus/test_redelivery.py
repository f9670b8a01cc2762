"""A task whose message a Redis broker lost is published again; a queued one is left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from controlplane.bus.redelivery import CONFIRM_AFTER, Redeliverer, _message_id
from controlplane.celeryapp import make_celery
from controlplane.config import MongoConfig
from controlplane.store.tasks import TaskStore, new_task_document
from tests.conftest import in_process_config, make_stack, require_rabbitmq
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


def test_a_task_waiting_on_a_queue_no_worker_consumes_is_flagged_until_one_does(
    no_worker_stack: Stack,
) -> None:
    stack = no_worker_stack
    queue = stack.config["task_defaults"]["queue"]
    cid = stack.create("sleep_task", {"name": "unheard", "seconds": 0})
    wait_for(
        lambda: stack.detail(cid).get("waiting") is not None, timeout=30, what="the task flagged as waiting"
    )
    assert stack.detail(cid)["waiting"] == f"no live worker consumes queue {queue!r}"
    assert "wait on a queue no live worker consumes" in stack.log("ingest")
    stack.start_worker(0)
    stack.wait_workers(1)
    done = stack.wait_status(cid, "SUCCESS")
    assert done["waiting"] is None


# A worker that reserves two messages of a queue and is then killed: kombu records each in the
# broker's unacknowledged hash when it hands it out, and only an acknowledgement or a clean
# close of the channel takes it out again.
RESERVE = """
import sys, time
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    channel = conn.channel()
    for _ in range(2):
        assert channel.basic_get(sys.argv[2], no_ack=False) is not None
    print("reserved", flush=True)
    time.sleep(60)
"""


def test_give_back_restores_only_the_named_reserved_messages(mongo_server: str) -> None:
    config = in_process_config(mongo_server, "giveback")
    app = make_celery(config)
    queue = f"giveback-{uuid.uuid4().hex[:6]}"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for cid in ids:
        app.send_task("controlplane.sleep_task", kwargs={"data": {}}, task_id=cid, queue=queue)
    client = redis.Redis.from_url(config.broker.url)
    reserve = [sys.executable, "-c", RESERVE, config.broker.url, queue]
    worker = subprocess.Popen(reserve, stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"reserved"
    finally:
        worker.kill()
        worker.wait()
    reserved = {_message_id(raw) for raw in client.hvals("unacked")}
    assert reserved == set(ids[:2]) and queued_ids(client, queue) == ids[2:]

    redeliverer = Redeliverer(app, TaskStore(config.mongo), config)
    assert redeliverer.give_back([ids[0], ids[2], "never-sent"]) == [ids[0]]
    assert sorted(queued_ids(client, queue)) == sorted([ids[0], ids[2]])
    assert {_message_id(raw) for raw in client.hvals("unacked")} == {ids[1]}, "the other stays reserved"
    assert client.zcard("unacked_index") == 1
    assert redeliverer.give_back([ids[0]]) == [], "given back once: nothing is left to restore"
    back = json.loads(next(raw for raw in client.lrange(queue, 0, -1) if _message_id(raw) == ids[0]))
    assert back["headers"]["redelivered"] is True and back["headers"]["task"] == "controlplane.sleep_task"
    client.close()
    app.close()


def test_rabbitmq_a_task_whose_message_was_never_published_is_sent_once_its_queue_drains(
    tmp_path: Path, mongo_server: str
) -> None:
    """An API process killed between storing a task and publishing its message (simulated: the
    document is written as the API writes it, no message is sent).  RabbitMQ cannot be searched,
    so the task is resent only once its queue has been seen empty on two passes."""
    stack = Stack(
        tmp_path / "stack",
        require_rabbitmq(),
        mongo_server,
        extra_config={"events": {"lost_after": 1.0, "reconcile_interval": 0.5}},
    )
    try:
        stack.start_part("ingest", "ingest")
        stack.start_api()
        waiting = stack.create("sleep_task", {"name": "waiting", "seconds": 0})
        unsent = str(uuid.uuid4())
        writer = TaskStore(MongoConfig(url=mongo_server, database=stack.database))
        rev = writer.next_revisions(1)
        writer.tasks.insert_one(
            new_task_document(
                celery_id=unsent,
                task_type="sleep_task",
                data={"name": "unsent", "seconds": 0},
                created_time=time.time(),
                rev=rev,
            )
        )
        writer.close()
        # Past lost_after and CONFIRM_AFTER, but the queue still holds a message: nothing is concluded.
        time.sleep(1.0 + CONFIRM_AFTER + 2.0)
        assert "published it again" not in stack.log("ingest")
        assert not stack.db.tasks.find_one({"celery_id": unsent}).get("resent")

        stack.start_worker(0)
        assert stack.wait_status(waiting, "SUCCESS")["status"] == "SUCCESS"
        assert stack.wait_status(unsent, "SUCCESS", timeout=40)["status"] == "SUCCESS"
        assert stack.db.tasks.find_one({"celery_id": unsent})["resent"] == 1
        assert not stack.db.tasks.find_one({"celery_id": waiting}).get("resent"), (
            "the queued one was not resent"
        )
        assert f"task {unsent}: its message was nowhere in the broker" in stack.log("ingest")
    finally:
        stack.close()


def test_rabbitmq_queues_count_as_empty_only_while_no_task_event_waits(mongo_server: str) -> None:
    from kombu import Connection

    config = in_process_config(mongo_server, "emptyq")
    config.broker.url = require_rabbitmq()
    config.events.queue = f"cp.events.{uuid.uuid4().hex[:8]}"
    full, drained, missing = (f"q-{uuid.uuid4().hex[:8]}" for _ in range(3))
    redeliverer = Redeliverer(make_celery(config), TaskStore(config.mongo), config)
    with Connection(config.broker.url) as conn:
        channel = conn.channel()
        try:
            for name in (config.events.queue, full, drained):
                channel.queue_declare(queue=name, auto_delete=False)
            producer = conn.Producer(channel)
            producer.publish({}, routing_key=full, exchange="")
            producer.publish({}, routing_key=config.events.queue, exchange="")
            assert redeliverer._empty_queues(conn, {full, drained, missing}) is None, "an event waits"
            assert channel.basic_get(config.events.queue, no_ack=True) is not None
            assert redeliverer._empty_queues(conn, {full, drained, missing}) == {drained, missing}
        finally:
            channel = conn.channel()
            for name in (config.events.queue, full, drained):
                channel.queue_delete(name)
