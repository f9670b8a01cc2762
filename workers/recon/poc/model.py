"""PoC definitions: the declarative YAML format, its validation, and loading from folders.

A PoC file is one YAML mapping::

    id: git-config-exposure            # unique; what ``options.poc`` selects
    name: Exposed Git repository configuration
    severity: medium                   # info, low, medium, high or critical
    references: [https://...]
    tags: [exposure]
    protocol: http                     # http (default) or tcp
    port: 6379                         # tcp only: the port used for bare host targets
    requests:                          # tried in order; the first that matches is the finding
      - method: GET                    # http: method, path (relative to the target URL's path),
        path: /.git/config             #       headers, body
        headers: {Accept: "*/*"}
        body: ""
      - send: "INFO server\\r\\n"       # tcp: bytes to send (YAML escapes), max bytes to read
        read: 4096
    matchers_condition: and            # and (default) or or
    matchers:
      - type: status                   # status: any of the listed codes
        status: [200]
      - type: word                     # word: words found in part (condition or/and)
        part: body                     # body, header, all (status line, headers, body) or data (tcp)
        words: ["[core]"]
        condition: or
        case_insensitive: false
        negative: false                # true inverts the matcher (it must NOT match)
      - type: regex                    # regex: any (or all) of the patterns found in part
        part: body
        regex: ["repositoryformatversion\\s*=\\s*\\d"]
      - type: header                   # header: the named header exists (and its value matches
        name: X-Jenkins                #         words or regex when given)
        words: ["2."]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.recon.datafiles import DATA_DIR

SEVERITIES = ("info", "low", "medium", "high", "critical")
PROTOCOLS = ("http", "tcp")
MATCHER_TYPES = ("status", "word", "regex", "header")
PARTS = ("body", "header", "all", "data")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE")
MAX_READ = 1024 * 1024
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class PocError(ValueError):
    """A PoC file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Matcher:
    """One condition on a response."""

    type: str
    part: str = "body"
    words: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    status: tuple[int, ...] = ()
    name: str = ""
    condition: str = "or"
    case_insensitive: bool = False
    negative: bool = False


@dataclass(frozen=True)
class PocRequest:
    """One request: HTTP (method, path, headers, body) or TCP (send, read)."""

    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    send: bytes = b""
    read: int = 4096


@dataclass(frozen=True)
class Poc:
    """A validated PoC."""

    id: str
    name: str
    severity: str
    protocol: str
    requests: tuple[PocRequest, ...]
    matchers: tuple[Matcher, ...]
    matchers_condition: str = "and"
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    port: int | None = None
    source: str = ""
    description: str = field(default="", compare=False)


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if not isinstance(raw, list) or not all(isinstance(x, str | int | float) for x in raw):
        raise PocError(f"{where}: expected a string or a list of strings")
    return tuple(str(x) for x in raw)


def _choice(raw: Any, choices: tuple[str, ...], default: str, where: str) -> str:
    value = default if raw is None else str(raw).lower()
    if value not in choices:
        raise PocError(f"{where}: {raw!r} is not one of {', '.join(choices)}")
    return value


def _matcher(raw: Any, protocol: str, where: str) -> Matcher:
    if not isinstance(raw, dict):
        raise PocError(f"{where}: a matcher must be a mapping")
    kind = _choice(raw.get("type"), MATCHER_TYPES, "", f"{where}.type")
    default_part = "data" if protocol == "tcp" else "body"
    part = _choice(raw.get("part"), PARTS, default_part, f"{where}.part")
    if (part == "data") != (protocol == "tcp"):
        raise PocError(f"{where}.part: 'data' is the only part of a tcp PoC and unavailable to http ones")
    common: dict[str, Any] = {
        "type": kind,
        "part": part,
        "condition": _choice(raw.get("condition"), ("or", "and"), "or", f"{where}.condition"),
        "case_insensitive": bool(raw.get("case_insensitive", False)),
        "negative": bool(raw.get("negative", False)),
    }
    if kind == "status":
        if protocol == "tcp":
            raise PocError(f"{where}: status matchers are for http PoCs")
        codes = raw.get("status")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, int) for c in codes):
            raise PocError(f"{where}.status: expected a non-empty list of integers")
        return Matcher(**common, status=tuple(codes))
    if kind == "header" and (protocol == "tcp" or not raw.get("name")):
        raise PocError(f"{where}: header matchers need 'name' and an http PoC")
    words = _strings(raw["words"], f"{where}.words") if "words" in raw else ()
    flags = re.IGNORECASE if common["case_insensitive"] else 0
    patterns: list[re.Pattern[str]] = []
    for text in _strings(raw["regex"], f"{where}.regex") if "regex" in raw else ():
        try:
            patterns.append(re.compile(text, flags))
        except re.error as exc:
            raise PocError(f"{where}.regex: {text!r} does not compile: {exc}") from None
    if kind == "word" and not words:
        raise PocError(f"{where}: word matchers need 'words'")
    if kind == "regex" and not patterns:
        raise PocError(f"{where}: regex matchers need 'regex'")
    return Matcher(**common, words=words, patterns=tuple(patterns), name=str(raw.get("name", "")).lower())


def _bytes(raw: Any, where: str) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise PocError(f"{where}: expected a string")
    return raw.encode("utf-8")


def _request(raw: Any, protocol: str, where: str) -> PocRequest:
    if not isinstance(raw, dict):
        raise PocError(f"{where}: a request must be a mapping")
    if protocol == "tcp":
        send = _bytes(raw.get("send"), f"{where}.send")
        read = raw.get("read", 4096)
        if not isinstance(read, int) or not 1 <= read <= MAX_READ:
            raise PocError(f"{where}.read: expected an integer in 1..{MAX_READ}")
        return PocRequest(send=send, read=read)
    method = _choice(
        str(raw.get("method", "GET")).lower(), tuple(m.lower() for m in HTTP_METHODS), "get", where
    )
    path = str(raw.get("path", "/"))
    if not path.startswith("/") or any(c in path for c in "\r\n "):
        raise PocError(f"{where}.path: must start with '/' and contain no spaces or line breaks")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise PocError(f"{where}.headers: expected a mapping")
    pairs = tuple((str(k), str(v)) for k, v in headers.items())
    if any(c in k + v for k, v in pairs for c in "\r\n"):
        raise PocError(f"{where}.headers: line breaks are not allowed")
    return PocRequest(method=method.upper(), path=path, headers=pairs, body=_bytes(raw.get("body"), where))


def parse_poc(document: Any, source: str = "<poc>") -> Poc:
    """Validate one parsed PoC document and build a :class:`Poc` (raises :class:`PocError`)."""
    if not isinstance(document, dict):
        raise PocError(f"{source}: a PoC must be a mapping")
    poc_id = str(document.get("id", ""))
    if not _ID_RE.match(poc_id):
        raise PocError(f"{source}.id: lower-case letters, digits, '.', '_' or '-' (1..128) are required")
    where = f"{source} ({poc_id})"
    protocol = _choice(document.get("protocol"), PROTOCOLS, "http", f"{where}.protocol")
    requests = document.get("requests")
    matchers = document.get("matchers")
    if not isinstance(requests, list) or not requests:
        raise PocError(f"{where}.requests: expected a non-empty list")
    if not isinstance(matchers, list) or not matchers:
        raise PocError(f"{where}.matchers: expected a non-empty list")
    port = document.get("port")
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise PocError(f"{where}.port: expected a port number")
    if protocol == "tcp" and port is None:
        raise PocError(f"{where}.port: tcp PoCs need a default port")
    return Poc(
        id=poc_id,
        name=str(document.get("name") or poc_id),
        severity=_choice(document.get("severity"), SEVERITIES, "info", f"{where}.severity"),
        protocol=protocol,
        requests=tuple(_request(r, protocol, f"{where}.requests[{i}]") for i, r in enumerate(requests)),
        matchers=tuple(_matcher(m, protocol, f"{where}.matchers[{i}]") for i, m in enumerate(matchers)),
        matchers_condition=_choice(
            document.get("matchers_condition"), ("and", "or"), "and", f"{where}.matchers_condition"
        ),
        references=_strings(document.get("references") or [], f"{where}.references"),
        tags=_strings(document.get("tags") or [], f"{where}.tags"),
        port=port,
        source=source,
        description=str(document.get("description") or ""),
    )


BUNDLED_DIR = DATA_DIR / "pocs"


def load_poc_file(path: Path) -> Poc:
    """Parse one PoC file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PocError(f"{path}: cannot be read: {exc}") from None
    return parse_poc(document, str(path))


def load_pocs(extra_dirs: Iterable[str | Path] = (), bundled: Path | None = BUNDLED_DIR) -> list[Poc]:
    """Load the bundled PoCs and every ``*.yaml`` / ``*.yml`` of ``extra_dirs``, sorted by id.

    A later folder's PoC replaces an earlier one with the same id (local overrides); a malformed
    file raises :class:`PocError` naming it, so a broken deployment is noticed at once.
    """
    folders = [Path(d) for d in ([bundled] if bundled else []) + list(extra_dirs)]
    pocs: dict[str, Poc] = {}
    for folder in folders:
        if not folder.is_dir():
            raise PocError(f"{folder}: PoC folder does not exist")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            poc = load_poc_file(path)
            pocs[poc.id] = poc
    return [pocs[k] for k in sorted(pocs)]


def select_pocs(pocs: Iterable[Poc], wanted: Iterable[str] | None) -> list[Poc]:
    """The PoCs whose id is in ``wanted`` (all when it is empty); unknown ids raise :class:`PocError`."""
    pocs = list(pocs)
    names = [w for w in (wanted or []) if w]
    if not names:
        return pocs
    known = {p.id: p for p in pocs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PocError(f"unknown PoC ids: {', '.join(unknown)}")
    return [known[n] for n in dict.fromkeys(names)]
