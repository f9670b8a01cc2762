"""Template parsing, matchers and extractors, requests built from templates: pure units, no network."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from workers.recon.http import HttpResponse
from workers.recon.nuclei.build import (
    BuildError,
    Endpoint,
    base_vars,
    http_event,
    path_request,
    payload_sets,
    raw_request,
)
from workers.recon.nuclei.operators import apply, match_one
from workers.recon.nuclei.template import Template, TemplateError, Unsupported, parse_template

ENDPOINT = Endpoint("https://app.example:8443/base", "app.example", "192.0.2.1", 8443, "https", "/base")


def template(text: str) -> Template:
    return parse_template(yaml.safe_load(text), "/tmp/t.yaml")


def one_block(matchers: str, extractors: str = "", condition: str = "and") -> Template:
    return template(
        "id: t\ninfo: {name: t, severity: low}\nhttp:\n  - path: ['{{BaseURL}}/x']\n"
        f"    matchers-condition: {condition}\n    matchers: {matchers}\n"
        + (f"    extractors: {extractors}\n" if extractors else "")
    )


def event(
    body: str | bytes = "", status: int = 200, headers: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    response = HttpResponse(status, "OK", headers or [("Content-Type", "text/html")], raw)
    request = path_request(
        one_block("[{type: status, status: [200]}]").http[0], "{{BaseURL}}/x", base_vars(ENDPOINT), ENDPOINT
    )
    return http_event(response, request, request.url, base_vars(ENDPOINT))


def test_builtin_variables() -> None:
    env = base_vars(ENDPOINT)
    assert env["BaseURL"] == "https://app.example:8443/base" and env["RootURL"] == "https://app.example:8443"
    assert env["Hostname"] == "app.example:8443" and env["Host"] == "app.example" and env["Port"] == "8443"
    assert env["Scheme"] == "https" and env["Path"] == "/base" and len(env["randstr"]) == 27
    plain = base_vars(Endpoint("x", "h.example", "192.0.2.2", 80, "http"))
    assert plain["Hostname"] == "h.example" and plain["BaseURL"] == "http://h.example"


def test_template_fields_and_legacy_requests_key() -> None:
    parsed = template(
        "id: CVE-2099-0001\ninfo:\n  name: Demo\n  severity: HIGH\n  tags: a, B ,c\n  author: x,y\n"
        "  reference: [https://r.example]\n  classification: {cve-id: CVE-2099-0001, cvss-score: 9.8}\n"
        "  description: d\nvariables: {v: '{{Host}}-1'}\nrequests:\n  - method: post\n"
        "    path: ['{{BaseURL}}/a']\n"
        "    body: 'q=1'\n    redirects: true\n    max-redirects: 2\n"
        "    matchers: [{type: word, words: [ok]}]\n"
    )
    assert parsed.id == "CVE-2099-0001" and parsed.severity == "high" and parsed.tags == ("a", "b", "c")
    assert parsed.references == ("https://r.example",) and parsed.classification["cvss-score"] == 9.8
    assert parsed.variables == (("v", "{{Host}}-1"),) and parsed.protocol == "http"
    block = parsed.http[0]
    assert block.method == "POST" and block.redirects and block.max_redirects == 2
    assert block.operators.condition == "or"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("headless: [{steps: []}]", "headless protocol"),
        ("code: [{engine: [sh]}]", "code protocol"),
        ("javascript: [{code: x}]", "javascript protocol"),
        ("ssl: [{address: x}]", "ssl protocol"),
        ("flow: http(1)\nhttp: [{path: [x], matchers: [{type: status, status: [200]}]}]", "flow"),
        (
            "http: [{path: [x], fuzzing: [{part: query}], matchers: [{type: status, status: [200]}]}]",
            "fuzzing",
        ),
        ("http: [{path: [x], matchers: [{type: xpath, xpath: [/a]}]}]", "xpath matcher"),
        ("http: [{path: [x], extractors: [{type: xpath, xpath: [/a]}]}]", "xpath extractor"),
        ("http: [{path: [x], extractors: [{type: json, json: ['.[] | select(.a)']}]}]", "unsupported jq"),
        (
            "http: [{path: ['{{BaseURL}}/{{interactsh-url}}'], matchers: [{type: status, status: [200]}]}]",
            "OOB",
        ),
        ("http: [{path: [x], race: true, matchers: [{type: status, status: [200]}]}]", "race"),
        (
            "http: [{path: [x], payloads: {u: users.txt}, matchers: [{type: status, status: [200]}]}]",
            "payload file",
        ),
        ("http: [{path: [x]}]\ntcp: [{host: [x], matchers: [{type: word, words: [a]}]}]", "multi-protocol"),
    ],
)
def test_unsupported_features_are_named(text: str, reason: str) -> None:
    with pytest.raises(Unsupported, match=reason):
        template("id: u\ninfo: {name: u, severity: info}\n" + text)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("id: 'bad id'\ninfo: {severity: info}\nhttp: []", "id"),
        (
            "id: a\ninfo: {severity: urgent}\nhttp: [{path: [x], matchers: [{type: status, status: [200]}]}]",
            "severity",
        ),
        ("id: a\nhttp: [{path: [x], matchers: [{type: regex, regex: ['(']}]}]", "regex"),
        ("id: a\nhttp: [{path: [x], matchers: [{type: word}]}]", "words"),
        ("id: a\nhttp: [{path: [x], matchers: [{type: status, status: [x]}]}]", "status"),
        ("id: a\nhttp: [{path: [x]}]", "needs matchers or extractors"),
        ("id: a\nhttp: [{matchers: [{type: status, status: [200]}]}]", "needs path or raw"),
        ("id: a\nhttp: [{path: [x], matchers: [{type: binary, binary: [zz]}]}]", "hex"),
        ("id: a\nhttp: [{path: [x], matchers: [{type: dsl, dsl: ['status_code ==']}]}]", "dsl"),
    ],
)
def test_malformed_templates_name_the_field(text: str, field: str) -> None:
    with pytest.raises(TemplateError, match=field):
        template(text)


def test_word_matcher_condition_case_negative_and_part() -> None:
    page = event("Hello World", headers=[("Server", "nginx/1.25"), ("Content-Type", "text/html")])
    assert match_one(
        one_block("[{type: word, words: [hello, moon], case-insensitive: true}]")
        .http[0]
        .operators.matchers[0],
        page,
    )[0]
    assert not match_one(
        one_block("[{type: word, words: [Hello, Moon], condition: and}]").http[0].operators.matchers[0], page
    )[0]
    assert match_one(
        one_block("[{type: word, words: [Moon], negative: true}]").http[0].operators.matchers[0], page
    )[0]
    assert match_one(
        one_block("[{type: word, part: header, words: ['nginx/1.25']}]").http[0].operators.matchers[0], page
    )[0]
    assert match_one(
        one_block("[{type: word, part: server, words: [nginx]}]").http[0].operators.matchers[0], page
    )[0]
    assert match_one(
        one_block("[{type: word, part: all, words: ['World', 'nginx'], condition: and}]")
        .http[0]
        .operators.matchers[0],
        page,
    )[0]
    assert not match_one(
        one_block("[{type: word, part: nosuchpart, words: [x], negative: true}]")
        .http[0]
        .operators.matchers[0],
        page,
    )[0]
    hits = match_one(one_block("[{type: word, words: [World]}]").http[0].operators.matchers[0], page)[1]
    assert hits == [{"word": "World", "snippet": "Hello World"}]


def test_regex_status_size_binary_dsl_matchers() -> None:
    page = event(b"\x89PNG\r\n\x1a\nrest", status=403)
    block = one_block(
        "[{type: status, status: [403]}, {type: size, size: [12]}, {type: binary, binary: ['89504e47']},"
        " {type: regex, regex: ['(?i)^.PNG']},"
        " {type: dsl, dsl: ['status_code == 403 && content_length == 12']}]"
    )
    outcome = apply(block.http[0].operators, page)
    assert outcome.matched and [e["type"] for e in outcome.evidence] == [
        "status",
        "size",
        "binary",
        "regex",
        "dsl",
    ]
    assert not apply(
        one_block("[{type: status, status: [200]}, {type: size, size: [12]}]").http[0].operators, page
    ).matched
    either = (
        one_block("[{type: status, status: [200]}, {type: size, size: [12]}]", condition="or")
        .http[0]
        .operators
    )
    assert apply(either, page).matched


def test_named_and_internal_matchers() -> None:
    page = event("nginx and php")
    block = one_block(
        "[{type: word, name: nginx, words: [nginx]}, {type: word, name: php, words: [php]},"
        " {type: word, name: iis, words: [IIS]}, {type: word, internal: true, words: [and]}]",
        condition="or",
    )
    outcome = apply(block.http[0].operators, page)
    assert outcome.matched and outcome.matcher_names == ["nginx", "php"]


def test_extractors() -> None:
    page = event(
        '{"version": "2.2.3", "items": [{"id": 1}, {"id": 2}]} token=abc123; build 17',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Powered-By", "PHP/8.1"),
            ("Set-Cookie", "sid=s3cr3t; Path=/"),
        ],
    )
    block = one_block(
        "[{type: word, words: [version]}]",
        "[{type: regex, name: token, group: 1, regex: ['token=(\\w+)']},"
        " {type: kval, name: tech, kval: [x_powered_by, X-Powered-By]},"
        " {type: kval, name: cookie, kval: [sid]},"
        " {type: dsl, name: size, dsl: ['len(body)']},"
        " {type: regex, name: hidden, internal: true, group: 1, regex: ['build (\\d+)']}]",
    )
    outcome = apply(block.http[0].operators, page)
    assert outcome.extracted == {
        "token": ["abc123"],
        "tech": ["PHP/8.1"],
        "cookie": ["s3cr3t"],
        "size": ["76"],
    }
    assert outcome.internal == {"hidden": "17"}
    json_only = template(
        "id: j\ninfo: {name: j, severity: info}\nhttp:\n  - path: ['{{BaseURL}}']\n"
        "    extractors: [{type: json, name: v, json: ['.version']}]\n"
    )
    assert apply(json_only.http[0].operators, event('{"version": "1.0"}')).matched
    assert not apply(json_only.http[0].operators, event("no json")).matched


def test_path_and_raw_requests() -> None:
    env = {**base_vars(ENDPOINT), "user": "admin"}
    block = template(
        "id: r\ninfo: {name: r, severity: info}\nhttp:\n  - method: POST\n"
        "    path: ['{{BaseURL}}/login?u={{user}}']\n"
        "    headers: {Authorization: \"Basic {{base64(user + ':x')}}\"}\n    body: 'u={{user}}'\n"
        "    matchers: [{type: status, status: [200]}]\n"
    ).http[0]
    request = path_request(block, block.paths[0], env, ENDPOINT)
    assert request.url == "https://app.example:8443/base/login?u=admin" and request.body == b"u=admin"
    assert request.headers == [("Authorization", "Basic YWRtaW46eA==")]
    assert ["Host", "app.example:8443"] in request.sent_headers()
    raw_block = template(
        "id: r\ninfo: {name: r, severity: info}\nhttp:\n  - raw:\n      - |\n        @timeout: 5s\n"
        "        POST /api/login HTTP/1.1\n        Host: {{Hostname}}\n"
        "        Content-Type: application/json\n"
        '        Content-Length: 999\n\n        {"u": "{{user}}"}\n'
        "      - |\n        GET HTTP/1.1\n        Host: {{Hostname}}\n\n"
        "    matchers: [{type: status, status: [200]}]\n"
    ).http[0]
    first = raw_request(raw_block, raw_block.raws[0], env, ENDPOINT)
    assert (first.method, first.path, first.body) == ("POST", "/base/api/login", b'{"u": "admin"}')
    assert first.headers == [("Host", "app.example:8443"), ("Content-Type", "application/json")]
    assert raw_request(raw_block, raw_block.raws[1], env, ENDPOINT).path == "/base"
    with pytest.raises(BuildError, match="unresolved variables: token"):
        path_request(block, "{{BaseURL}}/{{token}}", env, ENDPOINT)


def test_payload_attacks() -> None:
    def sets(attack: str) -> list[dict[str, str]]:
        block = template(
            "id: p\ninfo: {name: p, severity: info}\nhttp:\n  - path: ['{{BaseURL}}']\n"
            f"    attack: {attack}\n    payloads: {{u: [a, b], p: ['1', '2']}}\n"
            "    matchers: [{type: status, status: [200]}]\n"
        ).http[0]
        return list(payload_sets(block))

    assert sets("pitchfork") == [{"u": "a", "p": "1"}, {"u": "b", "p": "2"}]
    assert len(sets("clusterbomb")) == 4 and {"u": "b", "p": "1"} in sets("clusterbomb")
    assert sets("batteringram") == [{"u": "a", "p": "a"}, {"u": "b", "p": "b"}]
    assert sets("sniper") == sets("batteringram")


def test_indexed_variables_turn_on_request_conditions() -> None:
    implicit = one_block("[{type: dsl, dsl: ['status_code_1 == 401 && status_code_2 == 200']}]")
    assert implicit.http[0].req_condition
    assert not one_block("[{type: dsl, dsl: ['status_code == 200']}]").http[0].req_condition
