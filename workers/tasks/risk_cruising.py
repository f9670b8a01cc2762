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

import time
from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.context import ReconContext
from workers.recon.nuclei import TemplateScan
from workers.recon.nuclei.findings import Finding, VulnGroups, VulnKey
from workers.recon.run import Run
from workers.tasks.livestats import LiveStatistic
from workers.tasks.shared import recon_context

VULN_COLLECTION = "vuln"
STREAM_INTERVAL = 1.0
"""Seconds between two writes of the findings made while the scan runs."""


class VulnStream:
    """Writes a scan's ``vuln`` documents as findings come (:class:`VulnGroups`): a new
    (service, template, evidence) at the next call, further host names and targets of one already
    written as an update of its lists, at most every ``interval`` seconds (or when ``force``d).
    """

    def __init__(self, store: ResultWriter, interval: float = STREAM_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self.groups = VulnGroups()
        self.seen = 0
        self.written: set[VulnKey] = set()
        self.fresh: set[VulnKey] = set()
        self.grown: set[VulnKey] = set()
        self._last = 0.0

    def write(self, findings: list[Finding], force: bool = False) -> None:
        """Group the findings not seen yet and store what is due."""
        for finding in findings[self.seen :]:
            key, changed = self.groups.add(finding)
            if changed and key not in self.fresh:
                (self.grown if key in self.written else self.fresh).add(key)
        self.seen = len(findings)
        now = time.monotonic()
        if not (self.fresh or force or (self.grown and now - self._last >= self.interval)):
            return
        self._last = now
        docs = self.groups.docs
        self.store.insert(VULN_COLLECTION, (docs[k] for k in self.fresh))
        updates = [
            UpdateOne(
                {"task_id": self.store.task_id, "service": k[0], "poc_id": k[1], "evidence": k[2]},
                {"$set": {"hostnames": docs[k]["hostnames"], "targets": docs[k]["targets"]}},
            )
            for k in self.grown
        ]
        if updates:
            self.store.db[VULN_COLLECTION].bulk_write(updates, ordered=False)
        self.written.update(self.fresh)
        self.fresh, self.grown = set(), set()


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
