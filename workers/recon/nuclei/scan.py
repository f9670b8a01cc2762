"""One template scan from task options: selection, bounds, the run, its statistic and documents.

:class:`TemplateScan` is what ``run_risk_cruising`` runs, and what the domain and IP pipelines
can run too (:func:`run_templates`). Task options (all optional):

- ``poc`` / ``ids``: template ids to run (both kept; the union is used);
- ``tags``: run templates with any of these tags; ``exclude_tags`` (default ``dos``, ``fuzz``);
- ``severity``: run templates of these severities; ``exclude_ids``;
- ``concurrency``: (template, target) pairs in flight; ``timeout``: seconds per request;
- ``host_concurrency``: requests in flight per host; ``max_requests_per_host``: the request
  budget of each host (IP) for the run; ``max_host_errors``: errors after which a host is given up.

The last three default to the config keys ``recon.poc_host_concurrency``,
``recon.poc_max_requests_per_host`` and ``recon.poc_max_host_errors`` when the deployment's
config has them, else to :class:`~workers.recon.nuclei.runner.RunnerOptions`' defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from workers.recon.context import ReconContext
from workers.recon.nuclei.catalog import DEFAULT_EXCLUDE_TAGS, Catalog, Selection, Skipped
from workers.recon.nuclei.findings import Finding, vuln_docs
from workers.recon.nuclei.runner import Locator, RunnerOptions, TemplateRunner
from workers.recon.run import HostLocator

MAX_CONCURRENCY = 100
CONFIG_KEYS = {
    "host_concurrency": ("poc_host_concurrency", RunnerOptions.host_concurrency),
    "max_requests_per_host": ("poc_max_requests_per_host", RunnerOptions.max_requests_per_host),
    "max_host_errors": ("poc_max_host_errors", RunnerOptions.max_host_errors),
}


def _names(value: Any) -> tuple[str, ...]:
    """A list of names, or a comma-separated string of them, trimmed and de-duplicated."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(dict.fromkeys(i.strip() for i in items if i and i.strip()))


def selection_from(options: dict[str, Any]) -> Selection:
    """The template selection of task ``options``."""
    excluded = options.get("exclude_tags")
    return Selection(
        ids=_names(options.get("poc"))
        + tuple(i for i in _names(options.get("ids")) if i not in _names(options.get("poc"))),
        tags=tuple(t.lower() for t in _names(options.get("tags"))),
        exclude_tags=DEFAULT_EXCLUDE_TAGS if excluded is None else tuple(t.lower() for t in _names(excluded)),
        severities=tuple(s.lower() for s in _names(options.get("severity"))),
        exclude_ids=_names(options.get("exclude_ids")),
    )


def runner_options(options: dict[str, Any], ctx: ReconContext, config: Any = None) -> RunnerOptions:
    """Bounds from task ``options``, then the recon config (``config``), then the defaults."""
    values: dict[str, Any] = {}
    for key, (config_key, default) in CONFIG_KEYS.items():
        chosen = options.get(key) or getattr(config, config_key, None) or default
        values[key] = max(1, int(chosen))
    return RunnerOptions(
        timeout=float(options.get("timeout") or ctx.http_timeout),
        concurrency=max(1, min(int(options.get("concurrency") or ctx.concurrency), MAX_CONCURRENCY)),
        **values,
    )


class TemplateScan:
    """Templates selected from the bundled folder and ``poc_dirs``, ready to run over targets.

    Construction scans the folders (cheap header reads) and selects; :meth:`run` runs. The
    results stay on the object even when the run is cancelled half-way (a stopped task).
    """

    def __init__(
        self,
        targets: Sequence[str],
        options: dict[str, Any],
        ctx: ReconContext,
        *,
        poc_dirs: Iterable[str] = (),
        config: Any = None,
        locate: Locator | None = None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.targets = list(targets)
        self.selection = selection_from(options)
        self.catalog = Catalog(poc_dirs)
        self.skipped = Skipped()
        self.refs = self.catalog.select(self.selection, self.skipped)
        self.unknown_ids = self.catalog.unknown_ids(self.selection.ids)
        self.runner = TemplateRunner(
            locate or HostLocator(ctx), runner_options(options, ctx, config), on_progress
        )

    async def run(self) -> list[Finding]:
        """Run the selected templates over the targets."""
        return await self.runner.run(self.targets, self.refs, self.catalog.load, self.skipped)

    @property
    def findings(self) -> list[Finding]:
        """The findings so far."""
        return self.runner.findings

    def docs(self) -> list[dict[str, Any]]:
        """The ``vuln`` documents of the findings: one per service, template and evidence."""
        return vuln_docs(self.runner.findings)

    def stats(self) -> dict[str, Any]:
        """The run's statistic: counts, skipped templates and targets, budgets, errors."""
        runner = self.runner
        gate = runner.gate
        by_severity: dict[str, int] = {}
        for doc in self.docs():
            by_severity[doc["severity"]] = by_severity.get(doc["severity"], 0) + 1
        return {
            "pocs": len(self.refs),
            "templates_selected": len(self.refs),
            "templates_known": len(self.catalog.refs),
            "targets": len(self.targets),
            "requests": runner.requests,
            "request_errors": runner.errors,
            "findings_by_severity": by_severity,
            "skipped_templates": self.skipped.to_stat(),
            "skipped_targets": runner.skipped_targets[:100],
            "unknown_ids": self.unknown_ids[:100],
            "missing_poc_dirs": self.catalog.missing_folders,
            "blocked_by_scope": runner.blocked,
            "unresolved_requests": runner.unresolved,
            "budget": {
                "max_requests_per_host": runner.options.max_requests_per_host,
                "exhausted_hosts": sorted(gate.exhausted)[:100],
                "given_up_hosts": sorted(gate.given_up)[:100],
                "skipped_jobs": runner.budget_skips,
            },
            "template_errors": runner.template_errors,
        }


async def run_templates(
    targets: Sequence[str],
    options: dict[str, Any],
    ctx: ReconContext,
    *,
    poc_dirs: Iterable[str] = (),
    config: Any = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> TemplateScan:
    """Select and run templates over ``targets`` inside a running pipeline; returns the finished scan.

    The caller writes ``scan.docs()`` to its ``vuln`` collection and may merge ``scan.stats()``.
    """
    scan = TemplateScan(targets, options, ctx, poc_dirs=poc_dirs, config=config, on_progress=on_progress)
    await scan.run()
    return scan
