"""Monitoring passes (``domain_exec_task``, ``ip_exec_task``): two runs, assets changing in between."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from controlplane.core.validate import validate_task_data
from tests.lab import CERT_ONLY_NAME, H1, H2, Lab
from tests.lab.sites import Route, RouteSite, html
from tests.lab.support import Worker
from tests.lab.web import closed_port
from workers.recon.assets import ensure_asset_indexes, merge_assets, scope_assets
from workers.tasks.monitor import domain_exec_task, ip_exec_task, root_domains


def _new(worker: Worker, task_id: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"domain": set(), "ip": set(), "port": set(), "site": set()}
    for doc in worker.store.db["monitor_new"].find({"task_id": task_id}):
        out[doc["kind"]].add(doc["value"])
    return out


def _options(lab: Lab, ports: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "port_scan": True,
        "port_scan_type": "custom",
        "port_custom": ",".join(str(p) for p in ports),
        "site_identify": True,
        "ssl_cert": True,
        **extra,
    }


def test_domain_monitor_reports_only_what_is_new(
    worker: Worker, lab: Lab, new_scope: Callable[[], str]
) -> None:
    scope_id = new_scope()
    db = worker.store.db
    ensure_asset_indexes(db)
    main = lab.sites["main"]
    merge_assets(db, "domain", scope_id, "seed", [{"domain": "lab.test"}, {"domain": "www.lab.test"}])
    merge_assets(db, "ip", scope_id, "seed", [{"ip": H1, "ports": [{"port": main.port}]}])
    extra_port = closed_port(H1)
    ports = sorted({*lab.scan_ports, extra_port})
    hook = RouteSite("127.88.2.3", {"/hook": Route(b"ok", methods=("POST",))}).start()
    try:
        data = validate_task_data(
            "domain_exec_task",
            {
                "scope_id": scope_id,
                "webhook": f"{hook.url}/hook",
                "options": _options(lab, ports, domain_brute=False),
            },
        )
        first_ctx = worker.start("domain_exec_task", dict(data))
        first = domain_exec_task(dict(data), first_ctx)
        new = _new(worker, first_ctx.task_id)
        assert CERT_ONLY_NAME in new["domain"] and not {"lab.test", "www.lab.test"} & new["domain"]
        assert H2 in new["ip"] and H1 not in new["ip"]
        assert f"{H1}:{lab.sites['secure'].port}" in new["port"] and f"{H1}:{main.port}" not in new["port"]
        assert f"http://lab.test:{main.port}" in new["site"]
        assert first["new_domain"] == len(new["domain"]) and first["webhook"] == "sent"
        assert {d["domain"] for d in scope_assets(db, scope_id, "domain")} >= {CERT_ONLY_NAME, "lab.test"}

        opened = RouteSite(H1, {"/": html("Opened later")}, port=extra_port).start()
        try:
            ctx = worker.start("domain_exec_task", data)
            second = domain_exec_task(data, ctx)
        finally:
            opened.stop()
        new = _new(worker, ctx.task_id)
        assert new["domain"] == set() and new["ip"] == set()
        assert new["port"] == {f"{H1}:{extra_port}"}
        assert new["site"] and all(s.endswith(f":{extra_port}") for s in new["site"])
        assert second["new_port"] == 1 and not second["partial"]
        ip_asset = next(d for d in scope_assets(db, scope_id, "ip") if d["ip"] == H1)
        assert extra_port in {p["port"] for p in ip_asset["ports"]}
        payload = json.loads(hook.bodies[-1])
        assert payload["task_id"] == ctx.task_id and {n["kind"] for n in payload["new"]} == {"port", "site"}
    finally:
        hook.stop()


def test_ip_monitor_uses_scope_ips_and_finds_nothing_new_twice(
    worker: Worker, lab: Lab, new_scope: Callable[[], str]
) -> None:
    scope_id = new_scope()
    ensure_asset_indexes(worker.store.db)
    merge_assets(worker.store.db, "ip", scope_id, "seed", [{"ip": H2}])
    data = validate_task_data(
        "ip_exec_task", {"scope_id": scope_id, "options": _options(lab, lab.scan_ports)}
    )
    ctx = worker.start("ip_exec_task", dict(data))
    first = ip_exec_task(dict(data), ctx)
    assert first["targets"] == 1
    new = _new(worker, ctx.task_id)
    assert new["ip"] == set() and f"{H2}:{lab.sites['portal'].port}" in new["port"]
    assert f"http://{H2}:{lab.sites['portal'].port}" in new["site"]
    again = worker.start("ip_exec_task", data)
    second = ip_exec_task(data, again)
    assert (second["new_ip"], second["new_port"], second["new_site"]) == (0, 0, 0)


def test_root_domains() -> None:
    assert root_domains(["a.x.com", "x.com", "b.a.x.com", "y.org", "z.y.org.cn"]) == [
        "x.com",
        "y.org",
        "z.y.org.cn",
    ]
