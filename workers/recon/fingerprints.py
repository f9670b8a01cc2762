"""Site fingerprint rules: loading the extensible YAML rule file and matching responses against it."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.recon.datafiles import DATA_DIR, read_yaml, rule_entries

DEFAULT_RULES = DATA_DIR / "fingerprints.yaml"
MATCHER_TYPES = ("header", "body", "title", "favicon_hash", "regex")
REGEX_PARTS = ("body", "title", "headers")


class RuleError(ValueError):
    """A fingerprint rule file is malformed."""


@dataclass(frozen=True)
class Matcher:
    """One condition on a response; see the header of ``fingerprints.yaml`` for the semantics."""

    type: str
    name: str = ""
    contains: str = ""
    hash: int | None = None
    pattern: re.Pattern[str] | None = None
    part: str = "body"


@dataclass(frozen=True)
class Rule:
    """A product and the matchers that identify it (any of them, or all when ``condition`` is "and")."""

    name: str
    matchers: tuple[Matcher, ...]
    condition: str = "or"


@dataclass
class PageFacts:
    """The parts of a fetched page that rules look at."""

    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    title: str = ""
    favicon_hash: int | None = None

    def headers_text(self) -> str:
        """Headers rendered as ``name: value`` lines (names lower-cased)."""
        return "\n".join(f"{k}: {v}" for k, v in self.headers.items())


def _parse_matcher(raw: Any, where: str) -> Matcher:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: a matcher must be a mapping")
    kind = raw.get("type")
    if kind not in MATCHER_TYPES:
        raise RuleError(f"{where}: unknown matcher type {kind!r}; expected one of {MATCHER_TYPES}")
    if kind == "header":
        if not raw.get("name"):
            raise RuleError(f"{where}: header matcher needs 'name'")
        return Matcher("header", name=str(raw["name"]).lower(), contains=str(raw.get("contains", "")))
    if kind in ("body", "title"):
        if not raw.get("contains"):
            raise RuleError(f"{where}: {kind} matcher needs 'contains'")
        return Matcher(kind, contains=str(raw["contains"]))
    if kind == "favicon_hash":
        try:
            return Matcher("favicon_hash", hash=int(raw["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"{where}: favicon_hash matcher needs an integer 'hash'") from exc
    part = raw.get("part", "body")
    if part not in REGEX_PARTS:
        raise RuleError(f"{where}: regex part must be one of {REGEX_PARTS}")
    try:
        pattern = re.compile(str(raw["pattern"]))
    except (KeyError, re.error) as exc:
        raise RuleError(f"{where}: regex matcher needs a valid 'pattern'") from exc
    return Matcher("regex", pattern=pattern, part=part)


def parse_rules(document: Any, source: str = "<rules>") -> list[Rule]:
    """Validate a parsed rule document (``{"rules": [...]}``) and build :class:`Rule` objects."""
    rules = []
    for where, raw in rule_entries(document, source, RuleError):
        if not isinstance(raw, dict) or not raw.get("name") or not isinstance(raw.get("matchers"), list):
            raise RuleError(f"{where}: a rule needs 'name' and a 'matchers' list")
        condition = raw.get("condition", "or")
        if condition not in ("or", "and"):
            raise RuleError(f"{where}: condition must be 'or' or 'and'")
        matchers = tuple(_parse_matcher(m, f"{where} ({raw['name']})") for m in raw["matchers"])
        if not matchers:
            raise RuleError(f"{where}: no matchers")
        rules.append(Rule(str(raw["name"]), matchers, condition))
    return rules


def load_rules(paths: Iterable[Path | str] = ()) -> list[Rule]:
    """Load the bundled rules plus any extra rule files (later files add rules, they do not replace)."""
    rules = list(_bundled_rules())
    for path in paths:
        rules.extend(parse_rules(read_yaml(path), str(path)))
    return rules


@functools.lru_cache(maxsize=1)
def _bundled_rules() -> tuple[Rule, ...]:
    return tuple(parse_rules(read_yaml(DEFAULT_RULES), str(DEFAULT_RULES)))


def matcher_hits(matcher: Matcher, page: PageFacts) -> bool:
    """Tell whether one matcher matches ``page``."""
    if matcher.type == "header":
        value = page.headers.get(matcher.name)
        return value is not None and matcher.contains.lower() in value.lower()
    if matcher.type == "body":
        return matcher.contains in page.body
    if matcher.type == "title":
        return matcher.contains.lower() in page.title.lower()
    if matcher.type == "favicon_hash":
        return page.favicon_hash is not None and page.favicon_hash == matcher.hash
    assert matcher.pattern is not None
    text = {"body": page.body, "title": page.title, "headers": page.headers_text()}[matcher.part]
    return matcher.pattern.search(text) is not None


def match_fingerprints(rules: Iterable[Rule], page: PageFacts) -> list[str]:
    """Names of the rules that match ``page``, in rule order, without duplicates."""
    names: list[str] = []
    for rule in rules:
        hits = (matcher_hits(m, page) for m in rule.matchers)
        if (all(hits) if rule.condition == "and" else any(hits)) and rule.name not in names:
            names.append(rule.name)
    return names
