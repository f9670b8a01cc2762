"""``github_task_task`` and ``github_task_monitor``: code search runs, their storage, and monitor state.

``github`` holds one document per (task_id, hash): repository, path, URLs, sha, matched lines,
hash, the keyword, and for monitors the ``monitor_id`` (and the ``scope_id`` of a monitor run
for an asset scope). ``github_seen`` holds, per (monitor_id, hash), the results a monitor has
already reported, so later runs report only what is new; a monitor's identity includes its
scope, so two scopes watching one keyword each get every result once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.assets import task_scope_id
from workers.recon.context import ReconContext
from workers.recon.control import run_pool
from workers.recon.github import CodeResult, GithubClient, GithubError, result_of
from workers.recon.run import Run
from workers.recon.webhook import capped, post_webhook
from workers.tasks.shared import recon_context, webhook_url

GITHUB_COLLECTION = "github"
SEEN_COLLECTION = "github_seen"
CONTENT_CONCURRENCY = 4
DEFAULT_MAX_RESULTS = 200


def monitor_identity(keyword: str, scope_id: str = "", monitor_id: str = "") -> str:
    """A monitor's identity: its ``monitor_id`` when given, else derived from keyword and scope."""
    if monitor_id:
        return monitor_id
    return "kw-" + hashlib.sha256(f"{keyword}\x00{scope_id}".encode()).hexdigest()[:32]


def search(
    keyword: str, max_results: int, client: GithubClient, ctx: ReconContext
) -> tuple[list[CodeResult], bool, GithubError | None]:
    """Run the search and fetch the matched files; returns (results, complete, error)."""
    run = Run(ctx)
    items: list[dict[str, Any]] = []
    contents: dict[int, str | None] = {}
    error: GithubError | None = None

    async def body() -> None:
        nonlocal error
        searched = run.reporter("github_search", max_results)

        def on_page(page: list[dict[str, Any]], total: int) -> None:
            items.extend(page)
            run.progress.report("github_search", len(items), min(max_results, total) or len(items))

        try:
            if not await run.step(client.search_code(keyword, max_results, on_page)):
                return
            searched(len(items))
            report = run.reporter("github_content", len(items))

            async def fetch(index: int) -> None:
                contents[index] = await client.file_text(items[index])
                report(len(contents))

            await run.step(run_pool(range(len(items)), fetch, CONTENT_CONCURRENCY))
        except GithubError as exc:
            error = exc

    complete = run.execute(body) and error is None
    results = [result_of(item, contents.get(i), keyword) for i, item in enumerate(items)]
    return results, complete, error


def run_search(
    keyword: str,
    options: dict[str, Any],
    ctx: ReconContext,
    client: GithubClient,
    monitor_id: str = "",
    scope_id: str = "",
) -> dict[str, Any]:
    """One search (a monitor when ``monitor_id`` is set); stores results and raises on a GitHub error.

    With ``scope_id`` the stored results (and a monitor's seen records) are tagged with it.
    """
    max_results = int(options.get("max_results") or DEFAULT_MAX_RESULTS)
    results, complete, error = search(keyword, max_results, client, ctx)
    unique = {r.hash: r for r in results}
    store = ResultWriter(ctx.db, ctx.task_id, [GITHUB_COLLECTION])
    store.ensure_indexes()
    seen = ResultWriter(ctx.db, ctx.task_id, [SEEN_COLLECTION])
    new_hashes = list(unique)
    if monitor_id:
        seen.ensure_indexes()
        known = {
            d["hash"]
            for d in ctx.db[SEEN_COLLECTION].find(
                {"monitor_id": monitor_id, "hash": {"$in": new_hashes}}, {"hash": 1}
            )
        }
        new_hashes = [h for h in new_hashes if h not in known]
    tags = {"scope_id": scope_id} if scope_id else {}
    extra = {"keyword": keyword, **({"monitor_id": monitor_id} if monitor_id else {}), **tags}
    store.insert(GITHUB_COLLECTION, ({**unique[h].to_doc(), **extra} for h in new_hashes))
    if monitor_id:
        # Never finished: what a monitor has seen stays marked partial, as it always was.
        seen.insert(
            SEEN_COLLECTION,
            (
                {"monitor_id": monitor_id, "hash": h, "repo": unique[h].repo, "path": unique[h].path, **tags}
                for h in new_hashes
            ),
        )
    store.finish(not complete)
    if error is not None:
        raise error
    return {
        "github": len(new_hashes),
        "github_found": len(unique),
        "requests": client.requests,
        **({"monitor_id": monitor_id, "already_seen": len(unique) - len(new_hashes)} if monitor_id else {}),
        "partial": not complete,
    }


def _github_client(ctx: TaskContext) -> GithubClient:

    recon = ctx.config.recon
    return GithubClient(recon.github_url, recon.github_token, timeout=max(recon.http_timeout, 10.0))


def github_task_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """GitHub code search for ``data.keyword``; results (with matched lines) go to ``github``."""

    options = dict(data.get("options") or {})
    return ctx.finish(run_search(str(data["keyword"]), options, recon_context(ctx), _github_client(ctx)))


def github_task_monitor(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """The same search, storing and reporting only results earlier runs of this monitor did not see.

    ``scope_id`` (top level or in ``options``) names the asset scope the monitor watches for: it is
    part of the monitor's identity and tags every result (and the webhook's payload).
    """

    keyword = str(data["keyword"])
    scope_id = task_scope_id(data)
    monitor_id = monitor_identity(keyword, scope_id, str(data.get("monitor_id") or ""))
    recon = recon_context(ctx)
    options = dict(data.get("options") or {})
    stats = run_search(keyword, options, recon, _github_client(ctx), monitor_id, scope_id)
    webhook = webhook_url(data, ctx)
    if webhook and stats["github"]:
        new = list(ctx.store.db["github"].find({"task_id": ctx.task_id}, {"_id": 0}))
        payload = {
            "task_id": ctx.task_id,
            "task_type": "github_task_monitor",
            "keyword": keyword,
            **({"scope_id": scope_id} if scope_id else {}),
            "new": capped(new),
        }
        stats["webhook"] = post_webhook(webhook, payload, recon)
    return ctx.finish(stats)
