"""``run_risk_cruising``: run nuclei-format templates over the targets and store findings in ``vuln``.

Templates come from the bundled folder ``workers/data/pocs`` and ``recon.poc_dirs`` (for example
a checkout of the public nuclei-templates repository); options select them by id, tag and
severity and bound the run (see :mod:`workers.recon.nuclei.scan`). ``vuln`` holds one document
per (task_id, service, template id, evidence), listing the host names and targets it was found
under (see :func:`workers.recon.nuclei.findings.vuln_docs`). Findings are written while the scan
runs (:class:`VulnStream`), so a task stopped or killed part-way keeps them, marked partial.
Templates that cannot run here are listed in the statistic's ``skipped_templates``, by id and
reason; they never fail the task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.context import ReconContext
from workers.recon.nuclei import TemplateScan
from workers.recon.nuclei.findings import Finding, VulnGroups
from workers.recon.resultstream import GroupedWriter
from workers.recon.run import Run
from workers.tasks.livestats import LiveStatistic
from workers.tasks.shared import recon_context

VULN_COLLECTION = "vuln"
STREAM_INTERVAL = 1.0
"""Seconds between two writes of the findings made while the scan runs."""


class VulnStream:
    """Writes a scan's ``vuln`` documents as findings come (grouped by :class:`VulnGroups`): a new
    (service, template, evidence) at the next call, more host names and targets of one already
    written at most every ``interval`` seconds (:class:`~workers.recon.resultstream.GroupedWriter`).
    """

    def __init__(self, store: ResultWriter, interval: float = STREAM_INTERVAL) -> None:
        self.groups = VulnGroups()
        self.seen = 0
        self.writer = GroupedWriter(
            store, VULN_COLLECTION, ("service", "poc_id", "evidence"), ("hostnames", "targets"), interval
        )

    def write(self, findings: list[Finding], force: bool = False) -> None:
        """Group the findings not seen yet and store what is due (everything when ``force``d)."""
        for finding in findings[self.seen :]:
            key, changed = self.groups.add(finding)
            if changed:
                self.writer.put(self.groups.docs[key])
        self.seen = len(findings)
        self.writer.flush(force)


def run_pocs(
    targets: list[str],
    options: dict[str, Any],
    ctx: ReconContext,
    poc_dirs: Iterable[str] = (),
    config: Any = None,
) -> dict[str, Any]:
    """Run the selected templates over ``targets``, store the findings; returns the statistic."""
    run = Run(ctx)
    store = ResultWriter(ctx.db, ctx.task_id, [VULN_COLLECTION])
    store.ensure_indexes()
    stream = VulnStream(store)

    def progress(done: int, total: int) -> None:
        run.progress.report("poc", done, total)
        stream.write(scan.findings)

    scan = TemplateScan(targets, options, ctx, poc_dirs=poc_dirs, config=config, on_progress=progress)

    async def body() -> None:
        await run.step(scan.run())

    complete = run.execute(body)
    stream.write(scan.findings, force=True)
    store.finish(not complete)
    return {"vuln": store.count(VULN_COLLECTION), **scan.stats(), "partial": not complete}


def run_risk_cruising(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run the bundled and configured templates selected by ``data.options`` over ``data.targets``.

    The statistic is kept current while it runs (:class:`~workers.tasks.livestats.LiveStatistic`).
    """
    options = dict(data.get("options") or {})
    recon = ctx.config.recon
    targets = list(data.get("targets") or [])
    with LiveStatistic(ctx, [VULN_COLLECTION]):
        stats = run_pocs(targets, options, recon_context(ctx), recon.poc_dirs, recon)
    return ctx.finish(stats)
