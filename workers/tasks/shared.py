"""What every task module shares: a task's recon context, its scope id, where a monitor posts.

The recon library (:mod:`workers.recon`) knows nothing of Celery; these helpers adapt a task's
:class:`~workers.context.TaskContext` (progress events, revoke checks, scope policy, config) to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.core.scope import ScopePolicy
from controlplane.store.results import RECON_KINDS, ResultWriter
from workers.context import TaskContext
from workers.recon.assets import sync_into_scope, task_scope_id
from workers.recon.context import ReconContext
from workers.recon.screenshot import CaptureSettings
from workers.recon.state import OPTION_KINDS
from workers.tasks.livestats import LiveStatistic

ReconPipeline = Callable[[list[str], dict[str, Any], ReconContext, CaptureSettings], dict[str, Any]]


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
        # The recon library rate-limits and repeats its reports itself (see ReconContext).
        progress=lambda stage, done, total: ctx.progress(stage, done, total, force=True),
        should_stop=ctx.should_stop,
        scope_check=policy.check,
        max_cidr_addresses=ctx.config.limits.max_cidr_addresses,
        dns_timeout=recon.dns_timeout,
        connect_timeout=recon.connect_timeout,
        concurrency=recon.concurrency,
        http_timeout=recon.http_timeout,
        config=recon,
    )


def recon_results(ctx: ReconContext) -> ResultWriter:
    """A writer of the task's results in the recon pipeline's collections (``site``, ...), indexed."""
    store = ResultWriter(ctx.db, ctx.task_id, RECON_KINDS)
    store.ensure_indexes()
    return store


def required_scope_id(data: dict[str, Any]) -> str:
    """The task's ``scope_id`` (top level or in ``options``); a ValueError when missing."""
    found = str(data.get("scope_id") or (data.get("options") or {}).get("scope_id") or "")
    if not found:
        raise ValueError("scope_id is required")
    return found


def webhook_url(data: dict[str, Any], ctx: TaskContext) -> str:
    """Where a monitor posts its new findings: the task's ``webhook``, else ``recon.webhook_url``."""
    return str(data.get("webhook") or ctx.config.recon.webhook_url or "")


def run_recon_task(data: dict[str, Any], ctx: TaskContext, pipeline: ReconPipeline) -> dict[str, Any]:
    """Run a recon ``pipeline`` (domain or IP) over the task's targets and options.

    The statistic is kept current while it runs (:class:`~workers.tasks.livestats.LiveStatistic`);
    with ``options.scope_id`` the results are merged into that asset scope when it ends, stopped
    or not (:func:`workers.recon.assets.sync_into_scope`).
    """
    capture = CaptureSettings.from_config(ctx.config.recon)
    targets, options = list(data.get("targets") or []), dict(data.get("options") or {})
    with LiveStatistic(ctx, RECON_KINDS, OPTION_KINDS):
        stats = pipeline(targets, options, recon_context(ctx), capture)
    stats.update(sync_into_scope(ctx.store.db, ctx.task_id, task_scope_id(data)))
    return ctx.finish(stats)
