"""Exporting a task's results: ``GET .../results/?kind=&format=csv|json|xlsx`` against a real API.

The files are parsed back (CSV with the csv module, XLSX with openpyxl, JSON with json) and
must hold the same rows as the paged endpoint shows; the CLI's ``results`` command writes the
same files.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from controlplane.runtime import cli
from controlplane.service import export
from controlplane.service.export import COLUMNS, row
from controlplane.store.tasks import new_task_document
from tests.conftest import make_stack
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Stack

pytestmark = pytest.mark.integration

SITES = [
    {
        "site": f"http://10.0.0.{i}/",
        "hostname": f"10.0.0.{i}",
        "ip": f"10.0.0.{i}",
        "port": 80,
        "status": 200 if i % 3 else 404,
        "title": ["lab", "标题 — 中文", '=HYPERLINK("http://evil")', "-1", 'quote " and, comma'][i % 5],
        "server": "nginx",
        "finger": [{"name": "nginx"}, {"name": "PHP"}] if i % 2 else [],
        "headers": {"Server": "nginx"},
        "content_type": "text/html",
        "body_length": 100 + i,
        "final_url": f"http://10.0.0.{i}/",
    }
    for i in range(1, 1201)
]
IPS = [
    {
        "ip": "10.0.1.1",
        "domains": ["a.example.com", "b.example.com"],
        "ports": [{"port": 22, "service": "ssh"}, {"port": 8443, "service": None}],
        "port_count": 2,
    }
]
VULNS = [
    {"target": "http://10.0.0.1/", "poc_id": "x-1", "name": "X", "severity": "high", "time": 1714564800.0}
]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[tuple[Stack, str]]:
    """An API over one stored task with 1,200 sites, one IP and one vuln (more than a cursor batch)."""
    stack = make_stack(tmp_path_factory.mktemp("export"), mongo_server)
    try:
        stack.start_api()
        cid = str(uuid.uuid4())
        doc = new_task_document(
            celery_id=cid, task_type="domain_task", data={"name": "x"}, created_time=1.0, rev=1
        )
        stack.db.tasks.insert_one(dict(doc))
        task_id = str(doc["_id"])
        for kind, docs in (("site", SITES), ("ip", IPS), ("vuln", VULNS)):
            stack.db[kind].insert_many([{**d, "task_id": task_id, "partial": False} for d in docs])
        yield stack, cid
    finally:
        stack.close()


def paged(stack: Stack, cid: str, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        resp = stack.request("GET", f"/api/celery_task/{cid}/results/?kind={kind}&page={page}&size=100")
        assert resp.code == 200, resp
        if not resp.data["items"]:
            return items
        items += resp.data["items"]
        page += 1


def download(stack: Stack, cid: str, kind: str, fmt: str, token: str = VIEWER_TOKEN) -> Any:
    return stack.request("GET", f"/api/celery_task/{cid}/results/?kind={kind}&format={fmt}", token=token)


def text_rows(kind: str, items: list[dict[str, Any]]) -> list[list[str]]:
    """The rows a CSV holds for ``items``: every cell as text, formula-like text prefixed with '."""
    out = [list(COLUMNS[kind])]
    for item in items:
        cells = ["" if v == "" else str(v) for v in row(COLUMNS[kind], item)]
        out.append(["'" + c if c[:1] in ("=", "+", "-", "@", "\t", "\r") else c for c in cells])
    return out


@pytest.mark.parametrize("kind", ["site", "ip", "vuln"])
def test_csv_parses_back_to_the_rows_of_the_paged_results(task: tuple, kind: str) -> None:
    stack, cid = task
    resp = download(stack, cid, kind, "csv")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{cid}-{kind}.csv"'
    assert resp.raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM: spreadsheets read it as UTF-8
    rows = list(csv.reader(io.StringIO(resp.raw.decode("utf-8-sig"), newline="")))
    items = paged(stack, cid, kind)
    assert rows == text_rows(kind, items)
    assert resp.headers["X-Result-Count"] == str(len(items))
    if kind == "site":
        assert len(rows) == 1 + len(SITES)
        titles = {r[COLUMNS["site"].index("title")] for r in rows[1:]}
        assert '\'=HYPERLINK("http://evil")' in titles and "标题 — 中文" in titles
        assert 'quote " and, comma' in titles
        assert rows[1][COLUMNS["site"].index("finger")] == "nginx, PHP"
    if kind == "ip":
        assert rows[1][:4] == ["10.0.1.1", "a.example.com, b.example.com", "22/ssh, 8443", "2"]
    if kind == "vuln":
        assert rows[1][COLUMNS["vuln"].index("time")] == "2024-05-01T12:00:00.000Z"


@pytest.mark.parametrize("kind", ["site", "ip"])
def test_xlsx_parses_back_to_the_same_rows_with_no_formulas(task: tuple, kind: str) -> None:
    stack, cid = task
    resp = download(stack, cid, kind, "xlsx")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = load_workbook(io.BytesIO(resp.raw))
    sheet = book[kind]
    got = [["" if v is None else v for v in r] for r in sheet.iter_rows(values_only=True)]
    items = paged(stack, cid, kind)
    want = [list(COLUMNS[kind])] + [row(COLUMNS[kind], item) for item in items]
    assert got == want
    # Text that looks like a formula is stored as text.
    assert all(c.data_type != "f" for r in sheet.iter_rows() for c in r)


@pytest.mark.parametrize("kind", ["site", "vuln"])
def test_json_is_the_paged_results_in_one_array(task: tuple, kind: str) -> None:
    stack, cid = task
    resp = download(stack, cid, kind, "json")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert json.loads(resp.raw) == paged(stack, cid, kind)


def test_a_kind_without_results_is_a_header_only_file(task: tuple) -> None:
    stack, cid = task
    resp = download(stack, cid, "cert", "csv")
    assert resp.status == 200 and resp.raw.decode("utf-8-sig") == ",".join(COLUMNS["cert"]) + "\r\n"
    assert json.loads(download(stack, cid, "cert", "json").raw) == []
    sheet = load_workbook(io.BytesIO(download(stack, cid, "cert", "xlsx").raw)).active
    assert [list(r) for r in sheet.iter_rows(values_only=True)] == [list(COLUMNS["cert"])]


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("kind=site&format=pdf", 400, "format"),
        ("kind=nope&format=csv", 400, "kind"),
        ("kind=site&format=csv&format=json", 400, "format"),
    ],
)
def test_bad_export_parameters_are_400_in_the_envelope(
    task: tuple, query: str, status: int, field: str
) -> None:
    stack, cid = task
    resp = stack.request("GET", f"/api/celery_task/{cid}/results/?{query}", token=VIEWER_TOKEN)
    assert resp.status == status and resp.code == 400 and resp.data["field"] == field, resp


def test_unknown_task_and_no_token(task: tuple) -> None:
    stack, _ = task
    other = str(uuid.uuid4())
    resp = download(stack, other, "site", "csv")
    assert resp.status == 404 and resp.code == 102 and resp.data == {"celery_id": other}
    resp = stack.request("GET", f"/api/celery_task/{other}/results/?kind=site&format=csv", token=None)
    assert resp.status == 401 and resp.code == 401


@pytest.mark.parametrize("fmt", ["csv", "json", "xlsx"])
def test_cli_results_writes_the_same_file(
    task: tuple, fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, cid = task
    out = tmp_path / f"sites.{fmt}"
    argv = ["results", cid, "--kind", "site", "--format", fmt, "-o", str(out)]
    code = cli.main([*argv, "--url", f"http://127.0.0.1:{stack.port}", "--token", OPERATOR_TOKEN])
    assert code == 0, capsys.readouterr()
    assert out.read_bytes() == download(stack, cid, "site", fmt).raw or fmt == "xlsx"
    if fmt == "xlsx":
        sheet = load_workbook(out).active
        assert sheet.max_row == 1 + len(SITES)
    assert f"{len(SITES)} result(s)" in capsys.readouterr().err


def test_fingerprints_export_as_name_and_version() -> None:
    finger = [
        {"name": "nginx", "version": "1.25.3", "categories": ["Web servers"], "confidence": 100},
        {"name": "PHP", "version": "", "categories": ["Programming languages"]},
    ]
    assert export.cell("finger", finger) == "nginx 1.25.3, PHP"
