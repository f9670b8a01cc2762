"""Loaders for the data files bundled in ``workers/data``: wordlists, port presets, leak paths, rule files."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

WORDLISTS = {"small": DATA_DIR / "wordlists" / "small.txt", "big": DATA_DIR / "wordlists" / "big.txt"}

TEST_PORTS: tuple[int, ...] = (80, 443, 8080, 8443, 22, 21, 3306, 6379, 8000, 8888, 9200, 27017)

PORT_PRESET_FILES = {
    "top100": DATA_DIR / "ports_top100.txt",
    "top1000": DATA_DIR / "ports_top1000.txt",
}


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


def parse_port_list(lines: Iterable[str | int]) -> list[int]:
    """Parse ports and ranges ("80", "8000-8010", 443) into a sorted, deduplicated list.

    Raises ``ValueError`` on anything outside 1..65535 or malformed.
    """
    ports: set[int] = set()
    for item in lines:
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


def ports_for_preset(preset: str, custom: Iterable[int | str] | None = None) -> list[int]:
    """Return the ports of a scan preset: "test", "top100", "top1000", "all" or "custom"."""
    if preset == "test":
        return sorted(TEST_PORTS)
    if preset == "all":
        return list(range(1, 65536))
    if preset == "custom":
        ports = parse_port_list(custom or [])
        if not ports:
            raise ValueError("port_scan_type 'custom' needs a non-empty port_custom list")
        return ports
    if preset in PORT_PRESET_FILES:
        return parse_port_list(_content_lines(PORT_PRESET_FILES[preset]))
    raise ValueError(f"unknown port preset {preset!r}")


@dataclass(frozen=True)
class LeakPath:
    """One file leak probe: the path to request and an optional marker the body must contain."""

    path: str
    marker: str | None = None


@functools.lru_cache(maxsize=1)
def load_leak_paths() -> tuple[LeakPath, ...]:
    """Load ``fileleak.txt``: one ``<path> [<marker>]`` per line."""
    out = []
    for line in _content_lines(DATA_DIR / "fileleak.txt"):
        path, _, marker = line.partition(" ")
        if not path.startswith("/"):
            path = "/" + path
        out.append(LeakPath(path, marker.strip() or None))
    return tuple(out)


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
