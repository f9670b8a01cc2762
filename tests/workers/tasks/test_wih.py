"""``asset_wih_update``: records from pages and scripts, dedup across runs, site discovery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controlplane.core.validate import validate_task_data
from tests.lab import Lab
from tests.lab.sites import Route
from tests.lab.support import Worker
from tests.lab.wih import (
    API_PATH,
    AWS_KEY,
    EMAIL,
    GITHUB_TOKEN,
    INTERNAL_IP,
    JWT,
    wih_site,
)
from workers.recon.assets import scope_assets
from workers.recon.wih import WihRuleError, extract, load_wih_rules, parse_wih_rules
from workers.tasks.asset_site import add_asset_site_task
from workers.tasks.asset_wih import asset_wih_update


def test_rules_extract_planted_values() -> None:
    text = f'x = "{AWS_KEY}"; y = "https://a.lab.test:8443/p?q=1"; z = "/static/logo.png"; w = "{API_PATH}"'
    found = {(r.type, r.value) for r in extract(text, load_wih_rules())}
    assert ("secret", AWS_KEY) in found and ("path", API_PATH) in found
    assert ("url", "https://a.lab.test:8443/p?q=1") in found and ("domain", "a.lab.test") in found
    assert not any(v.endswith(".png") for _, v in found)


def test_rule_files_are_validated() -> None:
    with pytest.raises(WihRuleError, match="group"):
        parse_wih_rules({"rules": [{"id": "x", "type": "secret", "regex": "abc", "group": 2}]})
    with pytest.raises(WihRuleError, match="type"):
        parse_wih_rules({"rules": [{"id": "x", "type": "password", "regex": "abc"}]})


def test_wih_hunts_scripts_dedups_and_discovers_sites(
    worker: Worker, lab: Lab, new_scope: Callable[[], str]
) -> None:
    grafana = lab.sites["grafana"]
    discovered = f"http://dev.lab.test:{grafana.port}"
    site = wih_site(discovered).start()
    try:
        scope_id = new_scope()
        start_url = f"http://www.lab.test:{site.port}"
        data = validate_task_data("add_asset_site_task", {"target": start_url, "scope_id": scope_id})
        assert add_asset_site_task(data, worker.start("add_asset_site_task", data))["asset_site_added"] == 1

        data = validate_task_data("asset_wih_update", {"scope_id": scope_id})
        ctx = worker.start("asset_wih_update", data)
        stats = asset_wih_update(data, ctx)
        records = {(r["type"], r["value"]): r for r in worker.store.db["wih"].find({"scope_id": scope_id})}
        for expected in [
            ("secret", AWS_KEY),
            ("secret", GITHUB_TOKEN),
            ("secret", JWT),
            ("email", EMAIL),
            ("path", API_PATH),
            ("path", "/api/v2/orders?limit=10"),
            ("ip", INTERNAL_IP),
            ("domain", "dev.lab.test"),
            ("domain", "cdn.elsewhere.example"),
        ]:
            assert expected in records, expected
        assert any(r["rule"] == "private-key" for r in records.values())
        assert records[("secret", AWS_KEY)]["source"] == f"{start_url}/static/app.js"
        assert records[("secret", AWS_KEY)]["task_id"] == ctx.task_id
        assert stats["wih"] == len(records) and not stats["partial"]
        chunk_requests = [p for _, p in site.requests if p.startswith("/static/")]
        assert len(chunk_requests) <= 20
        assert stats["asset_site_added"] == 1
        sites = {s["site"]: s for s in scope_assets(worker.store.db, scope_id, "site")}
        assert sites[discovered]["title"] == "Grafana"
        assert worker.progress(ctx, "wih")[-1] == (1, 1)

        again = worker.start("asset_wih_update", data)
        assert asset_wih_update(data, again)["wih"] == 0
        site.routes["/static/app.js"] = Route(
            site.routes["/static/app.js"].body + b'\nconst t = "xoxb-1234567890-lab";'
        )
        third = worker.start("asset_wih_update", data)
        assert asset_wih_update(data, third)["wih"] == 1
    finally:
        site.stop()
