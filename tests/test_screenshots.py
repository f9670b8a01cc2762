"""Site screenshots through the whole product: API → broker → worker (Chromium) → GridFS → API → dashboard.

The lab sites are on 127.0.0.1; a second lab server on 127.0.0.2 is out of the stack's scope
(``scope.denied_cidrs``) and counts what reaches it.  The browsers are Debian's ``chromium``:
without it these tests are skipped locally and fail in CI.  The dashboard's picture is kept as
an artefact in the test's tmp dir.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from playwright.sync_api import expect, sync_playwright

from controlplane.config import load_config
from controlplane.core.errors import InvalidParam
from controlplane.core.validate import validate_task_data
from controlplane.store.tasks import TaskStore
from tests.conftest import make_stack
from tests.lab.sites import RouteSite, html
from tests.lab.support import Worker
from tests.stack import VIEWER_TOKEN, Stack
from tests.workers.recon.test_screenshot import BLUE, GREEN, page, png_pixel
from workers.recon.screenshot import png_size
from workers.tasks.ip import ip_task

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1024, 640
OUT_OF_SCOPE = "127.0.0.2"


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, RouteSite]]:
    outside = RouteSite(OUT_OF_SCOPE, {"/": html("outside")}).start()
    beacon = f'<img src="{outside.url}/beacon.png"><script>fetch("{outside.url}/x").catch(() => 0)</script>'
    sites = {
        "blue": RouteSite("127.0.0.1", {"/": page(BLUE, beacon)}).start(),
        "green": RouteSite("127.0.0.1", {"/": page(GREEN)}).start(),
        "outside": outside,
    }
    try:
        yield sites
    finally:
        for site in sites.values():
            site.stop()


@pytest.fixture(scope="module")
def shot_stack(
    tmp_path_factory: pytest.TempPathFactory, mongo_server: str, chromium: str, lab: dict[str, RouteSite]
) -> Iterator[Stack]:
    stack = make_stack(
        tmp_path_factory.mktemp("screenshots"),
        mongo_server,
        extra_config={
            "scope": {"allow_loopback": True, "denied_cidrs": [f"{OUT_OF_SCOPE}/32"]},
            "recon": {
                "connect_timeout": 0.5,
                "http_timeout": 3.0,
                "screenshot_chromium": chromium,
                "screenshot_width": WIDTH,
                "screenshot_height": HEIGHT,
            },
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def ip_data(*sites: RouteSite, name: str = "shots") -> dict[str, Any]:
    return {
        "name": name,
        "target": "127.0.0.1",
        "options": {
            "port_scan": True,
            "port_scan_type": "custom",
            "port_custom": ",".join(str(s.port) for s in sites),
            "site_identify": True,
            "site_capture": True,
        },
    }


@pytest.fixture(scope="module")
def captured(shot_stack: Stack, lab: dict[str, RouteSite]) -> dict[str, Any]:
    """One ip_task with site_capture over the two lab sites, finished."""
    cid = shot_stack.create("ip_task", ip_data(lab["blue"], lab["green"]))
    done = shot_stack.wait_status(cid, "SUCCESS", "FAILURE", "REVOKED", timeout=120)
    assert done["status"] == "SUCCESS", done
    resp = shot_stack.request("GET", f"/api/celery_task/{cid}/results/?kind=site&size=100")
    assert resp.code == 200, resp
    return {"cid": cid, "detail": done, "sites": {s["site"]: s for s in resp.data["items"]}}


def screenshot_path(cid: str, site_id: str) -> str:
    return f"/api/celery_task/{cid}/results/site/{site_id}/screenshot.png"


# -- the option ---------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", ["ip_task", "domain_task"])
def test_the_api_validator_accepts_site_capture(task_type: str) -> None:
    target = "127.0.0.1" if task_type == "ip_task" else "example.com"
    clean = validate_task_data(task_type, {"target": target, "options": {"site_capture": True}})
    assert clean["options"]["site_capture"] is True
    with pytest.raises(InvalidParam) as refused:
        validate_task_data(task_type, {"target": target, "options": {"site_capture": "yes"}})
    assert refused.value.field == "data.options.site_capture"


# -- a real ip_task -------------------------------------------------------------------------


def test_an_ip_task_stores_a_screenshot_per_site_as_configured(
    captured: dict[str, Any], lab: dict[str, RouteSite]
) -> None:
    stats = captured["detail"]["statistic"]
    assert stats["site"] == 2 and stats["screenshot"] == 2 and stats["screenshot_skipped"] == 0
    assert "skipped_options" not in stats
    assert set(captured["sites"]) == {lab["blue"].url, lab["green"].url}
    for site in captured["sites"].values():
        note = site["screenshot"]
        assert (note["width"], note["height"], note["scale"], note["loaded"]) == (WIDTH, HEIGHT, 1.0, True)
    assert captured["sites"][lab["blue"].url]["screenshot"]["blocked"] == 1  # 127.0.0.2, out of scope
    assert lab["outside"].requests == []


def test_the_endpoint_serves_the_png_to_a_viewer_with_caching_headers(
    shot_stack: Stack, captured: dict[str, Any], lab: dict[str, RouteSite]
) -> None:
    for key, colour in (("blue", BLUE), ("green", GREEN)):
        site = captured["sites"][lab[key].url]
        resp = shot_stack.request("GET", screenshot_path(captured["cid"], site["_id"]), token=VIEWER_TOKEN)
        assert resp.status == 200, resp
        headers = {k.lower(): v for k, v in resp.headers.items()}
        assert headers["content-type"] == "image/png"
        assert headers["cache-control"] == "private, max-age=86400, immutable"
        assert headers["x-content-type-options"] == "nosniff"
        assert resp.raw.startswith(b"\x89PNG\r\n\x1a\n") and len(resp.raw) == site["screenshot"]["bytes"]
        assert png_size(resp.raw) == (WIDTH, HEIGHT)
        assert png_pixel(resp.raw, WIDTH // 2, HEIGHT // 2) == colour
        again = shot_stack.request(
            "GET",
            screenshot_path(captured["cid"], site["_id"]),
            token=VIEWER_TOKEN,
            headers={"Authorization": f"Bearer {VIEWER_TOKEN}", "If-None-Match": headers["etag"]},
        )
        assert again.status == 304 and again.raw == b""


def test_the_endpoint_refuses_without_a_token_and_answers_404_when_there_is_none(
    shot_stack: Stack, captured: dict[str, Any], lab: dict[str, RouteSite]
) -> None:
    cid = captured["cid"]
    site_id = captured["sites"][lab["blue"].url]["_id"]
    anonymous = shot_stack.request("GET", screenshot_path(cid, site_id), token=None)
    assert anonymous.status == 401 and anonymous.code == 401
    assert not anonymous.raw.startswith(b"\x89PNG")
    for missing in (str(ObjectId()), "not-an-object-id"):
        resp = shot_stack.request("GET", screenshot_path(cid, missing), token=VIEWER_TOKEN)
        assert resp.status == 404 and resp.code == 404, resp
        assert resp.data["reason"] == "no screenshot of this site result"
    other = shot_stack.request("GET", screenshot_path(str(uuid.uuid4()), site_id), token=VIEWER_TOKEN)
    assert other.status == 404 and other.code == 102  # another task's id never serves this one's file
    bad = shot_stack.request("GET", screenshot_path("not-a-uuid", site_id), token=VIEWER_TOKEN)
    assert bad.status == 400 and bad.code == 400


# -- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_shows_the_thumbnails(
    shot_stack: Stack, captured: dict[str, Any], chromium: str, tmp_path: Path
) -> None:
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            headless=True,
        )
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            dash = context.new_page()
            dash.set_default_timeout(20_000)
            dash.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            dash.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            dash.goto(f"http://127.0.0.1:{shot_stack.port}/dashboard/")
            dash.fill("#token", VIEWER_TOKEN)
            dash.click("#login-button")
            expect(dash.locator("#who")).to_contain_text("viewer")
            dash.fill("#filter-id", captured["cid"])  # other stacks on the same Redis may show tasks too
            dash.click("#filters button[type=submit]")
            dash.click(f'tr[data-id="{captured["cid"]}"] td.name')
            dash.click("#d-tabs button[data-kind=site]")
            table = dash.locator("#d-results-body table.results-table[data-kind=site]")
            expect(table.locator("thead th").first).to_have_text("screenshot")
            thumbs = table.locator("td.thumb img[data-loaded=true]")
            expect(thumbs).to_have_count(2)
            sizes = thumbs.evaluate_all("(imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight])")
            assert sizes == [[WIDTH, HEIGHT], [WIDTH, HEIGHT]]
            assert all(
                src.startswith("data:image/png;base64,")
                for src in thumbs.evaluate_all("(imgs) => imgs.map((i) => i.src)")
            )
            table.scroll_into_view_if_needed()
            dash.screenshot(path=str(tmp_path / "dashboard-site-thumbnails.png"))
            table.screenshot(path=str(tmp_path / "dashboard-site-table.png"))
            context.close()
        finally:
            browser.close()
    assert (tmp_path / "dashboard-site-thumbnails.png").stat().st_size > 0
    assert errors == [], errors


# -- Chromium unavailable ---------------------------------------------------------------------


def test_without_chromium_the_ip_task_succeeds_and_reports_the_option(
    mongo_server: str, lab: dict[str, RouteSite], tmp_path: Path
) -> None:
    """A real ip_task run the way a worker runs it, with the configured browser missing."""
    config = load_config(None, env={})
    config.mongo.url = mongo_server
    config.mongo.database = f"shots_{uuid.uuid4().hex[:8]}"
    config.scope.allow_loopback = True
    config.recon.connect_timeout = 0.5
    config.recon.screenshot_chromium = str(tmp_path / "missing" / "chromium")
    store = TaskStore(config.mongo)
    try:
        data = validate_task_data("ip_task", ip_data(lab["green"]))
        ctx = Worker(config, store).start("ip_task", data)
        stats = ip_task(data, ctx)  # returns: the task does not fail
        assert stats["site"] == 1 and stats["partial"] is False
        assert stats["skipped_options"] == {"site_capture": "chromium not found"}
        stored = store.tasks.find_one({"celery_id": ctx.celery_id})
        assert stored is not None
        assert stored["statistic"]["skipped_options"] == {"site_capture": "chromium not found"}
    finally:
        store.client.drop_database(config.mongo.database)
        store.close()
