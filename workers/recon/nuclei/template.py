"""Nuclei templates: the validated model, and parsing one YAML document into it.

A template that uses something this engine does not run (another protocol, OOB interactsh,
fuzzing, flow, workflows, xpath, ...) raises :class:`Unsupported` with the reason; a template
that is malformed raises :class:`TemplateError`. Both are reported as skipped by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.recon.nuclei.dsl import DslError, Expr, compile_expr
from workers.recon.nuclei.helpers import go_regex
from workers.recon.nuclei.jq import JqError, JqProgram, compile_jq

SEVERITIES = ("info", "low", "medium", "high", "critical", "unknown")
MATCHER_TYPES = ("word", "regex", "status", "size", "binary", "dsl")
EXTRACTOR_TYPES = ("regex", "kval", "json", "dsl")
ATTACKS = ("batteringram", "pitchfork", "clusterbomb")
UNSUPPORTED_PROTOCOLS = (
    "headless",
    "code",
    "javascript",
    "dns",
    "file",
    "ssl",
    "websocket",
    "whois",
    "workflows",
)
UNSUPPORTED_REQUEST_KEYS = {
    "fuzzing": "fuzzing",
    "race": "race requests",
    "race_count": "race requests",
    "pipeline": "HTTP pipelining",
    "analyzer": "time-delay analyzer",
    "signature": "request signing",
    "digest-username": "digest authentication",
}
MAX_PAYLOAD_VALUES = 1000
MAX_COMBINATIONS = 1000
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PLACEHOLDER_RE = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.DOTALL)
_MARKER_RE = re.compile(r"§([^§\s]+)§")


class TemplateError(ValueError):
    """A template is malformed; the message names the field."""


class Unsupported(TemplateError):
    """A template needs a feature this engine does not run; the message is the reason."""


@dataclass(frozen=True)
class Matcher:
    """One matcher of a request block."""

    type: str
    part: str = "body"
    condition: str = "or"
    negative: bool = False
    case_insensitive: bool = False
    internal: bool = False
    name: str = ""
    words: tuple[str, ...] = ()
    regexes: tuple[re.Pattern[str], ...] = ()
    statuses: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()
    binaries: tuple[bytes, ...] = ()
    dsl: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Extractor:
    """One extractor of a request block; ``internal`` ones feed later requests as variables."""

    type: str
    name: str = ""
    part: str = "body"
    internal: bool = False
    group: int = 0
    case_insensitive: bool = False
    regexes: tuple[re.Pattern[str], ...] = ()
    keys: tuple[str, ...] = ()
    jq: tuple[JqProgram, ...] = ()
    dsl: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Operators:
    """Matchers (combined by ``condition``) and extractors of one request block."""

    matchers: tuple[Matcher, ...] = ()
    condition: str = "or"
    extractors: tuple[Extractor, ...] = ()


@dataclass(frozen=True)
class HttpBlock:
    """One entry of ``http:`` (or legacy ``requests:``): paths or raw requests, and their operators."""

    operators: Operators
    method: str = "GET"
    paths: tuple[str, ...] = ()
    raws: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    payloads: tuple[tuple[str, tuple[str, ...]], ...] = ()
    attack: str = "batteringram"
    stop_at_first_match: bool = False
    redirects: bool = False
    host_redirects: bool = False
    max_redirects: int = 10
    req_condition: bool = False
    cookie_reuse: bool = True
    unsafe: bool = False


@dataclass(frozen=True)
class NetworkInput:
    """One write (and optional read) of a network block."""

    data: bytes = b""
    read: int = 0


@dataclass(frozen=True)
class NetworkBlock:
    """One entry of ``tcp:`` / ``network:``: addresses to try, what to send, what to read."""

    operators: Operators
    hosts: tuple[str, ...] = ()
    inputs: tuple[NetworkInput, ...] = ()
    read_size: int = 1024
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Template:
    """A parsed template ready to run."""

    id: str
    name: str
    severity: str
    tags: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    description: str = ""
    references: tuple[str, ...] = ()
    classification: dict[str, Any] = field(default_factory=dict, compare=False)
    variables: tuple[tuple[str, str], ...] = ()
    http: tuple[HttpBlock, ...] = ()
    network: tuple[NetworkBlock, ...] = ()
    path: str = ""
    stop_at_first_match: bool = False

    @property
    def protocol(self) -> str:
        """``http`` or ``network``."""
        return "http" if self.http else "network"


def strings(raw: Any, where: str) -> tuple[str, ...]:
    """A string, a comma-separated string (``split``), or a list of scalars, as a tuple of strings."""
    if raw is None:
        return ()
    if isinstance(raw, str | int | float):
        return (str(raw),)
    if isinstance(raw, list) and all(isinstance(x, str | int | float) for x in raw):
        return tuple(str(x) for x in raw)
    raise TemplateError(f"{where}: expected a string or a list of strings")


def split_tags(raw: Any) -> tuple[str, ...]:
    """``tags`` as nuclei writes them (``"a,b"`` or a list), lower-cased, stripped."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else [str(x) for x in raw if x is not None]
    return tuple(dict.fromkeys(t.strip().lower() for t in items if t.strip()))


def _choice(raw: Any, choices: tuple[str, ...], default: str, where: str) -> str:
    value = default if raw is None or raw == "" else str(raw).strip().lower()
    if value not in choices:
        raise TemplateError(f"{where}: {raw!r} is not one of {', '.join(choices)}")
    return value


def _regexes(raw: Any, where: str, ignore_case: bool = False) -> tuple[re.Pattern[str], ...]:
    out = []
    for text in strings(raw, where):
        try:
            out.append(go_regex(text, ignore_case))
        except re.error as exc:
            raise TemplateError(f"{where}: {text[:60]!r} does not compile: {exc}") from None
    return tuple(out)


def _exprs(raw: Any, where: str) -> tuple[Expr, ...]:
    out = []
    for text in strings(raw, where):
        try:
            out.append(compile_expr(text))
        except DslError as exc:
            if "unsupported helper" in str(exc):
                raise Unsupported(str(exc)) from None
            raise TemplateError(f"{where}: {exc}") from None
    return tuple(out)


def _part(raw: Any) -> str:
    part = str(raw or "body").strip().lower()
    if part.startswith("interactsh"):
        raise Unsupported("OOB interactsh matching")
    return {"headers": "header", "response": "raw", "all_headers": "header"}.get(part, part)


def _matcher(raw: Any, where: str) -> Matcher:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a matcher must be a mapping")
    kind = str(raw.get("type", "")).lower()
    if kind == "xpath":
        raise Unsupported("xpath matcher")
    kind = _choice(kind, MATCHER_TYPES, "", f"{where}.type")
    ignore_case = bool(raw.get("case-insensitive", False))
    common: dict[str, Any] = {
        "type": kind,
        "part": _part(raw.get("part")),
        "condition": _choice(raw.get("condition"), ("or", "and"), "or", f"{where}.condition"),
        "negative": bool(raw.get("negative", False)),
        "case_insensitive": ignore_case,
        "internal": bool(raw.get("internal", False)),
        "name": str(raw.get("name") or ""),
    }
    if kind == "word":
        words = strings(raw.get("words"), f"{where}.words")
        if str(raw.get("encoding", "")).lower() == "hex":
            try:
                words = tuple(bytes.fromhex(w).decode("latin-1") for w in words)
            except ValueError:
                raise TemplateError(f"{where}.words: bad hex") from None
        if not words:
            raise TemplateError(f"{where}.words: word matchers need words")
        return Matcher(**common, words=words)
    if kind == "regex":
        regexes = _regexes(raw.get("regex"), f"{where}.regex")
        if not regexes:
            raise TemplateError(f"{where}.regex: regex matchers need patterns")
        return Matcher(**common, regexes=regexes)
    if kind in ("status", "size"):
        values = raw.get(kind)
        values = [values] if isinstance(values, int) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, int) for v in values):
            raise TemplateError(f"{where}.{kind}: expected a list of integers")
        if kind == "status":
            return Matcher(**common, statuses=tuple(values))
        return Matcher(**common, sizes=tuple(values))
    if kind == "binary":
        try:
            binaries = tuple(bytes.fromhex(b) for b in strings(raw.get("binary"), f"{where}.binary"))
        except ValueError:
            raise TemplateError(f"{where}.binary: expected hex strings") from None
        if not binaries:
            raise TemplateError(f"{where}.binary: binary matchers need values")
        return Matcher(**common, binaries=binaries)
    exprs = _exprs(raw.get("dsl"), f"{where}.dsl")
    if not exprs:
        raise TemplateError(f"{where}.dsl: dsl matchers need expressions")
    return Matcher(**common, dsl=exprs)


def _extractor(raw: Any, where: str) -> Extractor:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: an extractor must be a mapping")
    kind = str(raw.get("type", "")).lower()
    if kind == "xpath":
        raise Unsupported("xpath extractor")
    kind = _choice(kind, EXTRACTOR_TYPES, "", f"{where}.type")
    common: dict[str, Any] = {
        "type": kind,
        "name": str(raw.get("name") or ""),
        "part": _part(raw.get("part")),
        "internal": bool(raw.get("internal", False)),
        "case_insensitive": bool(raw.get("case-insensitive", False)),
    }
    if kind == "regex":
        group = raw.get("group", 0)
        if not isinstance(group, int) or group < 0:
            raise TemplateError(f"{where}.group: expected a group number")
        return Extractor(**common, group=group, regexes=_regexes(raw.get("regex"), f"{where}.regex"))
    if kind == "kval":
        keys = tuple(k.lower().replace("-", "_") for k in strings(raw.get("kval"), f"{where}.kval"))
        return Extractor(**common, keys=keys)
    if kind == "json":
        try:
            programs = tuple(compile_jq(t) for t in strings(raw.get("json"), f"{where}.json"))
        except JqError as exc:
            raise Unsupported(str(exc)) from None
        return Extractor(**common, jq=programs)
    return Extractor(**common, dsl=_exprs(raw.get("dsl"), f"{where}.dsl"))


def _operators(raw: dict[str, Any], where: str) -> Operators:
    matchers = raw.get("matchers") or []
    extractors = raw.get("extractors") or []
    if not isinstance(matchers, list) or not isinstance(extractors, list):
        raise TemplateError(f"{where}: matchers and extractors must be lists")
    if not matchers and not extractors:
        raise TemplateError(f"{where}: a request block needs matchers or extractors")
    return Operators(
        matchers=tuple(_matcher(m, f"{where}.matchers[{i}]") for i, m in enumerate(matchers)),
        condition=_choice(raw.get("matchers-condition"), ("or", "and"), "or", f"{where}.matchers-condition"),
        extractors=tuple(_extractor(e, f"{where}.extractors[{i}]") for i, e in enumerate(extractors)),
    )


_INDEXED_RE = re.compile(r"^[a-z][a-z0-9_]*_\d+$")


def _indexed(operators: Operators) -> bool:
    """Whether a DSL expression reads per-request values (``status_code_2``): nuclei then keeps them."""
    exprs = [e for m in operators.matchers for e in m.dsl] + [e for x in operators.extractors for e in x.dsl]
    return any(_INDEXED_RE.match(name) for expr in exprs for name in expr.names())


def _markers(text: str) -> str:
    return _MARKER_RE.sub(lambda m: "{{" + m.group(1) + "}}", text)


def _check_placeholders(texts: list[str]) -> None:
    """Fail early on helpers this engine lacks; ``{{interactsh-url}}`` means OOB."""
    for text in texts:
        if "interactsh" in text:
            raise Unsupported("OOB interactsh-url")
        for found in _PLACEHOLDER_RE.finditer(text):
            inner = found.group(1).strip()
            if "(" not in inner:
                continue
            try:
                compile_expr(inner)
            except DslError as exc:
                if "unsupported helper" in str(exc):
                    raise Unsupported(str(exc)) from None


def _payloads(raw: Any, where: str, base: Path | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: expected a mapping of name to values")
    out = []
    for name, values in raw.items():
        if isinstance(values, str):
            values = _payload_file(values, base)
        items = strings(values, f"{where}.{name}")
        if len(items) > MAX_PAYLOAD_VALUES:
            raise Unsupported(f"payload {name} has more than {MAX_PAYLOAD_VALUES} values")
        out.append((str(name), items))
    return tuple(out)


def _payload_file(name: str, base: Path | None) -> list[str]:
    """Lines of a payload file, looked up beside the template and in its parent folders."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or base is None:
        raise Unsupported(f"payload file {name}")
    for folder in [base, *base.parents][:8]:
        candidate = folder / relative
        if candidate.is_file() and candidate.stat().st_size <= 1024 * 1024:
            return [line for line in candidate.read_text("utf-8", "replace").splitlines() if line]
    raise Unsupported(f"payload file {name} not found")


def _http_block(raw: Any, where: str, base: Path | None) -> HttpBlock:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a request must be a mapping")
    for key, reason in UNSUPPORTED_REQUEST_KEYS.items():
        if raw.get(key):
            raise Unsupported(reason)
    paths = tuple(_markers(p) for p in strings(raw.get("path"), f"{where}.path"))
    raws = tuple(_markers(r) for r in strings(raw.get("raw"), f"{where}.raw"))
    if not paths and not raws:
        raise TemplateError(f"{where}: needs path or raw")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise TemplateError(f"{where}.headers: expected a mapping")
    pairs = tuple((str(k), _markers(str(v))) for k, v in headers.items())
    body = _markers(str(raw.get("body") or ""))
    _check_placeholders([*paths, *raws, body, *(v for _, v in pairs)])
    max_redirects = raw.get("max-redirects", 10)
    if not isinstance(max_redirects, int) or not 0 <= max_redirects <= 50:
        raise TemplateError(f"{where}.max-redirects: expected 0..50")
    attack = _choice(raw.get("attack"), (*ATTACKS, "sniper"), "batteringram", f"{where}.attack")
    operators = _operators(raw, where)
    return HttpBlock(
        operators=operators,
        method=str(raw.get("method") or "GET").upper(),
        paths=paths,
        raws=raws,
        headers=pairs,
        body=body,
        payloads=_payloads(raw.get("payloads"), f"{where}.payloads", base),
        attack=attack,
        stop_at_first_match=bool(raw.get("stop-at-first-match", False)),
        redirects=bool(raw.get("redirects", False)),
        host_redirects=bool(raw.get("host-redirects", False)),
        max_redirects=max_redirects,
        req_condition=bool(raw.get("req-condition", False)) or _indexed(operators),
        cookie_reuse=not raw.get("disable-cookie", False),
        unsafe=bool(raw.get("unsafe", False)),
    )


def _network_block(raw: Any, where: str) -> NetworkBlock:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a request must be a mapping")
    inputs = []
    for index, item in enumerate(raw.get("inputs") or []):
        if not isinstance(item, dict):
            raise TemplateError(f"{where}.inputs[{index}]: expected a mapping")
        text = str(item.get("data") or "")
        if "{{" in text:
            raise Unsupported("network input with placeholders")
        try:
            data = bytes.fromhex(text) if item.get("type") == "hex" else text.encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            raise TemplateError(f"{where}.inputs[{index}].data: not encodable") from None
        inputs.append(NetworkInput(data, int(item.get("read") or 0)))
    hosts = strings(raw.get("host") or raw.get("address"), f"{where}.host")
    ports = tuple(int(p) for p in re.findall(r"\d+", str(raw.get("port") or "")) if 0 < int(p) < 65536)
    if not hosts and not ports:
        raise TemplateError(f"{where}.host: needs host or port")
    return NetworkBlock(
        operators=_operators(raw, where),
        hosts=hosts or ("{{Hostname}}",),
        inputs=tuple(inputs),
        read_size=min(int(raw.get("read-size") or 1024), 65536),
        ports=ports,
    )


def parse_template(document: Any, path: str = "<template>") -> Template:
    """Validate one YAML document and build a :class:`Template`."""
    if not isinstance(document, dict):
        raise TemplateError("a template must be a mapping")
    template_id = str(document.get("id") or "")
    if not _ID_RE.match(template_id):
        raise TemplateError("id: letters, digits, '.', '_' or '-' (1..200) are required")
    info = document.get("info") or {}
    if not isinstance(info, dict):
        raise TemplateError("info: expected a mapping")
    for key in UNSUPPORTED_PROTOCOLS:
        if document.get(key):
            raise Unsupported(f"{key} protocol")
    if document.get("flow"):
        raise Unsupported("flow")
    if document.get("self-contained"):
        raise Unsupported("self-contained")
    http_raw = document.get("http") or document.get("requests") or []
    net_raw = document.get("tcp") or document.get("network") or []
    if http_raw and net_raw:
        raise Unsupported("multi-protocol")
    if not isinstance(http_raw, list) or not isinstance(net_raw, list):
        raise TemplateError("http/network: expected a list of requests")
    if not http_raw and not net_raw:
        raise Unsupported("no http or network requests")
    base = Path(path).parent if path and not path.startswith("<") else None
    variables = document.get("variables") or {}
    constants = document.get("constants") or {}
    if not isinstance(variables, dict) or not isinstance(constants, dict):
        raise TemplateError("variables: expected a mapping")
    pairs = tuple((str(k), str(v)) for k, v in {**constants, **variables}.items())
    _check_placeholders([v for _, v in pairs])
    classification = info.get("classification") or {}
    return Template(
        id=template_id,
        name=str(info.get("name") or template_id),
        severity=_choice(info.get("severity"), SEVERITIES, "unknown", "info.severity"),
        tags=split_tags(info.get("tags")),
        authors=split_tags(info.get("author")),
        description=str(info.get("description") or "").strip(),
        references=strings(info.get("reference"), "info.reference"),
        classification=dict(classification) if isinstance(classification, dict) else {},
        variables=pairs,
        http=tuple(_http_block(r, f"http[{i}]", base) for i, r in enumerate(http_raw)),
        network=tuple(_network_block(r, f"network[{i}]") for i, r in enumerate(net_raw)),
        path=path,
        stop_at_first_match=bool(document.get("stop-at-first-match", False)),
    )


PLACEHOLDER_RE = _PLACEHOLDER_RE
"""``{{expression}}`` without nested braces (the innermost placeholder)."""
