"""Pipelines of the asset, PoC, Web Info Hunter, GitHub and monitor task types: ``(data, ctx) -> summary``.

Each function adapts the task's context (progress, revoke checks, scope policy, config) to the
recon2 library (:mod:`workers.recon2`, :mod:`workers.poc`), records the run's statistic on the
task document, and raises :class:`workers.base.TaskRevoked` when the task was stopped (its
results so far stay stored, marked ``partial``).

Collections written (every document tagged with ``task_id``):

- ``vuln`` — PoC findings (``run_risk_cruising``);
- ``site`` — fetched sites (``add_asset_site_task``, ``asset_site_update``, ``asset_wih_update``);
- ``asset_site`` — the scope's site assets (added to / updated);
- ``asset_site_change`` — what changed on a scope's sites (``asset_site_update``);
- ``wih`` — Web Info Hunter records, unique per (scope_id, hash) (``asset_wih_update``);
- ``github``, ``github_seen`` — code search results and a monitor's seen hashes;
- ``monitor_new`` — what a monitoring pass found new in a scope (``domain_exec_task``, ``ip_exec_task``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.base import TaskContext

if TYPE_CHECKING:
    from workers.recon.pipeline import ReconContext
    from workers.recon2.github import GithubClient

__all__ = [
    "add_asset_site_task",
    "asset_site_update",
    "asset_wih_update",
    "domain_exec_task",
    "github_task_monitor",
    "github_task_task",
    "ip_exec_task",
    "run_risk_cruising",
]


def _recon(ctx: TaskContext) -> ReconContext:
    from workers.pipelines import recon_context

    return recon_context(ctx)


def _scope_id(data: dict[str, Any]) -> str:
    scope_id = str(data.get("scope_id") or (data.get("options") or {}).get("scope_id") or "")
    if not scope_id:
        raise ValueError("scope_id is required")
    return scope_id


def run_risk_cruising(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run the bundled and configured PoCs (``options.poc`` selects by id) over ``data.targets``."""
    from workers.recon2.risk import run_pocs

    options = dict(data.get("options") or {})
    stats = run_pocs(list(data.get("targets") or []), options, _recon(ctx), ctx.config.recon.poc_dirs)
    return ctx.finish(stats)


def add_asset_site_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fetch the target sites and add the new ones to the scope's site assets."""
    from workers.recon2.sitetasks import add_site_targets

    stats = add_site_targets(list(data.get("targets") or []), _scope_id(data), _recon(ctx))
    return ctx.finish(stats)


def asset_site_update(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Re-fetch every site of the scope; record changes in ``asset_site_change`` and update the assets."""
    from workers.recon2.sitetasks import update_scope_sites

    return ctx.finish(update_scope_sites(_scope_id(data), _recon(ctx)))


def asset_wih_update(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Web Info Hunter over the scope's sites and their scripts; new in-scope hosts become site assets."""
    from workers.recon2.wihtask import hunt_scope

    return ctx.finish(hunt_scope(_scope_id(data), _recon(ctx)))


def _github_client(ctx: TaskContext) -> GithubClient:
    from workers.recon2.github import GithubClient

    recon = ctx.config.recon
    return GithubClient(recon.github_url, recon.github_token, timeout=max(recon.http_timeout, 10.0))


def github_task_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """GitHub code search for ``data.keyword``; results (with matched lines) go to ``github``."""
    from workers.recon2.githubtask import run_search

    options = dict(data.get("options") or {})
    return ctx.finish(run_search(str(data["keyword"]), options, _recon(ctx), _github_client(ctx)))


def github_task_monitor(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """The same search, storing and reporting only results earlier runs of this monitor did not see."""
    from workers.recon2.githubtask import monitor_identity, run_search
    from workers.recon2.webhook import capped, post_webhook

    keyword = str(data["keyword"])
    monitor_id = monitor_identity(keyword, str(data.get("scope_id") or ""), str(data.get("monitor_id") or ""))
    recon = _recon(ctx)
    stats = run_search(keyword, dict(data.get("options") or {}), recon, _github_client(ctx), monitor_id)
    webhook = _webhook(data, ctx)
    if webhook and stats["github"]:
        new = list(ctx.store.db["github"].find({"task_id": ctx.task_id}, {"_id": 0}))
        payload = {
            "task_id": ctx.task_id,
            "task_type": "github_task_monitor",
            "keyword": keyword,
            "new": capped(new),
        }
        stats["webhook"] = post_webhook(webhook, payload, recon)
    return ctx.finish(stats)


def _webhook(data: dict[str, Any], ctx: TaskContext) -> str:
    """Where a monitor posts its new findings: the task's ``webhook``, else ``recon.webhook_url``."""
    return str(data.get("webhook") or ctx.config.recon.webhook_url or "")


def _exec_task(kind: str, data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    from workers.recon2.monitor import monitor_pass
    from workers.recon2.webhook import capped, post_webhook

    scope_id = _scope_id(data)
    options = {k: v for k, v in dict(data.get("options") or {}).items() if k != "scope_id"}
    recon = _recon(ctx)
    stats, new = monitor_pass(kind, list(data.get("targets") or []), options, scope_id, recon)
    webhook = _webhook(data, ctx)
    if webhook and new:
        payload = {
            "task_id": ctx.task_id,
            "task_type": ctx.task_type,
            "scope_id": scope_id,
            "new": capped(new),
        }
        stats["webhook"] = post_webhook(webhook, payload, recon)
    return ctx.finish(stats)


def domain_exec_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Monitoring pass over a scope's domains: new subdomains, IPs, ports and sites go to ``monitor_new``."""
    return _exec_task("domain", data, ctx)


def ip_exec_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Monitoring pass over a scope's IPs: new IPs, ports and sites go to ``monitor_new``."""
    return _exec_task("ip", data, ctx)
