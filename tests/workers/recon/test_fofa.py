"""The FOFA client against the lab FOFA API, and ``fofa_task`` end to end on the lab and nx-27017."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.config import Config, load_config
from controlplane.core.validate import validate_task_data
from controlplane.store.tasks import TaskStore, new_task_document
from tests.lab import H1, H2, H3, Lab, MongoServer
from tests.lab.fofa import BAD_KEY_MESSAGE, QUOTA_MESSAGE, FofaServer
from workers.context import TaskContext
from workers.recon.fofa import (
    FIELDS,
    FofaAuthError,
    FofaClient,
    FofaError,
    FofaHit,
    FofaQuotaError,
    fofa_error,
    store_hits,
    unique_addresses,
)
from workers.tasks.fofa import fofa_client, fofa_task

KEY = "lab-fofa-key"
QUERY = 'title="管理后台" && port="443"'
LAB_QUERY = 'org="Loopback Lab"'
METADATA_IP = "169.254.169.254"


@pytest.fixture
def fofa() -> Iterator[FofaServer]:
    """A fresh lab FOFA API per test (its account and request log start clean)."""
    server = FofaServer().start()
    yield server
    server.stop()


def rows(count: int, prefix: str = "127.90.0.") -> list[dict[str, Any]]:
    """``count`` distinct FOFA records."""
    return [
        {"host": f"{prefix}{i}:80", "ip": f"{prefix}{i}", "port": "80", "protocol": "http", "title": f"t{i}"}
        for i in range(1, count + 1)
    ]


def client(server: FofaServer, **kwargs: Any) -> FofaClient:
    """A client of ``server`` with the lab key."""
    return FofaClient(server.url, "lab@fofa.test", KEY, **kwargs)


def test_search_sends_the_query_base64_with_the_fields(fofa: FofaServer) -> None:
    fofa.state.records[QUERY] = rows(2)
    page = client(fofa).search(QUERY, page=1, size=10)
    assert [hit.ip for hit in page.hits] == ["127.90.0.1", "127.90.0.2"]
    assert page.total == 2 and page.hits[0].port == 80 and page.hits[0].title == "t1"
    request = fofa.state.requests[0]
    assert request.query == QUERY and request.fields == list(FIELDS)
    assert (request.page, request.size, request.email) == (1, 10, "lab@fofa.test")


def test_search_all_pages_up_to_the_requested_size(fofa: FofaServer) -> None:
    fofa.state.records[QUERY] = rows(7)
    found = client(fofa, page_size=3).search_all(QUERY, 5)
    assert [hit.ip for hit in found.hits] == [f"127.90.0.{i}" for i in range(1, 6)]
    assert [(r.page, r.size) for r in fofa.state.requests] == [(1, 3), (2, 3)]
    assert found.total == 7 and found.pages == 2 and not found.limited_by_account


def test_search_all_stops_at_the_last_page_and_starts_at_the_given_page(fofa: FofaServer) -> None:
    fofa.state.records[QUERY] = rows(7)
    progress: list[tuple[int, int]] = []
    found = client(fofa, page_size=3).search_all(QUERY, 100, on_page=lambda d, w: progress.append((d, w)))
    assert len(found.hits) == 7 and [r.page for r in fofa.state.requests] == [1, 2, 3]
    assert progress == [(3, 100), (6, 100), (7, 100)]
    fofa.state.requests.clear()
    later = client(fofa, page_size=3).search_all(QUERY, 3, start_page=2)
    assert [hit.ip for hit in later.hits] == ["127.90.0.4", "127.90.0.5", "127.90.0.6"]


def test_search_all_respects_the_account_allowance(fofa: FofaServer) -> None:
    fofa.state.records[QUERY] = rows(10)
    fofa.state.account.remain_api_data = 4
    found = client(fofa, page_size=3).search_all(QUERY, 10)
    assert len(found.hits) == 4 and found.limited_by_account


def test_bad_key_is_a_clear_error_without_the_key(fofa: FofaServer) -> None:
    secret = "not-the-key-0123"
    with pytest.raises(FofaAuthError) as caught:
        FofaClient(fofa.url, "", secret).search_all(QUERY, 10)
    assert BAD_KEY_MESSAGE in str(caught.value) and secret not in str(caught.value)
    with pytest.raises(FofaAuthError, match="no FOFA API key"):
        FofaClient(fofa.url, "", "")


def test_exhausted_quota_is_a_clear_error(fofa: FofaServer) -> None:
    fofa.state.records[QUERY] = rows(3)
    fofa.state.account.remain_api_data = 0
    with pytest.raises(FofaQuotaError, match="results left"):
        client(fofa).search_all(QUERY, 10)
    fofa.state.account.report_limits = False
    with pytest.raises(FofaQuotaError) as caught:
        client(fofa).search_all(QUERY, 10)
    assert QUOTA_MESSAGE in str(caught.value)


def test_timeouts_and_unreachable_servers_fail_after_retries(fofa: FofaServer) -> None:
    fofa.state.delay = 0.6
    started = time.monotonic()
    with pytest.raises(FofaError, match=r"timed out after 0\.2 s"):
        client(fofa, timeout=0.2, retries=1, retry_delay=0).search(QUERY)
    assert time.monotonic() - started < 2
    fofa.state.delay = 0
    url = fofa.url
    fofa.stop()
    with pytest.raises(FofaError, match="cannot reach"):
        FofaClient(url, "", KEY, retries=0).search(QUERY)


def test_error_messages_are_classified() -> None:
    assert isinstance(fofa_error("[-700] Account Invalid"), FofaAuthError)
    assert isinstance(fofa_error("[820031] F点余额不足"), FofaQuotaError)
    generic = fofa_error("[820000] FOFA Query Syntax Incorrect")
    assert type(generic) is FofaError and "Syntax" in str(generic)


def test_hits_yield_addresses_from_ip_or_host() -> None:
    hits = [
        FofaHit.from_row(["https://127.90.0.9:8443", "", "8443", "https", "", "", ""]),
        FofaHit.from_row(["www.example.test", "127.90.0.1", "443", "https", "example.test", "x", "nginx"]),
        FofaHit.from_row(["127.90.0.1:80", "127.90.0.1", "80", "http", "", "", ""]),
        FofaHit.from_row(["only-a-name.test", "", "bad-port"]),
    ]
    assert unique_addresses(hits) == ["127.90.0.9", "127.90.0.1"]
    assert hits[3].port is None and hits[1].server == "nginx"


def test_stored_hits_are_deduplicated_per_task(recon_db: Any) -> None:
    hit = FofaHit.from_row(["127.90.0.1:80", "127.90.0.1", "80", "http", "", "t", "nginx"])
    other = FofaHit.from_row(["127.90.0.1:81", "127.90.0.1", "81", "http", "", "t", "nginx"])
    assert store_hits(recon_db, "fofa-dedupe", [hit, hit, other]) == 2
    assert store_hits(recon_db, "fofa-dedupe", [hit, other]) == 0
    assert store_hits(recon_db, "fofa-dedupe-2", [hit]) == 1
    stored = recon_db["fofa"].find_one({"task_id": "fofa-dedupe", "port": 81}, {"_id": 0})
    assert stored == {**other.to_doc(), "task_id": "fofa-dedupe"}


# -- fofa_task end to end ---------------------------------------------------------------------


def lab_records(lab: Lab) -> list[dict[str, Any]]:
    """FOFA's answer for LAB_QUERY: every lab site, one repeated row, and an address never scanned."""
    out = []
    for site in lab.sites.values():
        out.append(
            {
                "host": f"{site.scheme}://{site.ip}:{site.port}"
                if site.scheme == "https"
                else f"{site.ip}:{site.port}",
                "ip": site.ip,
                "port": str(site.port),
                "protocol": site.scheme,
                "title": "lab",
                "server": "lab",
            }
        )
    out.append(dict(out[0]))
    out.append({"host": f"{METADATA_IP}:80", "ip": METADATA_IP, "port": "80", "protocol": "http"})
    return out


def make_config(mongo_server: MongoServer, lab: Lab, fofa_url: str) -> Config:
    """A worker config on the lab: its Mongo server, FOFA, resolvers, loopback in scope."""
    config = load_config(None, env={})
    config.mongo.url = mongo_server.url
    config.mongo.database = "fofa_tests"
    config.recon.fofa_url = fofa_url
    config.recon.fofa_key = "config-key-that-fofa-rejects"
    config.recon.resolvers = lab.resolvers
    config.recon.connect_timeout = 0.5
    config.recon.http_timeout = 3.0
    config.scope.allow_loopback = True
    config.scope.allow_private = True
    return config


def start_task(
    config: Config, store: TaskStore, task_type: str, data: dict[str, Any]
) -> tuple[TaskContext, list[tuple[str, dict[str, Any]]]]:
    """Store a STARTED task document and return the worker's context for it plus its event log."""
    celery_id = str(uuid.uuid4())
    doc = new_task_document(
        celery_id=celery_id, task_type=task_type, data=data, created_time=time.time(), rev=1
    )
    doc["status"] = "STARTED"
    store.tasks.insert_one(doc)
    events: list[tuple[str, dict[str, Any]]] = []
    ctx = TaskContext(
        celery_id=celery_id,
        task_id=str(doc["_id"]),
        task_type=task_type,
        config=config,
        store=store,
        send_event=lambda kind, **fields: events.append((kind, fields)),
        progress_interval=0.0,
    )
    data["task_id"] = ctx.task_id
    return ctx, events


@pytest.fixture
def task_env(mongo_server: MongoServer, lab: Lab, fofa: FofaServer) -> Iterator[tuple[Config, TaskStore]]:
    """A config and a real TaskStore on the session's nx-27017 server."""
    fofa.state.records[LAB_QUERY] = lab_records(lab)
    config = make_config(mongo_server, lab, fofa.url)
    store = TaskStore(config.mongo)
    yield config, store
    store.close()


def fofa_data(lab: Lab, **options: Any) -> dict[str, Any]:
    """Validated fofa_task data for LAB_QUERY scanning the lab's ports."""
    raw_options = {
        "size": 50,
        "port_scan_type": "custom",
        "port_custom": ",".join(map(str, lab.scan_ports)),
        **options,
    }
    return validate_task_data("fofa_task", {"name": "fofa lab", "query": LAB_QUERY, "options": raw_options})


def test_fofa_task_stores_hits_then_scans_their_ips(
    task_env: tuple[Config, TaskStore], lab: Lab, fofa: FofaServer
) -> None:
    config, store = task_env
    data = fofa_data(lab, key=KEY, service_detection=True)
    ctx, events = start_task(config, store, "fofa_task", data)
    stats = fofa_task(data, ctx)
    db = store.db
    hits = list(db["fofa"].find({"task_id": ctx.task_id}, {"_id": 0}))
    assert stats["fofa"] == len(hits) == len(lab.sites) + 1
    assert stats["fofa_ip"] == 4 and stats["out_of_scope"] == 1 and stats["partial"] is False
    assert {h["ip"] for h in hits} == {H1, H2, H3, METADATA_IP}
    ips = {d["ip"]: d for d in db["ip"].find({"task_id": ctx.task_id})}
    assert set(ips) == {H1, H2, H3} and stats["ip"] == 3
    for ip in ips:
        assert {p["port"] for p in ips[ip]["ports"]} == lab.open_ports[ip]
    sites = {d["site"] for d in db["site"].find({"task_id": ctx.task_id})}
    assert sites == {f"{s.scheme}://{s.ip}:{s.port}" for s in lab.sites.values()}
    assert stats["site"] == len(sites)
    stages = [fields["stage"] for kind, fields in events if kind == "task-progress"]
    first_other = next(i for i, stage in enumerate(stages) if stage != "fofa")
    assert stages[0] == "fofa" and "fofa" not in stages[first_other:]
    assert {"port_scan", "service_detection", "site_identify"} <= set(stages[first_other:])
    task = store.tasks.find_one({"celery_id": ctx.celery_id})
    assert task is not None and task["statistic"]["fofa"] == stats["fofa"] and not task["partial"]
    assert fofa.state.requests[0].query == LAB_QUERY


def test_fofa_task_without_in_scope_hits_scans_nothing(
    task_env: tuple[Config, TaskStore], lab: Lab, fofa: FofaServer
) -> None:
    config, store = task_env
    config.scope.allow_loopback = False
    data = fofa_data(lab, key=KEY, size=2)
    ctx, _ = start_task(config, store, "fofa_task", data)
    stats = fofa_task(data, ctx)
    assert stats["fofa"] == 2 and stats["out_of_scope"] == stats["fofa_ip"] == 1
    assert stats["ip"] == stats["site"] == 0
    assert store.db["ip"].count_documents({"task_id": ctx.task_id}) == 0


def test_fofa_task_fails_with_the_reason(
    task_env: tuple[Config, TaskStore], lab: Lab, fofa: FofaServer
) -> None:
    config, store = task_env
    data = fofa_data(lab)
    ctx, _ = start_task(config, store, "fofa_task", data)
    with pytest.raises(FofaAuthError, match="Account Invalid"):
        fofa_task(data, ctx)
    fofa.state.account.remain_api_query = 0
    quota = fofa_data(lab, key=KEY)
    ctx, _ = start_task(config, store, "fofa_task", quota)
    with pytest.raises(FofaQuotaError, match="quota exhausted"):
        fofa_task(quota, ctx)
    assert store.db["fofa"].count_documents({"task_id": ctx.task_id}) == 0


def test_key_and_email_come_from_the_data_before_config(task_env: tuple[Config, TaskStore], lab: Lab) -> None:
    config, store = task_env
    config.recon.fofa_email = "config@fofa.test"
    data = fofa_data(lab)
    ctx, _ = start_task(config, store, "fofa_task", data)
    assert (fofa_client(data, ctx).key, fofa_client(data, ctx).email) == (
        config.recon.fofa_key,
        "config@fofa.test",
    )
    data["options"].update(key="k2", email="data@fofa.test")
    assert (fofa_client(data, ctx).key, fofa_client(data, ctx).email) == ("k2", "data@fofa.test")
