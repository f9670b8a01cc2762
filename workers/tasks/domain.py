"""``domain_task``: subdomain discovery, resolution, port scan, sites, certificates, file leaks."""

from __future__ import annotations

from typing import Any

from workers.context import TaskContext
from workers.recon.assets import sync_into_scope, task_scope_id
from workers.recon.scan import run_domain_task
from workers.recon.screenshot import CaptureSettings
from workers.tasks.shared import recon_context


def domain_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Subdomain discovery, resolution, port scan, sites, certificates, file leaks for domains.

    With ``options.scope_id`` the task's domain, ip and site results are merged into that asset
    scope when it ends, stopped or not (:func:`workers.recon.assets.sync_into_scope`).
    """
    stats = run_domain_task(
        list(data.get("targets") or []),
        dict(data.get("options") or {}),
        recon_context(ctx),
        CaptureSettings.from_config(ctx.config.recon),
    )
    stats.update(sync_into_scope(ctx.store.db, ctx.task_id, task_scope_id(data)))
    return ctx.finish(stats)
