"""A nuclei-compatible template engine (HTTP and basic network protocols) for ``run_risk_cruising``.

Point ``recon.poc_dirs`` at a checkout of the public nuclei-templates repository and the same
HTTP templates run here. Modules:

- :mod:`~workers.recon.nuclei.catalog`: finding template files, cheap header scans, selection;
- :mod:`~workers.recon.nuclei.template`: the template model and its parser;
- :mod:`~workers.recon.nuclei.dsl` and :mod:`~workers.recon.nuclei.helpers`: the DSL evaluator;
- :mod:`~workers.recon.nuclei.jq`: the jq subset of ``json`` extractors;
- :mod:`~workers.recon.nuclei.operators`: matchers and extractors;
- :mod:`~workers.recon.nuclei.build`: requests from templates, events from responses;
- :mod:`~workers.recon.nuclei.runner`: targets, scope, budgets, redirects, findings;
- :mod:`~workers.recon.nuclei.scan`: task options to a run (:func:`run_templates`).
"""

from workers.recon.nuclei.catalog import Catalog, Selection, Skipped, TemplateRef
from workers.recon.nuclei.findings import Finding
from workers.recon.nuclei.runner import RunnerOptions, TemplateRunner, parse_target
from workers.recon.nuclei.scan import TemplateScan, run_templates
from workers.recon.nuclei.template import Template, TemplateError, Unsupported, parse_template

__all__ = [
    "Catalog",
    "Finding",
    "RunnerOptions",
    "Selection",
    "Skipped",
    "Template",
    "TemplateError",
    "TemplateRef",
    "TemplateRunner",
    "TemplateScan",
    "Unsupported",
    "parse_target",
    "parse_template",
    "run_templates",
]
