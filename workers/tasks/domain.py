"""``domain_task``: subdomain discovery, resolution, port scan, sites, certificates, file leaks."""

from __future__ import annotations

from typing import Any

from controlplane.store.results import RECON_KINDS
from workers.context import TaskContext
from workers.recon.assets import sync_into_scope, task_scope_id
from workers.recon.scan import run_domain_task
from workers.recon.screenshot import CaptureSettings
from workers.recon.state import OPTION_KINDS
from workers.tasks.livestats import LiveStatistic
from workers.tasks.shared import recon_context


def domain_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Subdomain discovery, resolution, port scan, sites, certificates, file leaks for domains.

    With ``options.scope_id`` the task's domain, ip and site results are merged into that asset
    scope when it ends, stopped or not (:func:`workers.recon.assets.sync_into_scope`). The
    statistic is kept current while it runs (:class:`~workers.tasks.livestats.LiveStatistic`).
    """
    capture = CaptureSettings.from_config(ctx.config.recon)
    targets, options = list(data.get("targets") or []), dict(data.get("options") or {})
    with LiveStatistic(ctx, RECON_KINDS, OPTION_KINDS):
        stats = run_domain_task(targets, options, recon_context(ctx), capture)
    stats.update(sync_into_scope(ctx.store.db, ctx.task_id, task_scope_id(data)))
    return ctx.finish(stats)
