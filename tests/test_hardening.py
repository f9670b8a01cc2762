"""Safe by construction: JSON-only Celery, no eval/pickle, strict target validators, configurable limits."""

from __future__ import annotations

import ast
import asyncio
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.celeryapp import make_celery
from controlplane.config import Config, LimitsConfig, RateLimitConfig
from controlplane.core.errors import InvalidParam, NotLogin, TooManyRequests
from controlplane.core.targets import Limits, classify_target, parse_targets
from controlplane.core.validate import limits_for, validate_task_data
from controlplane.service.auth import Authenticator, hash_token, new_token, token_entry, token_from_request
from controlplane.service.ratelimit import RateLimiter, TokenBucket

ROOT = Path(__file__).resolve().parent.parent
ALL_KINDS = frozenset({"ip", "cidr", "iprange", "hostport", "url", "domain"})


def test_celery_speaks_json_only() -> None:
    app = make_celery(Config())
    try:
        assert app.conf.accept_content == ["json"]
        assert app.conf.result_accept_content == ["json"]
        assert app.conf.task_serializer == app.conf.result_serializer == app.conf.event_serializer == "json"
    finally:
        app.close()


def _calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.append(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                names.append(f"{func.value.id}.{func.attr}")
    return names


def test_no_eval_exec_pickle_or_unsafe_yaml_in_the_service() -> None:
    banned = {"eval", "exec", "pickle.loads", "pickle.load", "marshal.loads", "yaml.load", "yaml.unsafe_load"}
    found = []
    for path in [*(ROOT / "controlplane").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(ROOT)}: {c}" for c in _calls(tree) if c in banned]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                )
                found += [
                    f"{path.relative_to(ROOT)}: import {m}" for m in modules if m in ("pickle", "marshal")
                ]
    assert found == []


# -- tokens ------------------------------------------------------------------------------


class _Req:
    def __init__(self, headers: dict[str, str], query: dict[str, list[bytes]] | None = None) -> None:
        self.headers = headers
        self.query_arguments = query or {}


def test_token_from_request_forms() -> None:
    assert token_from_request(_Req({"Authorization": "Bearer abc"})) == "abc"
    assert token_from_request(_Req({"Authorization": "bearer  abc "})) == "abc"
    assert token_from_request(_Req({"Authorization": "Basic abc"})) is None
    assert token_from_request(_Req({"Token": "abc"})) == "abc"
    assert token_from_request(_Req({}, {"token": [b"q"]})) == "q"
    assert token_from_request(_Req({}, {"token": [b"q"]}), allow_query=False) is None
    assert token_from_request(_Req({}, {"token": [b"\xff"]})) is None
    assert token_from_request(_Req({})) is None


def test_wrong_secrets_are_throttled_but_the_real_token_keeps_working() -> None:
    token = new_token()
    auth = Authenticator([token_entry("t", "operator", token, iterations=1000)])
    assert auth.authenticate(token).name == "t"
    salt = token.split("_")[1]
    for i in range(40):
        with pytest.raises(NotLogin):
            auth.authenticate(f"cp_{salt}_wrong-secret-{i:04d}-xxxxxxxxxxxxxxxx")
    assert auth.authenticate(token).name == "t"  # cached: unaffected by the throttle
    assert Authenticator.disabled().authenticate(None).name == "anonymous"
    with pytest.raises(NotLogin):
        auth.authenticate(None)
    with pytest.raises(ValueError):
        hash_token("not-a-controlplane-token")


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(60, 2, clock=lambda: now[0])
    assert bucket.take("a") == 0 and bucket.take("a") == 0
    assert bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0
    now[0] += 1.0
    assert bucket.take("a") == 0
    assert TokenBucket(0, 1).take("x") == 0  # unlimited
    limiter = RateLimiter(RateLimitConfig(create_per_minute=1, create_burst=1))
    asyncio.run(limiter.check("create", "a"))
    with pytest.raises(TooManyRequests) as err:
        asyncio.run(limiter.check("create", "a"))
    assert err.value.retry_after > 0


# -- limits from config -------------------------------------------------------------------


def test_per_type_limits_from_config() -> None:
    config = LimitsConfig(max_targets=5, per_type={"ip_task": {"max_targets": 2, "max_depth": 3}})
    assert limits_for(config, "domain_task").max_targets == 5
    ip = limits_for(config, "ip_task")
    assert ip.max_targets == 2 and ip.max_depth == 3 and ip.max_string == LimitsConfig().max_string
    with pytest.raises(InvalidParam) as err:
        validate_task_data("ip_task", {"target": "1.1.1.1,1.1.1.2,1.1.1.3"}, ip)
    assert err.value.field == "data.target"
    validate_task_data("domain_task", {"target": "a.com,b.com,c.com"}, limits_for(config, "domain_task"))


# -- target validators: properties ------------------------------------------------------------

small_limits = Limits(max_cidr_addresses=256)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_cidr_accepted_iff_within_the_size_limit(value: int, prefix: int) -> None:
    text = f"{ipaddress.IPv4Address(value)}/{prefix}"
    size = 2 ** (32 - prefix)
    if size <= small_limits.max_cidr_addresses:
        assert classify_target(text, "t", frozenset({"cidr"}), small_limits) == str(
            ipaddress.ip_network(text, strict=False)
        )
    else:
        with pytest.raises(InvalidParam, match="too large"):
            classify_target(text, "t", frozenset({"cidr"}), small_limits)


@given(st.integers(0, 2**128 - 1))
def test_ipv6_addresses_normalized(value: int) -> None:
    addr = ipaddress.IPv6Address(value)
    assert classify_target(addr.exploded, "t", frozenset({"ip"}), Limits()) == str(addr)
    assert classify_target(str(addr).upper(), "t", frozenset({"ip"}), Limits()) == str(addr)


schemes = st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True).filter(lambda s: s not in ("http", "https"))


@given(schemes, st.sampled_from(["example.com", "1.2.3.4", "[::1]"]))
def test_urls_other_than_http_and_https_are_rejected(scheme: str, host: str) -> None:
    with pytest.raises(InvalidParam):
        classify_target(f"{scheme}://{host}/x", "t", frozenset({"url"}), Limits())


@given(
    st.lists(
        st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["com", "org", "中国", "рф"]),
)
def test_idn_domains_are_punycode_or_rejected(labels: list[str], tld: str) -> None:
    name = ".".join([*labels, tld])
    try:
        out = classify_target(name, "t", frozenset({"domain"}), Limits())
    except InvalidParam as exc:
        assert exc.field == "t"
        return
    assert out.isascii() and out == out.lower()
    assert classify_target(out, "t", frozenset({"domain"}), Limits()) == out


@given(st.text(max_size=200))
def test_any_text_is_a_target_or_a_400(text: str) -> None:
    try:
        items = parse_targets(text, "data.target", ALL_KINDS, Limits())
    except InvalidParam as exc:
        assert exc.field == "data.target" and exc.reason
        return
    for item in items:
        assert parse_targets(item, "data.target", ALL_KINDS, Limits()) == [item]
