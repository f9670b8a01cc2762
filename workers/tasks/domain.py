"""``domain_task``: subdomain discovery, resolution, port scan, sites, certificates, file leaks."""

from __future__ import annotations

from typing import Any

from workers.context import TaskContext
from workers.recon.scan import run_domain_task
from workers.recon.screenshot import CaptureSettings
from workers.tasks.shared import recon_context


def domain_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Subdomain discovery, resolution, port scan, sites, certificates, file leaks for domains."""
    stats = run_domain_task(
        list(data.get("targets") or []),
        dict(data.get("options") or {}),
        recon_context(ctx),
        CaptureSettings.from_config(ctx.config.recon),
    )
    return ctx.finish(stats)
