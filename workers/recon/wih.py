"""Web Info Hunter extraction: rules from ``wih_rules.yaml`` applied to page and JavaScript text.

:func:`extract` turns a text into :class:`WihRecord` values (type, rule, value); the record's
``hash`` (SHA-256 of type and value) is what a scope deduplicates on.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workers.recon.datafiles import DATA_DIR, read_yaml, rule_entries

DEFAULT_RULES = DATA_DIR / "wih_rules.yaml"
RECORD_TYPES = ("url", "path", "domain", "ip", "email", "phone", "idcard", "secret")
VALIDATORS = ("cn_id_card",)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_VALUE = 2048
MAX_RECORDS_PER_TEXT = 2000
_SCRIPT_SRC_RE = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,23}$")


class WihRuleError(ValueError):
    """A WIH rule file is malformed."""


@dataclass(frozen=True)
class WihRule:
    """One extraction rule."""

    id: str
    type: str
    pattern: re.Pattern[str]
    group: int = 0
    exclude: re.Pattern[str] | None = None
    severity: str = "info"
    validate: str = ""
    match_examples: tuple[str, ...] = ()
    no_match_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class WihRecord:
    """One extracted value."""

    type: str
    rule: str
    value: str
    severity: str = "info"

    @property
    def hash(self) -> str:
        """The content hash a scope deduplicates on (type and value)."""
        return hashlib.sha256(f"{self.type}\x00{self.value}".encode()).hexdigest()

    def to_doc(self) -> dict[str, Any]:
        """The stored fields of the record (the caller adds scope, source and task)."""
        return {
            "hash": self.hash,
            "type": self.type,
            "rule": self.rule,
            "value": self.value,
            "severity": self.severity,
        }


def parse_wih_rules(document: Any, source: str = "<wih rules>") -> list[WihRule]:
    """Validate a parsed rule document (``{"rules": [...]}``)."""
    rules = []
    for where, raw in rule_entries(document, source, WihRuleError):
        if not isinstance(raw, dict) or not raw.get("id") or not raw.get("regex"):
            raise WihRuleError(f"{where}: a rule needs 'id' and 'regex'")
        if raw.get("type") not in RECORD_TYPES:
            raise WihRuleError(f"{where}: type must be one of {', '.join(RECORD_TYPES)}")
        severity = str(raw.get("severity", "info"))
        if severity not in SEVERITIES:
            raise WihRuleError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
        try:
            pattern = re.compile(str(raw["regex"]))
            exclude = re.compile(str(raw["exclude"])) if raw.get("exclude") else None
        except re.error as exc:
            raise WihRuleError(f"{where} ({raw['id']}): bad regex: {exc}") from None
        group = raw.get("group", 0)
        if not isinstance(group, int) or not 0 <= group <= pattern.groups:
            raise WihRuleError(f"{where} ({raw['id']}): group {group!r} does not exist in the regex")
        validate = str(raw.get("validate", ""))
        if validate and validate not in VALIDATORS:
            raise WihRuleError(f"{where} ({raw['id']}): validate must be one of {', '.join(VALIDATORS)}")
        examples = raw.get("examples") or {}
        if not isinstance(examples, dict) or set(examples) - {"match", "no_match"}:
            raise WihRuleError(f"{where} ({raw['id']}): examples is a mapping of match and no_match lists")
        rules.append(
            WihRule(
                str(raw["id"]),
                str(raw["type"]),
                pattern,
                group,
                exclude,
                severity,
                validate,
                tuple(str(x) for x in examples.get("match") or ()),
                tuple(str(x) for x in examples.get("no_match") or ()),
            )
        )
    return rules


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[WihRule, ...]:
    return tuple(parse_wih_rules(read_yaml(DEFAULT_RULES), str(DEFAULT_RULES)))


def load_wih_rules(extra_files: Iterable[str | Path] = ()) -> list[WihRule]:
    """The bundled rules plus those of ``extra_files``."""
    rules = list(_bundled())
    for path in extra_files:
        rules.extend(parse_wih_rules(read_yaml(path), str(path)))
    return rules


def host_of(url: str) -> str | None:
    """The lower-cased host of an absolute URL (None when it has none or is malformed)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def is_domain(value: str) -> bool:
    """A plausible DNS name with an alphabetic top-level label (not an IP, not ``a.b`` code)."""
    return bool(_HOST_RE.match(value)) and not value.replace(".", "").isdigit()


def valid_cn_id_card(value: str) -> bool:
    """Tell whether ``value`` is a well-formed 18-character Chinese resident ID number.

    The birth date must exist and the last character must be the ISO 7064 MOD 11-2 check digit.
    """
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == value[17].upper()


def _valid(rule: WihRule, value: str) -> bool:
    if not value or len(value) > MAX_VALUE or (rule.exclude is not None and rule.exclude.search(value)):
        return False
    if rule.validate == "cn_id_card" and not valid_cn_id_card(value):
        return False
    if rule.type == "ip":
        try:
            return not ipaddress.ip_address(value).is_unspecified
        except ValueError:
            return False
    if rule.type == "domain":
        return is_domain(value)
    return True


def _matches(rules: Iterable[WihRule], text: str) -> Iterator[WihRecord]:
    for rule in rules:
        for found in rule.pattern.finditer(text):
            value = found.group(rule.group).strip()
            if _valid(rule, value):
                yield WihRecord(rule.type, rule.id, value, rule.severity)


def extract(text: str, rules: Iterable[WihRule]) -> list[WihRecord]:
    """Every distinct record the rules find in ``text`` (hosts of found URLs added as domains)."""
    out: dict[str, WihRecord] = {}
    for record in _matches(rules, text):
        if len(out) >= MAX_RECORDS_PER_TEXT:
            break
        out.setdefault(record.hash, record)
        if record.type == "url":
            host = host_of(record.value)
            if host and is_domain(host):
                domain = WihRecord("domain", "url-host", host)
                out.setdefault(domain.hash, domain)
    return list(out.values())


def script_sources(html: str) -> list[str]:
    """The ``src`` of every ``<script>`` tag, in page order, without duplicates."""
    return list(dict.fromkeys(m.group(1) for m in _SCRIPT_SRC_RE.finditer(html)))


def registrable_suffix(name: str) -> str:
    """The last two labels of a name (an approximation of its registrable domain)."""
    return ".".join(name.split(".")[-2:])
