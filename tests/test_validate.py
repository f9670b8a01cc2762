"""Tests of the task input validators: target syntax, per-type schemas, generic limits."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.errors import InvalidParam
from controlplane.core.targets import KINDS, parse_ports, show
from controlplane.core.tasktypes import SPEC_TYPES
from controlplane.core.validate import Limits, parse_int, parse_targets, parse_uuid, validate_task_data

ALL_KINDS = frozenset(KINDS)
DOMAIN = frozenset({"domain"})
LIMITS = Limits()
FAST = settings(max_examples=200, deadline=None)


def reject(func: Any, *args: Any, **kwargs: Any) -> InvalidParam:
    with pytest.raises(InvalidParam) as info:
        func(*args, **kwargs)
    return info.value


def targets(value: object, kinds: frozenset[str] = ALL_KINDS, limits: Limits = LIMITS) -> list[str]:
    return parse_targets(value, "data.target", kinds, limits)


# --- parse_targets: examples ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("1a.example.org", "1a.example.org"),
        ("x" * 63 + ".com", "x" * 63 + ".com"),
    ],
)
def test_domain_normalized(raw: str, expected: str) -> None:
    assert targets(raw, DOMAIN) == [expected]


@pytest.mark.parametrize(
    "raw",
    [
        "foo..com",
        "localhost",
        "-a.com",
        "a-.com",
        "a_b.com",
        "example.123",
        "1.2.3.4",
        "x" * 64 + ".com",
        ".".join(["a" * 60] * 5),
        "a.com..",
        "xn--zz.com",
        "exa mple.com",
    ],
)
def test_domain_rejected(raw: str) -> None:
    err = reject(targets, [raw], DOMAIN)
    assert err.field == "data.target"
    assert err.reason == f"{show(raw)} is not a valid domain"


def test_wildcard_domain_rejected_with_reason() -> None:
    err = reject(targets, "*.example.com", DOMAIN)
    assert err.reason == "'*.example.com' is a wildcard; wildcard domains are not allowed"


def test_reason_names_item_from_string() -> None:
    assert reject(targets, "a.com, foo..com", DOMAIN).reason == "'foo..com' is not a valid domain"


@pytest.mark.parametrize(
    ("raw", "kinds", "expected"),
    [
        ("10.0.0.1", {"ip"}, "10.0.0.1"),
        ("2001:DB8::0:1", {"ip"}, "2001:db8::1"),
        ("10.0.0.5/24", {"cidr"}, "10.0.0.0/24"),
        ("10.0.0.0/16", {"cidr"}, "10.0.0.0/16"),
        ("2001:db8::/112", {"cidr"}, "2001:db8::/112"),
        ("1.1.1.1-1.1.1.20", {"iprange"}, "1.1.1.1-1.1.1.20"),
        ("1.1.1.1-20", {"iprange"}, "1.1.1.1-1.1.1.20"),
        ("1.1.1.1-1.1.2.1", {"iprange"}, "1.1.1.1-1.1.2.1"),
        ("EXAMPLE.com:8080", {"hostport"}, "example.com:8080"),
        ("10.0.0.1:80", {"hostport"}, "10.0.0.1:80"),
        ("[2001:DB8::1]:443", {"hostport"}, "[2001:db8::1]:443"),
        ("HTTP://Example.COM", {"url"}, "http://example.com"),
        ("https://example.com:443/a", {"url"}, "https://example.com/a"),
        ("http://example.com:80/", {"url"}, "http://example.com/"),
        ("http://example.com:8080/P?q=1#F", {"url"}, "http://example.com:8080/P?q=1#F"),
        ("https://[::1]:8443/x", {"url"}, "https://[::1]:8443/x"),
        ("http://1.2.3.4/", {"url"}, "http://1.2.3.4/"),
        ("http://bücher.example/ä", {"url"}, "http://xn--bcher-kva.example/%C3%A4"),
    ],
)
def test_kinds_normalized(raw: str, kinds: set[str], expected: str) -> None:
    assert targets(raw, frozenset(kinds)) == [expected]


@pytest.mark.parametrize(
    ("raw", "kinds", "reason"),
    [
        ("0.0.0.0/0", {"cidr"}, "'0.0.0.0/0' is too large (4294967296 addresses; at most 65536)"),
        ("10.0.0.0/15", {"cidr"}, "'10.0.0.0/15' is too large (131072 addresses; at most 65536)"),
        ("::/0", {"cidr"}, f"'::/0' is too large ({2**128} addresses; at most 65536)"),
        ("10.0.0.0/33", {"cidr"}, "'10.0.0.0/33' is not a valid CIDR network"),
        ("10.0.0.0/a", {"cidr"}, "'10.0.0.0/a' is not a valid CIDR network"),
        ("1.1.1.20-1.1.1.1", {"iprange"}, "'1.1.1.20-1.1.1.1' ends before it starts"),
        (
            "1.0.0.0-2.0.0.0",
            {"iprange"},
            "'1.0.0.0-2.0.0.0' is too large (16777217 addresses; at most 65536)",
        ),
        ("1.1.1.1-256", {"iprange"}, "'1.1.1.1-256' is not a valid IP range"),
        ("1.1.1.1-::1", {"iprange"}, "'1.1.1.1-::1' is not a valid IP range"),
        ("01.1.1.1", {"ip"}, "'01.1.1.1' is not a valid IP address"),
        ("fe80::1%eth0", {"ip"}, "'fe80::1%eth0' is not a valid IP address"),
        ("a.com:0", {"hostport"}, "'a.com:0' is not a valid host:port"),
        ("a.com:65536", {"hostport"}, "'a.com:65536' is not a valid host:port"),
        ("::1:80", {"hostport"}, "'::1:80' is not a valid host:port"),
        ("ftp://a.com", {"url"}, "'ftp://a.com' must use http or https"),
        ("http://u:p@a.com/", {"url"}, "'http://u:p@a.com/' must not contain credentials"),
        ("http://a.com:99999/", {"url"}, "'http://a.com:99999/' is not a valid http(s) URL"),
        ("http://a.com:/", {"url"}, "'http://a.com:/' is not a valid http(s) URL"),
        ("http:///x", {"url"}, "'http:///x' is not a valid http(s) URL"),
        ("http://[1.2.3.4]/", {"url"}, "'http://[1.2.3.4]/' is not a valid http(s) URL"),
        ("a.com", {"url"}, "'a.com' is not a valid http(s) URL"),
        ("a.com", {"ip", "cidr"}, "'a.com' is not a valid IP address or CIDR network"),
    ],
)
def test_kinds_rejected(raw: str, kinds: set[str], reason: str) -> None:
    err = reject(targets, raw, frozenset(kinds))
    assert (err.field, err.reason) == ("data.target", reason)


def test_url_commas_encoded_so_display_reparses() -> None:
    assert targets(["http://a.com/a,b?x=1,2"]) == ["http://a.com/a%2Cb?x=1%2C2"]
    assert targets("http://a.com/a%2Cb") == ["http://a.com/a%2Cb"]


def test_idn_without_idna_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controlplane.core.targets._idna", None)
    assert targets("Bücher.example", DOMAIN) == ["xn--bcher-kva.example"]
    assert reject(targets, "bü\u0000cher.example", DOMAIN).field == "data.target"


def test_cidr_limit_configurable() -> None:
    assert targets("10.0.0.0/8", frozenset({"cidr"}), Limits(max_cidr_addresses=2**24)) == ["10.0.0.0/8"]


def test_split_and_dedupe_preserve_order() -> None:
    raw = "b.com,a.com\n B.COM\ta.com,,  c.com"
    assert targets(raw, DOMAIN) == ["b.com", "a.com", "c.com"]
    assert targets([" b.com ", "a.com", "B.com."], DOMAIN) == ["b.com", "a.com"]


def test_mixed_kinds_classified() -> None:
    got = targets("1.2.3.4 a.com 10.0.0.0/30 a.com:81 http://a.com 1.1.1.1-3")
    assert got == ["1.2.3.4", "a.com", "10.0.0.0/30", "a.com:81", "http://a.com", "1.1.1.1-1.1.1.3"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        (" ,\n ", "must not be empty"),
        ([], "must not be empty"),
        (["  "], "must not be empty"),
        (None, "must be a string or a list of strings"),
        (5, "must be a string or a list of strings"),
        ({"$ne": None}, "must be a string or a list of strings"),
        (["a.com", 3], "item 1 must be a string"),
    ],
)
def test_target_shape_rejected(value: object, reason: str) -> None:
    err = reject(targets, value, DOMAIN)
    assert (err.field, err.reason) == ("data.target", reason)


def test_too_many_targets() -> None:
    limits = Limits(max_targets=3)
    assert targets("a.com b.com c.com", DOMAIN, limits) == ["a.com", "b.com", "c.com"]
    err = reject(targets, "a.com b.com c.com d.com", DOMAIN, limits)
    assert err.reason == "must have at most 3 targets (4 given)"


def test_item_and_string_length_limits() -> None:
    err = reject(targets, ["http://a.com/" + "x" * 5000], frozenset({"url"}))
    assert err.reason.endswith("is too long (at most 4096 characters)")
    err = reject(targets, "a" * 300_000, DOMAIN)
    assert err.reason == "must be at most 262144 characters"


def test_surrogates_rejected() -> None:
    assert reject(targets, ["http://a.com/\ud800"]).reason.endswith("is not valid Unicode text")


def test_bad_kinds_is_programming_error() -> None:
    with pytest.raises(ValueError):
        targets("a.com", frozenset({"email"}))
    with pytest.raises(ValueError):
        targets("a.com", frozenset())


# --- parse_targets: properties ---------------------------------------------------------------

label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True)
tld = st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{1,8}", fullmatch=True)
domains = st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(label, min_size=1, max_size=4), tld)
ips = st.ip_addresses().map(str)
cidrs = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(16, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(112, 128)),
).map(lambda t: f"{t[0]}/{t[1]}")
hosts = st.one_of(domains, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
paths = st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}){0,3}(\?[A-Za-z0-9=&]{0,10})?", fullmatch=True)
urls = st.builds(
    lambda s, h, p, path: f"{s}://{h}{p}{path}",
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    hosts,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda n: f":{n}")),
    paths,
)


@FAST
@given(st.one_of(domains, ips, cidrs, urls))
def test_round_trip_idempotent(raw: str) -> None:
    (normalized,) = targets([raw])
    assert targets([normalized]) == [normalized]
    assert targets(normalized) == [normalized]


@FAST
@given(domains)
def test_domains_lowercased(raw: str) -> None:
    assert targets(raw, DOMAIN) == [raw.lower()]


@FAST
@given(ips)
def test_ips_compressed(raw: str) -> None:
    assert targets(raw, frozenset({"ip"})) == [str(ipaddress.ip_address(raw))]


@FAST
@given(cidrs)
def test_cidrs_to_network(raw: str) -> None:
    assert targets(raw, frozenset({"cidr"})) == [str(ipaddress.ip_network(raw, strict=False))]


@FAST
@given(st.one_of(st.text(max_size=60), st.lists(st.text(max_size=30), max_size=4), st.binary().map(repr)))
def test_junk_only_raises_invalid_param(raw: object) -> None:
    for kinds in (ALL_KINDS, DOMAIN, frozenset({"url"}), frozenset({"iprange", "cidr"})):
        try:
            got = targets(raw, kinds)
        except InvalidParam as err:
            assert err.field == "data.target"
        else:
            assert got and all(isinstance(t, str) for t in got)


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_junk_domains_only_invalid_param(raw: str) -> None:
    try:
        got = targets([raw + ".example"], DOMAIN)
    except InvalidParam:
        return
    assert got[0].isascii() and got == targets(got, DOMAIN)


# --- ports, uuid, int -------------------------------------------------------------------


def test_parse_ports() -> None:
    assert parse_ports("443, 80,8000-8002,80", "p") == [80, 443, 8000, 8001, 8002]
    assert len(parse_ports("1-65535", "p")) == 65535
    for raw, reason in [
        ("0", "'0' is out of range (ports are 1..65535, low to high)"),
        ("90-80", "'90-80' is out of range (ports are 1..65535, low to high)"),
        ("80,,81", "has an empty item"),
        ("http", "'http' is not a port or a port range"),
        ("", "has an empty item"),
    ]:
        assert reject(parse_ports, raw, "p").reason == reason
    assert reject(parse_ports, [80], "p").reason == "must be a string like '80,443,8000-8100'"


def test_parse_uuid() -> None:
    value = "C6A1E0B3-5263-4D8C-AE38-F5C4F9AD7C32"
    assert parse_uuid(value, "celery_id") == value.lower()
    for bad in [value + "\n", value[:-1], value.replace("-", ""), "{" + value + "}", None, 5, {"$ne": None}]:
        err = reject(parse_uuid, bad, "celery_id")
        assert (err.field, err.reason) == ("celery_id", "must be a UUID")


def test_parse_int() -> None:
    assert parse_int(None, "page", 1, None, 1) == 1
    assert parse_int("7", "size", 1, 100, 10) == 7
    assert parse_int(100, "size", 1, 100, 10) == 100
    assert parse_int("007", "page", 1, None, 1) == 7
    for bad in [" 7", "7 ", "-1", "+3", "1.5", "", "٣", True, 2.0, [1], {"$gt": 0}]:
        assert reject(parse_int, bad, "size", 1, 100, 10).reason == "must be an integer"
    assert reject(parse_int, "0", "size", 1, 100, 10).reason == "must be between 1 and 100"
    assert reject(parse_int, 101, "size", 1, 100, 10).reason == "must be between 1 and 100"
    assert parse_int(str(2**63 - 1), "page", 1, None, 1) == 2**63 - 1
    assert reject(parse_int, "9" * 5000, "page", 1, None, 1).reason == f"must be at most {2**63 - 1}"
    assert reject(parse_int, 2**63, "page", 1, None, 1).reason == f"must be at most {2**63 - 1}"
    assert reject(parse_int, "0", "page", 1, None, 1).reason == "must be at least 1"
    assert reject(parse_int, "9" * 30, "size", 1, 100, 10).reason == "must be between 1 and 100"


# --- validate_task_data: per type -----------------------------------------------------------

DOMAIN_DEFAULTS = {
    "domain_brute": True,
    "domain_brute_type": "small",
    "port_scan": True,
    "port_scan_type": "test",
    "service_detection": False,
    "site_identify": True,
    "ssl_cert": False,
    "file_leak": False,
    "os_detection": False,
    "use_nmap": False,
    "skip_scan_cdn_ip": False,
    "npoc_service_detection": False,
    "service_brute": False,
    "site_spider": False,
    "nuclei_scan": False,
    "web_info_hunter": False,
    "dns_query_plugin": False,
    "alt_dns": False,
    "arl_search": False,
    "search_engines": False,
    "findvhost": False,
}
DOMAIN_ONLY = {
    "domain_brute",
    "domain_brute_type",
    "dns_query_plugin",
    "alt_dns",
    "arl_search",
    "search_engines",
    "findvhost",
}
IP_DEFAULTS = {k: v for k, v in DOMAIN_DEFAULTS.items() if k not in DOMAIN_ONLY}
OID = "60f8c2b2e13e4b1e8c8b4567"
UUID = "c6a1e0b3-5263-4d8c-ae38-f5c4f9ad7c32"

MINIMAL: dict[str, dict[str, Any]] = {
    "domain_task": {"target": "example.com"},
    "ip_task": {"target": "10.0.0.1"},
    "run_risk_cruising": {"target": "http://example.com"},
    "domain_task_sync_task": {"task_id": OID, "scope_id": "s1"},
    "fofa_task": {"query": 'domain="example.com"'},
    "domain_exec_task": {"scope_id": "s1"},
    "ip_exec_task": {"scope_id": "s1"},
    "github_task_task": {"keyword": "password"},
    "github_task_monitor": {"keyword": "password"},
    "asset_site_update": {"scope_id": "s1"},
    "add_asset_site_task": {"scope_id": "s1", "target": "example.com"},
    "asset_wih_update": {"scope_id": "s1"},
}


def invalid(task_type: str, data: object, **kwargs: Any) -> tuple[str, str]:
    err = reject(validate_task_data, task_type, data, **kwargs)
    return err.field, err.reason


def test_every_spec_type_has_a_minimal_example() -> None:
    assert set(MINIMAL) == {t.value for t in SPEC_TYPES}


@pytest.mark.parametrize("entry", SPEC_TYPES, ids=lambda t: t.value)
def test_minimal_data_gets_common_fields(entry: Any) -> None:
    out = validate_task_data(entry.value, MINIMAL[entry.value])
    assert out["type"] == entry.kind and out["task_tag"] == entry.task_tag
    assert isinstance(out["options"], dict)
    assert isinstance(out["target"], str) and out["target"]
    assert out["name"] == f"{entry.value} {out['target']}"


def test_domain_task_full() -> None:
    data = {
        "name": "  示例域名任务 ",
        "target": "Example.com, bücher.example\nexample.com",
        "type": "domain",
        "task_tag": "task",
        "options": {
            "domain_brute_type": "big",
            "port_scan_type": "custom",
            "port_custom": "443,80",
            "alt_dns": True,
        },
    }
    out = validate_task_data("domain_task", data)
    assert out == {
        "name": "示例域名任务",
        "target": "example.com,xn--bcher-kva.example",
        "targets": ["example.com", "xn--bcher-kva.example"],
        "type": "domain",
        "task_tag": "task",
        "options": {
            **DOMAIN_DEFAULTS,
            "domain_brute_type": "big",
            "port_scan_type": "custom",
            "port_custom": [80, 443],
            "alt_dns": True,
        },
    }
    assert data["target"] == "Example.com, bücher.example\nexample.com"


def test_defaults_filled() -> None:
    assert validate_task_data("domain_task", {"target": "a.com"})["options"] == DOMAIN_DEFAULTS
    assert validate_task_data("ip_task", {"target": "10.0.0.0/24"})["options"] == IP_DEFAULTS
    assert validate_task_data("ip_exec_task", {"scope_id": "s"})["options"] == IP_DEFAULTS
    assert validate_task_data("fofa_task", {"query": "q"})["options"] == {**IP_DEFAULTS, "size": 100}
    assert validate_task_data("github_task_task", {"keyword": "k"})["options"] == {"max_results": 200}
    assert validate_task_data("asset_site_update", {"scope_id": "s"})["options"] == {}


def test_name_default_truncated_and_type_overrides() -> None:
    out = validate_task_data("domain_task", {"target": "a" * 60 + ".com", "name": ""}, Limits(max_name=20))
    assert out["name"] == "domain_task aaaaaaaa"
    out = validate_task_data("domain_task", {"target": "a.com", "type": "custom-kind", "task_tag": "monitor"})
    assert (out["type"], out["task_tag"]) == ("custom-kind", "monitor")


def test_ip_task() -> None:
    out = validate_task_data("ip_task", {"target": ["10.0.0.5/24", "1.1.1.1-20", "::1"]})
    assert out["targets"] == ["10.0.0.0/24", "1.1.1.1-1.1.1.20", "::1"]
    assert out["target"] == "10.0.0.0/24,1.1.1.1-1.1.1.20,::1"
    assert invalid("ip_task", {"target": "0.0.0.0/0"}) == (
        "data.target",
        "'0.0.0.0/0' is too large (4294967296 addresses; at most 65536)",
    )
    assert invalid("ip_task", {"target": "a.com"}) == (
        "data.target",
        "'a.com' is not a valid IP address, CIDR network or IP range",
    )
    assert invalid("ip_task", {"target": "1.1.1.1", "options": {"domain_brute": True}})[0] == (
        "data.options.domain_brute"
    )


def test_run_risk_cruising() -> None:
    data = {
        "target": ["HTTP://A.com/x", "a.com:8443", "b.com", "1.2.3.4"],
        "options": {"poc": ["poc-1", " poc-2 ", "poc-1"], "concurrency": 10, "timeout": 5},
    }
    out = validate_task_data("run_risk_cruising", data)
    assert out["targets"] == ["http://a.com/x", "a.com:8443", "b.com", "1.2.3.4"]
    assert out["options"] == {"poc": ["poc-1", "poc-2"], "concurrency": 10, "timeout": 5.0}
    assert validate_task_data("run_risk_cruising", {"target": "a.com"})["options"] == {}
    assert validate_task_data("run_risk_cruising", {"target": "a.com", "options": {"poc": []}})[
        "options"
    ] == {"poc": []}
    bad = [
        ({"poc": "x"}, "data.options.poc", "must be a list of PoC ids"),
        ({"poc": ["x", ""]}, "data.options.poc[1]", "must not be empty"),
        ({"poc": [1]}, "data.options.poc[0]", "must be a string"),
        ({"concurrency": 0}, "data.options.concurrency", "must be between 1 and 100"),
        ({"concurrency": 101}, "data.options.concurrency", "must be between 1 and 100"),
        ({"concurrency": 5.0}, "data.options.concurrency", "must be an integer"),
        ({"concurrency": True}, "data.options.concurrency", "must be an integer"),
        ({"timeout": 0.05}, "data.options.timeout", "must be between 0.1 and 60"),
        ({"timeout": 61}, "data.options.timeout", "must be between 0.1 and 60"),
        ({"timeout": "5"}, "data.options.timeout", "must be a number"),
        ({"timeout": False}, "data.options.timeout", "must be a number"),
    ]
    for options, field, reason in bad:
        assert invalid("run_risk_cruising", {"target": "a.com", "options": options}) == (field, reason)
    assert invalid("run_risk_cruising", {"target": "ftp://a.com"}) == (
        "data.target",
        "'ftp://a.com' must use http or https",
    )


def test_domain_task_sync_task() -> None:
    out = validate_task_data("domain_task_sync_task", {"task_id": OID.upper(), "scope_id": " s1 "})
    assert (out["task_id"], out["scope_id"], out["target"]) == (OID, "s1", OID)
    assert validate_task_data("domain_task_sync_task", {"task_id": UUID, "scope_id": "s"})["task_id"] == UUID
    for task_id in ["x", OID + "0", 5, None, {"$ne": 1}]:
        assert invalid("domain_task_sync_task", {"task_id": task_id, "scope_id": "s"})[0] == "data.task_id"
    assert invalid("domain_task_sync_task", {"task_id": "x", "scope_id": "s"})[1] == (
        "must be a 24-hex ObjectId or a UUID"
    )
    assert invalid("domain_task_sync_task", {"scope_id": "s"}) == ("data.task_id", "is required")
    assert invalid("domain_task_sync_task", {"task_id": OID}) == ("data.scope_id", "is required")
    assert invalid("domain_task_sync_task", {"task_id": OID, "scope_id": ""}) == (
        "data.scope_id",
        "must not be empty",
    )
    assert invalid("domain_task_sync_task", {"task_id": OID, "scope_id": "s" * 129}) == (
        "data.scope_id",
        "must be at most 128 characters",
    )
    assert invalid("domain_task_sync_task", {"task_id": OID, "scope_id": "s", "options": {"x": 1}}) == (
        "data.options.x",
        "unknown option; expected one of: none",
    )


def test_fofa_task() -> None:
    data = {
        "query": ' domain="a.com" ',
        "options": {"size": 10000, "page": 3, "key": "k", "email": "e@x.com"},
    }
    out = validate_task_data("fofa_task", data)
    assert (out["query"], out["target"]) == ('domain="a.com"', 'domain="a.com"')
    assert out["options"] == {**IP_DEFAULTS, "size": 10000, "page": 3, "key": "k", "email": "e@x.com"}
    assert invalid("fofa_task", {}) == ("data.query", "is required")
    assert invalid("fofa_task", {"query": "  "}) == ("data.query", "must not be empty")
    assert invalid("fofa_task", {"query": "q" * 1025}) == ("data.query", "must be at most 1024 characters")
    assert invalid("fofa_task", {"query": "a\nb"}) == ("data.query", "must not contain control characters")
    assert invalid("fofa_task", {"query": "q", "options": {"size": 10001}}) == (
        "data.options.size",
        "must be between 1 and 10000",
    )
    assert invalid("fofa_task", {"query": "q", "options": {"page": 0}}) == (
        "data.options.page",
        "must be at least 1",
    )
    assert invalid("fofa_task", {"query": "q", "target": "a.com"}) == (
        "data.target",
        "unknown field for fofa_task",
    )


@pytest.mark.parametrize("task_type", ["domain_exec_task", "ip_exec_task"])
def test_exec_tasks(task_type: str) -> None:
    target = "a.com" if task_type == "domain_exec_task" else "10.0.0.0/30"
    data = {
        "scope_id": "s1",
        "target": target,
        "schedule": {"cron": " */5  0-23 * JAN-mar mon-fri,0 "},
        "webhook": "HTTPS://Hooks.Example.com/x",
    }
    out = validate_task_data(task_type, data)
    assert out["targets"] == [target] and out["target"] == target
    assert out["schedule"] == {"cron": "*/5 0-23 * jan-mar mon-fri,0"}
    assert out["webhook"] == "https://hooks.example.com/x"
    bare = validate_task_data(task_type, {"scope_id": "s1", "schedule": {"interval": 60}})
    assert (bare["targets"], bare["target"], bare["schedule"]) == ([], "s1", {"interval": 60})
    assert invalid(task_type, {"target": target}) == ("data.scope_id", "is required")


def test_exec_target_kinds() -> None:
    assert invalid("domain_exec_task", {"scope_id": "s", "target": "1.2.3.4"})[1] == (
        "'1.2.3.4' is not a valid domain"
    )
    assert invalid("ip_exec_task", {"scope_id": "s", "target": "1.1.1.1-2"})[1] == (
        "'1.1.1.1-2' is not a valid IP address or CIDR network"
    )


@pytest.mark.parametrize(
    ("schedule", "field", "reason"),
    [
        ("daily", "data.schedule", "must be an object"),
        ({}, "data.schedule", "must have exactly one of 'interval' or 'cron'"),
        (
            {"interval": 60, "cron": "* * * * *"},
            "data.schedule",
            "must have exactly one of 'interval' or 'cron'",
        ),
        ({"every": 60}, "data.schedule.every", "unknown field; expected 'interval' or 'cron'"),
        ({"interval": 59}, "data.schedule.interval", "must be between 60 and 31622400"),
        ({"interval": "60"}, "data.schedule.interval", "must be an integer"),
        ({"interval": 60.0}, "data.schedule.interval", "must be an integer"),
        ({"cron": 5}, "data.schedule.cron", "must be a string"),
        (
            {"cron": "* * * *"},
            "data.schedule.cron",
            "must have 5 fields: minute hour day-of-month month day-of-week",
        ),
        ({"cron": "60 * * * *"}, "data.schedule.cron", "'60' is not a valid minute field"),
        ({"cron": "* 24 * * *"}, "data.schedule.cron", "'24' is not a valid hour field"),
        ({"cron": "* * 0 * *"}, "data.schedule.cron", "'0' is not a valid day-of-month field"),
        ({"cron": "* * * 13 *"}, "data.schedule.cron", "'13' is not a valid month field"),
        ({"cron": "* * * * 8"}, "data.schedule.cron", "'8' is not a valid day-of-week field"),
        ({"cron": "*/0 * * * *"}, "data.schedule.cron", "'*/0' is not a valid minute field"),
        ({"cron": "5-1 * * * *"}, "data.schedule.cron", "'5-1' is not a valid minute field"),
        ({"cron": "1,,2 * * * *"}, "data.schedule.cron", "'1,,2' is not a valid minute field"),
        ({"cron": "* * * foo *"}, "data.schedule.cron", "'foo' is not a valid month field"),
    ],
)
def test_schedule_rejected(schedule: object, field: str, reason: str) -> None:
    assert invalid("github_task_monitor", {"keyword": "k", "schedule": schedule}) == (field, reason)


@pytest.mark.parametrize(
    ("webhook", "reason"),
    [
        (5, "must be a string"),
        ("ftp://a.com/", "'ftp://a.com/' must use http or https"),
        ("a.com", "'a.com' is not a valid http(s) URL"),
        ("http://u@a.com/", "'http://u@a.com/' must not contain credentials"),
    ],
)
def test_webhook_rejected(webhook: object, reason: str) -> None:
    assert invalid("asset_site_update", {"scope_id": "s", "webhook": webhook}) == ("data.webhook", reason)


def test_github_tasks() -> None:
    out = validate_task_data("github_task_task", {"keyword": " secret ", "options": {"max_results": 1000}})
    assert (out["keyword"], out["target"], out["options"]) == ("secret", "secret", {"max_results": 1000})
    assert invalid("github_task_task", {"keyword": "k", "options": {"max_results": 0}}) == (
        "data.options.max_results",
        "must be between 1 and 1000",
    )
    assert invalid("github_task_task", {"keyword": "k" * 257}) == (
        "data.keyword",
        "must be at most 256 characters",
    )
    assert invalid("github_task_task", {}) == ("data.keyword", "is required")
    assert invalid("github_task_task", {"keyword": "k", "schedule": {"interval": 60}}) == (
        "data.schedule",
        "unknown field for github_task_task",
    )
    out = validate_task_data("github_task_monitor", {"keyword": "k", "schedule": {"interval": 3600}})
    assert out["schedule"] == {"interval": 3600} and out["task_tag"] == "monitor"


@pytest.mark.parametrize("task_type", ["asset_site_update", "asset_wih_update"])
def test_asset_updates(task_type: str) -> None:
    out = validate_task_data(task_type, {"scope_id": "scope-1", "webhook": "http://h.example:8080/x"})
    assert (out["target"], out["scope_id"], out["webhook"]) == (
        "scope-1",
        "scope-1",
        "http://h.example:8080/x",
    )
    assert invalid(task_type, {}) == ("data.scope_id", "is required")
    assert invalid(task_type, {"scope_id": 5}) == ("data.scope_id", "must be a string")


def test_add_asset_site_task() -> None:
    out = validate_task_data(
        "add_asset_site_task", {"scope_id": "s", "target": "a.com http://B.com:80 c.com:81"}
    )
    assert out["targets"] == ["a.com", "http://b.com", "c.com:81"]
    assert invalid("add_asset_site_task", {"scope_id": "s"}) == ("data.target", "is required")
    assert invalid("add_asset_site_task", {"scope_id": "s", "target": "1.2.3.4"}) == (
        "data.target",
        "'1.2.3.4' is not a valid host:port, http(s) URL or domain",
    )


# --- validate_task_data: options and common fields -------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "reason"),
    [
        ("x", "data.options", "must be an object"),
        ([], "data.options", "must be an object"),
        (
            {"bogus": 1},
            "data.options.bogus",
            "unknown option; expected one of: domain_brute, domain_brute_type, port_scan, "
            "port_scan_type, port_custom, exclude_ports, service_detection, os_detection, use_nmap, "
            "host_timeout_type, host_timeout, port_parallelism, port_min_rate, skip_scan_cdn_ip, "
            "npoc_service_detection, service_brute, brute_config, site_identify, ssl_cert, file_leak, "
            "site_capture, site_spider, nuclei_scan, web_info_hunter, poc_config, scope_id, "
            "dns_query_plugin, alt_dns, arl_search, search_engines, findvhost",
        ),
        ({"port_scan": 1}, "data.options.port_scan", "must be a boolean (true or false)"),
        ({"port_scan": "true"}, "data.options.port_scan", "must be a boolean (true or false)"),
        ({"site_identify": None}, "data.options.site_identify", "must be a boolean (true or false)"),
        (
            {"domain_brute_type": "huge"},
            "data.options.domain_brute_type",
            "must be one of 'test', 'small', 'big'",
        ),
        (
            {"port_scan_type": "top10"},
            "data.options.port_scan_type",
            "must be one of 'test', 'top100', 'top1000', 'all', 'custom'",
        ),
        (
            {"port_scan_type": "custom"},
            "data.options.port_custom",
            "is required when port_scan_type is 'custom'",
        ),
        (
            {"port_custom": "80"},
            "data.options.port_custom",
            "is only allowed when port_scan_type is 'custom'",
        ),
        (
            {"port_scan_type": "custom", "port_custom": "80,70000"},
            "data.options.port_custom",
            "'70000' is out of range (ports are 1..65535, low to high)",
        ),
        ({"scope_id": ""}, "data.options.scope_id", "must not be empty"),
    ],
)
def test_domain_options_rejected(options: object, field: str, reason: str) -> None:
    assert invalid("domain_task", {"target": "a.com", "options": options}) == (field, reason)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({}, "data.target", "is required"),
        ({"target": "a.com", "name": 5}, "data.name", "must be a string"),
        ({"target": "a.com", "name": "n" * 257}, "data.name", "must be at most 256 characters"),
        ({"target": "a.com", "name": "a\x00b"}, "data.name", "must not contain control characters"),
        ({"target": "a.com", "type": ""}, "data.type", "must not be empty"),
        ({"target": "a.com", "type": "t" * 65}, "data.type", "must be at most 64 characters"),
        ({"target": "a.com", "task_tag": ["x"]}, "data.task_tag", "must be a string"),
        ({"target": "a.com", "status": "SUCCESS"}, "data.status", "unknown field for domain_task"),
        ({"target": "a.com", "scope_id": "s"}, "data.scope_id", "unknown field for domain_task"),
    ],
)
def test_common_fields_rejected(data: object, field: str, reason: str) -> None:
    assert invalid("domain_task", data) == (field, reason)


def test_unknown_task_type() -> None:
    field, reason = invalid("nope", {"target": "a.com"})
    assert field == "task_type" and reason.startswith(
        "unknown task type; expected one of: domain_task, ip_task"
    )


# --- validate_task_data: generic checks --------------------------------------------------------


@pytest.mark.parametrize("data", [None, [], "x", 5, [{"target": "a.com"}]])
def test_data_must_be_object(data: object) -> None:
    assert invalid("domain_task", data) == ("data", "must be an object")
    assert invalid("my_custom", data, custom=True) == ("data", "must be an object")


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"status": {"$ne": None}}, "data.status", "key '$ne' must not start with '$'"),
        ({"$where": "1"}, "data", "key '$where' must not start with '$'"),
        ({"a.b": 1}, "data", "key 'a.b' must not contain '.' or NUL"),
        ({"a\x00": 1}, "data", "key 'a\\x00' must not contain '.' or NUL"),
        ({"": 1}, "data", "keys must not be empty"),
        ({"k" * 257: 1}, "data", "keys must be at most 256 characters"),
        ({1: 1}, "data", "keys must be strings"),
        ({"x": [{"y": {"$gt": 1}}]}, "data.x[0].y", "key '$gt' must not start with '$'"),
        ({"x": "s" * 4097}, "data.x", "must be at most 4096 characters"),
        ({"x": ["s" * 4097]}, "data.x[0]", "must be at most 4096 characters"),
        ({"x": "\ud800"}, "data.x", "must be valid Unicode text"),
        ({"x": float("nan")}, "data.x", "must be a finite number"),
        ({"x": float("inf")}, "data.x", "must be a finite number"),
        ({"x": 2**63}, "data.x", "integer is out of range"),
        ({"x": {1, 2}}, "data.x", "must be a JSON value"),
        ({"x": {"k": b"bytes"}}, "data.x.k", "must be a JSON value"),
        (
            {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}},
            "data.a.b.c.d.e.f",
            "is nested too deeply (at most 6 levels)",
        ),
        ({"a": [[[[[[1]]]]]]}, "data.a[0][0][0][0][0]", "is nested too deeply (at most 6 levels)"),
        ({f"k{i}": i for i in range(201)}, "data", "must have at most 200 keys"),
        ({"x": {f"k{i}": i for i in range(201)}}, "data.x", "must have at most 200 keys"),
    ],
)
def test_generic_rejections(data: dict[Any, Any], field: str, reason: str) -> None:
    assert invalid("domain_task", data) == (field, reason)
    assert invalid("my_custom", data, custom=True) == (field, reason)


def test_depth_limit_allows_max_depth() -> None:
    data = {"a": {"b": {"c": {"d": {"e": [1]}}}}}
    assert validate_task_data("custom", data, custom=True)["a"] == data["a"]


def test_data_size_limit() -> None:
    data = {f"k{i}": "x" * 4000 for i in range(70)}
    field, reason = invalid("my_custom", data, custom=True)
    assert field == "data" and reason.startswith("must be at most 262144 bytes as JSON")


def test_target_string_exempt_from_string_limit_but_not_target_count() -> None:
    many = ",".join(f"host{i}.example.com" for i in range(1000))
    assert len(many) > 4096
    assert len(validate_task_data("domain_task", {"target": many})["targets"]) == 1000
    assert invalid("domain_task", {"target": many + ",x.com"}) == (
        "data.target",
        "must have at most 1000 targets (1001 given)",
    )


def test_status_like_operator_values_rejected() -> None:
    assert invalid("domain_task", {"target": {"$ne": None}}) == (
        "data.target",
        "key '$ne' must not start with '$'",
    )
    assert invalid("fofa_task", {"query": {"$regex": ".*"}}) == (
        "data.query",
        "key '$regex' must not start with '$'",
    )
    err = reject(targets, {"$ne": None})
    assert err.reason == "must be a string or a list of strings"


def test_custom_type_returns_data_plus_defaults() -> None:
    data = {"foo": {"bar": [1, 2.5, None, True]}, "target": "anything goes"}
    out = validate_task_data("scanner_x", data, custom=True)
    assert out == {
        **data,
        "name": "scanner_x anything goes",
        "target": "anything goes",
        "type": "custom",
        "task_tag": "task",
        "options": {},
    }
    assert validate_task_data("scanner_x", {}, custom=True)["name"] == "scanner_x"
    out = validate_task_data(
        "scanner_x", {"name": "n", "type": "t", "task_tag": "g", "options": {"a": 1}}, custom=True
    )
    assert (out["name"], out["type"], out["task_tag"], out["options"]) == ("n", "t", "g", {"a": 1})
    assert invalid("scanner_x", {"target": ["a"]}, custom=True) == ("data.target", "must be a string")
    assert invalid("scanner_x", {"options": 1}, custom=True) == ("data.options", "must be an object")
    assert invalid("scanner_x", {"name": 1}, custom=True) == ("data.name", "must be a string")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
option_values = st.dictionaries(
    st.sampled_from(["port_scan", "port_scan_type", "port_custom", "poc", "size", "timeout", "max_results"]),
    json_values,
    max_size=3,
)
task_data = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "target": st.one_of(
                st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3), json_values
            ),
            "name": json_values,
            "scope_id": json_values,
            "query": json_values,
            "keyword": json_values,
            "task_id": st.one_of(st.just(OID), json_values),
            "options": st.one_of(option_values, json_values),
            "schedule": json_values,
            "webhook": st.one_of(st.text(max_size=30), json_values),
        },
    ),
)


@FAST
@given(st.sampled_from([t.value for t in SPEC_TYPES]), task_data, st.booleans())
def test_random_data_only_raises_invalid_param(task_type: str, data: object, custom: bool) -> None:
    try:
        out = validate_task_data(task_type, data, custom=custom)
    except InvalidParam as err:
        assert err.field == "task_type" or err.field.startswith("data")
        return
    for key in ("name", "target", "type", "task_tag"):
        assert isinstance(out[key], str)
    assert isinstance(out["options"], dict)
