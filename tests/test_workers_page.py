"""The workers page (``/dashboard/workers.html``) in headless Chromium against a real worker.

The stack has one prefork worker (concurrency 2) and a task type routed to a queue nobody
consumes; the page must show the worker and the queue depths, and an operator's clicks must
reach the worker (pool, consumers, shutdown). Screenshots stay in the test's tmp dir.
The stack has a Redis server of its own: the page lists every worker that answers a survey
on the broker, and a concurrent test run's workers on a shared Redis database would answer too.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.runtime import embedded
from tests.stack import OPERATOR_TOKEN, TEST_TASKS, VIEWER_TOKEN, Stack, wait_for
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, Shots, raw_get

pytestmark = pytest.mark.integration

PARKED = f"parked-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("workers-page")
    port = embedded.free_port()
    redis_proc = embedded.start_redis(port, tmp / "redis", persist=False)
    tasks = {**TEST_TASKS, "parked_task": {"task": "workers.tasks.testing:sleep", "queue": PARKED}}
    s = Stack(
        tmp / "stack",
        f"redis://127.0.0.1:{port}/0",
        mongo_server,
        concurrency=2,
        extra_config={"api": {"workers_cache_seconds": 1.0}, "tasks": tasks},
    )
    try:
        s.start()
        yield s
    finally:
        s.close()
        embedded.stop(redis_proc)


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


def open_workers_page(browser: Any, stack: Stack, errors: list[str]) -> Any:
    page = browser.new_context(viewport={"width": 1500, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"http://127.0.0.1:{stack.port}/dashboard/workers.html")
    return page


def log_in(page: Any, token: str, role: str) -> None:
    from playwright.sync_api import expect

    page.fill("#token", token)
    page.click("#login-button")
    expect(page.locator("#who")).to_contain_text(role)


def test_the_page_is_served_with_the_dashboards_csp_and_nothing_inline(pstack: Stack) -> None:
    status, headers, body = raw_get(pstack, "/dashboard/workers.html")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    html = body.decode()
    assert 'src="workers.js"' in html and 'href="workers.css"' in html
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and not re.search(r"\sstyle\s*=", html)
    assert "http://" not in html and "https://" not in html
    for name in ("workers.js", "workers.css"):
        assert raw_get(pstack, f"/dashboard/{name}")[0] == 200
    index = raw_get(pstack, "/dashboard/")[2].decode()
    assert 'href="workers.html"' in index, "the main page links to the workers page"


@pytest.mark.timeout(300)
def test_workers_page_end_to_end(pstack: Stack, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = Shots(tmp_path)
    name = wait_for(
        lambda: next((w["name"] for w in pstack.request("GET", "/api/workers/").data["workers"]), None),
        what="the worker listed",
    )
    for i in range(2):
        pstack.create("parked_task", {"name": f"parked-{i}", "seconds": 0})
    stack_queue = f"recon-{pstack.database}"

    # A viewer sees the worker and the queues, without controls.
    viewer_errors: list[str] = []
    viewer = open_workers_page(browser, pstack, viewer_errors)
    expect(viewer.locator("#login")).to_be_visible()
    log_in(viewer, VIEWER_TOKEN, "viewer")
    row = viewer.locator(f'#worker-rows tr[data-name="{name}"]')
    expect(row.locator("td.state")).to_have_text("online")
    expect(row.locator("td.pool")).to_have_text("prefork")
    expect(row.locator("td.concurrency")).to_have_text("2")
    expect(row.locator("td.queues")).to_contain_text(stack_queue)
    expect(viewer.locator(f'#queue-rows tr[data-queue="{PARKED}"] td.depth')).to_have_text("2")
    expect(viewer.locator(f'#queue-rows tr[data-queue="{PARKED}"] td.consumers')).to_have_text("none")
    expect(viewer.locator("button.grow")).to_be_hidden()
    expect(viewer.locator("button.shutdown")).to_be_hidden()
    expect(viewer.locator("#consumer-form")).to_be_hidden()
    shots(viewer, "viewer")
    viewer.context.close()
    assert viewer_errors == [], viewer_errors

    # The operator comes from the tasks page through its link, already logged in (same tab).
    errors: list[str] = []
    page = open_workers_page(browser, pstack, errors)
    page.goto(f"http://127.0.0.1:{pstack.port}/dashboard/")
    page.fill("#token", OPERATOR_TOKEN)
    page.click("#login-button")
    expect(page.locator("#who")).to_contain_text("operator")
    shots(page, "tasks-page")
    page.click('a[href="workers.html"]')
    expect(page).to_have_url(re.compile(r"/dashboard/workers\.html$"))
    expect(page.locator("#login")).to_be_hidden()
    row = page.locator(f'#worker-rows tr[data-name="{name}"]')
    expect(row.locator("td.concurrency")).to_have_text("2")
    expect(page.locator(f'#queue-rows tr[data-queue="{PARKED}"] td.depth')).to_have_text("2")
    expect(page.locator(f'#queue-rows tr[data-queue="{stack_queue}"] td.consumers')).to_have_text(name)
    shots(page, "operator")

    # Grow the pool by one: the worker's reply, then its concurrency.
    row.locator("button.grow").click()
    expect(page.locator("#toast")).to_contain_text("pool will grow")
    expect(row.locator("td.concurrency")).to_have_text("3", timeout=20_000)

    # Add a consumer for a new queue, then cancel it from its chip.
    extra = f"extra-{pstack.database}"
    page.select_option("#consumer-worker", name)
    page.fill("#consumer-queue", extra)
    page.click("#consumer-add")
    expect(page.locator("#toast")).to_contain_text(f"add consumer {extra}")
    chip = row.locator(f'td.queues .chip[data-queue="{extra}"]')
    expect(chip).to_be_visible(timeout=20_000)
    expect(page.locator(f'#queue-rows tr[data-queue="{extra}"] td.consumers')).to_have_text(name)
    shots(page, "consumer-added")
    chip.locator("button.cancel-queue").click()
    expect(page.locator("#toast")).to_contain_text(f"no longer consuming from {extra}")
    expect(chip).to_have_count(0, timeout=20_000)

    # Shut it down (the confirmation is accepted): the process exits and the row goes offline.
    row.locator("button.shutdown").click()
    expect(page.locator("#toast")).to_contain_text("shutdown requested")
    proc = pstack.procs["worker0"]
    wait_for(lambda: proc.poll() is not None, timeout=30, what="worker exit")
    expect(row.locator("td.state")).to_have_text("offline", timeout=30_000)
    expect(row.locator("button.grow")).to_be_disabled()
    expect(page.locator("#workers-summary")).to_have_text("0 of 1 online")
    shots(page, "shut-down")
    page.context.close()
    assert errors == [], errors
    print(f"screenshots: {shots.dir}")
