"""The helper functions the nuclei DSL may call, and the value conversions they share.

Each helper is a plain Python function of already-evaluated arguments. The set covers what
detection templates use in practice: string tests and transforms, encodings, hashes (md5,
sha1, sha256, mmh3 for favicons), random values, version comparison. Go regular expressions
are translated to Python's dialect by :func:`go_regex` (``\\z``, POSIX classes, ``\\x{...}``,
flags not at the start).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import random
import re
import string
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import mmh3

MAX_REPEAT = 1 << 20


class HelperError(ValueError):
    """A helper got arguments it cannot work with."""


def to_text(value: Any) -> str:
    """A value as the DSL prints it (bytes as latin-1, floats without a trailing .0)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(to_text(v) for v in value)
    return str(value)


def to_bytes(value: Any) -> bytes:
    """A value as bytes (text as UTF-8)."""
    if isinstance(value, bytes):
        return value
    return to_text(value).encode("utf-8", "surrogateescape")


def to_number(value: Any) -> int | float | None:
    """A number, or a string that reads as one; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str | bytes):
        text = to_text(value).strip()
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return None
    return None


_POSIX = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r"\s",
    "xdigit": "0-9a-fA-F",
    "word": r"\w",
    "punct": r"!-/:-@\[-`{-~",
}
_FLAGS_RE = re.compile(r"\(\?([imsU]+)\)")


@functools.lru_cache(maxsize=4096)
def go_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile a Go (RE2) pattern with Python's ``re`` (raises ``re.error`` when it cannot)."""
    text = pattern.replace(r"\z", r"\Z")
    text = re.sub(r"\[:(\w+):\]", lambda m: _POSIX.get(m.group(1), m.group(0)), text)
    text = re.sub(r"\\x\{([0-9a-fA-F]{1,6})\}", lambda m: chr(int(m.group(1), 16)), text)
    flags = re.IGNORECASE if ignore_case else 0
    found = _FLAGS_RE.findall(text)
    if found:
        text = _FLAGS_RE.sub("", text)
        for letters in found:
            for letter in letters:
                flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}.get(letter, 0)
    return re.compile(text, flags)


def _contains_all(text: Any, *needles: Any) -> bool:
    haystack = to_text(text)
    return all(to_text(n) in haystack for n in needles)


def _contains_any(text: Any, *needles: Any) -> bool:
    haystack = to_text(text)
    return any(to_text(n) in haystack for n in needles)


def _regex(pattern: Any, text: Any) -> bool:
    return go_regex(to_text(pattern)).search(to_text(text)) is not None


def _replace_regex(text: Any, pattern: Any, new: Any) -> str:
    return go_regex(to_text(pattern)).sub(to_text(new).replace("\\", "\\\\"), to_text(text))


def _b64decode(value: Any) -> str:
    raw = to_bytes(value).strip()
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4)).decode("latin-1")
    except (binascii.Error, ValueError) as exc:
        raise HelperError(str(exc)) from None


def _base64_py(value: Any) -> str:
    return base64.encodebytes(to_bytes(value)).decode("ascii")


def _hex_decode(value: Any) -> str:
    try:
        return bytes.fromhex(to_text(value)).decode("latin-1")
    except ValueError as exc:
        raise HelperError(str(exc)) from None


def _mmh3(value: Any) -> str:
    return str(mmh3.hash(to_bytes(value)))


def _len(value: Any) -> int:
    if isinstance(value, list | tuple | dict):
        return len(value)
    return len(to_text(value))


def _rand_base(length: Any, charset: Any = string.ascii_letters + string.digits) -> str:
    count = min(int(to_number(length) or 0), 4096)
    chars = to_text(charset) or string.ascii_letters
    return "".join(random.choice(chars) for _ in range(count))


def _rand_int(low: Any = 0, high: Any = 2**31 - 1) -> int:
    return random.randint(int(to_number(low) or 0), int(to_number(high) or 0))


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:6]) or (0,)


def _compare_versions(version: Any, *constraints: Any) -> bool:
    have = _version_key(to_text(version))
    for raw in constraints:
        constraint = to_text(raw).strip()
        found = re.match(r"^(<=|>=|==|!=|<|>|=)?\s*v?(.+)$", constraint)
        if not found:
            raise HelperError(f"bad constraint {constraint!r}")
        op, want = found.group(1) or "==", _version_key(found.group(2))
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b, "==": a == b, "=": a == b, "!=": a != b}[op]
        if not ok:
            return False
    return True


def _repeat(text: Any, count: Any) -> str:
    times = int(to_number(count) or 0)
    if times * max(1, len(to_text(text))) > MAX_REPEAT:
        raise HelperError("repeat result too large")
    return to_text(text) * times


def _substr(text: Any, start: Any, end: Any = None) -> str:
    value = to_text(text)
    stop = None if end is None else int(to_number(end) or 0)
    return value[int(to_number(start) or 0) : stop]


def _to_number(value: Any) -> int | float:
    number = to_number(value)
    if number is None:
        raise HelperError(f"{to_text(value)[:40]!r} is not a number")
    return number


def _line_starts_with(text: Any, *prefixes: Any) -> bool:
    lines = to_text(text).splitlines()
    return any(line.startswith(to_text(p)) for line in lines for p in prefixes)


def _line_ends_with(text: Any, *suffixes: Any) -> bool:
    lines = to_text(text).splitlines()
    return any(line.endswith(to_text(s)) for line in lines for s in suffixes)


def _digest(name: str) -> Callable[[Any], str]:
    return lambda value: hashlib.new(name, to_bytes(value)).hexdigest()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _len,
    "to_lower": lambda v: to_text(v).lower(),
    "tolower": lambda v: to_text(v).lower(),
    "to_upper": lambda v: to_text(v).upper(),
    "toupper": lambda v: to_text(v).upper(),
    "contains": lambda text, needle: to_text(needle) in to_text(text),
    "contains_all": _contains_all,
    "contains_any": _contains_any,
    "starts_with": lambda text, *ps: any(to_text(text).startswith(to_text(p)) for p in ps),
    "ends_with": lambda text, *ss: any(to_text(text).endswith(to_text(s)) for s in ss),
    "line_starts_with": _line_starts_with,
    "line_ends_with": _line_ends_with,
    "regex": _regex,
    "replace": lambda text, old, new: to_text(text).replace(to_text(old), to_text(new)),
    "replace_regex": _replace_regex,
    "trim": lambda text, cut=None: to_text(text).strip(None if cut is None else to_text(cut)),
    "trim_left": lambda text, cut: to_text(text).lstrip(to_text(cut)),
    "trim_right": lambda text, cut: to_text(text).rstrip(to_text(cut)),
    "trim_prefix": lambda text, p: to_text(text).removeprefix(to_text(p)),
    "trim_suffix": lambda text, s: to_text(text).removesuffix(to_text(s)),
    "trim_space": lambda text: to_text(text).strip(),
    "concat": lambda *parts: "".join(to_text(p) for p in parts),
    "join": lambda sep, *parts: to_text(sep).join(to_text(p) for p in parts),
    "reverse": lambda text: to_text(text)[::-1],
    "repeat": _repeat,
    "substr": _substr,
    "to_string": to_text,
    "to_number": _to_number,
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "sha512": _digest("sha512"),
    "mmh3": _mmh3,
    "base64": lambda v: base64.b64encode(to_bytes(v)).decode("ascii"),
    "base64_py": _base64_py,
    "base64_decode": _b64decode,
    "hex_encode": lambda v: to_bytes(v).hex(),
    "hex_decode": _hex_decode,
    "url_encode": lambda v: urllib.parse.quote(to_text(v), safe=""),
    "url_decode": lambda v: urllib.parse.unquote(to_text(v)),
    "html_escape": lambda v: html.escape(to_text(v)),
    "html_unescape": lambda v: html.unescape(to_text(v)),
    "dec_to_hex": lambda v: format(int(_to_number(v)), "x"),
    "hex_to_dec": lambda v: int(to_text(v).removeprefix("0x"), 16),
    "rand_base": _rand_base,
    "rand_char": lambda charset=string.ascii_letters: _rand_base(1, charset),
    "rand_text_alpha": lambda n, *_: _rand_base(n, string.ascii_letters),
    "rand_text_alphanumeric": lambda n, *_: _rand_base(n, string.ascii_letters + string.digits),
    "rand_text_numeric": lambda n, *_: _rand_base(n, string.digits),
    "rand_int": _rand_int,
    "unix_time": lambda *offset: int(time.time()) + int(to_number(offset[0]) or 0 if offset else 0),
    "compare_versions": _compare_versions,
}
"""Helper name (lower-case) -> implementation."""
