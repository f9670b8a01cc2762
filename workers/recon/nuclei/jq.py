"""A jq subset for ``json`` extractors.

Supported: the identity ``.``; field access ``.name``, ``."name"``, ``.["name"]`` (optional with
``?``); array index ``.[N]`` (negative from the end); iteration ``.[]``; chains of these
(``.data.items[0].id``, ``.[] .name``); pipes ``|``; comma ``,`` for several outputs; and the
builtins ``keys``, ``length``, ``values``, ``first``, ``last``, ``tostring``. Anything else
(``select``, ``map``, arithmetic, ...) is a compile error, so a template using it is reported as
skipped rather than run with a different meaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class JqError(ValueError):
    """The expression is outside the supported subset."""


_STEP_RE = re.compile(
    r"""\s*(?:
        \.\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*)
      | \.\s*"(?P<qfield>(?:[^"\\]|\\.)*)"
      | \.?\[\s*"(?P<bfield>(?:[^"\\]|\\.)*)"\s*\]
      | \.?\[\s*(?P<index>-?\d+)\s*\]
      | \.?\[\s*\](?P<iter>)
      | (?P<dot>\.)
    )(?P<opt>\?)?""",
    re.VERBOSE,
)
BUILTINS = ("keys", "length", "values", "first", "last", "tostring")

Step = tuple[str, Any, bool]


@dataclass(frozen=True)
class JqProgram:
    """A compiled expression: alternatives (``,``) of pipelines (``|``) of step chains."""

    text: str
    branches: tuple[tuple[tuple[Step, ...], ...], ...]

    def run(self, document: Any) -> list[Any]:
        """Every output of the expression on ``document``."""
        out: list[Any] = []
        for pipeline in self.branches:
            values = [document]
            for chain in pipeline:
                values = [v for value in values for v in _run_chain(chain, value)]
            out.extend(values)
        return out


def _compile_chain(text: str) -> tuple[Step, ...]:
    text = text.strip()
    if text in BUILTINS:
        return (("builtin", text, False),)
    if not text.startswith(".") and not text.startswith("["):
        raise JqError(f"unsupported jq expression {text[:60]!r}")
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        found = _STEP_RE.match(text, pos)
        if not found or found.end() == pos:
            raise JqError(f"unsupported jq expression {text[:60]!r}")
        pos = found.end()
        optional = bool(found.group("opt"))
        if found.group("field") is not None:
            steps.append(("field", found.group("field"), optional))
        elif found.group("qfield") is not None:
            steps.append(("field", json.loads(f'"{found.group("qfield")}"'), optional))
        elif found.group("bfield") is not None:
            steps.append(("field", json.loads(f'"{found.group("bfield")}"'), optional))
        elif found.group("index") is not None:
            steps.append(("index", int(found.group("index")), optional))
        elif found.group("iter") is not None:
            steps.append(("iter", None, optional))
    return tuple(steps)


def compile_jq(text: str) -> JqProgram:
    """Compile ``text``; raises :class:`JqError` outside the subset."""
    if any(c in text for c in "()+*/<>=$@;#") or " as " in text:
        raise JqError(f"unsupported jq expression {text[:60]!r}")
    branches = tuple(
        tuple(_compile_chain(chain) for chain in branch.split("|")) for branch in text.split(",")
    )
    return JqProgram(text, branches)


def _builtin(name: str, value: Any) -> Iterator[Any]:
    if name == "keys":
        if isinstance(value, dict):
            yield sorted(value)
        elif isinstance(value, list):
            yield list(range(len(value)))
    elif name == "length":
        yield len(value) if isinstance(value, list | dict | str) else 0
    elif name == "values":
        if value is not None:
            yield value
    elif name in ("first", "last"):
        if isinstance(value, list) and value:
            yield value[0] if name == "first" else value[-1]
    elif name == "tostring":
        yield value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _run_chain(chain: tuple[Step, ...], value: Any) -> Iterator[Any]:
    values = [value]
    for kind, arg, _optional in chain:
        nxt: list[Any] = []
        for item in values:
            if kind == "builtin":
                nxt.extend(_builtin(arg, item))
            elif kind == "field":
                if isinstance(item, dict):
                    nxt.append(item.get(arg))
                elif item is None:
                    nxt.append(None)
            elif kind == "index":
                if isinstance(item, list) and -len(item) <= arg < len(item):
                    nxt.append(item[arg])
                elif isinstance(item, list) or item is None:
                    nxt.append(None)
            elif kind == "iter":
                if isinstance(item, list):
                    nxt.extend(item)
                elif isinstance(item, dict):
                    nxt.extend(item.values())
        values = nxt
    yield from values


def jq_strings(program: JqProgram, text: str) -> list[str]:
    """The non-null outputs of ``program`` on the JSON ``text``, as strings (JSON for non-strings)."""
    try:
        document = json.loads(text)
    except ValueError:
        return []
    out = []
    for value in program.run(document):
        if value is None:
            continue
        out.append(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
    return out
