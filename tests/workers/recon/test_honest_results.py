"""Honest results (issue #19): one leak or vuln per service with its host names, FOFA's ports
fetched, and ``scope_id`` merging a task's results into the scope, also when it was stopped."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controlplane.core.validate import validate_task_data
from controlplane.store.results import ResultWriter
from controlplane.store.tasks import TaskStore
from tests.lab import EXPECTED_LEAKS, H1, H2, H3, LAB_NAMES, Lab, MongoServer
from tests.lab.fofa import FofaServer
from tests.lab.github import TOKEN, FakeGithub
from tests.lab.scenarios import all_options
from tests.lab.support import Worker, lab_config
from workers.context import TaskContext, TaskRevoked
from workers.recon.assets import scope_assets
from workers.recon.datafiles import load_leak_paths
from workers.recon.fileleak import LeakFinding, LeakStream, check_site
from workers.recon.fofa import FofaHit, web_ports
from workers.recon.sites import Endpoint
from workers.tasks.domain import domain_task
from workers.tasks.fofa import fofa_task
from workers.tasks.github import github_task_monitor
from workers.tasks.ip import ip_task
from workers.tasks.risk_cruising import run_risk_cruising

KEY = "lab-fofa-key"
QUERY = 'org="Honest Lab"'
H1_NAMES = sorted(name for name, records in LAB_NAMES.items() if H1 in records.get("a", []))


@pytest.fixture
def worker(mongo_server: MongoServer, lab: Lab) -> Iterator[Worker]:
    """Starts tasks like a worker does, on the lab config and the session's nx-27017 server."""
    config = lab_config(mongo_server, lab)
    store = TaskStore(config.mongo)
    yield Worker(config, store)
    store.close()


def stored(worker: Worker, kind: str, ctx: TaskContext) -> list[dict[str, Any]]:
    """The task's documents of ``kind``."""
    return list(worker.store.db[kind].find({"task_id": ctx.task_id}, {"_id": 0}))


def test_a_leak_reached_under_several_names_is_one_record_listing_them(worker: Worker, lab: Lab) -> None:
    main = lab.sites["main"]
    options = all_options(lab, domain_brute=False, port_custom=[main.port], service_detection=False)
    data = {"targets": H1_NAMES, "options": {**options, "ssl_cert": False}}
    ctx = worker.start("domain_task", data)
    stats = domain_task(data, ctx)
    leaks = stored(worker, "fileleak", ctx)
    assert len(H1_NAMES) >= 5
    assert sorted(d["path"] for d in leaks) == sorted(EXPECTED_LEAKS["main"]), leaks
    for leak in leaks:
        assert leak["service"] == f"{H1}:{main.port}" and (leak["ip"], leak["port"]) == (H1, main.port)
        assert leak["hostnames"] == H1_NAMES
        assert leak["site"] == f"http://{H1_NAMES[0]}:{main.port}" and len(leak["evidence"]) == 64
    assert stats["fileleak"] == len(leaks)
    again = ResultWriter(worker.store.db, ctx.task_id, ["fileleak"])
    assert again.insert("fileleak", ({**d, "hostnames": ["other.lab.test"]} for d in leaks)) == 0


def test_a_vuln_on_one_service_under_several_names_is_one_record(worker: Worker, lab: Lab) -> None:
    port = lab.sites["main"].port
    targets = [f"http://{name}:{port}/" for name in (*H1_NAMES[:3], H1)]
    data = {"targets": targets, "options": {"ids": ["git-config-exposure"], "timeout": 2}}
    ctx = worker.start("run_risk_cruising", data)
    stats = run_risk_cruising(data, ctx)
    vulns = stored(worker, "vuln", ctx)
    assert len(vulns) == stats["vuln"] == 1, vulns
    assert vulns[0]["poc_id"] == "git-config-exposure" and vulns[0]["service"] == f"{H1}:{port}"
    assert vulns[0]["hostnames"] == sorted([*H1_NAMES[:3], H1])
    assert vulns[0]["targets"] == sorted(targets)
    assert stats["findings_by_severity"] == {vulns[0]["severity"]: 1}


class _EnvByHost(BaseHTTPRequestHandler):
    """Serves ``/.env`` naming the requested host; ``c.vhost.test`` gets another file."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        if self.path != "/.env":
            body, status = b"<html><title>404</title>not here</html>", 404
        elif host == "c.vhost.test":
            body, status = b"APP_ENV=staging\nDB_PASSWORD=other\n", 200
        else:
            body, status = f"APP_ENV=production\nAPP_URL=http://{host}/\nDB_PASSWORD=x\n".encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def vhosts() -> Iterator[int]:
    """A server on 127.88.5.2 answering ``/.env`` by Host (see :class:`_EnvByHost`); yields its port."""
    server = ThreadingHTTPServer(("127.88.5.2", 0), _EnvByHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_leak_records_join_names_only_when_the_content_is_the_same(vhosts: int, recon_db: Any) -> None:
    probes = [p for p in load_leak_paths() if p.path == "/.env"]
    found: list[LeakFinding] = []
    store = ResultWriter(recon_db, f"leak-stream-{vhosts}", ["fileleak"])
    store.ensure_indexes()
    stream = LeakStream(store, interval=0.0)
    after_each: list[list[list[str]]] = []

    async def scan() -> None:
        for host in ("b.vhost.test", "c.vhost.test", "a.vhost.test"):
            await check_site(Endpoint("http", host, "127.88.5.2", vhosts), probes, found, timeout=3.0)
            stream.write(found)
            docs = recon_db["fileleak"].find({"task_id": store.task_id})
            after_each.append(sorted(d["hostnames"] for d in docs))

    asyncio.run(scan())
    stream.write(found, force=True)
    assert sorted(f.hostnames for f in found) == [["a.vhost.test", "b.vhost.test"], ["c.vhost.test"]]
    same = next(f for f in found if len(f.hostnames) == 2)
    assert same.url == f"http://a.vhost.test:{vhosts}/.env" and same.service == f"127.88.5.2:{vhosts}"
    assert after_each == [
        [["b.vhost.test"]],
        [["b.vhost.test"], ["c.vhost.test"]],
        [["a.vhost.test", "b.vhost.test"], ["c.vhost.test"]],
    ], "each leak is stored as soon as it is found, and its host names as they come"
    merged = recon_db["fileleak"].find_one({"task_id": store.task_id, "hostnames": "a.vhost.test"})
    assert merged is not None and merged["url"] == same.url


def test_vulns_are_stored_while_the_scan_runs_and_stay_when_it_is_stopped(worker: Worker, lab: Lab) -> None:
    tarpit = socket.create_server(("127.88.5.3", 0), backlog=64)
    port = lab.sites["main"].port
    targets = [f"http://{H1}:{port}/", f"http://127.88.5.3:{tarpit.getsockname()[1]}/"]
    data = {"targets": targets, "options": {"ids": ["git-config-exposure"], "timeout": 30}}
    ctx = worker.start("run_risk_cruising", data)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_risk_cruising(data, ctx)
        except BaseException as exc:  # the TaskRevoked the test expects, or a failure to report
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not stored(worker, "vuln", ctx) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored(worker, "vuln", ctx) and thread.is_alive(), "the finding is stored while the scan runs"
        worker.revoke(ctx)
        thread.join(timeout=10)
    finally:
        tarpit.close()
    assert not thread.is_alive() and len(outcome) == 1 and isinstance(outcome[0], TaskRevoked), outcome
    vulns = stored(worker, "vuln", ctx)
    assert len(vulns) == 1 and vulns[0]["partial"] and vulns[0]["service"] == f"{H1}:{port}"
    doc = worker.store.tasks.find_one({"celery_id": ctx.celery_id})
    assert doc is not None and doc["statistic"]["vuln"] == 1 and doc["partial"]


@pytest.fixture
def fofa(lab: Lab) -> Iterator[FofaServer]:
    """The lab FOFA API answering QUERY with every lab site and the SSH listener, ports as FOFA gives them."""
    server = FofaServer().start()
    records = []
    for site in lab.sites.values():
        host = f"https://{site.ip}:{site.port}" if site.scheme == "https" else f"{site.ip}:{site.port}"
        records.append({"host": host, "ip": site.ip, "port": str(site.port), "protocol": site.scheme})
    ssh = lab.listeners["ssh"]
    records.append({"host": f"{ssh.ip}:{ssh.port}", "ip": ssh.ip, "port": str(ssh.port), "protocol": "ssh"})
    server.state.records[QUERY] = records
    yield server
    server.stop()


def test_fofa_task_without_port_scan_fetches_the_ports_fofa_reported(
    worker: Worker, lab: Lab, fofa: FofaServer
) -> None:
    worker.config.recon.fofa_url = fofa.url
    options = {"key": KEY, "port_scan": False, "site_identify": True}
    data = validate_task_data("fofa_task", {"name": "fofa ports", "query": QUERY, "options": options})
    ctx = worker.start("fofa_task", data)
    stats = fofa_task(data, ctx)
    sites = {d["site"] for d in stored(worker, "site", ctx)}
    assert sites == {f"{s.scheme}://{s.ip}:{s.port}" for s in lab.sites.values()}
    assert all(s.port not in (80, 443) for s in lab.sites.values()), "the lab's ports are FOFA's only"
    assert stats["site"] == len(sites) and stats["partial"] is False
    assert not stored(worker, "ip", ctx), "no port scan: no port lists claimed"


def test_fofa_web_ports_leave_out_other_protocols() -> None:
    hits = [
        FofaHit.from_row(["https://10.1.0.1:8443", "10.1.0.1", "8443", "", "", "", ""]),
        FofaHit.from_row(["10.1.0.1:8080", "10.1.0.1", "8080", "http", "", "", ""]),
        FofaHit.from_row(["10.1.0.1:22", "10.1.0.1", "22", "ssh", "", "", ""]),
        FofaHit.from_row(["10.1.0.2:9000", "10.1.0.2", "9000", "", "", "", ""]),
        FofaHit.from_row(["10.1.0.2:3306", "10.1.0.2", "3306", "mysql", "", "", ""]),
    ]
    assert web_ports(hits) == {"10.1.0.1": [8080, 8443], "10.1.0.2": [9000]}


def test_scope_id_merges_the_results_into_the_scope(worker: Worker, lab: Lab) -> None:
    scope = "scope-honest-ip"
    options = all_options(lab, service_detection=False, ssl_cert=False, file_leak=False)
    data = {"targets": [H1, H2, H3], "options": {**options, "scope_id": scope}}
    ctx = worker.start("ip_task", data)
    stats = ip_task(data, ctx)
    for kind in ("ip", "site"):
        found = {d[kind] for d in stored(worker, kind, ctx)}
        assert {d[kind] for d in scope_assets(worker.store.db, scope, kind)} == found and found
        assert stats[f"asset_{kind}"] == len(found)
    doc = worker.store.tasks.find_one({"celery_id": ctx.celery_id})
    assert doc is not None and doc["statistic"]["asset_site"] == stats["asset_site"]
    again = worker.start("ip_task", {**data})
    assert {k: v for k, v in ip_task({**data}, again).items() if k.startswith("asset_")} == {
        "asset_domain": 0,
        "asset_domain_updated": 0,
        "asset_ip": 0,
        "asset_ip_updated": stats["asset_ip"],
        "asset_site": 0,
        "asset_site_updated": stats["asset_site"],
    }


def test_a_stopped_task_merges_what_it_found_into_the_scope(worker: Worker, lab: Lab) -> None:
    scope = "scope-honest-stopped"
    data = {"targets": ["lab.test"], "options": {**all_options(lab), "scope_id": scope}}
    ctx = worker.start("domain_task", data)
    send = ctx.send_event

    def revoke_at_site_identify(kind: str, **fields: Any) -> None:
        if kind == "task-progress" and fields.get("stage") == "site_identify":
            worker.revoke(ctx)
        send(kind, **fields)

    ctx.send_event = revoke_at_site_identify
    with pytest.raises(TaskRevoked):
        domain_task(data, ctx)
    doc = worker.store.tasks.find_one({"celery_id": ctx.celery_id})
    assert doc is not None and doc["partial"]
    domains = {d["domain"] for d in stored(worker, "domain", ctx)}
    assert domains and {d["domain"] for d in scope_assets(worker.store.db, scope, "domain")} == domains
    ips = {d["ip"] for d in stored(worker, "ip", ctx)}
    assert ips and {d["ip"] for d in scope_assets(worker.store.db, scope, "ip")} == ips
    assert doc["statistic"]["asset_domain"] == len(domains)


def test_github_monitor_results_are_tagged_with_its_scope(worker: Worker) -> None:
    fake = FakeGithub().start()
    worker.config.recon.github_url = fake.api_url
    worker.config.recon.github_token = TOKEN
    try:
        for i in range(3):
            fake.state.add(f"org/repo{i}", f"settings_{i}.py", f"HONESTKEY_{i} = 'x'\n")
        runs: dict[str, list[tuple[dict[str, Any], TaskContext]]] = {}
        for scope in ("scope-gh-a", "scope-gh-b", "scope-gh-a"):
            data: dict[str, Any] = {"keyword": "honestkey", "scope_id": scope, "options": {}}
            ctx = worker.start("github_task_monitor", data)
            runs.setdefault(scope, []).append((github_task_monitor(data, ctx), ctx))
    finally:
        fake.stop()
    (first, first_ctx), (again, _) = runs["scope-gh-a"]
    ((other, other_ctx),) = runs["scope-gh-b"]
    assert first["github"] == other["github"] == 3, "each scope's monitor reports every result once"
    assert again["github"] == 0 and again["already_seen"] == 3
    for scope, ctx in (("scope-gh-a", first_ctx), ("scope-gh-b", other_ctx)):
        docs = stored(worker, "github", ctx)
        assert len(docs) == 3 and {d["scope_id"] for d in docs} == {scope}
        seen = worker.store.db["github_seen"].find({"monitor_id": docs[0]["monitor_id"]})
        assert {d["scope_id"] for d in seen} == {scope}
    assert first["monitor_id"] != other["monitor_id"]
