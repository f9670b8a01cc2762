"""Template engine benchmark (not a test): loading a large template folder, and scanning throughput.

1. Loading: generates a folder of ~10,000 nuclei-style templates (mostly HTTP, some of other
   protocols, OOB, flow, workflows and broken files, as in a checkout of the public repository),
   then times the cold header scan, a warm (cached) scan, a filtered selection with the full
   parse of what it selects, and the parse of every runnable template; memory is measured with
   tracemalloc (what the catalog holds, and what parsed templates add).
2. Throughput: the bundled templates against lab sites served by a separate process on
   127.88.1.1: (template, target) pairs per second and requests per second; then the same with a
   per-host request budget, checking at the server that no site got more requests than the budget.

Writes bench/results/poc.json and prints a table. Run: ``.venv/bin/python bench/bench_poc.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import table, write_result  # noqa: E402
from workers.recon.context import ReconContext  # noqa: E402
from workers.recon.nuclei import Catalog, Selection, Skipped, TemplateError, TemplateScan  # noqa: E402
from workers.recon.nuclei import catalog as catalog_module  # noqa: E402

LAB_IP = "127.88.1.1"
SEVERITIES = ("info", "low", "medium", "high", "critical")
TAGS = (
    "cve",
    "panel",
    "exposure",
    "misconfig",
    "default-login",
    "tech",
    "rce",
    "sqli",
    "xss",
    "lfi",
    "wordpress",
)

HTTP_TEMPLATE = """id: {id}

info:
  name: Generated template {n}
  author: bench
  severity: {severity}
  description: |
    A generated template for the loading benchmark; it looks like the public ones.
  reference:
    - https://example.org/advisory/{n}
  classification:
    cvss-score: 7.5
    cwe-id: CWE-200
  metadata:
    max-request: 2
    verified: true
  tags: {tags}

http:
  - method: GET
    path:
      - "{{{{BaseURL}}}}/generated/{n}/index.php"
      - "{{{{BaseURL}}}}/generated/{n}/admin/"

    stop-at-first-match: true
    matchers-condition: and
    matchers:
      - type: word
        part: body
        words:
          - "marker-{n}-one"
          - "marker-{n}-two"
        condition: and

      - type: regex
        regex:
          - "(?i)version\\\\s*[:=]\\\\s*[0-9.]+"

      - type: dsl
        dsl:
          - "status_code == 200 && !contains(tolower(body), '<title>404')"

    extractors:
      - type: regex
        group: 1
        regex:
          - "version\\\\s*[:=]\\\\s*([0-9.]+)"
"""

OTHER = {
    "dns": "id: {id}\ninfo:\n  name: d\n  severity: info\n  tags: dns\ndns:\n"
    "  - name: '{{{{FQDN}}}}'\n    type: CNAME\n",
    "headless": "id: {id}\ninfo:\n  name: h\n  severity: info\n  tags: headless\nheadless:\n  - steps:\n"
    "      - action: navigate\n",
    "workflow": "id: {id}\ninfo:\n  name: w\n  severity: info\nworkflows:\n  - template: x.yaml\n",
    "flow": "id: {id}\ninfo:\n  name: f\n  severity: info\nflow: http(1)\nhttp:\n"
    "  - path: ['{{{{BaseURL}}}}']\n"
    "    matchers: [{{type: status, status: [200]}}]\n",
    "oob": "id: {id}\ninfo:\n  name: o\n  severity: high\n  tags: oob\nhttp:\n"
    "  - path: ['{{{{BaseURL}}}}/?u={{{{interactsh-url}}}}']\n"
    "    matchers: [{{type: word, part: interactsh_protocol, words: [dns]}}]\n",
    "broken": "id: {id}\ninfo:\n  name: b\n  severity: low\nhttp:\n  - path: [\n",
}


def generate(folder: Path, count: int) -> dict[str, int]:
    """Write ``count`` templates below ``folder`` (in 100 sub-folders); returns counts per kind."""
    rng = random.Random(7)
    kinds: dict[str, int] = {}
    for n in range(count):
        roll = rng.random()
        kind = (
            "http"
            if roll < 0.86
            else "dns"
            if roll < 0.91
            else "headless"
            if roll < 0.94
            else "workflow"
            if roll < 0.96
            else "flow"
            if roll < 0.97
            else "oob"
            if roll < 0.99
            else "broken"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
        tags = ",".join(rng.sample(TAGS, 3))
        text = (HTTP_TEMPLATE if kind == "http" else OTHER[kind]).format(
            id=f"gen-{n}", n=n, severity=rng.choice(SEVERITIES), tags=tags
        )
        sub = folder / f"group-{n % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"gen-{n}.yaml").write_text(text)
    return kinds


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _parse_all(catalog: Catalog, refs: list[Any]) -> int:
    """Parse every template of ``refs``; returns how many failed (broken files pass the header scan)."""
    failed = 0
    for ref in refs:
        try:
            catalog.load(ref)
        except TemplateError:
            failed += 1
    return failed


def bench_loading(count: int) -> dict[str, Any]:
    """Load-time and memory figures for a generated folder of ``count`` templates."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        kinds = generate(folder, count)
        catalog_module._HEADER_CACHE.clear()
        tracemalloc.start()
        cold, catalog = _timed(lambda: Catalog([folder], bundled=None))
        scan_mem = tracemalloc.get_traced_memory()[0]
        warm, _ = _timed(lambda: Catalog([folder], bundled=None))
        skipped = Skipped()
        select_s, chosen = _timed(
            lambda: catalog.select(Selection(tags=("cve",), severities=("critical",)), skipped)
        )
        before = tracemalloc.get_traced_memory()[0]
        parse_s, parsed = _timed(lambda: [catalog.load(ref) for ref in chosen])
        selected_mem = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        catalog_module._HEADER_CACHE.clear()
        untraced, catalog = _timed(lambda: Catalog([folder], bundled=None))
        all_skipped = Skipped()
        runnable = catalog.select(Selection(exclude_tags=()), all_skipped)
        parse_all_s, failed = _timed(lambda: _parse_all(catalog, runnable))
    return {
        "templates": count,
        "kinds": kinds,
        "cold_scan_s": round(untraced, 3),
        "cold_scan_traced_s": round(cold, 3),
        "warm_scan_s": round(warm, 3),
        "catalog_memory_mb": round(scan_mem / 2**20, 2),
        "filtered_selection": {"filter": "tags=cve severity=critical", "selected": len(chosen)},
        "filtered_select_s": round(select_s, 4),
        "filtered_parse_s": round(parse_s, 3),
        "parsed_memory_mb": round(selected_mem / 2**20, 2),
        "parsed_memory_per_template_kb": round(selected_mem / max(1, len(parsed)) / 1024, 1),
        "runnable": len(runnable),
        "skipped": all_skipped.to_stat()["by_reason"],
        "parse_all_runnable_s": round(parse_all_s, 2),
        "parse_failures": failed,
        "parse_per_template_ms": round(parse_all_s * 1000 / max(1, len(runnable)), 3),
    }


SERVER = """
import json, sys
sys.path.insert(0, {root!r})
from tests.lab.plantsite import Page, PlantSite
from tests.lab.pocs import PLANTED
sites = [PlantSite({ip!r}, pages).start() for pages in list(PLANTED.values())[:{sites}]]
print(json.dumps([s.url for s in sites]), flush=True)
sys.stdin.read()
print(json.dumps([len(s.requests) for s in sites]), flush=True)
"""


def _ctx() -> ReconContext:
    return ReconContext(
        task_id="bench",
        db=None,  # type: ignore[arg-type]
        resolvers=[],
        progress=lambda stage, done, total: None,
        should_stop=lambda: False,
        scope_check=lambda host: True,
        concurrency=50,
        http_timeout=3.0,
    )


async def _locate(host: str) -> str | None:
    return host if host.startswith("127.88.1.") else None


def bench_scan(sites: int, budget: int | None) -> dict[str, Any]:
    """The bundled templates over ``sites`` lab sites (served by another process)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(root=str(ROOT), ip=LAB_IP, sites=sites)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        targets = json.loads(proc.stdout.readline())
        options: dict[str, Any] = {"concurrency": 50}
        if budget:
            options["max_requests_per_host"] = budget
        scan = TemplateScan(targets, options, _ctx(), locate=_locate)
        elapsed, _ = _timed(lambda: asyncio.run(scan.run()))
        proc.stdin.close()
        served = json.loads(proc.stdout.readline())
    finally:
        proc.wait(timeout=30)
    jobs = len(scan.refs) * len(targets)
    return {
        "templates": len(scan.refs),
        "targets": len(targets),
        "budget_per_host": budget,
        "elapsed_s": round(elapsed, 2),
        "pairs_per_s": round(jobs / elapsed, 1),
        "requests": scan.runner.requests,
        "requests_per_s": round(scan.runner.requests / elapsed, 1),
        "findings": len(scan.findings),
        "max_requests_at_one_site": max(served),
        "budget_honoured": budget is None or max(served) <= budget,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 templates and 4 sites")
    args = parser.parse_args()
    count, sites = (1000, 4) if args.quick else (10000, 12)
    loading = bench_loading(count)
    scans = [bench_scan(sites, None), bench_scan(sites, 40)]
    path = write_result("poc", {"loading": loading, "scan": scans})
    print(
        table(
            ["loading", "value"],
            [
                ["templates generated", loading["templates"]],
                ["cold header scan (s)", loading["cold_scan_s"]],
                ["warm scan (s)", loading["warm_scan_s"]],
                ["catalog memory (MiB)", loading["catalog_memory_mb"]],
                ["filtered selection", loading["filtered_selection"]["selected"]],
                ["parse of the selection (s)", loading["filtered_parse_s"]],
                ["memory per parsed template (KiB)", loading["parsed_memory_per_template_kb"]],
                ["runnable / parse all (s)", f"{loading['runnable']} / {loading['parse_all_runnable_s']}"],
                ["skipped by reason", loading["skipped"]],
            ],
        )
    )
    print()
    print(
        table(
            ["templates", "targets", "budget", "s", "pairs/s", "requests/s", "max at a site", "honoured"],
            [
                [
                    s["templates"],
                    s["targets"],
                    s["budget_per_host"] or "—",
                    s["elapsed_s"],
                    s["pairs_per_s"],
                    s["requests_per_s"],
                    s["max_requests_at_one_site"],
                    s["budget_honoured"],
                ]
                for s in scans
            ],
        )
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
