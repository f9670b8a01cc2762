"""``run_risk_cruising``: run the selected PoCs over the targets and store findings in ``vuln``.

``vuln`` holds one document per (task_id, target, poc_id): the PoC's id, name, severity and
references, the request sent, the response's status, headers and body excerpt, and the evidence
of each matcher that matched (see :meth:`workers.recon.poc.engine.Finding.to_doc`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.context import ReconContext
from workers.recon.poc import PocRunner, load_pocs, select_pocs
from workers.recon.run import HostLocator, Run
from workers.tasks.shared import recon_context

VULN_COLLECTION = "vuln"
MAX_CONCURRENCY = 100


def run_pocs(
    targets: list[str], options: dict[str, Any], ctx: ReconContext, poc_dirs: Iterable[str] = ()
) -> dict[str, Any]:
    """Run the PoCs named by ``options.poc`` (all when absent) over ``targets``; returns the stats.

    ``options.concurrency`` and ``options.timeout`` override the context's concurrency and HTTP timeout.
    """
    pocs = select_pocs(load_pocs(poc_dirs), options.get("poc"))
    run = Run(ctx)
    runner = PocRunner(
        HostLocator(ctx),
        timeout=float(options.get("timeout") or ctx.http_timeout),
        concurrency=min(int(options.get("concurrency") or ctx.concurrency), MAX_CONCURRENCY),
        on_progress=lambda done, total: run.progress.report("poc", done, total),
    )
    store = ResultWriter(ctx.db, ctx.task_id, [VULN_COLLECTION])
    store.ensure_indexes()

    async def body() -> None:
        await run.step(runner.run(targets, pocs))

    complete = run.execute(body)
    store.insert(VULN_COLLECTION, (f.to_doc() for f in runner.findings))
    store.finish(not complete)
    return {
        "vuln": store.count(VULN_COLLECTION),
        "pocs": len(pocs),
        "targets": len(targets),
        "requests": runner.requests,
        "skipped_targets": runner.skipped[:100],
        "partial": not complete,
    }


def run_risk_cruising(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run the bundled and configured PoCs (``options.poc`` selects by id) over ``data.targets``."""

    options = dict(data.get("options") or {})
    stats = run_pocs(list(data.get("targets") or []), options, recon_context(ctx), ctx.config.recon.poc_dirs)
    return ctx.finish(stats)
