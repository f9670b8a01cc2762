"""Matchers and extractors applied to one response, with the evidence of what matched.

A response is seen as nuclei's DSL map (an "event"): ``body``, ``all_headers`` (status line and
headers), ``header``, ``status_code``, ``content_length``, ``content_type``, ``response`` and
``raw`` (headers + body), ``request``, ``host``, ``matched``, each response header by its
lower-cased name with ``-`` as ``_``, each cookie by its lower-cased name, and the template's
variables. A matcher's ``part`` names one of these; ``header`` means ``all_headers`` and ``all``
means body followed by headers, as in nuclei.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.recon.nuclei.dsl import DslError
from workers.recon.nuclei.helpers import to_bytes, to_text
from workers.recon.nuclei.jq import jq_strings
from workers.recon.nuclei.substitute import expand
from workers.recon.nuclei.template import Extractor, Matcher, Operators

SNIPPET_CONTEXT = 80
SNIPPET_MAX = 400
MAX_EXTRACTED = 50

Event = dict[str, Any]


def part_text(event: Mapping[str, Any], part: str) -> str | None:
    """The text of ``part`` in ``event`` (None when the event has no such part)."""
    if part in ("body", ""):
        return to_text(event.get("body", ""))
    if part == "header":
        return to_text(event.get("all_headers", ""))
    if part == "all":
        return to_text(event.get("body", "")) + to_text(event.get("all_headers", ""))
    if part in event:
        return to_text(event[part])
    return None


def _snippet(text: str, start: int, end: int) -> str:
    lo, hi = max(0, start - SNIPPET_CONTEXT), min(len(text), end + SNIPPET_CONTEXT)
    return text[lo:hi][:SNIPPET_MAX]


def _words(matcher: Matcher, text: str, event: Mapping[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    haystack = text.lower() if matcher.case_insensitive else text
    hits: list[dict[str, Any]] = []
    for word in matcher.words:
        if "{{" in word:
            word, _ = expand(word, event)
        needle = word.lower() if matcher.case_insensitive else word
        at = haystack.find(needle)
        if at >= 0:
            hits.append({"word": word, "snippet": _snippet(text, at, at + len(needle))})
            if matcher.condition == "or":
                return True, hits
        elif matcher.condition == "and":
            return False, []
    return bool(hits), hits


def _regexes(matcher: Matcher, text: str) -> tuple[bool, list[dict[str, Any]]]:
    hits: list[dict[str, Any]] = []
    for pattern in matcher.regexes:
        found = pattern.search(text)
        if found:
            hits.append({"regex": pattern.pattern, "match": found.group(0)[:SNIPPET_MAX]})
            if matcher.condition == "or":
                return True, hits
        elif matcher.condition == "and":
            return False, []
    return bool(hits), hits


def _binaries(matcher: Matcher, data: bytes) -> tuple[bool, list[dict[str, Any]]]:
    hits: list[dict[str, Any]] = []
    for value in matcher.binaries:
        if value in data:
            hits.append({"binary": value.hex()})
            if matcher.condition == "or":
                return True, hits
        elif matcher.condition == "and":
            return False, []
    return bool(hits), hits


def _dsl(matcher: Matcher, event: Mapping[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    hits: list[dict[str, Any]] = []
    for expr in matcher.dsl:
        try:
            ok = expr.evaluate(event) is True
        except DslError:
            ok = False
        if ok:
            hits.append({"dsl": expr.text[:SNIPPET_MAX]})
            if matcher.condition == "or":
                return True, hits
        elif matcher.condition == "and":
            return False, []
    return bool(hits), hits


def match_one(matcher: Matcher, event: Mapping[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Whether ``matcher`` holds (negation applied) and, when it holds positively, its hits."""
    if matcher.type == "status":
        code = event.get("status_code")
        ok = code in matcher.statuses
        hits = [{"status": code}] if ok else []
    elif matcher.type == "dsl":
        ok, hits = _dsl(matcher, event)
    else:
        text = part_text(event, matcher.part)
        if text is None:
            return False, []
        if matcher.type == "word":
            ok, hits = _words(matcher, text, event)
        elif matcher.type == "regex":
            ok, hits = _regexes(matcher, text)
        elif matcher.type == "size":
            size = len(to_bytes(event.get("body_bytes", text))) if matcher.part == "body" else len(text)
            ok = size in matcher.sizes
            hits = [{"size": size}] if ok else []
        else:
            data = event.get("body_bytes", b"") if matcher.part in ("body", "") else to_bytes(text)
            ok, hits = _binaries(matcher, data)
    if matcher.negative:
        return not ok, []
    return ok, hits


def extract_one(extractor: Extractor, event: Mapping[str, Any]) -> list[str]:
    """The values ``extractor`` finds in ``event`` (deduplicated, in order, at most 50)."""
    values: list[str] = []
    if extractor.type == "kval":
        values = [to_text(event[k]) for k in extractor.keys if k in event and to_text(event[k])]
    elif extractor.type == "dsl":
        for expr in extractor.dsl:
            try:
                value = expr.evaluate(event)
            except DslError:
                continue
            if value not in (None, "", False):
                values.append(to_text(value))
    else:
        text = part_text(event, extractor.part)
        if text is None:
            return []
        if extractor.type == "json":
            for program in extractor.jq:
                values.extend(jq_strings(program, text))
        else:
            for pattern in extractor.regexes:
                for found in pattern.finditer(text):
                    try:
                        values.append(found.group(extractor.group))
                    except (IndexError, re.error):
                        break
                    if len(values) >= MAX_EXTRACTED:
                        break
    if extractor.case_insensitive:
        values = [v.lower() for v in values]
    return list(dict.fromkeys(v for v in values if v is not None))[:MAX_EXTRACTED]


@dataclass
class Outcome:
    """What a request block's operators made of one response."""

    matched: bool = False
    evidence: list[dict[str, Any]] = field(default_factory=list)
    extracted: dict[str, list[str]] = field(default_factory=dict)
    internal: dict[str, str] = field(default_factory=dict)

    @property
    def matcher_names(self) -> list[str]:
        """Names of the named matchers that matched."""
        return [e["name"] for e in self.evidence if e.get("name")]


def apply(operators: Operators, event: Mapping[str, Any]) -> Outcome:
    """Run extractors (always) and matchers on ``event``.

    With matchers, the outcome matches when they hold under the block's condition (every
    matcher is evaluated under ``or``, to name all that matched). Without matchers, any
    value from a non-internal extractor is a match.
    """
    outcome = Outcome()
    for index, extractor in enumerate(operators.extractors):
        values = extract_one(extractor, event)
        if not values:
            continue
        if extractor.internal:
            if extractor.name:
                outcome.internal[extractor.name] = values[0]
        else:
            outcome.extracted.setdefault(extractor.name or f"extractor-{index}", []).extend(values)
    if not operators.matchers:
        outcome.matched = bool(outcome.extracted)
        return outcome
    results = []
    for index, matcher in enumerate(operators.matchers):
        ok, hits = match_one(matcher, event)
        results.append(ok)
        if ok and not matcher.internal and (hits or not matcher.negative):
            outcome.evidence.append(
                {
                    "matcher": index,
                    "name": matcher.name,
                    "type": matcher.type,
                    "part": matcher.part,
                    "negative": matcher.negative,
                    "hits": hits,
                }
            )
        if operators.condition == "and" and not ok:
            outcome.evidence = []
            return outcome
    outcome.matched = all(results) if operators.condition == "and" else any(results)
    if not outcome.matched:
        outcome.evidence = []
    return outcome
