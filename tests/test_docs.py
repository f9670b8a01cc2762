"""The documentation stays true: every config key documented, every link resolving, a short README,
and docs/performance.md reproducible by bench/report.py.

Pure file checks: no server, broker or database.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from bench import report
from controlplane.config import Config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]


def config_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    """Dotted keys of every field, walking nested dataclasses.

    Entries of a list are ``auth.tokens[].name``, values of a mapping ``tasks.<name>.queue``.
    """
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(kind):
            keys += config_keys(kind, key + ".")
            continue
        keys.append(key)
        args = typing.get_args(kind)
        if typing.get_origin(kind) is list and args and dataclasses.is_dataclass(args[0]):
            keys += config_keys(args[0], key + "[].")
        if typing.get_origin(kind) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            keys += config_keys(args[1], key + ".<name>.")
    return keys


def test_the_walk_finds_nested_keys() -> None:
    keys = config_keys()
    assert {
        "data_dir",
        "mongo.timeout_ms",
        "feed.lookup_ttl",
        "auth.tokens[].role",
        "tasks.<name>.queue",
    } <= set(keys)
    assert "mongo" not in keys  # a section is not a key


def test_every_config_key_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in config_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


# -- links ------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where a bracket is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_the_pages_link_to_each_other() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link to {', '.join(unlinked)}"


def test_readme_is_a_guide_not_a_manual() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 260, f"README.md has {lines} lines; move detail to docs/"


def test_the_reliability_page_keeps_the_markers_its_tests_rewrite() -> None:
    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    start, end = "<!-- reliability:start -->", "<!-- reliability:end -->"
    assert text.count(start) == 1 and text.count(end) == 1
    assert text.index(start) < text.index(end)


# -- bench/report.py ----------------------------------------------------------------------------


def test_report_renders_the_page_from_result_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    machine = {"cpu": "Test CPU", "cores": 2, "memory_gb": 4.0, "python": "3.11.7", "loadavg_1m": 0.1}
    (results / "summary.json").write_text(
        json.dumps(
            {
                "bench": "summary",
                "time": "2030-01-02T03:04:05Z",
                "machine": machine,
                "quick": False,
                "rows": [["ingestion, sustained tasks/s", 4321, 1000, "4.32×"]],
            }
        ),
        encoding="utf-8",
    )
    (results / "revoke.json").write_text(
        json.dumps(
            {
                "bench": "revoke",
                "time": "2030-01-02T03:04:05Z",
                "machine": machine,
                "runs": 7,
                "results": {"DELETE answered": {"p50": 0.0123, "p99": 0.0456}},
            }
        ),
        encoding="utf-8",
    )
    (results / "ingest.json").write_text(
        json.dumps(
            {
                "bench": "ingest",
                "time": "2030-01-02T03:04:05Z",
                "machine": machine,
                "steps": [{"system": "ours", "rate": 1200, "lost": 0, "lag_p99_ms": 321.5, "pass": True}],
                "sustained": {"ours": 1200, "flower": 430, "ratio": 2.79},
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "performance.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == out
    page = out.read_text(encoding="utf-8")

    assert page.startswith("# Performance\n")
    assert "## Method" in page
    # The figures of the result files, as tables, with where and when they were measured.
    assert "| ingestion, sustained tasks/s | 4,321 | 1,000 | 4.32× |" in page
    assert "| DELETE answered | 0.0123 | 0.0456 |" in page
    assert "| ours | 1,200 | 0 | 321.5 | yes |" in page
    assert "Measured 2030-01-02T03:04:05Z on Test CPU, 2 cores" in page
    # A benchmark with a result file shows it, not the recorded figures; the others keep theirs.
    assert "no `revoke.json` yet" not in page
    assert "no `submit.json` yet" in page
    assert "No result files were found" not in page


def test_report_writes_the_skeleton_without_results(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "performance.md"
    report.main(["--results", str(tmp_path / "missing"), "--out", str(out)])
    page = out.read_text(encoding="utf-8")
    assert "## Method" in page
    assert "make bench" in page
    assert "No result files were found" in page
    for bench in report.BENCHES:
        assert f"## {bench.title}" in page


def test_the_committed_performance_page_is_the_reports_output() -> None:
    """docs/performance.md is generated: edits belong in bench/report.py, not in the page."""
    if report.RESULTS.is_dir() and any(report.RESULTS.glob("*.json")):
        pytest.skip("local bench/results/ present (git-ignored); the committed page was written without it")
    assert (DOCS / "performance.md").read_text(encoding="utf-8") == report.render(report.RESULTS)
