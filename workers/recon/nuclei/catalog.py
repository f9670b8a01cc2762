"""Finding templates in folders and choosing which to run, without parsing every one of them.

Loading ~10,000 templates (a checkout of the public nuclei-templates repository) must take
seconds and hold memory only for what is run. So each file is first read with a cheap header
scan (:func:`scan_header`: its ``id``, ``info.severity``, ``info.tags`` and top-level protocol
keys, found by line-anchored regular expressions), cached per (path, mtime, size) for the life
of the process. Selection (ids, tags, severity) and the protocol check happen on these headers;
only selected, runnable templates are parsed in full, one at a time, when the runner reaches
them (:meth:`Catalog.load`).

Every file that is not run for a reason other than the user's filters (unsupported protocol,
OOB interactsh, flow, workflow, parse error, unreadable) is recorded in :class:`Skipped`, by id
(or path) and reason.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.recon.datafiles import DATA_DIR
from workers.recon.nuclei.template import Template, TemplateError, parse_template, split_tags

BUNDLED_DIR = DATA_DIR / "pocs"
MAX_TEMPLATE_BYTES = 512 * 1024
MAX_SKIPPED_LISTED = 1000
DEFAULT_EXCLUDE_TAGS = ("dos", "fuzz")
SUPPORTED_PROTOCOLS = frozenset({"http", "requests", "tcp", "network"})
OTHER_PROTOCOLS = frozenset(
    {"dns", "file", "headless", "ssl", "websocket", "whois", "code", "javascript", "workflows"}
)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ID_RE = re.compile(r"""^id:[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)
_INFO_RE = re.compile(r"^info:[ \t]*(.*)$", re.MULTILINE)
_FLOW_INFO_RE = re.compile(r"""\b(severity|tags)\s*:\s*(\[[^\]]*\]|"[^"]*"|'[^']*'|[^,}]*)""")
_KEY_RE = re.compile(r"^([A-Za-z][\w-]*):", re.MULTILINE)
_FLOW_KEYS = ("flow", "self-contained")


@dataclass(frozen=True)
class TemplateRef:
    """What the header scan found in one file; ``reason`` is set when it cannot run here."""

    path: str
    id: str
    severity: str = "unknown"
    tags: tuple[str, ...] = ()
    protocol: str = "http"
    reason: str = ""


def _info_fields(text: str) -> tuple[str, tuple[str, ...]]:
    """``info.severity`` and ``info.tags``, read from the lines of the ``info:`` block only."""
    found = _INFO_RE.search(text)
    if not found:
        return "unknown", ()
    inline = found.group(1).strip()
    if inline.startswith("{"):
        fields = {k: v.strip().strip("\"'[]") for k, v in _FLOW_INFO_RE.findall(inline)}
        severity = fields.get("severity", "unknown").lower() or "unknown"
        return severity, split_tags(fields.get("tags", "").replace('"', "").replace("'", ""))
    lines = text[found.end() :].split("\n")[1:]
    indent = None
    severity = "unknown"
    tags: tuple[str, ...] = ()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        width = len(line) - len(line.lstrip(" \t"))
        if width == 0:
            break
        indent = width if indent is None else indent
        if width != indent:
            continue
        key, _, value = stripped.partition(":")
        value = value.split(" #", 1)[0].strip()
        if key == "severity":
            severity = value.strip("\"'").lower() or "unknown"
        elif key == "tags":
            tags = _tag_value(value, lines[index + 1 :])
    return severity, tags


def _tag_value(value: str, following: list[str]) -> tuple[str, ...]:
    if value.startswith("["):
        value = value.strip("[]")
    if value:
        return split_tags(value.replace('"', "").replace("'", ""))
    items = []
    for line in following:
        stripped = line.strip()
        if not stripped.startswith("- "):
            break
        items.append(stripped[2:].strip("\"' "))
    return split_tags(items)


def _reason(keys: set[str], text: str) -> tuple[str, str]:
    """(protocol, reason-not-runnable) from the top-level keys and the text."""
    other = sorted(keys & OTHER_PROTOCOLS)
    if "workflows" in keys:
        return "workflow", "workflow"
    has_http = bool(keys & {"http", "requests"})
    has_net = bool(keys & {"tcp", "network"})
    protocol = "http" if has_http else "network" if has_net else (other[0] if other else "none")
    if other:
        return protocol, f"{'multi-protocol: ' if has_http or has_net else ''}{other[0]} protocol"
    for key in _FLOW_KEYS:
        if key in keys and re.search(rf"^{key}:[ \t]*(?!false)\S", text, re.MULTILINE):
            return protocol, key
    if has_http and has_net:
        return protocol, "multi-protocol"
    if not has_http and not has_net:
        return protocol, "no http or network requests"
    if "interactsh" in text:
        return protocol, "OOB interactsh-url"
    return protocol, ""


def scan_header(path: Path, text: str) -> TemplateRef:
    """The :class:`TemplateRef` of a template's text (no YAML parsing)."""
    found = _ID_RE.search(text)
    if not found:
        return TemplateRef(str(path), "", reason="no id: not a template")
    severity, tags = _info_fields(text)
    protocol, reason = _reason(set(_KEY_RE.findall(text)), text)
    return TemplateRef(str(path), found.group(1), severity, tags, protocol, reason)


_HEADER_CACHE: dict[tuple[str, int, int], TemplateRef] = {}


def read_header(path: Path) -> TemplateRef:
    """:func:`scan_header` of a file, cached by (path, mtime, size); unreadable files get a reason."""
    try:
        stat = path.stat()
    except OSError as exc:
        return TemplateRef(str(path), "", reason=f"unreadable: {exc.strerror}")
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    cached = _HEADER_CACHE.get(key)
    if cached is not None:
        return cached
    if stat.st_size > MAX_TEMPLATE_BYTES:
        ref = TemplateRef(str(path), "", reason=f"larger than {MAX_TEMPLATE_BYTES} bytes")
    else:
        try:
            ref = scan_header(path, path.read_bytes().decode("utf-8", "replace"))
        except OSError as exc:
            ref = TemplateRef(str(path), "", reason=f"unreadable: {exc.strerror}")
    _HEADER_CACHE[key] = ref
    return ref


def template_files(folder: Path) -> Iterator[Path]:
    """``*.yaml`` / ``*.yml`` below ``folder``, sorted, skipping hidden folders and files."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                yield Path(root) / name


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's C safe loader when it is there (templates load ~5x faster)."""
    loader = _LOADER(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_template(path: str) -> Template:
    """Read and fully parse one template file (raises :class:`TemplateError`)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        document = _safe_load(text)
    except OSError as exc:
        raise TemplateError(f"unreadable: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"YAML: {str(exc).splitlines()[0][:200]}") from None
    return parse_template(document, path)


@dataclass
class Selection:
    """Which templates to run: ``ids`` (exact), ``tags`` (any), ``severities`` (any); exclusions win
    over ``tags``/``severities`` but never over an id asked for by name."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = DEFAULT_EXCLUDE_TAGS
    severities: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()

    def wants(self, ref: TemplateRef) -> bool:
        """Whether the filters pick ``ref``."""
        if ref.id in self.exclude_ids:
            return False
        if self.ids and ref.id in self.ids:
            return True
        if self.ids and not self.tags and not self.severities:
            return False
        if self.tags and not set(ref.tags) & set(self.tags):
            return False
        if self.severities and ref.severity not in self.severities:
            return False
        return not set(ref.tags) & set(self.exclude_tags)


@dataclass
class Skipped:
    """Templates not run, with reasons: counted in full, listed up to :data:`MAX_SKIPPED_LISTED`."""

    items: list[dict[str, str]] = field(default_factory=list)
    by_reason: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def add(self, ref_id: str, path: str, reason: str) -> None:
        """Record one skipped template."""
        self.total += 1
        self.by_reason[reason.split(":", 1)[0] if reason.startswith(("YAML", "unreadable")) else reason] += 1
        if len(self.items) < MAX_SKIPPED_LISTED:
            self.items.append({"id": ref_id, "path": path, "reason": reason[:300]})

    def to_stat(self) -> dict[str, Any]:
        """The ``skipped_templates`` entry of a task's statistic."""
        return {
            "total": self.total,
            "by_reason": dict(self.by_reason.most_common(50)),
            "items": self.items,
            "truncated": self.total > len(self.items),
        }


class Catalog:
    """The templates of the bundled folder and ``folders`` (a later file with the same id wins)."""

    def __init__(self, folders: Iterable[str | Path] = (), bundled: Path | None = BUNDLED_DIR) -> None:
        self.folders = [Path(f) for f in ([bundled] if bundled else []) + list(folders)]
        self.refs: dict[str, TemplateRef] = {}
        self.broken: list[TemplateRef] = []
        self.missing_folders: list[str] = []
        for folder in self.folders:
            if not folder.is_dir():
                self.missing_folders.append(str(folder))
                continue
            for path in template_files(folder):
                ref = read_header(path)
                if ref.id:
                    self.refs[ref.id] = ref
                else:
                    self.broken.append(ref)

    def select(self, selection: Selection, skipped: Skipped) -> list[TemplateRef]:
        """The runnable templates ``selection`` picks, in id order; the rest it picks go to ``skipped``.

        Files without an id are reported too (they may be templates the scan could not read).
        """
        for ref in self.broken:
            skipped.add("", ref.path, ref.reason)
        chosen = []
        for template_id in sorted(self.refs):
            ref = self.refs[template_id]
            if not selection.wants(ref):
                continue
            if ref.reason:
                skipped.add(ref.id, ref.path, ref.reason)
            else:
                chosen.append(ref)
        return chosen

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids asked for that no file has."""
        return [i for i in ids if i not in self.refs]

    @staticmethod
    def load(ref: TemplateRef) -> Template:
        """Parse ``ref``'s file in full (raises :class:`TemplateError`, incl. :class:`Unsupported`)."""
        template = load_template(ref.path)
        if template.id != ref.id:
            raise TemplateError(f"id {template.id!r} differs from the header scan's {ref.id!r}")
        return template
