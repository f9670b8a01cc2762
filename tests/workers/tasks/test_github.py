"""GitHub code search and monitor tasks against a local imitation of GitHub's REST API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.core.validate import validate_task_data
from tests.lab.github import TOKEN, FakeGithub
from tests.lab.sites import Route, RouteSite
from tests.lab.support import Worker
from workers.context import TaskRevoked
from workers.recon.github import GithubError, GithubRateLimited, matched_lines, parse_links
from workers.tasks.github import github_task_monitor, github_task_task

KEYWORD = "labsecret"


@pytest.fixture
def github(worker: Worker) -> Iterator[FakeGithub]:
    fake = FakeGithub().start()
    worker.config.recon.github_url = fake.api_url
    worker.config.recon.github_token = TOKEN
    yield fake
    fake.stop()


def _plant(fake: FakeGithub, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        fake.state.add(
            f"org{i % 7}/repo{i}", f"config/settings_{i}.py", f"DEBUG = False\nLABSECRET_{i} = 'x{i}'\n"
        )
    fake.state.add("org/unrelated", "README.md", "nothing to see")


def _search(
    worker: Worker, task_type: str = "github_task_task", **options: Any
) -> tuple[dict[str, Any], Any]:
    data = validate_task_data(task_type, {"keyword": KEYWORD, "options": options})
    ctx = worker.start(task_type, data)
    task = github_task_task if task_type == "github_task_task" else github_task_monitor
    return task(data, ctx), ctx


def test_search_pages_fetches_contents_and_stores_results(worker: Worker, github: FakeGithub) -> None:
    _plant(github, 230)
    stats, ctx = _search(worker, max_results=210)
    docs = list(worker.store.db["github"].find({"task_id": ctx.task_id}, {"_id": 0}))
    assert stats["github"] == len(docs) == 210 and not stats["partial"]
    assert github.state.search_calls == 3
    assert all("per_page=100" in p for p in github.state.requests if "/search/code" in p)
    doc = next(d for d in docs if d["path"] == "config/settings_5.py")
    assert doc["repo"] == "org5/repo5" and doc["url"].startswith("https://github.lab/org5/repo5/")
    assert doc["matched_lines"] == [{"line": 2, "text": "LABSECRET_5 = 'x5'"}]
    assert len(doc["hash"]) == 64 and doc["keyword"] == KEYWORD
    assert worker.progress(ctx, "github_content")[-1] == (210, 210)


def test_short_rate_limits_are_waited_out(worker: Worker, github: FakeGithub) -> None:
    _plant(github, 120)
    github.state.remaining = 1
    github.state.reset_in = 1
    started = time.monotonic()
    stats, _ = _search(worker, max_results=120)
    assert stats["github"] == 120 and time.monotonic() - started >= 1.0
    github.state.retry_after = 1
    stats, _ = _search(worker, max_results=5)
    assert stats["github"] == 5


def test_long_rate_limit_fails_with_the_reason(worker: Worker, github: FakeGithub) -> None:
    _plant(github, 3)
    github.state.remaining = 0
    github.state.reset_in = 3600
    with pytest.raises(GithubRateLimited, match="resets in"):
        _search(worker)


def test_missing_or_rejected_token_fails_clearly(worker: Worker, github: FakeGithub) -> None:
    worker.config.recon.github_token = ""
    with pytest.raises(GithubError, match="github_token is not set"):
        _search(worker)
    worker.config.recon.github_token = "wrong"
    with pytest.raises(GithubError, match="401"):
        _search(worker)


def test_monitor_reports_only_unseen_results_and_posts_them(worker: Worker, github: FakeGithub) -> None:
    hook = RouteSite("127.88.2.2", {"/hook": Route(b"ok", 200, methods=("POST",))}).start()
    try:
        _plant(github, 3)
        data = validate_task_data(
            "github_task_monitor", {"keyword": KEYWORD, "webhook": f"{hook.url}/hook", "options": {}}
        )
        first = github_task_monitor(dict(data), worker.start("github_task_monitor", dict(data)))
        assert first["github"] == 3 and first["already_seen"] == 0 and first["webhook"] == "sent"
        _plant(github, 2, start=100)
        ctx = worker.start("github_task_monitor", data)
        second = github_task_monitor(data, ctx)
        assert second["github"] == 2 and second["already_seen"] == 3
        stored = {d["repo"] for d in worker.store.db["github"].find({"task_id": ctx.task_id})}
        assert stored == {"org2/repo100", "org3/repo101"}
        payload = json.loads(hook.bodies[-1])
        assert {item["repo"] for item in payload["new"]} == stored
        third = github_task_monitor(data, worker.start("github_task_monitor", data))
        assert third["github"] == 0 and "webhook" not in third
    finally:
        hook.stop()


def test_links_and_matched_lines() -> None:
    links = parse_links('<https://x/s?page=2>; rel="next", <https://x/s?page=9>; rel="last"')
    assert links == {"next": "https://x/s?page=2", "last": "https://x/s?page=9"}
    assert matched_lines("a\nthe Token here\nno", "token") == [{"line": 2, "text": "the Token here"}]


def test_stop_interrupts_a_rate_limit_wait(worker: Worker, github: FakeGithub) -> None:
    _plant(github, 3)
    github.state.remaining = 0
    github.state.reset_in = 30
    data = validate_task_data("github_task_task", {"keyword": KEYWORD, "options": {}})
    ctx = worker.start("github_task_task", data)
    timer = threading.Timer(0.5, worker.revoke, args=(ctx,))
    timer.start()
    started = time.monotonic()
    with pytest.raises(TaskRevoked):
        github_task_task(data, ctx)
    assert time.monotonic() - started < 2.0


def test_monitor_posts_to_the_configured_webhook_when_the_task_names_none(
    worker: Worker, github: FakeGithub
) -> None:
    hook = RouteSite("127.88.2.3", {"/hook": Route(b"ok", 200, methods=("POST",))}).start()
    try:
        worker.config.recon.webhook_url = f"{hook.url}/hook"
        _plant(github, 2, start=200)
        data = validate_task_data("github_task_monitor", {"keyword": KEYWORD, "options": {}})
        stats = github_task_monitor(dict(data), worker.start("github_task_monitor", dict(data)))
        assert stats["webhook"] == "sent" and len(hook.bodies) == 1
        assert {item["repo"] for item in json.loads(hook.bodies[-1])["new"]} == {
            f"org{i % 7}/repo{i}" for i in (200, 201)
        }
    finally:
        worker.config.recon.webhook_url = ""
        hook.stop()
