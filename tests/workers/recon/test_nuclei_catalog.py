"""The template catalog: header scans, selection, skipped reasons, loading only what is selected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.recon.nuclei import catalog as catalog_module
from workers.recon.nuclei.catalog import Catalog, Selection, Skipped, scan_header

HTTP = (
    "id: {id}\n\ninfo:\n  name: T {id}\n  author: someone\n  severity: {severity}\n"
    "  description: |\n    tags: not-these\n  tags: {tags}\n\nhttp:\n  - method: GET\n"
    "    path:\n      - '{{{{BaseURL}}}}/{id}'\n"
    "    matchers:\n      - type: word\n        words: ['{id}-marker']\n"
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_header_scan_reads_id_severity_tags_and_protocol(tmp_path: Path) -> None:
    ref = scan_header(tmp_path / "a.yaml", HTTP.format(id="cve-1", severity="high", tags="cve,rce, Apache"))
    assert (ref.id, ref.severity, ref.tags, ref.protocol, ref.reason) == (
        "cve-1",
        "high",
        ("cve", "rce", "apache"),
        "http",
        "",
    )
    listed = scan_header(
        tmp_path / "b.yaml", "id: b\ninfo:\n  severity: low\n  tags:\n    - x\n    - y\ntcp:\n  - host: []\n"
    )
    assert listed.tags == ("x", "y") and listed.protocol == "network"
    flow = scan_header(tmp_path / "c.yaml", "id: c\ninfo: {severity: low}\nflow: http(1)\nhttp: []\n")
    assert flow.reason == "flow"
    both = scan_header(tmp_path / "d.yaml", "id: d\ninfo: {severity: low}\ndns: []\nhttp: []\n")
    assert both.reason == "multi-protocol: dns protocol"
    oob = scan_header(tmp_path / "e.yaml", "id: e\nhttp:\n  - path: ['{{BaseURL}}?x={{interactsh-url}}']\n")
    assert oob.reason == "OOB interactsh-url"
    not_flow = scan_header(tmp_path / "f.yaml", "id: f\nself-contained: false\nhttp: []\n")
    assert not_flow.reason == ""


def test_selection_rules() -> None:
    from workers.recon.nuclei.catalog import TemplateRef

    cve = TemplateRef("p", "cve-1", "critical", ("cve", "rce"))
    dos = TemplateRef("p", "slow", "high", ("dos",))
    panel = TemplateRef("p", "panel-1", "info", ("panel",))
    assert Selection().wants(cve) and not Selection().wants(dos) and Selection(exclude_tags=()).wants(dos)
    assert Selection(ids=("slow",)).wants(dos) and not Selection(ids=("slow",)).wants(cve)
    assert Selection(tags=("rce",)).wants(cve) and not Selection(tags=("rce",)).wants(panel)
    assert Selection(severities=("info",)).wants(panel) and not Selection(severities=("info",)).wants(cve)
    assert not Selection(exclude_ids=("cve-1",)).wants(cve)
    assert Selection(ids=("panel-1",), tags=("rce",)).wants(cve) and Selection(
        ids=("panel-1",), tags=("rce",)
    ).wants(panel)


def test_later_folders_override_and_problems_are_reported(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    write(first, "a.yaml", HTTP.format(id="same", severity="low", tags="x"))
    write(second, "deep/er/a.yml", HTTP.format(id="same", severity="high", tags="x"))
    write(second, ".github/workflows/ci.yaml", "name: ci\n")
    write(second, "helpers/wordlist.txt", "a\nb\n")
    write(second, "profiles/fast.yml", "severity: [high]\n")
    write(second, "big.yaml", "id: big\n" + "#" * (catalog_module.MAX_TEMPLATE_BYTES + 1))
    cat = Catalog([first, second, tmp_path / "missing"], bundled=None)
    assert cat.refs["same"].severity == "high" and cat.missing_folders == [str(tmp_path / "missing")]
    skipped = Skipped()
    chosen = cat.select(Selection(), skipped)
    assert [r.id for r in chosen] == ["same"]
    reasons = sorted(item["reason"] for item in skipped.items)
    assert reasons == [f"larger than {catalog_module.MAX_TEMPLATE_BYTES} bytes", "no id: not a template"]
    assert skipped.to_stat()["total"] == 2 and cat.unknown_ids(["same", "other"]) == ["other"]


def test_only_selected_templates_are_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(2000):
        severity = ("info", "low", "medium", "high", "critical")[(index // 50) % 5]
        write(
            tmp_path / f"d{index % 20}",
            f"t{index}.yaml",
            HTTP.format(id=f"t-{index}", severity=severity, tags=f"g{index % 50}"),
        )
    parsed: list[str] = []
    real = catalog_module.load_template

    def counting(path: str) -> Any:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(catalog_module, "load_template", counting)
    cat = Catalog([tmp_path], bundled=None)
    chosen = cat.select(Selection(tags=("g7",), severities=("low", "high")), Skipped())
    assert len(cat.refs) == 2000 and parsed == []
    assert {r.id for r in chosen} == {
        f"t-{i}" for i in range(2000) if i % 50 == 7 and (i // 50) % 5 in (1, 3)
    }
    loaded = [cat.load(ref) for ref in chosen]
    assert len(parsed) == len(chosen) == len(loaded) == 16
    assert loaded[0].http[0].operators.matchers[0].words[0].endswith("-marker")
