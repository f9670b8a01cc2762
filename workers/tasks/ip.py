"""``ip_task``: port scan, sites, certificates, file leaks for IPs, CIDRs and ranges."""

from __future__ import annotations

from typing import Any

from workers.context import TaskContext
from workers.recon.scan import run_ip_task
from workers.tasks.shared import run_recon_task


def ip_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Port scan, sites, certificates, file leaks for IPs, CIDRs and ranges.

    With ``options.scope_id`` the task's ip and site results are merged into that asset scope when
    it ends (see :func:`workers.tasks.shared.run_recon_task`).
    """
    return run_recon_task(data, ctx, run_ip_task)
