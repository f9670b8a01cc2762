"""Loaders for the data files in ``workers/data``: wordlists, port presets, leak probes, rule files."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

WORDLISTS = {"small": DATA_DIR / "wordlists" / "small.txt", "big": DATA_DIR / "wordlists" / "big.txt"}

PORT_PRESET_FILES = {
    "test": DATA_DIR / "ports_test.txt",
    "top100": DATA_DIR / "ports_top100.txt",
    "top1000": DATA_DIR / "ports_top1000.txt",
}
"""ARL's port lists by ``port_scan_type`` (``TOP_10``, ``TOP_100``, ``TOP_1000`` of its config), copied as
they are: ARL's "top100" holds about 250 ports and its "top1000" 1,201."""
ALL_PORTS = range(0, 65536)
"""ARL's ``all``: nmap's ``-p 0-65535``. Port 0 is in it (a host never listens there; it is probed anyway)."""


def _content_lines(path: Path) -> list[str]:
    """Return the non-empty, non-comment lines of a text file, stripped."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def is_valid_label(label: str) -> bool:
    """Tell whether ``label`` is a usable DNS label (letters, digits, hyphens; 1..63 chars)."""
    if not 0 < len(label) <= 63 or label.startswith("-") or label.endswith("-"):
        return False
    return all(c.isascii() and (c.isalnum() or c == "-") for c in label)


@functools.lru_cache(maxsize=4)
def load_wordlist(kind: str) -> tuple[str, ...]:
    """Load the bundled subdomain wordlist ``kind`` ("small" or "big"), lower-cased and deduplicated.

    Lines that are not valid DNS labels (or dotted label sequences) are skipped.
    """
    try:
        path = WORDLISTS[kind]
    except KeyError:
        raise ValueError(f"unknown wordlist {kind!r}; expected one of {sorted(WORDLISTS)}") from None
    return tuple(dedupe_labels(_content_lines(path)))


def dedupe_labels(lines: Iterable[str]) -> list[str]:
    """Lower-case, validate and deduplicate subdomain labels, keeping the first occurrence order."""
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        label = line.strip().lower().rstrip(".")
        if label in seen or not label or not all(is_valid_label(p) for p in label.split(".")):
            continue
        seen.add(label)
        out.append(label)
    return out


def parse_port_list(lines: Iterable[str | int] | str) -> list[int]:
    """Parse ports and ranges ("80", "8000-8010", 443, or one string "80,443,8000-8010") into a sorted,
    deduplicated list.

    Raises ``ValueError`` on anything outside 1..65535 or malformed.
    """
    items = lines.split(",") if isinstance(lines, str) else lines
    ports: set[int] = set()
    for item in items:
        if isinstance(item, int):
            lo = hi = item
        else:
            text = item.strip()
            if not text or text.startswith("#"):
                continue
            if "-" in text:
                a, _, b = text.partition("-")
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(text)
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"invalid port or range: {item!r}")
        ports.update(range(lo, hi + 1))
    return sorted(ports)


@functools.lru_cache(maxsize=4)
def _preset_file(preset: str) -> tuple[int, ...]:
    return tuple(parse_port_list(_content_lines(PORT_PRESET_FILES[preset])))


TEST_PORTS: tuple[int, ...] = _preset_file("test")
"""The ``test`` preset (ARL's ``TOP_10``), sorted."""


def ports_for_preset(preset: str, custom: Iterable[int | str] | str | None = None) -> list[int]:
    """The sorted ports of ARL's ``port_scan_type``: "test", "top100", "top1000", "all" or "custom"
    (then ``custom`` is ``port_custom``: a list of ports and ranges or a string like "80,443,8000-8100")."""
    if preset == "all":
        return list(ALL_PORTS)
    if preset == "custom":
        ports = parse_port_list(custom or [])
        if not ports:
            raise ValueError("port_scan_type 'custom' needs a non-empty port_custom list")
        return ports
    if preset in PORT_PRESET_FILES:
        return list(_preset_file(preset))
    raise ValueError(f"unknown port preset {preset!r}")


RISKS = ("high", "medium", "low")
HTML_START = (b"<!doctype html", b"<html", b"<head", b"<body")


def looks_like_html(body: bytes, content_type: str = "") -> bool:
    """Tell whether a response is an HTML page (by its type or its first bytes)."""
    return content_type == "text/html" or body.lstrip()[:15].lower().startswith(HTML_START)


@dataclass(frozen=True)
class ContentCheck:
    """What a leaked file's body must look like (every given condition must hold).

    ``magic`` (bytes at ``offset``), ``contains`` (all of them), ``any`` (one of them), ``regex``
    (searched in the decoded text), ``json`` (parses as a JSON object or array). Unless ``html`` is
    set, an HTML page never passes: a leaked file is not a page.
    """

    magic: bytes = b""
    offset: int = 0
    contains: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None
    json: bool = False
    html: bool = False

    def matches(self, body: bytes, content_type: str = "") -> bool:
        """Tell whether ``body`` passes the check."""
        if not body or (not self.html and looks_like_html(body, content_type)):
            return False
        if self.magic and body[self.offset : self.offset + len(self.magic)] != self.magic:
            return False
        if self.contains and not all(c.encode("utf-8") in body for c in self.contains):
            return False
        if self.any and not any(c.encode("utf-8") in body for c in self.any):
            return False
        text = body.decode("utf-8", "replace") if self.regex is not None or self.json else ""
        if self.regex is not None and not self.regex.search(text):
            return False
        if self.json:
            try:
                return isinstance(json.loads(text), (dict, list))
            except ValueError:
                return False
        return True


@dataclass(frozen=True)
class LeakPath:
    """One file leak probe: the path, an optional marker (legacy), its risk group and content check.

    A path may hold ``{host}``, replaced by the probed site's host name.
    """

    path: str
    marker: str | None = None
    risk: str = "medium"
    group: str = ""
    check: ContentCheck | None = None


def _strings(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    return (str(raw),) if isinstance(raw, str) else tuple(str(x) for x in raw)


def parse_check(raw: Any, where: str) -> ContentCheck:
    """Build a :class:`ContentCheck` from its YAML mapping."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a check must be a mapping")
    unknown = set(raw) - {"magic", "offset", "contains", "any", "regex", "json", "html"}
    if unknown:
        raise ValueError(f"{where}: unknown check keys {sorted(unknown)}")
    try:
        regex = re.compile(str(raw["regex"])) if raw.get("regex") else None
        magic = bytes.fromhex(str(raw.get("magic", "")))
    except (re.error, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    check = ContentCheck(
        magic=magic,
        offset=int(raw.get("offset", 0)),
        contains=_strings(raw.get("contains")),
        any=_strings(raw.get("any")),
        regex=regex,
        json=bool(raw.get("json", False)),
        html=bool(raw.get("html", False)),
    )
    if not (check.magic or check.contains or check.any or check.regex or check.json):
        raise ValueError(f"{where}: a check needs magic, contains, any, regex or json")
    return check


def _probe(path: str, check: ContentCheck, risk: str, group: str) -> LeakPath:
    path = path if path.startswith("/") else "/" + path
    marker = check.contains[0] if len(check.contains) == 1 and not check.any else None
    return LeakPath(path, marker, risk, group, check)


def parse_leak_groups(document: Any, source: str = "<leak paths>") -> list[LeakPath]:
    """Expand a leak path document: named ``checks`` and ``groups`` of probes (see fileleak.yaml)."""
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{source}: expected 'checks' and a 'groups' list")
    raw_checks = document.get("checks") or {}
    checks = {str(k): parse_check(v, f"{source} check {k}") for k, v in raw_checks.items()}
    out: dict[str, LeakPath] = {}
    for index, group in enumerate(document["groups"]):
        where = f"{source} group #{index}"
        name, risk = str(group.get("name", "")), group.get("risk")
        if risk not in RISKS or not name:
            raise ValueError(f"{where}: a group needs a name and a risk ({', '.join(RISKS)})")

        def check_of(key: Any, here: str = where) -> ContentCheck:
            if key not in checks:
                raise ValueError(f"{here}: unknown check {key!r}")
            return checks[key]

        for item in group.get("probes") or []:
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError(f"{where}: a probe is [path, check]")
            probe = _probe(str(item[0]), check_of(item[1]), risk, name)
            out.setdefault(probe.path, probe)
        expand = group.get("expand")
        if expand:
            exts = expand.get("exts") or {}
            for folder in _strings(expand.get("dirs")) or ("",):
                for stem in _strings(expand.get("names")):
                    for ext, key in exts.items():
                        probe = _probe(f"{folder}/{stem}{ext}", check_of(key), risk, name)
                        out.setdefault(probe.path, probe)
    return list(out.values())


@functools.lru_cache(maxsize=1)
def load_leak_paths() -> tuple[LeakPath, ...]:
    """The bundled leak probes of ``fileleak.yaml``, high risk first."""
    probes = parse_leak_groups(read_yaml(DATA_DIR / "fileleak.yaml"), "fileleak.yaml")
    return tuple(sorted(probes, key=lambda p: RISKS.index(p.risk)))


def read_yaml(path: Path | str) -> Any:
    """The parsed content of a UTF-8 YAML file."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def rule_entries(document: Any, source: str, error: Callable[[str], Exception]) -> list[tuple[str, Any]]:
    """(``"<source> rule #<index>"``, raw rule) for every rule of a rule document ``{"rules": [...]}``.

    Raises ``error`` (called with the reason) when the document is not such a mapping.
    """
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise error(f"{source}: expected a mapping with a 'rules' list")
    return [(f"{source} rule #{index}", raw) for index, raw in enumerate(document["rules"])]
