"""Database work per operation: MongoDB commands per task lifecycle (consumer) and per API call.

Counted with pymongo's command monitoring on the real store code, against the embedded
nx-27017 server.  The consumer side feeds real captured Celery event sequences
(``tests/fixtures/events/succeed.json`` and ``fail.json``, one uuid per task) through
:meth:`TaskStore.apply_events` in the batches the consumer forms: every event of every
task in arrival order, cut into batches of ``events.batch_size``, once for tasks the
API created (their documents exist) and once for tasks another producer sent.  The API side
runs the store calls each endpoint makes.  The consumer's store remembers what it wrote
(``events.cache_tasks``), as in ``controlplane ingest``.

Run: ``.venv/bin/python bench/bench_dbops.py [--tasks 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import AsyncMongoClient, MongoClient, monitoring

from bench.common import Mongo, table, workdir, write_result
from controlplane.config import EventsConfig, MongoConfig
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.recent import RecentTasks
from controlplane.store.tasks import TaskFilter, TaskStore, new_task_document

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "events"
EVENTS = EventsConfig()  # the consumer's defaults: its batch size and its memory of written tasks
BATCH = EVENTS.batch_size


class Commands(monitoring.CommandListener):
    """Counts commands by name (the handshake and heartbeats are not commands of ours)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.written = 0  # documents inserted or updated (a bulk write is one command)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in ("hello", "ismaster", "isMaster", "ping", "endSessions"):
            self.counts[event.command_name] += 1
            if event.command_name in ("insert", "update"):
                self.written += len(event.command.get("documents") or event.command.get("updates") or [])
            elif event.command_name == "findAndModify":
                self.written += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        counts["(documents written, incl. the revision counter)"], self.written = self.written, 0
        return counts


def lifecycles(n: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """``n`` tasks, each a real event sequence (90 % succeed, 10 % fail) under its own uuid."""
    sequences = [json.loads((FIXTURES / f"{name}.json").read_text()) for name in ("succeed", "fail")]
    out = []
    for i in range(n):
        cid = str(uuid.uuid4())
        events = copy.deepcopy(sequences[1 if i % 10 == 9 else 0])
        for event in events:
            event["uuid"] = cid
            event["timestamp"] = float(event["timestamp"]) + i * 0.001
        out.append((cid, events))
    return out


def consumer_commands(store: TaskStore, listener: Commands, n: int, api_created: bool) -> Counter[str]:
    tasks = lifecycles(n)
    if api_created:
        docs = [
            new_task_document(celery_id=c, task_type="ip_task", data={}, created_time=time.time(), rev=0)
            for c, _ in tasks
        ]
        for start in range(0, len(docs), 1000):
            store.tasks.insert_many(docs[start : start + 1000])
    listener.take()
    stream = sorted((e for _, events in tasks for e in events), key=lambda e: (e["timestamp"], e["type"]))
    for start in range(0, len(stream), BATCH):
        store.apply_events(stream[start : start + BATCH])
    return listener.take()


async def api_commands(url: str, database: str, listener: Commands) -> dict[str, Counter[str]]:
    store = AsyncTaskStore(MongoConfig(url=url, database=database))
    await store.client.close()
    store.client = AsyncMongoClient(url, event_listeners=[listener])
    store.db = store.client[database]
    store.tasks = store.db["tasks"]
    out: dict[str, Counter[str]] = {}
    listener.take()
    # Creates are stored by the API's submitter (controlplane/service/submitter.py) on a blocking
    # store, one revision reservation and one insert_many per batch of concurrent creates.
    writer = TaskStore(
        MongoConfig(url=url, database=database), client=MongoClient(url, event_listeners=[listener])
    )
    cid = str(uuid.uuid4())
    rev = writer.next_revisions(1)
    writer.insert_new(
        [new_task_document(celery_id=cid, task_type="ip_task", data={}, created_time=time.time(), rev=rev)]
    )
    out["POST /api/celery_task/ (store part), a create alone"] = listener.take()
    rev = writer.next_revisions(32)
    writer.insert_new(
        [
            new_task_document(
                celery_id=str(uuid.uuid4()),
                task_type="ip_task",
                data={},
                created_time=time.time(),
                rev=rev + i,
            )
            for i in range(32)
        ]
    )
    out["POST ×32 concurrent (store part, one batch)"] = listener.take()
    writer.close()
    await store.get(cid)
    out["GET /api/celery_task/{id}/ and ?celery_id=… (a lookup-cache miss; a hit: 0)"] = listener.take()
    flt = TaskFilter(status="SUCCESS")
    await store.listing(flt, 3, 10)
    out["GET /api/celery_task/?status=…&page=3"] = listener.take()
    await store.get_many([cid])
    await store.request_revoke([cid], True)
    out["DELETE /api/celery_task/{id}/ (store part)"] = listener.take()
    await store.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args(argv)
    mongo = Mongo(workdir())
    listener = Commands()
    try:
        database = f"dbops_{uuid.uuid4().hex[:8]}"
        client: MongoClient[Any] = MongoClient(mongo.url, event_listeners=[listener])
        store = TaskStore(
            MongoConfig(url=mongo.url, database=database),
            client=client,
            recent=RecentTasks(EVENTS.cache_tasks),
        )
        store.ensure_indexes()
        rows, result = [], {}
        for label, api_created in (("consumer, API-created tasks", True), ("consumer, foreign tasks", False)):
            counts = consumer_commands(store, listener, args.tasks, api_created)
            total = sum(v for k, v in counts.items() if not k.startswith("("))
            per = {k: round(v / args.tasks, 3) for k, v in sorted(counts.items())}
            result[label] = {"per_task": round(total / args.tasks, 3), "by_command": per}
            rows.append([label, f"{total / args.tasks:.3f}", ", ".join(f"{k} {v}" for k, v in per.items())])
        for label, counts in asyncio.run(api_commands(mongo.url, database, listener)).items():
            result[label] = dict(counts)
            rows.append(
                [
                    label,
                    str(sum(v for k, v in counts.items() if not k.startswith("("))),
                    ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                ]
            )
        print(table(["operation", "commands", "by command (per task for the consumer)"], rows))
        print(f"({args.tasks} task lifecycles of 4 real events each, batches of {BATCH} events)")
        write_result("dbops", {"tasks": args.tasks, "batch": BATCH, "results": result})
        client.close()
        return result
    finally:
        mongo.close()


if __name__ == "__main__":
    main()
