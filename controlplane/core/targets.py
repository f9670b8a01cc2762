"""Target parsing: domains, IP addresses, CIDR networks, IP ranges, URLs and ``host:port`` items.

Pure functions without I/O. Every rejection is an :class:`InvalidParam` that names
the field and, in its reason, the offending item.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from controlplane.config import LimitsConfig
from controlplane.core.errors import InvalidParam

_idna: Any
try:
    _idna = importlib.import_module("idna")
except ImportError:
    _idna = None

KINDS: tuple[str, ...] = ("ip", "cidr", "iprange", "hostport", "url", "domain")
_KIND_NAMES = {
    "ip": "IP address",
    "cidr": "CIDR network",
    "iprange": "IP range",
    "hostport": "host:port",
    "url": "http(s) URL",
    "domain": "domain",
}

_SPLIT = re.compile(r"[\s,]+")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IP_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_URL_SAFE = "!#$%&'()*+/:;=?@[]"
_DEFAULT_PORTS = {"http": 80, "https": 443}


_DEFAULTS = LimitsConfig()  # the one place the default limits are written


@dataclass(frozen=True)
class Limits:
    """Size limits applied to one task type's input (``limits`` in config; defaults from there)."""

    max_targets: int = _DEFAULTS.max_targets
    max_cidr_addresses: int = _DEFAULTS.max_cidr_addresses
    max_string: int = _DEFAULTS.max_string
    max_name: int = _DEFAULTS.max_name
    max_depth: int = _DEFAULTS.max_depth
    max_data_bytes: int = _DEFAULTS.max_data_bytes
    max_keys: int = _DEFAULTS.max_keys


class _Reject(Exception):
    """An item was recognised as a kind but is not acceptable; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def show(item: str, limit: int = 80) -> str:
    """The item quoted for an error reason, shortened when long."""
    return repr(item if len(item) <= limit else item[: limit - 3] + "...")


def _encode_idn(name: str) -> str | None:
    """The ASCII (punycode) form of an internationalized name, or None if it is not valid IDNA."""
    if _idna is not None:
        try:
            return str(_idna.encode(name, uts46=True).decode("ascii"))
        except (_idna.IDNAError, UnicodeError, ValueError):
            return None
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _punycode_ok(label: str) -> bool:
    try:
        return bool(label[4:].encode("ascii").decode("punycode"))
    except (UnicodeError, ValueError, IndexError):
        return False


def _domain(item: str) -> str | None:
    if item.startswith("*."):
        raise _Reject(f"{show(item)} is a wildcard; wildcard domains are not allowed")
    name = item[:-1] if item.endswith(".") else item
    if not name or len(name) > 1024:
        return None
    if not name.isascii():
        encoded = _encode_idn(name)
        if encoded is None:
            return None
        name = encoded
    name = name.lower()
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if not labels[-1][0].isalpha():
        return None
    if any(label.startswith("xn--") and not _punycode_ok(label) for label in labels):
        return None
    return name


def _ip_obj(item: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not _IP_CHARS.fullmatch(item):
        return None
    try:
        return ipaddress.ip_address(item)
    except ValueError:
        return None


def _ip(item: str, limits: Limits) -> str | None:
    addr = _ip_obj(item)
    return None if addr is None else str(addr)


def _too_large(item: str, count: int, limits: Limits) -> _Reject:
    return _Reject(f"{show(item)} is too large ({count} addresses; at most {limits.max_cidr_addresses})")


def _cidr(item: str, limits: Limits) -> str | None:
    addr, sep, prefix = item.partition("/")
    if not sep or not re.fullmatch(r"[0-9]{1,3}", prefix) or _ip_obj(addr) is None:
        return None
    try:
        net = ipaddress.ip_network(f"{addr}/{int(prefix)}", strict=False)
    except ValueError:
        return None
    if net.num_addresses > limits.max_cidr_addresses:
        raise _too_large(item, net.num_addresses, limits)
    return str(net)


def _iprange(item: str, limits: Limits) -> str | None:
    first, sep, last = item.partition("-")
    start = _ip_obj(first)
    if not sep or start is None:
        return None
    if start.version == 4 and re.fullmatch(r"[0-9]{1,3}", last):
        if int(last) > 255:
            return None
        end = _ip_obj(first.rsplit(".", 1)[0] + "." + str(int(last)))
    else:
        end = _ip_obj(last)
    if end is None or end.version != start.version:
        return None
    if int(end) < int(start):
        raise _Reject(f"{show(item)} ends before it starts")
    count = int(end) - int(start) + 1
    if count > limits.max_cidr_addresses:
        raise _too_large(item, count, limits)
    return f"{start}-{end}"


def _port(text: str) -> int | None:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def _host(text: str) -> str | None:
    """A URL or host:port host: ``[v6]``, IPv4 or a domain, normalized."""
    if text.startswith("[") and text.endswith("]"):
        addr = _ip_obj(text[1:-1])
        return f"[{addr}]" if addr is not None and addr.version == 6 else None
    addr = _ip_obj(text)
    if addr is not None:
        return str(addr) if addr.version == 4 else None
    return _domain(text)


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return text, None
        host, rest = text[: close + 1], text[close + 1 :]
        return (host, rest[1:]) if rest.startswith(":") else (host + rest, None)
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, None)


def _hostport(item: str, limits: Limits) -> str | None:
    host_text, port_text = _split_host_port(item)
    if port_text is None:
        return None
    port = _port(port_text)
    host = _host(host_text)
    if port is None or host is None:
        return None
    return f"{host}:{port}"


def _url(item: str, limits: Limits) -> str | None:
    match = _SCHEME.fullmatch(item)
    if match is None:
        return None
    scheme, rest = match[1].lower(), match[2]
    if scheme not in _DEFAULT_PORTS:
        raise _Reject(f"{show(item)} must use http or https")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _Reject(f"{show(item)} must not contain credentials")
    host_text, port_text = _split_host_port(authority)
    host = _host(host_text)
    port = None if port_text is None else _port(port_text)
    if host is None or (port_text is not None and port is None):
        return None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in tail):
        return None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{quote(tail, safe=_URL_SAFE)}"


_PARSERS: dict[str, Callable[[str, Limits], str | None]] = {
    "ip": _ip,
    "cidr": _cidr,
    "iprange": _iprange,
    "hostport": _hostport,
    "url": _url,
    "domain": lambda item, limits: _domain(item),
}


def describe_kinds(kinds: frozenset[str]) -> str:
    """Human-readable list of target kinds, e.g. ``domain, IP address or CIDR network``."""
    names = [_KIND_NAMES[k] for k in KINDS if k in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def classify_target(item: str, field: str, kinds: frozenset[str], limits: Limits) -> str:
    """Normalize one target item of one of ``kinds``; raise :class:`InvalidParam` naming it otherwise."""
    if len(item) > limits.max_string:
        raise InvalidParam(field, f"{show(item)} is too long (at most {limits.max_string} characters)")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParam(field, f"{show(item)} is not valid Unicode text") from None
    reason = None
    for kind in KINDS:
        if kind not in kinds:
            continue
        try:
            normalized = _PARSERS[kind](item, limits)
        except _Reject as exc:
            reason = reason or exc.reason
            continue
        if normalized is not None:
            return normalized
    raise InvalidParam(field, reason or f"{show(item)} is not a valid {describe_kinds(kinds)}")


def split_target_items(value: str) -> list[str]:
    """The items of a target string: separated by commas, whitespace or newlines, empty ones dropped."""
    return [part for part in _SPLIT.split(value) if part]


def parse_targets(value: object, field: str, kinds: frozenset[str], limits: Limits) -> list[str]:
    """Parse a target list into normalized, de-duplicated items (first occurrence order kept).

    ``value`` is a string whose items are separated by commas, whitespace or
    newlines, or a list of strings (one item each). ``kinds`` is a non-empty
    subset of :data:`KINDS`. Raises :class:`InvalidParam` for ``field`` when the
    list is empty, too long, or any item is not of an allowed kind.
    """
    if not kinds or not kinds <= set(KINDS):
        raise ValueError(f"bad target kinds: {sorted(kinds)}")
    if isinstance(value, str):
        if len(value) > limits.max_data_bytes:
            raise InvalidParam(field, f"must be at most {limits.max_data_bytes} characters")
        items = split_target_items(value)
    elif isinstance(value, list):
        items = []
        for index, entry in enumerate(value):
            if not isinstance(entry, str):
                raise InvalidParam(field, f"item {index} must be a string")
            if entry.strip():
                items.append(entry.strip())
    else:
        raise InvalidParam(field, "must be a string or a list of strings")
    if not items:
        raise InvalidParam(field, "must not be empty")
    if len(items) > limits.max_targets:
        raise InvalidParam(field, f"must have at most {limits.max_targets} targets ({len(items)} given)")
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(classify_target(item, field, kinds, limits))
    return list(seen)


def parse_ports(value: object, field: str) -> list[int]:
    """A port list like ``80,443,8000-8100`` as sorted unique ints in 1..65535."""
    if not isinstance(value, str):
        raise InvalidParam(field, "must be a string like '80,443,8000-8100'")
    ports: set[int] = set()
    for part in value.split(","):
        piece = part.strip()
        match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", piece)
        if match is None:
            raise InvalidParam(
                field, f"{piece!r} is not a port or a port range" if piece else "has an empty item"
            )
        lo, hi = int(match[1]), int(match[2] or match[1])
        if not 1 <= lo <= hi <= 65535:
            raise InvalidParam(field, f"{piece!r} is out of range (ports are 1..65535, low to high)")
        ports.update(range(lo, hi + 1))
    return sorted(ports)
