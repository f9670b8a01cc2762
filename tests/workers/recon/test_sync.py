"""``domain_task_sync_task`` and the asset-scope storage, on a real TaskStore (nx-27017)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.config import Config, load_config
from controlplane.store.results import RECON_KINDS, ResultWriter
from controlplane.store.tasks import TaskStore, new_task_document
from tests.lab import MongoServer
from workers.context import TaskContext
from workers.recon.assets import scope_assets, scope_counts, sync_results
from workers.tasks.fofa import domain_task_sync_task

SCOPE = "scope-sync-1"


@pytest.fixture(scope="module")
def store(mongo_server: MongoServer) -> Iterator[TaskStore]:
    """A TaskStore on a database of its own."""
    config = load_config(None, env={})
    config.mongo.url = mongo_server.url
    config.mongo.database = "sync_tests"
    task_store = TaskStore(config.mongo)
    yield task_store
    task_store.close()


def add_task(
    store: TaskStore, status: str, results: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """A task document with ``status`` and its recon results, tagged like a worker tags them."""
    doc = new_task_document(
        celery_id=str(uuid.uuid4()),
        task_type="domain_task",
        data={"name": "src"},
        created_time=time.time(),
        rev=1,
    )
    doc["status"] = status
    doc["data"]["task_id"] = str(doc["_id"])
    store.tasks.insert_one(doc)
    results_store = ResultWriter(store.db, str(doc["_id"]), RECON_KINDS)
    results_store.ensure_indexes()
    for collection, docs in (results or {}).items():
        results_store.insert(collection, docs)
    results_store.finish(partial=False)
    return doc


def results(names: list[str], ips: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Domain, ip and site results for ``names`` resolving to ``ips``."""
    return {
        "domain": [{"domain": n, "type": "A", "record": ips, "ips": ips, "source": "target"} for n in names],
        "ip": [{"ip": ip, "domains": names, "ports": [{"port": 80}], "port_count": 1} for ip in ips],
        "site": [
            {"site": f"http://{n}:80", "hostname": n, "ip": ips[0], "port": 80, "title": n} for n in names
        ],
    }


def sync_ctx(store: TaskStore, data: dict[str, Any]) -> tuple[TaskContext, list[tuple[str, dict[str, Any]]]]:
    """A worker context for a sync task whose document is stored STARTED."""
    doc = new_task_document(
        celery_id=str(uuid.uuid4()),
        task_type="domain_task_sync_task",
        data=data,
        created_time=time.time(),
        rev=1,
    )
    doc["status"] = "STARTED"
    store.tasks.insert_one(doc)
    config: Config = load_config(None, env={})
    events: list[tuple[str, dict[str, Any]]] = []
    ctx = TaskContext(
        celery_id=doc["celery_id"],
        task_id=str(doc["_id"]),
        task_type="domain_task_sync_task",
        config=config,
        store=store,
        send_event=lambda kind, **fields: events.append((kind, fields)),
        progress_interval=0.0,
    )
    return ctx, events


def run_sync(store: TaskStore, source: str, scope_id: str = SCOPE) -> dict[str, Any]:
    """Run the sync pipeline as a worker would, with the API's data shape."""
    data = {"name": "sync", "source_task_id": source, "scope_id": scope_id, "options": {}}
    ctx, events = sync_ctx(store, data)
    stats = domain_task_sync_task(data, ctx)
    assert [f["stage"] for kind, f in events if kind == "task-progress"] == ["sync", "sync"]
    task = store.tasks.find_one({"celery_id": ctx.celery_id})
    assert task is not None and task["statistic"]["domain"] == stats["domain"]
    return stats


def test_sync_copies_results_once_and_tracks_last_seen(store: TaskStore) -> None:
    first = add_task(store, "SUCCESS", results(["a.sync.test", "b.sync.test", "c.sync.test"], ["127.89.0.1"]))
    stats = run_sync(store, first["celery_id"])
    added = {"domain": 3, "ip": 1, "site": 3}
    assert stats == {**added, "domain_updated": 0, "ip_updated": 0, "site_updated": 0, "partial": False}
    again = run_sync(store, str(first["_id"]))
    assert again["domain"] == again["ip"] == again["site"] == 0
    assert again["domain_updated"] == again["ip_updated"] == again["site_updated"] == 0
    assert scope_counts(store.db, SCOPE) == {"domain": 3, "ip": 1, "site": 3}
    domains = scope_assets(store.db, SCOPE, "domain")
    assert [d["domain"] for d in domains] == ["a.sync.test", "b.sync.test", "c.sync.test"]
    first_id = str(first["_id"])
    for doc in domains:
        assert doc["scope_id"] == SCOPE and doc["first_seen_task"] == doc["last_seen_task"] == first_id
        assert "task_id" not in doc and "partial" not in doc and doc["updated_time"] > 0

    second = add_task(store, "SUCCESS", results(["c.sync.test", "d.sync.test"], ["127.89.0.1", "127.89.0.2"]))
    stats = run_sync(store, second["celery_id"])
    assert (stats["domain"], stats["domain_updated"]) == (1, 1)
    assert (stats["ip"], stats["ip_updated"]) == (1, 1)
    assert (stats["site"], stats["site_updated"]) == (1, 1)
    by_name = {d["domain"]: d for d in scope_assets(store.db, SCOPE, "domain")}
    assert by_name["c.sync.test"]["first_seen_task"] == first_id
    assert by_name["c.sync.test"]["last_seen_task"] == str(second["_id"])
    assert by_name["a.sync.test"]["last_seen_task"] == first_id
    assert scope_counts(store.db, SCOPE) == {"domain": 4, "ip": 2, "site": 4}
    other = sync_results(store.db, first_id, "scope-sync-2")
    assert (other["domain"], other["ip"], other["site"]) == (3, 1, 3)
    assert scope_counts(store.db, SCOPE) == {"domain": 4, "ip": 2, "site": 4}


def test_sync_refuses_unknown_or_unfinished_tasks(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        run_sync(store, str(uuid.uuid4()))
    with pytest.raises(ValueError, match="does not exist"):
        run_sync(store, "0123456789abcdef01234567")
    running = add_task(store, "STARTED", results(["x.sync.test"], ["127.89.0.9"]))
    with pytest.raises(ValueError, match="is STARTED; only a task that finished with SUCCESS"):
        run_sync(store, running["celery_id"])
    failed = add_task(store, "FAILURE")
    with pytest.raises(ValueError, match="is FAILURE"):
        run_sync(store, str(failed["_id"]))
    done = add_task(store, "SUCCESS")
    with pytest.raises(ValueError, match="scope_id"):
        run_sync(store, done["celery_id"], scope_id="")
    assert scope_counts(store.db, "scope-never-synced") == {"domain": 0, "ip": 0, "site": 0}
