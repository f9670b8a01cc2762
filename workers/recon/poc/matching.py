"""Evaluating a PoC's matchers against a response, collecting the evidence of what matched."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.recon.http import HttpResponse
from workers.recon.poc.model import Matcher

EVIDENCE_CONTEXT = 60
EVIDENCE_MAX = 400


@dataclass
class Observed:
    """The parts of one answer that matchers look at."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    data: str = ""

    @classmethod
    def of_http(cls, response: HttpResponse) -> Observed:
        """The parts of an HTTP response (body decoded with its charset)."""
        return cls(status=response.status, headers=list(response.headers), body=response.text())

    @classmethod
    def of_tcp(cls, data: bytes) -> Observed:
        """The parts of a TCP answer (decoded byte for byte)."""
        return cls(data=data.decode("latin-1"))

    def header_text(self) -> str:
        """Headers as ``Name: value`` lines."""
        return "\n".join(f"{k}: {v}" for k, v in self.headers)

    def part(self, name: str) -> str:
        """The text of part ``name`` (body, header, all or data)."""
        if name == "header":
            return self.header_text()
        if name == "all":
            return f"HTTP {self.status}\n{self.header_text()}\n\n{self.body}"
        if name == "data":
            return self.data
        return self.body


def _snippet(text: str, start: int, end: int) -> str:
    """``text[start:end]`` with some context either side, bounded."""
    lo, hi = max(0, start - EVIDENCE_CONTEXT), min(len(text), end + EVIDENCE_CONTEXT)
    return text[lo:hi][:EVIDENCE_MAX]


def _find_words(matcher: Matcher, text: str) -> list[dict[str, Any]]:
    haystack = text.lower() if matcher.case_insensitive else text
    hits = []
    for word in matcher.words:
        needle = word.lower() if matcher.case_insensitive else word
        at = haystack.find(needle)
        if at >= 0:
            hits.append({"word": word, "snippet": _snippet(text, at, at + len(needle))})
        elif matcher.condition == "and":
            return []
    return hits


def _find_patterns(patterns: Sequence[re.Pattern[str]], condition: str, text: str) -> list[dict[str, Any]]:
    hits = []
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            hits.append({"regex": pattern.pattern, "match": found.group(0)[:EVIDENCE_MAX]})
        elif condition == "and":
            return []
    return hits


def _evaluate(matcher: Matcher, seen: Observed) -> list[dict[str, Any]]:
    """The evidence of a positive match of ``matcher`` (empty when it does not match)."""
    if matcher.type == "status":
        return [{"status": seen.status}] if seen.status in matcher.status else []
    if matcher.type == "header":
        values = [v for k, v in seen.headers if k.lower() == matcher.name]
        if not values:
            return []
        text = "\n".join(values)
        if matcher.words and not _find_words(matcher, text):
            return []
        if matcher.patterns and not _find_patterns(matcher.patterns, matcher.condition, text):
            return []
        return [{"header": matcher.name, "value": text[:EVIDENCE_MAX]}]
    text = seen.part(matcher.part)
    if matcher.type == "word":
        return _find_words(matcher, text)
    return _find_patterns(matcher.patterns, matcher.condition, text)


def match_all(matchers: Sequence[Matcher], condition: str, seen: Observed) -> list[dict[str, Any]] | None:
    """Evidence (one entry per positive matcher) when the matchers hold under ``condition``, else None."""
    evidence: list[dict[str, Any]] = []
    results = []
    for index, matcher in enumerate(matchers):
        hits = _evaluate(matcher, seen)
        ok = not hits if matcher.negative else bool(hits)
        results.append(ok)
        if ok and not matcher.negative:
            evidence.append({"matcher": index, "type": matcher.type, "part": matcher.part, "hits": hits})
        if condition == "and" and not ok:
            return None
    if condition == "or" and not any(results):
        return None
    return evidence
