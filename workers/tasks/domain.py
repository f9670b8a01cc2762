"""``domain_task``: subdomain discovery, resolution, port scan, sites, certificates, file leaks."""

from __future__ import annotations

from typing import Any

from workers.context import TaskContext
from workers.recon.scan import run_domain_task
from workers.tasks.shared import run_recon_task


def domain_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Subdomain discovery, resolution, port scan, sites, certificates, file leaks for domains.

    With ``options.scope_id`` the task's domain, ip and site results are merged into that asset
    scope when it ends (see :func:`workers.tasks.shared.run_recon_task`).
    """
    return run_recon_task(data, ctx, run_domain_task)
