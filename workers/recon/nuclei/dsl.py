"""A small, safe evaluator for the nuclei DSL (the govaluate-style expressions of ``dsl`` matchers,
``dsl`` extractors, template ``variables`` and ``{{...}}`` placeholders).

Expressions are tokenized and parsed into a tree once (:func:`compile_expr`), then evaluated
against a mapping of variables (:meth:`Expr.evaluate`). Nothing is ever handed to Python's
``eval``: the grammar is literals, variables, calls of the helper functions in
:mod:`workers.recon.nuclei.helpers`, ``! - + * / %``, comparisons (``== != < > <= >=``), regex
operators (``=~ !~``), ``&& ||`` and the ternary ``a ? b : c``. An unknown function is a
compile error (the template is reported as skipped); an unknown variable is an evaluation
error (the matcher does not match, the placeholder stays unresolved).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.recon.nuclei.helpers import FUNCTIONS, HelperError, go_regex, to_number, to_text

MAX_EXPR = 8192
MAX_DEPTH = 64


class DslError(ValueError):
    """An expression does not compile (syntax, unknown function) or cannot be evaluated."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<num>0x[0-9a-fA-F]+|\d+\.\d*|\.\d+|\d+)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>\|\||&&|==|!=|<=|>=|=~|!~|[-+*/%!<>(),?:])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        found = _TOKEN_RE.match(text, pos)
        if not found:
            raise DslError(f"unexpected character {text[pos:].lstrip()[:1]!r} in {text[:80]!r}")
        pos = found.end()
        kind = found.lastgroup or ""
        value = found.group(kind)
        if kind == "num":
            tokens.append(("lit", int(value, 16) if value.startswith("0x") else _number(value)))
        elif kind == "str":
            tokens.append(("lit", _unquote(value)))
        elif kind == "name" and value in ("true", "false"):
            tokens.append(("lit", value == "true"))
        elif kind == "name" and value == "nil":
            tokens.append(("lit", None))
        else:
            tokens.append((kind, value))
    tokens.append(("end", None))
    return tokens


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


Node = tuple[Any, ...]
_BINARY_LEVELS: list[tuple[str, ...]] = [
    ("||",),
    ("&&",),
    ("==", "!=", "<", ">", "<=", ">=", "=~", "!~"),
    ("+", "-"),
    ("*", "/", "%"),
]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, op: str) -> None:
        kind, value = self.take()
        if kind != "op" or value != op:
            raise DslError(f"expected {op!r} in {self.text[:80]!r}")

    def parse(self) -> Node:
        node = self.ternary()
        if self.peek()[0] != "end":
            raise DslError(f"unexpected {self.peek()[1]!r} in {self.text[:80]!r}")
        return node

    def ternary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DslError("expression nested too deeply")
        cond = self.binary(0)
        if self.peek() == ("op", "?"):
            self.take()
            yes = self.ternary()
            self.expect(":")
            no = self.ternary()
            cond = ("?", cond, yes, no)
        self.depth -= 1
        return cond

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in _BINARY_LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = ("bin", op, left, right)
        return left

    def unary(self) -> Node:
        if self.peek() in (("op", "!"), ("op", "-")):
            op = self.take()[1]
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise DslError("expression nested too deeply")
            operand = self.unary()
            self.depth -= 1
            return ("not" if op == "!" else "neg", operand)
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "op" and value == "(":
            node = self.ternary()
            self.expect(")")
            return node
        if kind == "name":
            if self.peek() == ("op", "("):
                self.take()
                name = value.lower()
                if name not in FUNCTIONS:
                    raise DslError(f"unsupported helper function {value}()")
                args: list[Node] = []
                if self.peek() != ("op", ")"):
                    args.append(self.ternary())
                    while self.peek() == ("op", ","):
                        self.take()
                        args.append(self.ternary())
                self.expect(")")
                return ("call", name, tuple(args))
            return ("var", value)
        raise DslError(f"unexpected {value!r} in {self.text[:80]!r}")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, int | float) or isinstance(b, int | float):
        na, nb = to_number(a), to_number(b)
        return na is not None and na == nb
    if a is None or b is None:
        return a is b
    return to_text(a) == to_text(b)


def _compare(op: str, a: Any, b: Any) -> bool:
    na, nb = to_number(a), to_number(b)
    if na is None or nb is None:
        sa, sb = to_text(a), to_text(b)
        pairs = {"<": sa < sb, ">": sa > sb, "<=": sa <= sb, ">=": sa >= sb}
        return pairs[op]
    return {"<": na < nb, ">": na > nb, "<=": na <= nb, ">=": na >= nb}[op]


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+" and (isinstance(a, str | bytes) or isinstance(b, str | bytes)):
        return to_text(a) + to_text(b)
    na, nb = to_number(a), to_number(b)
    if na is None or nb is None:
        raise DslError(f"{op} needs numbers")
    if op == "+":
        return na + nb
    if op == "-":
        return na - nb
    if op == "*":
        return na * nb
    if nb == 0:
        raise DslError("division by zero")
    if op == "/":
        return na / nb
    return na % nb


def _truthy(value: Any) -> bool:
    if not isinstance(value, bool):
        raise DslError("&&, || and ! need booleans")
    return value


def _eval(node: Node, env: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        if node[1] in env:
            return env[node[1]]
        raise DslError(f"unknown variable {node[1]}")
    if kind == "call":
        args = [_eval(arg, env) for arg in node[2]]
        try:
            return FUNCTIONS[node[1]](*args)
        except (HelperError, TypeError, ValueError, re.error, OverflowError) as exc:
            raise DslError(f"{node[1]}(): {exc}") from None
    if kind == "not":
        return not _truthy(_eval(node[1], env))
    if kind == "neg":
        number = to_number(_eval(node[1], env))
        if number is None:
            raise DslError("- needs a number")
        return -number
    if kind == "?":
        return _eval(node[2] if _truthy(_eval(node[1], env)) else node[3], env)
    op = node[1]
    if op == "&&":
        return _truthy(_eval(node[2], env)) and _truthy(_eval(node[3], env))
    if op == "||":
        return _truthy(_eval(node[2], env)) or _truthy(_eval(node[3], env))
    left, right = _eval(node[2], env), _eval(node[3], env)
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("=~", "!~"):
        try:
            hit = go_regex(to_text(right)).search(to_text(left)) is not None
        except re.error as exc:
            raise DslError(f"bad regex: {exc}") from None
        return hit if op == "=~" else not hit
    if op in ("<", ">", "<=", ">="):
        return _compare(op, left, right)
    return _arith(op, left, right)


@dataclass(frozen=True)
class Expr:
    """A compiled DSL expression."""

    text: str
    tree: Node

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """The expression's value with ``env``'s variables; raises :class:`DslError`."""
        return _eval(self.tree, env)

    def names(self) -> set[str]:
        """The variable names the expression reads."""
        found: set[str] = set()
        stack = [self.tree]
        while stack:
            node = stack.pop()
            if node[0] == "var":
                found.add(node[1])
            for part in node[1:]:
                if isinstance(part, tuple) and part and isinstance(part[0], str):
                    stack.append(part)
                elif isinstance(part, tuple):
                    stack.extend(p for p in part if isinstance(p, tuple))
        return found


def compile_expr(text: str) -> Expr:
    """Parse ``text`` into an :class:`Expr`; raises :class:`DslError` on bad syntax or unknown helpers."""
    if len(text) > MAX_EXPR:
        raise DslError("expression too long")
    return Expr(text, _Parser(text).parse())


def evaluate(text: str, env: Mapping[str, Any]) -> Any:
    """Compile and evaluate ``text`` in one go."""
    return compile_expr(text).evaluate(env)
