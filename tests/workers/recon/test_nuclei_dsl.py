"""The DSL evaluator, its helper functions, placeholders and the jq subset: pure units, no network."""

from __future__ import annotations

from typing import Any

import pytest

from workers.recon.nuclei.dsl import DslError, compile_expr, evaluate
from workers.recon.nuclei.helpers import go_regex
from workers.recon.nuclei.jq import JqError, compile_jq, jq_strings
from workers.recon.nuclei.substitute import expand

ENV: dict[str, Any] = {
    "status_code": 200,
    "body": "<title>Nacos</title> Hello World",
    "content_length": 32,
    "all_headers": "HTTP/1.1 200 OK\r\nServer: nginx\r\n",
    "x_jenkins": "2.414.1",
    "status_code_1": 401,
}


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("status_code == 200", True),
        ("status_code != 200", False),
        ("status_code >= 200 && status_code < 300", True),
        ("contains(body, 'Nacos') && !contains(body, 'nope')", True),
        ("contains(to_lower(body), 'nacos') || false", True),
        ("contains(tolower(all_headers), 'server: nginx')", True),
        ("contains_all(body, 'Hello', 'World')", True),
        ("contains_all(body, 'Hello', 'Moon')", False),
        ("contains_any(body, 'Moon', 'World')", True),
        ("len(body) > 10 && len(body) == content_length", True),
        ("regex('<title>Nacos</title>', body)", True),
        ("body =~ '(?i)hello world'", True),
        ("body !~ 'xyz'", True),
        ("to_upper('ab') == 'AB'", True),
        ("md5('admin')", "21232f297a57a5a743894a0e4a801fc3"),
        ("base64('admin:admin')", "YWRtaW46YWRtaW4="),
        ("base64_decode('YWRtaW4=')", "admin"),
        ("base64_py('Hello')", "SGVsbG8=\n"),
        ("sha256('a')", "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"),
        ("mmh3('hello')", "613153351"),
        ("hex_encode('AB')", "4142"),
        ("url_encode('a b&c')", "a%20b%26c"),
        ("1 + 2 * 3 - 4 / 2", 5.0),
        ("10 % 3", 1),
        ("-(2) + 5", 3),
        ("'a' + 'b' + 1", "ab1"),
        ("status_code == 200 ? 'ok' : 'no'", "ok"),
        ("status_code_1 == 401 && status_code == 200", True),
        ("compare_versions(x_jenkins, '>= 2.400', '< 2.500')", True),
        ("compare_versions('1.2.3', '> 1.3')", False),
        ("starts_with(body, '<title>') && ends_with(body, 'World')", True),
        ("trim_prefix('www.a.com', 'www.')", "a.com"),
        ("replace('a-b-c', '-', '.')", "a.b.c"),
        ("concat('a', 1, true)", "a1true"),
        ("content_length == '32'", True),
        ('"double \\" quoted"', 'double " quoted'),
        ("0x10 == 16", True),
    ],
)
def test_expressions(expr: str, value: Any) -> None:
    assert evaluate(expr, ENV) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("generate_java_gadget('x')", "unsupported helper"),
        ("status_code ==", "unexpected"),
        ("contains(body, 'x'", "expected '\\)'"),
        ("a $ b", "unexpected character"),
        ("(" * 200 + "1" + ")" * 200, "nested too deeply"),
    ],
)
def test_compile_errors(expr: str, message: str) -> None:
    with pytest.raises(DslError, match=message):
        compile_expr(expr)


def test_evaluation_errors_never_reach_python() -> None:
    with pytest.raises(DslError, match="unknown variable"):
        evaluate("status_code_2 == 200", ENV)
    with pytest.raises(DslError, match="division by zero"):
        evaluate("1 / 0", ENV)
    with pytest.raises(DslError, match="need booleans"):
        evaluate("1 && true", ENV)
    with pytest.raises(DslError):
        evaluate("__import__('os')", ENV)
    assert compile_expr("contains(body, x) && status_code == y").names() == {"body", "x", "status_code", "y"}


def test_go_regex_dialect() -> None:
    assert go_regex(r"abc\z").search("xabc")
    assert go_regex(r"[[:digit:]]+").search("a42").group(0) == "42"  # type: ignore[union-attr]
    assert go_regex(r"\x{4e2d}").search("中")
    assert go_regex(r"foo(?i)BAR").search("FOOBAR")


def test_placeholders() -> None:
    env = {"BaseURL": "http://a:8080/app", "Host": "a", "username": "admin", "password": "pw"}
    assert expand("{{BaseURL}}/login", env) == ("http://a:8080/app/login", [])
    assert expand("Basic {{base64(username + ':' + password)}}", env) == ("Basic YWRtaW46cHc=", [])
    assert expand("{{base64('{{Host}}')}}", env) == ("YQ==", [])
    text, unresolved = expand("x={{token}}&y={{base64('{{nope}}')}}&z={{interactsh-url}}", env)
    assert text == "x={{token}}&y={{base64('{{nope}}')}}&z={{interactsh-url}}"
    assert set(unresolved) == {"token", "nope", "interactsh-url"}
    assert expand("no placeholders", env) == ("no placeholders", [])


@pytest.mark.parametrize(
    ("program", "document", "out"),
    [
        (".a.b", '{"a": {"b": "x"}}', ["x"]),
        (".items[0].id", '{"items": [{"id": 7}, {"id": 8}]}', ["7"]),
        (".items[-1].id", '{"items": [{"id": 7}, {"id": 8}]}', ["8"]),
        (".items[].name", '{"items": [{"name": "p"}, {"name": "q"}]}', ["p", "q"]),
        (".[] | .slug", '[{"slug": "u1"}, {"slug": "u2"}]', ["u1", "u2"]),
        ('."flink-version"', '{"flink-version": "1.17.1"}', ["1.17.1"]),
        ('.["a b"]', '{"a b": true}', ["true"]),
        (".status | keys", '{"status": {"core2": {}, "core1": {}}}', ['["core1","core2"]']),
        (".a, .b", '{"a": 1, "b": "two"}', ["1", "two"]),
        (".missing.deeper", '{"a": 1}', []),
        (".a", "not json", []),
        (".list | length", '{"list": [1, 2, 3]}', ["3"]),
    ],
)
def test_jq_subset(program: str, document: str, out: list[str]) -> None:
    assert jq_strings(compile_jq(program), document) == out


@pytest.mark.parametrize(
    "program", ['.[] | select(.a == "b")', "map(.a)", ".a + 1", "$__loc__", "to_entries"]
)
def test_jq_outside_the_subset_is_refused(program: str) -> None:
    with pytest.raises(JqError):
        compile_jq(program)
