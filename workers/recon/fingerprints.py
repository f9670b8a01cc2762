"""Site fingerprints: our own YAML rules, the facts of a fetched page, and a detection's shape.

Our rules (``workers/data/fingerprints.yaml`` plus extra files) cover what the technology database
(:mod:`workers.recon.technologies`) lacks: favicon hashes, title-based login pages and Chinese
enterprise products. :class:`PageFacts` carries what both look at; its ``document`` is a static
parse of the HTML (elements, meta tags, scripts, styles, visible text), made once per page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from workers.recon.datafiles import DATA_DIR, read_yaml, rule_entries

DEFAULT_RULES = DATA_DIR / "fingerprints.yaml"
MATCHER_TYPES = ("header", "body", "title", "favicon_hash", "regex", "all")
REGEX_PARTS = ("body", "title", "headers")
MAX_PARSE = 512 * 1024
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr keygen".split())


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
    version: re.Pattern[str] | None = None
    matchers: tuple[Matcher, ...] = ()

    @property
    def title_only(self) -> bool:
        """True when this matcher looks at nothing but the page title."""
        if self.type == "all":
            return all(m.title_only for m in self.matchers)
        return self.type == "title" or (self.type == "regex" and self.part == "title")


@dataclass(frozen=True)
class Rule:
    """A product and the matchers that identify it (any of them, or all when ``condition`` is "and")."""

    name: str
    matchers: tuple[Matcher, ...]
    condition: str = "or"
    categories: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


@dataclass
class Detection:
    """A product found on a page: its name, version (may be empty), categories and confidence (1..100)."""

    name: str
    version: str = ""
    categories: list[str] = field(default_factory=list)
    confidence: int = 100
    source: str = "rules"

    def to_doc(self) -> dict[str, Any]:
        """The fingerprint as stored in a site's ``finger`` list."""
        return {
            "name": self.name,
            "version": self.version,
            "categories": list(self.categories),
            "confidence": self.confidence,
        }


@dataclass
class Element:
    """One element of a parsed page: tag, attributes and where its text lies in the document."""

    tag: str
    attrs: dict[str, str]
    parent: int
    index: int
    text_start: int
    text_end: int = -1


class _DocParser(HTMLParser):
    def __init__(self, doc: Document) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = doc
        self.stack: list[int] = []
        self.raw_tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        doc = self.doc
        values = {k.lower(): v or "" for k, v in attrs}
        parent = self.stack[-1] if self.stack else -1
        element = Element(tag, values, parent, len(doc.elements), len(doc.chunks))
        doc.elements.append(element)
        if tag == "meta":
            key = (values.get("name") or values.get("property") or values.get("http-equiv") or "").lower()
            if key and "content" in values:
                doc.meta.setdefault(key, values["content"])
        elif tag == "script" and values.get("src"):
            doc.script_src.append(values["src"])
        if tag in VOID_TAGS:
            element.text_end = element.text_start
        else:
            self.stack.append(element.index)
        self.raw_tag = tag if tag in ("script", "style") else ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        elements = self.doc.elements
        if not any(elements[i].tag == tag for i in self.stack):
            return
        while self.stack:
            element = elements[self.stack.pop()]
            element.text_end = len(self.doc.chunks)
            if element.tag == tag:
                break
        self.raw_tag = ""

    def handle_data(self, data: str) -> None:
        if self.raw_tag == "script":
            self.doc.scripts.append(data)
        elif self.raw_tag == "style":
            self.doc.styles.append(data)
        else:
            self.doc.chunks.append(data)


@dataclass
class Document:
    """A static parse of an HTML page: elements, meta tags, scripts, styles and visible text."""

    elements: list[Element] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    script_src: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, html: str) -> Document:
        """Parse ``html`` (tolerantly; unclosed elements end with the document)."""
        doc = cls()
        parser = _DocParser(doc)
        try:
            parser.feed(html[:MAX_PARSE])
            parser.close()
        except (AssertionError, ValueError):
            pass
        for element in doc.elements:
            if element.text_end < 0:
                element.text_end = len(doc.chunks)
        return doc

    def text_of(self, element: Element) -> str:
        """The element's text content (scripts and styles left out)."""
        return "".join(self.chunks[element.text_start : element.text_end])

    @functools.cached_property
    def text(self) -> str:
        """The visible text of the page, whitespace collapsed."""
        return " ".join(" ".join(self.chunks).split())

    @functools.cached_property
    def by_tag(self) -> dict[str, list[Element]]:
        """Elements grouped by tag name."""
        out: dict[str, list[Element]] = {}
        for element in self.elements:
            out.setdefault(element.tag, []).append(element)
        return out

    @functools.cached_property
    def by_id(self) -> dict[str, list[Element]]:
        """Elements grouped by their id."""
        out: dict[str, list[Element]] = {}
        for element in self.by_attr.get("id", []):
            out.setdefault(element.attrs["id"], []).append(element)
        return out

    @functools.cached_property
    def by_class(self) -> dict[str, list[Element]]:
        """Elements grouped by each of their classes."""
        out: dict[str, list[Element]] = {}
        for element in self.by_attr.get("class", []):
            for name in set(element.attrs["class"].split()):
                out.setdefault(name, []).append(element)
        return out

    @functools.cached_property
    def by_attr(self) -> dict[str, list[Element]]:
        """Elements grouped by the names of their attributes."""
        out: dict[str, list[Element]] = {}
        for element in self.elements:
            for name in element.attrs:
                out.setdefault(name, []).append(element)
        return out


@dataclass
class PageFacts:
    """The parts of a fetched page that rules look at."""

    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    title: str = ""
    favicon_hash: int | None = None
    url: str = ""

    def headers_text(self) -> str:
        """Headers rendered as ``name: value`` lines (names lower-cased)."""
        return "\n".join(f"{k}: {v}" for k, v in self.headers.items())

    @functools.cached_property
    def document(self) -> Document:
        """The parsed HTML of the body (empty for a body that is not markup)."""
        return Document.parse(self.body) if "<" in self.body else Document()

    @functools.cached_property
    def cookies(self) -> dict[str, str]:
        """Cookie names (lower-cased) and values set by the ``Set-Cookie`` headers."""
        out: dict[str, str] = {}
        for line in self.headers.get("set-cookie", "").split("\n"):
            name, sep, value = line.split(";", 1)[0].partition("=")
            if sep and name.strip():
                out.setdefault(name.strip().lower(), value.strip())
        return out


def _compile(raw: Any, where: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(str(raw))
    except re.error as exc:
        raise RuleError(f"{where}: {what} is not a valid regex: {exc}") from None


def _parse_matcher(raw: Any, where: str) -> Matcher:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: a matcher must be a mapping")
    kind = raw.get("type")
    if kind not in MATCHER_TYPES:
        raise RuleError(f"{where}: unknown matcher type {kind!r}; expected one of {MATCHER_TYPES}")
    version = _compile(raw["version"], where, "version") if raw.get("version") else None
    if version is not None and version.groups < 1:
        raise RuleError(f"{where}: a version regex needs a capture group")
    if kind == "all":
        parts = raw.get("matchers")
        if not isinstance(parts, list) or len(parts) < 2:
            raise RuleError(f"{where}: an 'all' matcher needs a 'matchers' list of two or more")
        group = tuple(_parse_matcher(m, where) for m in parts)
        if all(m.title_only for m in group):
            raise RuleError(f"{where}: an 'all' group needs a signal besides the title")
        return Matcher("all", matchers=group)
    if kind == "header":
        if not raw.get("name"):
            raise RuleError(f"{where}: header matcher needs 'name'")
        name = str(raw["name"]).lower()
        return Matcher("header", name=name, contains=str(raw.get("contains", "")), version=version)
    if kind in ("body", "title"):
        if not raw.get("contains"):
            raise RuleError(f"{where}: {kind} matcher needs 'contains'")
        return Matcher(kind, contains=str(raw["contains"]), version=version)
    if kind == "favicon_hash":
        try:
            return Matcher("favicon_hash", hash=int(raw["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"{where}: favicon_hash matcher needs an integer 'hash'") from exc
    part = raw.get("part", "body")
    if part not in REGEX_PARTS:
        raise RuleError(f"{where}: regex part must be one of {REGEX_PARTS}")
    if "pattern" not in raw:
        raise RuleError(f"{where}: regex matcher needs a valid 'pattern'")
    return Matcher("regex", pattern=_compile(raw["pattern"], where, "pattern"), part=part, version=version)


def _names(raw: Any, where: str, key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: {key} must be a list of names")
    return tuple(value)


def parse_rules(document: Any, source: str = "<rules>") -> list[Rule]:
    """Validate a parsed rule document (``{"rules": [...]}``) and build :class:`Rule` objects.

    A title is never enough on its own: in an "or" rule a title matcher must sit in an ``all``
    group with another signal, and an "and" rule needs a matcher that is not about the title.
    """
    rules = []
    for where, raw in rule_entries(document, source, RuleError):
        if not isinstance(raw, dict) or not raw.get("name") or not isinstance(raw.get("matchers"), list):
            raise RuleError(f"{where}: a rule needs 'name' and a 'matchers' list")
        condition = raw.get("condition", "or")
        if condition not in ("or", "and"):
            raise RuleError(f"{where}: condition must be 'or' or 'and'")
        here = f"{where} ({raw['name']})"
        matchers = tuple(_parse_matcher(m, here) for m in raw["matchers"])
        if not matchers:
            raise RuleError(f"{where}: no matchers")
        if condition == "or" and any(m.title_only for m in matchers):
            raise RuleError(f"{here}: a title matcher alone is not enough; pair it in an 'all' group")
        if condition == "and" and all(m.title_only for m in matchers):
            raise RuleError(f"{here}: the rule needs a signal besides the title")
        categories = _names(raw, here, "categories")
        rules.append(Rule(str(raw["name"]), matchers, condition, categories, _names(raw, here, "aliases")))
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


def _matcher_text(matcher: Matcher, page: PageFacts) -> str | None:
    if matcher.type == "header":
        return page.headers.get(matcher.name)
    if matcher.type in ("body", "title"):
        return page.body if matcher.type == "body" else page.title
    return {"body": page.body, "title": page.title, "headers": page.headers_text()}.get(matcher.part)


def matcher_hits(matcher: Matcher, page: PageFacts) -> bool:
    """Tell whether one matcher matches ``page``."""
    if matcher.type == "all":
        return all(matcher_hits(m, page) for m in matcher.matchers)
    if matcher.type == "favicon_hash":
        return page.favicon_hash is not None and page.favicon_hash == matcher.hash
    text = _matcher_text(matcher, page)
    if text is None:
        return False
    if matcher.type == "header":
        return matcher.contains.lower() in text.lower()
    if matcher.type == "body":
        return matcher.contains in text
    if matcher.type == "title":
        return matcher.contains.lower() in text.lower()
    assert matcher.pattern is not None
    return matcher.pattern.search(text) is not None


def _version(matchers: Iterable[Matcher], page: PageFacts) -> str:
    for matcher in matchers:
        if matcher.type == "all":
            found = _version(matcher.matchers, page)
        elif matcher.version is not None and matcher_hits(matcher, page):
            hit = matcher.version.search(_matcher_text(matcher, page) or "")
            found = (hit.group(1) or "").strip()[:40] if hit else ""
        else:
            found = ""
        if found:
            return found
    return ""


def detect(rules: Iterable[Rule], page: PageFacts) -> list[Detection]:
    """The rules that match ``page`` as detections (with versions), in rule order, one per name."""
    out: dict[str, Detection] = {}
    for rule in rules:
        hits = (matcher_hits(m, page) for m in rule.matchers)
        if rule.name in out or not (all(hits) if rule.condition == "and" else any(hits)):
            continue
        out[rule.name] = Detection(rule.name, _version(rule.matchers, page), list(rule.categories))
    return list(out.values())


def match_fingerprints(rules: Iterable[Rule], page: PageFacts) -> list[str]:
    """Names of the rules that match ``page``, in rule order, without duplicates."""
    return [d.name for d in detect(rules, page)]
