"""A task's results of one kind as a file: CSV, JSON or XLSX.

``GET /api/celery_task/{celery_id}/results/?kind=...&format=csv|json|xlsx`` (viewer) answers
with every result of that kind, oldest first, as an attachment; :meth:`Export.chunks` gives the
file in pieces as the results are read, so memory stays bounded by one batch (XLSX, a zip, is
written row by row to a temporary file by openpyxl's write-only mode, then sent).  One export
holds at most :data:`MAX_ROWS` results: past that the request is refused with 400 before
anything is read.

* **JSON**: an array of the result documents as the paged endpoint shows them.
* **CSV** (UTF-8 with a byte-order mark, so spreadsheets read it as UTF-8) and **XLSX**: one
  row per result, the columns of :data:`COLUMNS` for the kind (for another kind: every field
  of the first result); a list shows as its items joined by ``", "`` (ports as ``port/service``,
  fingerprints by name), an object as compact JSON, a ``time`` as ISO 8601 UTC.  Recon results
  hold text from scanned sites: a CSV cell that a spreadsheet would take for a formula (it
  begins with ``= + - @``, a tab or a carriage return) is prefixed with ``'``, and XLSX cells
  are always written as text or numbers, never as formulas.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from controlplane.core.documents import iso

FORMATS = ("csv", "json", "xlsx")
MAX_ROWS = 100_000
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "domain": ("domain", "type", "record", "ips", "cnames", "source", "cdn_name"),
    "ip": ("ip", "domains", "ports", "port_count", "cdn_name", "ip_type", "geo_city", "geo_asn"),
    "site": (
        "site",
        "hostname",
        "ip",
        "port",
        "status",
        "title",
        "server",
        "finger",
        "content_type",
        "body_length",
        "final_url",
    ),
    "cert": (
        "host",
        "ip",
        "port",
        "subject_cn",
        "issuer_cn",
        "sans",
        "not_before",
        "not_after",
        "self_signed",
        "fingerprint_sha256",
    ),
    "fileleak": (
        "site",
        "url",
        "path",
        "status",
        "content_length",
        "content_type",
        "title",
        "service",
        "hostnames",
    ),
    "fofa": ("host", "ip", "port", "protocol", "domain", "title", "server"),
    "url": ("url", "site", "status_code", "title", "content_length", "source"),
    "vhost": ("host", "ip", "port", "scheme", "status_code", "title", "body_length"),
    "vuln": ("target", "severity", "name", "poc_id", "url", "ip", "service", "hostnames", "time"),
    "github": ("repo", "path", "url", "sha", "time"),
    "wih": ("type", "rule", "value", "severity", "source", "time"),
    "monitor_new": ("kind", "value", "time"),
    "asset_site_change": ("site", "time"),
}
"""The columns of the CSV and XLSX files (and of the dashboard's tables) per result kind."""
_INTERNAL = ("_id", "task_id", "partial")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
CHUNK_BYTES = 64 * 1024


def columns(kind: str, first: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The file's columns: the kind's, or the fields of its first result (internal ones aside)."""
    if kind in COLUMNS:
        return COLUMNS[kind]
    return tuple(k for k in (first or {}) if k not in _INTERNAL)


def cell(name: str, value: Any) -> Any:
    """One value as a CSV or XLSX cell shows it: a scalar as it is, else text."""
    if value is None:
        return ""
    if name == "time" and isinstance(value, int | float) and not isinstance(value, bool):
        return iso(value)
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return ", ".join(_item(v) for v in value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _item(value: Any) -> str:
    if isinstance(value, Mapping):
        if "port" in value:
            service = value.get("service")
            return f"{value['port']}/{service}" if service else str(value["port"])
        if "name" in value:  # a fingerprint: its name, and its version when the rule found one
            version = value.get("version")
            return f"{value['name']} {version}" if version else str(value["name"])
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return "" if value is None else str(value)


def row(kind_columns: Sequence[str], doc: Mapping[str, Any]) -> list[Any]:
    """One result as a row of cells, in ``kind_columns`` order."""
    return [cell(name, doc.get(name)) for name in kind_columns]


def csv_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


@dataclass
class Export:
    """One export: its file name and type, and its bytes as :meth:`chunks` reads the results."""

    kind: str
    fmt: str
    filename: str
    total: int
    batches: Callable[[], AsyncIterator[list[dict[str, Any]]]]

    @property
    def content_type(self) -> str:
        """The response's ``Content-Type``."""
        return CONTENT_TYPES[self.fmt]

    def chunks(self) -> AsyncIterator[bytes]:
        """The file, in pieces."""
        if self.fmt == "json":
            return self._json()
        if self.fmt == "csv":
            return self._csv()
        return self._xlsx()

    async def _json(self) -> AsyncIterator[bytes]:
        yield b"["
        first = True
        async for batch in self.batches():
            text = ",\n".join(json.dumps(doc, ensure_ascii=False, default=str) for doc in batch)
            yield (("\n" if first else ",\n") + text).encode("utf-8")
            first = False
        yield b"\n]\n"

    async def _csv(self) -> AsyncIterator[bytes]:
        names: tuple[str, ...] | None = COLUMNS.get(self.kind)
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\r\n")
        if names is not None:
            writer.writerow(names)
        async for batch in self.batches():
            if names is None:
                names = columns(self.kind, batch[0])
                writer.writerow(names)
            for doc in batch:
                writer.writerow([csv_safe(v) for v in row(names, doc)])
            yield out.getvalue().encode("utf-8")
            out.seek(0)
            out.truncate()
        text = out.getvalue()
        if text:
            yield text.encode("utf-8")

    async def _xlsx(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        book = Workbook(write_only=True)
        sheet = book.create_sheet(self.kind[:31])
        names: tuple[str, ...] | None = COLUMNS.get(self.kind)
        if names is not None:
            sheet.append(list(names))
        async for batch in self.batches():
            if names is None:
                names = columns(self.kind, batch[0])
                sheet.append(list(names))
            await loop.run_in_executor(None, _append, sheet, names, batch)
        with tempfile.TemporaryFile() as spool:
            await loop.run_in_executor(None, book.save, spool)
            spool.seek(0)
            while True:
                piece = await loop.run_in_executor(None, spool.read, CHUNK_BYTES)
                if not piece:
                    break
                yield piece


def _append(sheet: Any, names: Sequence[str], batch: list[dict[str, Any]]) -> None:
    """Rows of text and number cells (a string is never taken for a formula)."""
    for doc in batch:
        cells = []
        for value in row(names, doc):
            if isinstance(value, str):
                text = WriteOnlyCell(sheet, value=_ILLEGAL_XML.sub("", value))
                text.data_type = "s"
                cells.append(text)
            else:
                cells.append(value)
        sheet.append(cells)
