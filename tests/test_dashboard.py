"""The dashboard (``/dashboard/``) end to end: a real stack and headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright (``executable_path``; no
browser download). Without it the browser test is skipped locally and fails in CI.
Screenshots go to the test's tmp dir; the last one is copied to ``docs/dashboard.png``
(the picture in docs/operations.md) when that file is missing or ``CP_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.runtime import embedded
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Stack, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATIC = Path(__file__).resolve().parents[1] / "controlplane" / "static" / "dashboard"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
ROW = 'tr[data-id="{}"]'

# Records every status each task row shows, in order (rows are re-rendered in place).
OBSERVE_STATUSES = """
() => {
  window.__statuses = {};
  const record = () => {
    for (const tr of document.querySelectorAll("#task-rows tr[data-id]")) {
      const badge = tr.querySelector("td.status .badge");
      if (!badge) continue;
      const seen = (window.__statuses[tr.dataset.id] ||= []);
      if (seen[seen.length - 1] !== badge.textContent) seen.push(badge.textContent);
    }
  };
  const rows = document.getElementById("task-rows");
  new MutationObserver(record).observe(rows, {childList: true, subtree: true});
  record();
}
"""
# Pixels of a chart drawn in the SUCCESS colour (#23915a), with a little tolerance for blending.
SUCCESS_PIXELS = """
(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const near = (v, want) => Math.abs(v - want) < 6;
    if (d[i + 3] > 0 && near(d[i], 0x23) && near(d[i + 1], 0x91) && near(d[i + 2], 0x5a)) n++;
  }
  return n;
}
"""


@pytest.fixture(scope="module")
def dstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    """A stack on a Redis of its own: the table's totals and pages are asserted exactly, so no
    foreign task events from a concurrent test run on a shared Redis database may show up."""
    tmp = tmp_path_factory.mktemp("dash")
    port = embedded.free_port()
    redis_proc = embedded.start_redis(port, tmp / "redis", persist=False)
    s = Stack(tmp / "stack", f"redis://127.0.0.1:{port}/0", mongo_server, concurrency=2)
    try:
        s.start()
        yield s
    finally:
        s.close()
        embedded.stop(redis_proc)


def raw_get(stack: Stack, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- without a browser --------------------------------------------------------------


def test_whoami_tells_the_token_role(dstack: Stack) -> None:
    op = dstack.request("GET", "/api/whoami/")
    assert op.status == 200 and op.data == {"name": "test-operator", "role": "operator"}
    viewer = dstack.request("GET", "/api/whoami/", token=VIEWER_TOKEN)
    assert viewer.data == {"name": "test-viewer", "role": "viewer"}
    anonymous = dstack.request("GET", "/api/whoami/", token=None)
    assert anonymous.status == 401 and anonymous.code == 401


def test_dashboard_is_served_with_its_own_strict_csp(dstack: Stack) -> None:
    status, headers, _ = raw_get(dstack, "/dashboard")
    assert status in (301, 302) and headers["location"] == "/dashboard/"

    status, headers, body = raw_get(dstack, "/dashboard/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "connect-src 'self';" in csp and "ws:" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    html = body.decode()
    assert 'src="app.js"' in html and 'href="style.css"' in html
    # Nothing inline that a strict CSP would block: no inline scripts, handlers or style attributes.
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and not re.search(r"\sstyle\s*=", html)
    # No third-party code or CDN: every file the page loads is ours.
    assert "http://" not in html and "https://" not in html

    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, body = raw_get(dstack, f"/dashboard/{name}")
        assert status == 200 and kind in headers["content-type"]
        assert body == (STATIC / name).read_bytes()

    for path in ("/dashboard/nope.js", "/dashboard/../setup.py", "/dashboard/%2e%2e/%2e%2e/setup.py"):
        status, _, body = raw_get(dstack, path)
        assert status in (403, 404), (path, status)
        assert b"install_requires" not in body


# -- in a browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Numbered screenshots in the test's tmp dir."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path))
        self.taken.append(path)
        return path


def open_page(browser: Any, stack: Stack, errors: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"http://127.0.0.1:{stack.port}/dashboard/")
    return page


def log_in(page: Any, token: str, role: str) -> None:
    from playwright.sync_api import expect

    page.fill("#token", token)
    page.click("#login-button")
    expect(page.locator("#who")).to_contain_text(role)
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")


def submit(page: Any, task_type: str, data: str, previous: str = "") -> str:
    """Submit through the form; returns the new celery_id (the detail pane opens on it)."""
    from playwright.sync_api import expect

    page.select_option("#submit-type", task_type)
    page.fill("#submit-data", data)
    page.click("#submit-button")
    expect(page.locator("#d-id")).not_to_have_text(previous or "", timeout=10_000)
    expect(page.locator("#d-id")).to_have_text(re.compile(r"^[0-9a-f-]{36}$"))
    return str(page.locator("#d-id").inner_text())


def api_total(stack: Stack, **filters: str) -> int:
    query = "&".join(f"{k}={v}" for k, v in {**filters, "size": "1"}.items())
    return int(stack.request("GET", f"/api/celery_task/?{query}").data["total"])


def status_cell(page: Any, celery_id: str) -> Any:
    return page.locator(f"{ROW.format(celery_id)} td.status")


@pytest.mark.timeout(360)
def test_dashboard_end_to_end(dstack: Stack, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = Shots(tmp_path)
    errors: list[str] = []
    page = open_page(browser, dstack, errors)

    # Log in: a wrong token is refused, the operator's is accepted and the feed goes live.
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "cp_00000000000000a1_wrong-secret-0123456789abcdef")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    shots(page, "login")
    assert len(errors) == 1 and "401" in errors[0], errors  # the refused token's request, nothing else
    errors.clear()
    log_in(page, OPERATOR_TOKEN, "operator")
    page.evaluate("window.__sameDocument = true")
    page.evaluate(OBSERVE_STATUSES)

    # Submit a sleep task and watch its row go PENDING → STARTED → SUCCESS without a reload.
    sleeper = submit(page, "sleep_task", '{"name": "nap", "seconds": 4}')
    expect(status_cell(page, sleeper)).to_have_text("STARTED", timeout=20_000)
    expect(page.locator("#d-progress")).to_be_visible()
    shots(page, "started")
    expect(status_cell(page, sleeper)).to_have_text("SUCCESS", timeout=30_000)
    seen = page.evaluate(f"window.__statuses[{sleeper!r}]")
    order = [s for s in seen if s in ("PENDING", "STARTED", "SUCCESS")]
    assert order == ["PENDING", "STARTED", "SUCCESS"], seen
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(page.locator("#d-status")).to_have_text("SUCCESS")
    expect(page.locator("#d-outcome")).to_contain_text("'slept': 4")
    expect(page.locator("#d-progress-text")).to_contain_text("(100%)")
    assert dstack.detail(sleeper)["status"] == "SUCCESS"

    # A busy task (never checks for revokes) is running; revoke it from its row.
    busy = submit(page, "busy_task", '{"name": "busy", "seconds": 120}', previous=sleeper)
    expect(status_cell(page, busy)).to_have_text("STARTED", timeout=20_000)
    page.click("#active-refresh")
    expect(page.locator("#active-rows")).to_contain_text(busy[:8])
    page.click(f"{ROW.format(busy)} button.revoke")
    expect(status_cell(page, busy)).to_have_text("REVOKED", timeout=30_000)
    expect(page.locator(f"{ROW.format(busy)} button.revoke")).to_have_count(0)
    expect(page.locator("#d-status")).to_have_text("REVOKED")
    assert dstack.detail(busy)["status"] == "REVOKED"
    expect(page.locator("#active-rows")).not_to_contain_text(busy[:8], timeout=15_000)

    # Batch revoke: two long sleeps, ticked and revoked together.
    first = submit(page, "sleep_task", '{"name": "long-1", "seconds": 60}', previous=busy)
    second = submit(page, "sleep_task", '{"name": "long-2", "seconds": 60}', previous=first)
    for cid in (first, second):
        page.check(f"{ROW.format(cid)} input.pick")
    expect(page.locator("#batch-revoke")).to_have_text("Revoke selected (2)")
    page.click("#batch-revoke")
    for cid in (first, second):
        expect(status_cell(page, cid)).to_have_text("REVOKED", timeout=30_000)
    expect(page.locator("#toast")).to_contain_text("Revoked 2 of 2")
    shots(page, "revoked")

    # Filters and pagination (tasks created over REST: the table and its total follow live).
    quick = [dstack.create("sleep_task", {"name": f"quick-{i}", "seconds": 0}) for i in range(9)]
    page.select_option("#page-size", "10")
    expect(page.locator("#total")).to_have_text("13 total")
    assert api_total(dstack) == 13
    expect(page.locator("#page-info")).to_have_text("Page 1 of 2")
    expect(page.locator("#task-rows tr")).to_have_count(10)
    expect(page.locator("#task-rows tr").first).to_have_attribute("data-id", quick[-1])  # newest first
    page.click("#next")
    expect(page.locator("#page-info")).to_have_text("Page 2 of 2")
    expect(page.locator("#task-rows tr")).to_have_count(3)
    expect(page.locator(ROW.format(sleeper))).to_be_visible()  # the oldest
    page.select_option("#filter-type", "busy_task")
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_have_text("1 total")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(page.locator(ROW.format(busy))).to_be_visible()
    page.select_option("#filter-type", "")
    page.select_option("#filter-status", "REVOKED")
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_have_text("3 total")
    for cid in (busy, first, second):
        expect(page.locator(ROW.format(cid))).to_be_visible()
    page.fill("#filter-id", sleeper)
    page.select_option("#filter-status", "")
    page.click("#filters button[type=submit]")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(page.locator("#total")).to_have_text("1 total")
    page.click("#filter-clear")
    expect(page.locator("#page-info")).to_have_text("Page 1 of 2")
    for cid in quick:
        dstack.wait_status(cid, "SUCCESS")

    # Results tabs: two site documents recorded for the sleep task.
    task_id = dstack.detail(sleeper)["task_id"]
    dstack.db["site"].insert_many(
        [{"task_id": task_id, "site": f"http://10.0.0.{i}/", "title": f"lab {i}"} for i in (1, 2)]
    )
    dstack.db["tasks"].update_one({"celery_id": sleeper}, {"$set": {"statistic": {"site": 2}}})

    # A viewer sees the same live table but no submit or revoke controls.
    viewer_errors: list[str] = []
    viewer = open_page(browser, dstack, viewer_errors)
    log_in(viewer, VIEWER_TOKEN, "viewer")
    expect(viewer.locator(ROW.format(sleeper))).to_be_visible()
    expect(viewer.locator("#submit-card")).to_be_hidden()
    expect(viewer.locator("#batch-revoke")).to_be_hidden()
    expect(viewer.locator("button.revoke")).to_have_count(0)
    expect(viewer.locator("input.pick")).to_have_count(0)
    viewer.click(f"{ROW.format(sleeper)} td.name")
    expect(viewer.locator("#d-status")).to_have_text("SUCCESS")
    expect(viewer.locator("#d-revoke")).to_be_hidden()
    later = dstack.create("sleep_task", {"name": "seen-by-viewer", "seconds": 1})
    expect(status_cell(viewer, later)).to_have_text("SUCCESS", timeout=30_000)
    shots(viewer, "viewer")
    viewer.context.close()
    assert viewer_errors == []

    # Back to the operator: the finished task's details with its results, and the charts.
    page.select_option("#page-size", "20")
    page.click(f"{ROW.format(sleeper)} td.name")
    expect(page.locator("#d-tabs button")).to_have_text(["site (2)"])
    expect(page.locator("#d-results-body")).to_contain_text("http://10.0.0.2/")
    expect(page.locator("#r-info")).to_contain_text("site: page 1 of 1 · 2")
    wait_for(lambda: page.evaluate(SUCCESS_PIXELS, "chart-throughput") > 150, what="throughput bars")
    wait_for(lambda: page.evaluate(SUCCESS_PIXELS, "chart-states") > 150, timeout=15, what="states area")
    page.wait_for_timeout(6000)  # one more state sample, so the chart shows a change over time
    last = shots(page, "operator")

    assert errors == [], errors
    page.context.close()
    # The picture in docs/operations.md: written when missing or asked for, so test runs leave the tree clean.
    if not DOCS_SCREENSHOT.exists() or os.environ.get("CP_UPDATE_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(last, DOCS_SCREENSHOT)
    print(f"screenshots: {shots.dir}")


def test_with_auth_off_the_dashboard_opens_as_the_operator_without_a_login(
    dstack: Stack, browser: Any
) -> None:
    """``auth.enabled: false``: health says so, and the page opens with no login form or logout."""
    from playwright.sync_api import expect

    open_stack = Stack(
        dstack.workdir.parent / "auth-off",
        dstack.broker_url,
        dstack.mongo_url,
        workers=0,
        extra_config={"auth": {"enabled": False}},
    )
    try:
        open_stack.start_part("serve", "serve")
        embedded.wait_port(open_stack.port, 30, open_stack.procs["serve"])
        assert open_stack.request("GET", "/api/health/", token=None).data == {"status": "ok", "auth": "none"}
        errors: list[str] = []
        page = open_page(browser, open_stack, errors)
        expect(page.locator("#who")).to_contain_text("anonymous · operator")
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
        expect(page.locator("#submit-button")).to_be_visible()
        assert page.locator("#login").is_hidden() and page.locator("#logout").is_hidden()
        page.context.close()
        assert errors == []
    finally:
        open_stack.close()


def test_api_reference_page_renders_every_operation(dstack: Stack, browser: Any, tmp_path: Path) -> None:
    """``/api/docs/`` renders the OpenAPI document in the browser, offline, with no errors."""
    status, headers, body = raw_get(dstack, "/api/docs/")
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    assert b"<script src=" in body and b"<script>" not in body
    spec = json.loads(raw_get(dstack, "/api/openapi.json")[2])
    operations = sum(
        1
        for item in spec["paths"].values()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    )
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.goto(f"http://127.0.0.1:{dstack.port}/api/docs/")
    page.wait_for_selector("body[data-operations]")
    assert page.locator("section.op").count() == operations > 8
    assert page.locator("#toc a").count() == operations
    assert "/api/celery_task/batch_revoke/" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=False)
    context.close()
    assert errors == []


# -- finding a task, its submitted data and its results --------------------------------

FOUND_SITES = [
    {
        "site": "http://10.9.0.1/",
        "title": "Lab portal",
        "status": 200,
        "finger": [{"name": "nginx"}, {"name": "PHP"}],
    },
    {"site": "http://10.9.0.2/", "title": "=cmd()", "status": 302, "finger": []},
    {"site": "http://10.9.0.3/", "title": "标题", "status": 404, "finger": [{"name": "IIS"}]},
]


@pytest.mark.timeout(240)
def test_dashboard_finds_a_task_and_shows_its_data_and_result_tables(
    dstack: Stack, browser: Any, tmp_path: Path
) -> None:
    """Search, worker filter, created range and sort in the task table; the detail's submitted data
    (options redacted as the API shows them); results as tables per kind; CSV and XLSX downloads."""
    import csv
    import io
    import time
    import uuid

    from openpyxl import load_workbook
    from playwright.sync_api import expect

    from controlplane.service.export import COLUMNS, csv_safe, row
    from controlplane.store.tasks import new_task_document

    cid = str(uuid.uuid4())
    doc = dict(
        new_task_document(
            celery_id=cid,
            task_type="fofa_task",
            data={
                "name": "Quarterly ACME sweep",
                "target": "acme-dash.example.com",
                "query": 'domain="acme-dash.example.com"',
                "options": {"key": "fofa-secret-123", "email": "ops@example.com", "size": 100},
            },
            created_time=time.time(),
            rev=1,
        )
    )
    doc.update(status="SUCCESS", worker="celery@dash-worker", statistic={"site": 3, "vuln": 1})
    dstack.db.tasks.insert_one(doc)
    task_id = str(doc["_id"])
    dstack.db["site"].insert_many([{**s, "task_id": task_id} for s in FOUND_SITES])
    dstack.db["vuln"].insert_one(
        {"task_id": task_id, "target": "http://10.9.0.1/", "poc_id": "p-1", "name": "X", "severity": "high"}
    )
    detail = dstack.detail(cid)
    assert detail["options"]["key"] == "***"  # what the dashboard must show

    shots = Shots(tmp_path)
    errors: list[str] = []
    page = open_page(browser, dstack, errors)
    log_in(page, VIEWER_TOKEN, "viewer")

    # Search: a case-insensitive prefix of the name or the target.
    for text in ("quarterly acme", "ACME-DASH"):
        page.fill("#filter-q", text)
        page.click("#filters button[type=submit]")
        expect(page.locator("#total")).to_have_text("1 total")
        expect(page.locator(ROW.format(cid))).to_be_visible()
    page.fill("#filter-q", "acme")  # not the start of its name: found through its target
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_have_text(f"{api_total(dstack, q='acme')} total")
    expect(page.locator(ROW.format(cid))).to_be_visible()
    shots(page, "search")

    # Worker filter, a created-time range with nothing in it, then the oldest first.
    page.fill("#filter-q", "")
    page.fill("#filter-worker", "celery@dash-worker")
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_have_text("1 total")
    page.fill("#filter-after", "2999-01-01T00:00:00")
    page.click("#filters button[type=submit]")
    expect(page.locator("#total")).to_have_text("0 total")
    expect(page.locator("#empty")).to_be_visible()
    page.click("#filter-clear")
    page.select_option("#sort", "created")
    oldest = dstack.request("GET", "/api/celery_task/?sort=created&size=1").data["items"][0]["celery_id"]
    expect(page.locator("#task-rows tr").first).to_have_attribute("data-id", oldest)
    page.select_option("#sort", "-created")
    expect(page.locator("#task-rows tr").first).to_have_attribute("data-id", cid)

    # The detail: submitted data and options exactly as the API shows them (credentials redacted).
    page.click(f"{ROW.format(cid)} td.name")
    data = page.locator("#d-data")
    expect(data.locator('tr[data-key="options.key"] td')).to_have_text("***")
    expect(data.locator('tr[data-key="options.email"] td')).to_have_text("***")
    expect(data.locator('tr[data-key="options.size"] td')).to_have_text("100")
    expect(data.locator('tr[data-key="target"] td')).to_have_text("acme-dash.example.com")
    assert "fofa-secret-123" not in page.content() and "ops@example.com" not in page.content()

    # Results as tables per kind.
    expect(page.locator("#d-tabs button")).to_have_text(["site (3)", "vuln (1)"])
    table = page.locator("#d-results-body table.results-table[data-kind=site]")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("thead th")).to_have_text(list(COLUMNS["site"]))
    first = table.locator("tbody tr").first.locator("td")
    expect(first.nth(COLUMNS["site"].index("title"))).to_have_text("Lab portal")
    expect(first.nth(COLUMNS["site"].index("finger"))).to_have_text("nginx, PHP")
    expect(first.nth(COLUMNS["site"].index("status")).locator(".http.ok")).to_have_text("200")
    expect(page.locator("#r-info")).to_contain_text("site: page 1 of 1 · 3")
    shots(page, "results-site")

    # Downloads of the selected kind: the files hold the same rows.
    with page.expect_download() as info:
        page.click("#d-downloads a[data-format=csv]")
    saved = tmp_path / "sites.csv"
    info.value.save_as(saved)
    assert info.value.suggested_filename == f"{cid}-site.csv"
    rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8-sig"), newline="")))
    items = dstack.request("GET", f"/api/celery_task/{cid}/results/?kind=site&size=100").data["items"]
    want = [[str(csv_safe(v)) for v in row(COLUMNS["site"], item)] for item in items]
    assert rows == [list(COLUMNS["site"]), *want]
    with page.expect_download() as info:
        page.click("#d-downloads a[data-format=xlsx]")
    info.value.save_as(tmp_path / "sites.xlsx")
    sheet = load_workbook(tmp_path / "sites.xlsx").active
    got = [["" if v is None else v for v in r] for r in sheet.iter_rows(values_only=True)]
    assert got == [list(COLUMNS["site"]), *[row(COLUMNS["site"], item) for item in items]]

    page.click("#d-tabs button[data-kind=vuln]")
    expect(page.locator("#d-results-body table[data-kind=vuln] .sev.high")).to_have_text("high")
    shots(page, "results-vuln")
    page.context.close()
    assert errors == [], errors
