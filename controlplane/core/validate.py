"""Validation of client input: the ``data`` of each task type, UUIDs and integer query arguments.

Pure functions without I/O. Every rejection raises :class:`InvalidParam` with a
dotted field path (``data.options.port_custom``) and a short English reason.
Target syntax lives in :mod:`controlplane.core.targets`; ``Limits`` and
``parse_targets`` are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.config import LimitsConfig
from controlplane.core.cron import FIELDS as CRON_FIELDS
from controlplane.core.cron import Cron
from controlplane.core.errors import InvalidParam
from controlplane.core.merge import STATUSES
from controlplane.core.targets import Limits, classify_target, parse_ports, parse_targets
from controlplane.core.tasktypes import SPEC_TYPES

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "limits_for",
    "parse_created",
    "parse_int",
    "parse_schedule_patch",
    "parse_search",
    "parse_sort",
    "parse_statuses",
    "parse_targets",
    "parse_uuid",
    "parse_worker",
    "validate_task_data",
]

Parser = Callable[[object, str], Any]

DEFAULT_LIMITS = Limits()

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
_DIGITS = re.compile(r"[0-9]+")
_CRON_NUMBER = re.compile(r"[0-9]{1,2}")
_INT64 = 2**63
_MAX_SHORT = 64
_MAX_INTERVAL = 366 * 86400


def limits_for(config: LimitsConfig, task_type: str) -> Limits:
    """The limits of one task type: the ``limits`` section, then its ``per_type`` entry."""
    values = {f: getattr(config, f) for f in Limits.__dataclass_fields__}
    values.update(config.per_type.get(task_type, {}))
    return Limits(**values)


MAX_SKIP = 2**53


def parse_page(value: object, size: int) -> int:
    """The ``page`` query argument: at least 1, and small enough that ``(page - 1) * size`` is a sane skip."""
    page = parse_int(value, "page", 1, None, 1)
    if (page - 1) * size > MAX_SKIP:
        raise InvalidParam("page", f"must be at most {MAX_SKIP // size + 1} for size {size}")
    return page


# -- list parameters (GET /api/celery_task/) -------------------------------------------

LIST_SORTS = ("-created", "created", "-started", "started", "-runtime", "runtime", "status")
"""The orders the task list accepts (``sort=``); ``-created`` (newest first) is the spec's."""
MIN_SEARCH, MAX_SEARCH = 1, 100
_MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def parse_statuses(value: str | None) -> tuple[str, ...] | None:
    """``status``: one status or several separated by commas (the feed's syntax and messages)."""
    if value is None:
        return None
    found = {part.strip() for part in value.split(",") if part.strip()}
    if not found:
        raise InvalidParam("status", f"must name a status; valid: {', '.join(STATUSES)}")
    bad = sorted(found - set(STATUSES))
    if bad:
        raise InvalidParam("status", f"unknown status {bad[0][:64]!r}; valid: {', '.join(STATUSES)}")
    return tuple(sorted(found))


def parse_sort(value: str | None) -> str:
    """``sort``: one of :data:`LIST_SORTS`; absent is the spec's newest first."""
    if value is None:
        return "-created"
    if value not in LIST_SORTS:
        raise InvalidParam("sort", f"must be one of {', '.join(LIST_SORTS)}")
    return value


def parse_search(value: str | None) -> str | None:
    """``q``: the text a task's name or target starts with; blank is no search."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) > MAX_SEARCH:
        raise InvalidParam("q", f"must be at most {MAX_SEARCH} characters")
    if any(ord(c) < 32 for c in text):
        raise InvalidParam("q", "must not contain control characters")
    return text


def parse_created(value: str | None, field: str) -> float | None:
    """``created_after`` / ``created_before``: ISO 8601 (a time without offset is UTC) or epoch seconds."""
    if value is None:
        return None
    text = value.strip()
    why = "must be an ISO 8601 time (2024-05-01T12:00:00Z) or epoch seconds"
    if _EPOCH.fullmatch(text):
        seconds = float(text)
    else:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidParam(field, why) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = moment.timestamp()
    if not 0 <= seconds <= _MAX_EPOCH:
        raise InvalidParam(field, "must be between 1970-01-01 and 9999-12-31")
    return seconds


def parse_worker(value: str | None) -> str | None:
    """``worker``: a worker's hostname (``celery@host``), as the list shows it."""
    if value is None:
        return None
    if not value.strip():
        raise InvalidParam("worker", "must not be empty")
    return value


def parse_uuid(value: object, field: str) -> str:
    """A canonical UUID string (36 characters with hyphens, any case), returned lowercased."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidParam(field, "must be a UUID")
    return value.lower()


def _bounds(lo: int, hi: int | None) -> str:
    return f"must be at least {lo}" if hi is None else f"must be between {lo} and {hi}"


def parse_int(value: object, field: str, lo: int, hi: int | None, default: int) -> int:
    """An integer query argument: None gives ``default``; else an int or a string of ASCII digits in range.

    Without ``hi`` the value must still fit in a signed 64-bit integer.
    """
    if value is None:
        return default
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value) if len(value) <= 20 else _INT64
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidParam(field, "must be an integer")
    if number < lo or (hi is not None and number > hi):
        raise InvalidParam(field, _bounds(lo, hi))
    if number >= _INT64:
        raise InvalidParam(field, f"must be at most {_INT64 - 1}")
    return number


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParam(field, "must be a boolean (true or false)")
    return value


def _enum(*choices: str) -> Parser:
    def parse(value: object, field: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidParam(field, "must be one of " + ", ".join(repr(c) for c in choices))
        return value

    return parse


def _int_range(lo: int, hi: int | None) -> Parser:
    def parse(value: object, field: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidParam(field, "must be an integer")
        if value < lo or (hi is not None and value > hi):
            raise InvalidParam(field, _bounds(lo, hi))
        return value

    return parse


def _number(lo: float, hi: float) -> Parser:
    def parse(value: object, field: str) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidParam(field, "must be a number")
        if not lo <= value <= hi:
            raise InvalidParam(field, f"must be between {lo} and {hi}")
        return float(value)

    return parse


def _text(max_len: int) -> Parser:
    """A non-empty single-line string, surrounding whitespace removed."""

    def parse(value: object, field: str) -> str:
        if not isinstance(value, str):
            raise InvalidParam(field, "must be a string")
        text = value.strip()
        if not text:
            raise InvalidParam(field, "must not be empty")
        if len(text) > max_len:
            raise InvalidParam(field, f"must be at most {max_len} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise InvalidParam(field, "must not contain control characters")
        return text

    return parse


_scope = _text(128)
_short = _text(_MAX_SHORT)


def _poc_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidParam(field, "must be a list of PoC ids")
    pocs: dict[str, None] = {}
    for index, item in enumerate(value):
        pocs.setdefault(_text(256)(item, f"{field}[{index}]"))
    return list(pocs)


def _words(limit: int, allow_empty: bool = True) -> Parser:
    """A list of short strings (template tags), deduplicated in order."""

    def parse(value: object, field: str) -> list[str]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise InvalidParam(
                field, "must be a " + ("" if allow_empty else "non-empty ") + "list of strings"
            )
        words: dict[str, None] = {}
        for index, item in enumerate(value):
            words.setdefault(_text(limit)(item, f"{field}[{index}]"))
        return list(words)

    return parse


SEVERITIES = ("info", "low", "medium", "high", "critical", "unknown")


def _severities(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidParam(field, f"must be a non-empty list of {', '.join(SEVERITIES)}")
    bad = [v for v in value if v not in SEVERITIES]
    if bad:
        raise InvalidParam(field, f"unknown severity {str(bad[0])[:32]!r}; valid: {', '.join(SEVERITIES)}")
    return list(dict.fromkeys(str(v) for v in value))


def parse_severities(value: str | None, field: str = "severity") -> list[str] | None:
    """A query parameter of comma-separated severities (``high,critical``), or None when absent."""
    if value is None:
        return None
    return _severities([v.strip() for v in value.split(",") if v.strip()], field)


def _task_id(value: object, field: str) -> str:
    if isinstance(value, str) and (_OBJECT_ID.fullmatch(value) or _UUID.fullmatch(value)):
        return value.lower()
    raise InvalidParam(field, "must be a 24-hex ObjectId or a UUID")


def _cron_value(token: str, lo: int, hi: int, names: Mapping[str, int]) -> int | None:
    number = int(token) if _CRON_NUMBER.fullmatch(token) else names.get(token)
    return number if number is not None and lo <= number <= hi else None


def _cron_piece(piece: str, lo: int, hi: int, names: Mapping[str, int]) -> bool:
    base, slash, step = piece.partition("/")
    if slash and not (_CRON_NUMBER.fullmatch(step) and int(step) >= 1):
        return False
    if base == "*":
        return True
    first, dash, last = base.partition("-")
    start = _cron_value(first, lo, hi, names)
    end = _cron_value(last, lo, hi, names) if dash else start
    return start is not None and end is not None and start <= end


def _cron(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParam(field, "must be a string")
    parts = value.lower().split()
    if len(parts) != 5:
        raise InvalidParam(field, "must have 5 fields: minute hour day-of-month month day-of-week")
    for part, (name, lo, hi, names) in zip(parts, CRON_FIELDS, strict=True):
        if not all(_cron_piece(piece, lo, hi, names) for piece in part.split(",")):
            raise InvalidParam(field, f"{part!r} is not a valid {name} field")
    expression = " ".join(parts)
    try:
        Cron(expression).next_after(dt.datetime.now(dt.UTC))
    except ValueError:
        raise InvalidParam(field, "never fires (no such date)") from None
    return expression


def _schedule(value: object, field: str, min_interval: int = 60) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidParam(field, "must be an object")
    for key in value:
        if key not in ("interval", "cron"):
            raise InvalidParam(f"{field}.{key}", "unknown field; expected 'interval' or 'cron'")
    if len(value) != 1:
        raise InvalidParam(field, "must have exactly one of 'interval' or 'cron'")
    if "interval" in value:
        return {"interval": _int_range(min_interval, _MAX_INTERVAL)(value["interval"], f"{field}.interval")}
    return {"cron": _cron(value["cron"], f"{field}.cron")}


#: What ``PATCH /api/schedules/{id}/`` may change.
SCHEDULE_PATCH_KEYS = ("paused", "interval", "cron")


def parse_schedule_patch(body: object) -> dict[str, Any]:
    """A schedule change: ``{"paused": bool}`` and/or one of ``interval`` and ``cron`` (the create rules).

    Returns ``{"paused": bool}``, ``{"schedule": {...}}`` or both; 400 naming the key for
    an unknown key, a bad value, both ``interval`` and ``cron``, or nothing to change.
    """
    if not isinstance(body, dict):
        raise InvalidParam("body", "must be a JSON object")
    for key in body:
        if key not in SCHEDULE_PATCH_KEYS:
            raise InvalidParam(str(key)[:_MAX_SHORT], "unknown field; expected paused, interval or cron")
    if not body:
        raise InvalidParam("body", "must have paused, interval or cron")
    if "interval" in body and "cron" in body:
        raise InvalidParam("cron", "give either interval or cron, not both")
    change: dict[str, Any] = {}
    if "paused" in body:
        change["paused"] = _bool(body["paused"], "paused")
    if "interval" in body:
        change["schedule"] = {"interval": _int_range(60, _MAX_INTERVAL)(body["interval"], "interval")}
    elif "cron" in body:
        change["schedule"] = {"cron": _cron(body["cron"], "cron")}
    return change


def _webhook(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParam(field, "must be a string")
    return classify_target(value.strip(), field, frozenset({"url"}), DEFAULT_LIMITS)


Options = Mapping[str, tuple[Parser, object]]

_PLUGIN_KEYS = ("plugin_name", "enable", "vul_name")


def _plugin_config(value: object, field: str) -> list[dict[str, Any]]:
    """ARL's ``poc_config`` / ``brute_config``: ``[{"plugin_name": str, "enable": bool}, ...]``.

    Entries are kept once per plugin name, in order; ``vul_name`` (ARL fills it in) is accepted
    and dropped.
    """
    if not isinstance(value, list):
        raise InvalidParam(field, "must be a list of {plugin_name, enable} objects")
    plugins: dict[str, bool] = {}
    for index, item in enumerate(value):
        path = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise InvalidParam(path, "must be an object with plugin_name and enable")
        for key in item:
            if key not in _PLUGIN_KEYS:
                raise InvalidParam(f"{path}.{key}", "unknown field; expected plugin_name, enable")
        if "plugin_name" not in item:
            raise InvalidParam(f"{path}.plugin_name", "is required")
        name = _text(256)(item["plugin_name"], f"{path}.plugin_name")
        enable = _bool(item["enable"], f"{path}.enable") if "enable" in item else True
        plugins.setdefault(name, enable)
    return [{"plugin_name": name, "enable": enable} for name, enable in plugins.items()]


#: The options of ``ip_task`` and the types that take its options: ARL's ``ip_config``,
#: ``site_config`` and the policy's top-level switches, with ARL's names and defaults.
_IP_OPTIONS: Options = {
    "port_scan": (_bool, True),
    "port_scan_type": (_enum("test", "top100", "top1000", "all", "custom"), "test"),
    "port_custom": (parse_ports, None),
    "exclude_ports": (parse_ports, None),
    "service_detection": (_bool, False),
    "os_detection": (_bool, False),
    "use_nmap": (_bool, False),
    "host_timeout_type": (_enum("default", "custom"), None),
    "host_timeout": (_int_range(1, 86400), None),
    "port_parallelism": (_int_range(1, 10_000), None),
    "port_min_rate": (_int_range(1, 1_000_000), None),
    "skip_scan_cdn_ip": (_bool, False),
    "npoc_service_detection": (_bool, False),
    "service_brute": (_bool, False),
    "brute_config": (_plugin_config, None),
    "site_identify": (_bool, True),
    "ssl_cert": (_bool, False),
    "file_leak": (_bool, False),
    "site_capture": (_bool, None),
    "site_spider": (_bool, False),
    "nuclei_scan": (_bool, False),
    "web_info_hunter": (_bool, False),
    "poc_config": (_plugin_config, None),
    "scope_id": (_scope, None),
}
#: ``domain_task`` adds ARL's ``domain_config`` and the site stages that need names.
_DOMAIN_OPTIONS: Options = {
    "domain_brute": (_bool, True),
    "domain_brute_type": (_enum("test", "small", "big"), "small"),
    **_IP_OPTIONS,
    "dns_query_plugin": (_bool, False),
    "alt_dns": (_bool, False),
    "arl_search": (_bool, False),
    "search_engines": (_bool, False),
    "findvhost": (_bool, False),
}
_RISK_OPTIONS: Options = {
    "poc": (_poc_list, None),
    "ids": (_poc_list, None),
    "exclude_ids": (_poc_list, None),
    "tags": (_words(64, allow_empty=False), None),
    "exclude_tags": (_words(64), None),
    "severity": (_severities, None),
    "concurrency": (_int_range(1, 100), None),
    "timeout": (_number(0.1, 60), None),
    "host_concurrency": (_int_range(1, 50), None),
    "max_requests_per_host": (_int_range(1, 100_000), None),
    "max_host_errors": (_int_range(1, 10_000), None),
}
_FOFA_OPTIONS: Options = {
    "size": (_int_range(1, 10000), 100),
    "page": (_int_range(1, None), None),
    "key": (_text(256), None),
    "email": (_text(256), None),
    **_IP_OPTIONS,
}
_GITHUB_OPTIONS: Options = {"max_results": (_int_range(1, 1000), 200)}


@dataclass(frozen=True)
class _Schema:
    """Fields of one task type besides name/type/task_tag; ``display`` is the target shown without targets."""

    options: Options
    kinds: frozenset[str] = frozenset()
    target_required: bool = False
    fields: Mapping[str, tuple[Parser, bool]] = field(default_factory=dict)
    display: str = ""


_REQUIRED_SCOPE: Mapping[str, tuple[Parser, bool]] = {"scope_id": (_scope, True)}
_SCHEDULED: Mapping[str, tuple[Parser, bool]] = {"schedule": (_schedule, False), "webhook": (_webhook, False)}
_DOMAINS = frozenset({"domain"})
_KEYWORD: Mapping[str, tuple[Parser, bool]] = {"keyword": (_text(256), True)}

_SCHEMAS: dict[str, _Schema] = {
    "domain_task": _Schema(_DOMAIN_OPTIONS, _DOMAINS, True),
    "ip_task": _Schema(_IP_OPTIONS, frozenset({"ip", "cidr", "iprange"}), True),
    "run_risk_cruising": _Schema(_RISK_OPTIONS, frozenset({"url", "hostport", "domain", "ip"}), True),
    "domain_task_sync_task": _Schema(
        {}, fields={"task_id": (_task_id, True), **_REQUIRED_SCOPE}, display="task_id"
    ),
    "fofa_task": _Schema(_FOFA_OPTIONS, fields={"query": (_text(1024), True)}, display="query"),
    "domain_exec_task": _Schema(
        _DOMAIN_OPTIONS, _DOMAINS, False, {**_REQUIRED_SCOPE, **_SCHEDULED}, "scope_id"
    ),
    "ip_exec_task": _Schema(
        _IP_OPTIONS, frozenset({"ip", "cidr"}), False, {**_REQUIRED_SCOPE, **_SCHEDULED}, "scope_id"
    ),
    "github_task_task": _Schema(_GITHUB_OPTIONS, fields=_KEYWORD, display="keyword"),
    "github_task_monitor": _Schema(
        {**_GITHUB_OPTIONS, "scope_id": (_scope, None)}, fields={**_KEYWORD, **_SCHEDULED}, display="keyword"
    ),
    "asset_site_update": _Schema({}, fields={**_REQUIRED_SCOPE, **_SCHEDULED}, display="scope_id"),
    "asset_wih_update": _Schema({}, fields={**_REQUIRED_SCOPE, **_SCHEDULED}, display="scope_id"),
    "add_asset_site_task": _Schema({}, frozenset({"url", "domain", "hostport"}), True, _REQUIRED_SCOPE),
}
_COMMON = ("name", "type", "task_tag", "options")


def _check_key(key: object, path: str, limits: Limits) -> str:
    if not isinstance(key, str):
        raise InvalidParam(path, "keys must be strings")
    if not key:
        raise InvalidParam(path, "keys must not be empty")
    if len(key) > limits.max_name:
        raise InvalidParam(path, f"keys must be at most {limits.max_name} characters")
    if key.startswith("$"):
        raise InvalidParam(path, f"key {key[:40]!r} must not start with '$'")
    if "." in key or "\x00" in key:
        raise InvalidParam(path, f"key {key[:40]!r} must not contain '.' or NUL")
    return key


def _check_tree(value: object, path: str, depth: int, limits: Limits) -> None:
    """Generic checks of a JSON value: types, nesting, key names, string sizes (``data.target`` exempt)."""
    if isinstance(value, dict | list):
        if depth > limits.max_depth:
            raise InvalidParam(path, f"is nested too deeply (at most {limits.max_depth} levels)")
        if isinstance(value, list):
            for index, item in enumerate(value):
                _check_tree(item, f"{path}[{index}]", depth + 1, limits)
            return
        if len(value) > limits.max_keys:
            raise InvalidParam(path, f"must have at most {limits.max_keys} keys")
        for key, item in value.items():
            _check_tree(item, f"{path}.{_check_key(key, path, limits)}", depth + 1, limits)
    elif isinstance(value, str):
        if len(value) > limits.max_string and path != "data.target":
            raise InvalidParam(path, f"must be at most {limits.max_string} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParam(path, "must be valid Unicode text") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParam(path, "must be a finite number")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -_INT64 <= value < _INT64:
            raise InvalidParam(path, "integer is out of range")
    elif value is not None and not isinstance(value, bool):
        raise InvalidParam(path, "must be a JSON value")


def _check_generic(data: object, limits: Limits) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidParam("data", "must be an object")
    _check_tree(data, "data", 1, limits)
    size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limits.max_data_bytes:
        raise InvalidParam("data", f"must be at most {limits.max_data_bytes} bytes as JSON ({size} given)")
    return data


def _parse_options(raw: object, table: Options) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidParam("data.options", "must be an object")
    for key in raw:
        if key not in table:
            expected = ", ".join(table) if table else "none"
            raise InvalidParam(f"data.options.{key}", f"unknown option; expected one of: {expected}")
    options: dict[str, Any] = {}
    for key, (parse, default) in table.items():
        if key in raw:
            options[key] = parse(raw[key], f"data.options.{key}")
        elif default is not None:
            options[key] = default
    if options.get("host_timeout_type") == "custom" and "host_timeout" not in options:
        raise InvalidParam("data.options.host_timeout", "is required when host_timeout_type is 'custom'")
    if "port_scan_type" in table:
        custom_scan = options.get("port_scan_type") == "custom"
        if custom_scan and "port_custom" not in options:
            raise InvalidParam("data.options.port_custom", "is required when port_scan_type is 'custom'")
        if not custom_scan and "port_custom" in options:
            raise InvalidParam("data.options.port_custom", "is only allowed when port_scan_type is 'custom'")
    return options


def _header(
    data: Mapping[str, Any], task_type: str, first: str, defaults: tuple[str, str], limits: Limits
) -> dict[str, Any]:
    """``name``, ``type`` and ``task_tag``: validated when given, else defaulted."""
    name = data.get("name", "")
    if not isinstance(name, str):
        raise InvalidParam("data.name", "must be a string")
    name = name.strip() or f"{task_type} {first}".strip()[: limits.max_name]
    if len(name) > limits.max_name:
        raise InvalidParam("data.name", f"must be at most {limits.max_name} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidParam("data.name", "must not contain control characters")
    header = {"name": name}
    for key, default in zip(("type", "task_tag"), defaults, strict=True):
        header[key] = _short(data[key], f"data.{key}") if key in data else default
    return header


def _validate_custom(task_type: str, data: dict[str, Any], limits: Limits) -> dict[str, Any]:
    target = data.get("target", "")
    if not isinstance(target, str):
        raise InvalidParam("data.target", "must be a string")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise InvalidParam("data.options", "must be an object")
    first = target.strip()[: limits.max_name]
    checked: dict[str, Any] = {}
    if "schedule" in data:
        # Any interval from 1 s for extra types (the demo and test types run quickly); its shape is checked.
        checked["schedule"] = _schedule(data["schedule"], "data.schedule", min_interval=1)
    if "webhook" in data:
        checked["webhook"] = _webhook(data["webhook"], "data.webhook")
    return {
        **data,
        **checked,
        **_header(data, task_type, first, ("custom", "task"), limits),
        "target": target,
        "options": options,
    }


def validate_task_data(
    task_type: str, data: object, limits: Limits = DEFAULT_LIMITS, *, custom: bool = False
) -> dict[str, Any]:
    """Validate and normalize the ``data`` of a task creation request.

    The result always holds ``name``, ``target`` (display string), ``type``,
    ``task_tag`` and ``options`` (defaults filled in), plus the type's own
    normalized fields (``targets``, ``query``, ``keyword``, ``task_id``,
    ``scope_id``, ``schedule``, ``webhook``). With ``custom=True`` only the
    generic checks apply and ``data`` is returned with those defaults added.
    Raises :class:`InvalidParam` naming the offending field.
    """
    if not custom and task_type not in _SCHEMAS:
        raise InvalidParam("task_type", "unknown task type; expected one of: " + ", ".join(_SCHEMAS))
    checked = _check_generic(data, limits)
    if custom:
        return _validate_custom(task_type, checked, limits)
    schema = _SCHEMAS[task_type]
    allowed = {*_COMMON, *schema.fields, *(("target",) if schema.kinds else ())}
    for key in checked:
        if key not in allowed:
            raise InvalidParam(f"data.{key}", f"unknown field for {task_type}")
    result: dict[str, Any] = {}
    targets: list[str] = []
    if schema.kinds and (schema.target_required or "target" in checked):
        if "target" not in checked:
            raise InvalidParam("data.target", "is required")
        targets = parse_targets(checked["target"], "data.target", schema.kinds, limits)
    for key, (parse, required) in schema.fields.items():
        if key in checked:
            result[key] = parse(checked[key], f"data.{key}")
        elif required:
            raise InvalidParam(f"data.{key}", "is required")
    options = _parse_options(checked.get("options", {}), schema.options)
    target = ",".join(targets) if targets else str(result.get(schema.display, ""))
    first = targets[0] if targets else target
    entry = next(t for t in SPEC_TYPES if t.value == task_type)
    header = _header(checked, task_type, first, (entry.kind, entry.task_tag), limits)
    if schema.kinds:
        result["targets"] = targets
    return {**header, "target": target, "options": options, **result}
