"""``add_asset_site_task`` and ``asset_site_update`` against lab sites whose pages change between runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controlplane.core.validate import validate_task_data
from tests.lab.sites import RouteSite, html
from tests.lab.support import Worker
from workers.recon.assets import scope_assets
from workers.tasks.asset_site import add_asset_site_task, asset_site_update

SITE_IP = "127.88.2.1"


@pytest.fixture
def sites() -> Iterator[list[RouteSite]]:
    running = [RouteSite(SITE_IP, {"/": html(f"Site {i}")}).start() for i in range(3)]
    yield running
    for site in running:
        site.stop()


def _assets(worker: Worker, scope_id: str) -> dict[str, dict[str, Any]]:
    return {d["site"]: d for d in scope_assets(worker.store.db, scope_id, "site")}


def _add(worker: Worker, scope_id: str, targets: list[str]) -> dict[str, Any]:
    data = validate_task_data("add_asset_site_task", {"target": ",".join(targets), "scope_id": scope_id})
    return add_asset_site_task(data, worker.start("add_asset_site_task", data))


def test_add_sites_skips_known_and_out_of_scope(
    worker: Worker, sites: list[RouteSite], new_scope: Callable[[], str]
) -> None:
    scope_id = new_scope()
    first = _add(worker, scope_id, [sites[0].url, sites[1].hostport, "127.88.9.9:8080"])
    assert first["asset_site_added"] == 2 and not first["partial"]
    assert set(_assets(worker, scope_id)) == {sites[0].url, sites[1].url}
    requests_before = len(sites[0].requests)
    second = _add(worker, scope_id, [sites[0].url, sites[2].url])
    assert second["asset_site_added"] == 1 and second["skipped_known"] == 1
    assert len(sites[0].requests) == requests_before, "a site already in the scope was fetched again"
    assets = _assets(worker, scope_id)
    assert assets[sites[2].url]["title"] == "Site 2" and assets[sites[2].url]["alive"]


def test_site_update_records_changes(
    worker: Worker, sites: list[RouteSite], new_scope: Callable[[], str]
) -> None:
    scope_id = new_scope()
    _add(worker, scope_id, [s.url for s in sites])
    sites[0].routes["/"] = html("Renamed")
    sites[1].stop()
    sites[2].headers["X-Jenkins"] = "2.414.1"
    data = validate_task_data("asset_site_update", {"scope_id": scope_id})
    ctx = worker.start("asset_site_update", data)
    stats = asset_site_update(data, ctx)
    assert (stats["changed"], stats["removed"], stats["new"]) == (2, 1, 0)
    changes = {c["site"]: c for c in worker.store.db["asset_site_change"].find({"task_id": ctx.task_id})}
    assert changes[sites[0].url]["fields"]["title"] == {"old": "Site 0", "new": "Renamed"}
    assert changes[sites[1].url]["change"] == "removed"
    # Jenkins, and what the technology database says it implies (Java).
    assert changes[sites[2].url]["fields"]["fingerprints"]["added"] == ["Jenkins", "Java"]
    assets = _assets(worker, scope_id)
    assert assets[sites[0].url]["title"] == "Renamed" and not assets[sites[1].url]["alive"]
    assert worker.progress(ctx, "site_update")[-1] == (3, 3)

    revived = RouteSite(SITE_IP, {"/": html("Site 1")}, port=sites[1].port).start()
    try:
        again = worker.start("asset_site_update", data)
        stats = asset_site_update(data, again)
    finally:
        revived.stop()
    assert (stats["changed"], stats["removed"], stats["new"]) == (0, 0, 1)
    assert _assets(worker, scope_id)[sites[1].url]["alive"]
