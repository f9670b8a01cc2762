"""Pipelines of the spec's task types, one function per type value: ``(data, ctx) -> summary``.

A type without a function here fails loudly (see :mod:`workers.tasks`).  The
recon work itself lives in :mod:`workers.recon`; this module adapts a task's
context (progress events, revoke checks, scope policy, config) to it and
records the per-collection statistic on the task document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane.scope import ScopePolicy
from workers.base import TaskContext
from workers.recon.pipeline import ReconContext, run_domain_task, run_ip_task


def system_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """Name servers of the machine, used when ``recon.resolvers`` is empty."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [
        parts[1] for parts in (line.split() for line in lines) if len(parts) >= 2 and parts[0] == "nameserver"
    ]


def recon_context(ctx: TaskContext) -> ReconContext:
    """The recon library's context for this task: results tagged with the task's id."""
    recon = ctx.config.recon
    policy = ScopePolicy.from_config(ctx.config)
    return ReconContext(
        task_id=ctx.task_id,
        db=ctx.store.db,
        resolvers=list(recon.resolvers) or system_resolvers(),
        progress=lambda stage, done, total: ctx.progress(stage, done, total),
        should_stop=ctx.should_stop,
        scope_check=policy.check,
        max_cidr_addresses=ctx.config.limits.max_cidr_addresses,
        dns_timeout=recon.dns_timeout,
        connect_timeout=recon.connect_timeout,
        concurrency=recon.concurrency,
        http_timeout=recon.http_timeout,
    )


def domain_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Subdomain discovery, resolution, port scan, sites, certificates, file leaks for domains."""
    stats = run_domain_task(
        list(data.get("targets") or []), dict(data.get("options") or {}), recon_context(ctx)
    )
    return ctx.finish(stats)


def ip_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Port scan, sites, certificates, file leaks for IPs, CIDRs and ranges."""
    stats = run_ip_task(list(data.get("targets") or []), dict(data.get("options") or {}), recon_context(ctx))
    return ctx.finish(stats)


# Pipelines of the other task types; they use recon_context() above, so they are bound last.
from workers.fofa_pipeline import domain_task_sync_task, fofa_task  # noqa: E402
from workers.recon2_pipeline import (  # noqa: E402
    add_asset_site_task,
    asset_site_update,
    asset_wih_update,
    domain_exec_task,
    github_task_monitor,
    github_task_task,
    ip_exec_task,
    run_risk_cruising,
)

__all__ = [
    "add_asset_site_task",
    "asset_site_update",
    "asset_wih_update",
    "domain_exec_task",
    "domain_task",
    "domain_task_sync_task",
    "fofa_task",
    "github_task_monitor",
    "github_task_task",
    "ip_exec_task",
    "ip_task",
    "recon_context",
    "run_risk_cruising",
    "system_resolvers",
]
