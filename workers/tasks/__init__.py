"""One module per task type of the spec: each holds the type's pipeline, ``(data, ctx) -> statistic``.

:data:`PIPELINES` maps a task type's value to its function; :mod:`workers.register` binds them
to Celery tasks.  The recon work itself is in :mod:`workers.recon`; a task module adapts the
task's context to it (see :mod:`workers.tasks.shared`) and records the statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.context import TaskContext
from workers.tasks import asset_site, asset_wih, domain, fofa, github, ip, monitor, risk_cruising

Pipeline = Callable[[dict[str, Any], TaskContext], Any]

PIPELINES: dict[str, Pipeline] = {
    "domain_task": domain.domain_task,
    "ip_task": ip.ip_task,
    "fofa_task": fofa.fofa_task,
    "domain_task_sync_task": fofa.domain_task_sync_task,
    "run_risk_cruising": risk_cruising.run_risk_cruising,
    "add_asset_site_task": asset_site.add_asset_site_task,
    "asset_site_update": asset_site.asset_site_update,
    "asset_wih_update": asset_wih.asset_wih_update,
    "github_task_task": github.github_task_task,
    "github_task_monitor": github.github_task_monitor,
    "domain_exec_task": monitor.domain_exec_task,
    "ip_exec_task": monitor.ip_exec_task,
}
