"""``{{...}}`` placeholders: variables and DSL expressions replaced by their values.

The innermost placeholder is replaced first, so ``{{base64('{{Host}}')}}`` works as in nuclei.
A placeholder that names no variable and does not evaluate stays as it is and is reported as
unresolved (the caller does not send a request with unresolved placeholders).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from workers.recon.nuclei.dsl import DslError, Expr, compile_expr
from workers.recon.nuclei.helpers import to_text
from workers.recon.nuclei.template import PLACEHOLDER_RE

MAX_ROUNDS = 16


@functools.lru_cache(maxsize=8192)
def _compiled(text: str) -> Expr | None:
    try:
        return compile_expr(text)
    except DslError:
        return None


def expand(text: str, env: Mapping[str, Any]) -> tuple[str, list[str]]:
    """``text`` with its placeholders replaced; the second item lists those left unresolved."""
    if "{{" not in text:
        return text, []
    unresolved: list[str] = []

    def replace(found: Any) -> str:
        inner = found.group(1).strip()
        if "\x00" in inner:
            unresolved.append(inner)
            return f"\x00{len(unresolved) - 1}\x00"
        if inner in env:
            return to_text(env[inner])
        expr = _compiled(inner)
        if expr is not None:
            try:
                return to_text(expr.evaluate(env))
            except DslError:
                pass
        unresolved.append(inner)
        return f"\x00{len(unresolved) - 1}\x00"

    for _ in range(MAX_ROUNDS):
        new = PLACEHOLDER_RE.sub(replace, text)
        if new == text:
            break
        text = new
    for index, inner in reversed(list(enumerate(unresolved))):
        text = text.replace(f"\x00{index}\x00", "{{" + inner + "}}")
    return text, [u for u in unresolved if "\x00" not in u]
