"""The recon task types through the whole product: API → broker → worker → results endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_stack
from tests.lab import EXPECTED_LEAKS, H1, LAB_LEAK_LIST, LAB_NAMES, Lab, start_lab
from tests.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    running = start_lab()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def recon_stack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str, lab: Lab) -> Iterator[Stack]:
    stack = make_stack(
        tmp_path_factory.mktemp("recon"),
        mongo_server,
        extra_config={
            "scope": {"allow_loopback": True},
            "recon": {
                "resolvers": lab.resolvers,
                "connect_timeout": 0.5,
                "http_timeout": 3.0,
                "file_leak_list": str(LAB_LEAK_LIST),
            },
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def options(lab: Lab, **over: object) -> dict[str, object]:
    opts: dict[str, object] = {
        "domain_brute": True,
        "domain_brute_type": "small",
        "port_scan": True,
        "port_scan_type": "custom",
        "port_custom": ",".join(str(p) for p in lab.scan_ports),
        "service_detection": True,
        "site_identify": True,
        "ssl_cert": True,
        "file_leak": True,
    }
    opts.update(over)
    return opts


def results(stack: Stack, cid: str, kind: str) -> dict:
    resp = stack.request("GET", f"/api/celery_task/{cid}/results/?kind={kind}&size=100")
    assert resp.code == 200, resp
    return dict(resp.data)


def test_domain_task_finds_the_lab_and_serves_results(recon_stack: Stack, lab: Lab) -> None:
    cid = recon_stack.create("domain_task", {"name": "lab", "target": "lab.test", "options": options(lab)})
    done = recon_stack.wait_status(cid, "SUCCESS", "FAILURE", timeout=120)
    assert done["status"] == "SUCCESS", done
    domains = {d["domain"] for d in results(recon_stack, cid, "domain")["items"]}
    assert set(LAB_NAMES) <= domains
    sites = results(recon_stack, cid, "site")
    assert sites["total"] >= 1 and any(H1 in (s.get("ip") or "") for s in sites["items"])
    leaks = results(recon_stack, cid, "fileleak")["items"]
    main_port = lab.sites["main"].port
    assert {r["path"] for r in leaks} == set().union(*EXPECTED_LEAKS.values())
    assert all(r["site"].endswith(f":{main_port}") for r in leaks), "only the leaking site reports leaks"
    assert done["statistic"]["domain"] == len(domains)
    assert done["statistic"]["site"] == sites["total"]
    assert done["progress"]["stage"] in {"file_leak", "ssl_cert", "site_identify"}


def test_results_endpoint_validates(recon_stack: Stack) -> None:
    cid = recon_stack.create("sleep_task", {"seconds": 0})
    resp = recon_stack.request("GET", f"/api/celery_task/{cid}/results/?kind=nope")
    assert resp.status == 400 and resp.data["field"] == "kind"
    resp = recon_stack.request("GET", "/api/celery_task/00000000-0000-4000-8000-000000000000/results/")
    assert resp.code == 102


def test_revoking_a_full_port_scan_stops_it_and_keeps_partial_results(recon_stack: Stack, lab: Lab) -> None:
    data = {"name": "all ports", "target": H1, "options": {"port_scan_type": "all", "site_identify": False}}
    cid = recon_stack.create("ip_task", data)
    recon_stack.wait_status(cid, "STARTED")
    resp = recon_stack.request("POST", "/api/celery_task/revoke/", {"celery_id": cid, "terminate": False})
    assert resp.code == 104, "a running scan is not stopped without terminate"
    assert recon_stack.request("DELETE", f"/api/celery_task/{cid}/").code == 200
    done = recon_stack.wait_status(cid, "REVOKED", timeout=10)
    assert done["revoke"]["terminated"] is True
    task_id = done["task_id"]
    for kind in ("ip", "site"):
        for doc in recon_stack.db[kind].find({"task_id": task_id}):
            assert doc["partial"], "results of a stopped task are marked partial"
