"""``run_risk_cruising``: run nuclei-format templates over the targets and store findings in ``vuln``.

Templates come from the bundled folder ``workers/data/pocs`` and ``recon.poc_dirs`` (for example
a checkout of the public nuclei-templates repository); options select them by id, tag and
severity and bound the run (see :mod:`workers.recon.nuclei.scan`). ``vuln`` holds one document
per (task_id, target, template id) with the evidence (see
:meth:`workers.recon.nuclei.findings.Finding.to_doc`). Templates that cannot run here are listed
in the statistic's ``skipped_templates``, by id and reason; they never fail the task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.context import ReconContext
from workers.recon.nuclei import TemplateScan
from workers.recon.run import Run
from workers.tasks.shared import recon_context

VULN_COLLECTION = "vuln"


def run_pocs(
    targets: list[str],
    options: dict[str, Any],
    ctx: ReconContext,
    poc_dirs: Iterable[str] = (),
    config: Any = None,
) -> dict[str, Any]:
    """Run the selected templates over ``targets``, store the findings; returns the statistic."""
    run = Run(ctx)
    scan = TemplateScan(
        targets,
        options,
        ctx,
        poc_dirs=poc_dirs,
        config=config,
        on_progress=lambda done, total: run.progress.report("poc", done, total),
    )
    store = ResultWriter(ctx.db, ctx.task_id, [VULN_COLLECTION])
    store.ensure_indexes()

    async def body() -> None:
        await run.step(scan.run())

    complete = run.execute(body)
    store.insert(VULN_COLLECTION, scan.docs())
    store.finish(not complete)
    return {"vuln": store.count(VULN_COLLECTION), **scan.stats(), "partial": not complete}


def run_risk_cruising(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run the bundled and configured templates selected by ``data.options`` over ``data.targets``."""
    options = dict(data.get("options") or {})
    recon = ctx.config.recon
    stats = run_pocs(list(data.get("targets") or []), options, recon_context(ctx), recon.poc_dirs, recon)
    return ctx.finish(stats)
