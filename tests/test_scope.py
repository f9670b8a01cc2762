"""The scan scope policy: unit and property tests (pure, no I/O)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controlplane.config import Config, ScopeConfig, TaskTypeConfig
from controlplane.core.errors import InvalidParam
from controlplane.core.scope import ALWAYS_DENIED, EMBEDDINGS, LOOPBACK, PRIVATE, ScopePolicy, custom_targets
from controlplane.core.tasktypes import Registry
from controlplane.core.validate import validate_task_data
from controlplane.service.manager import TaskManager

DEFAULT = ScopePolicy.from_config(Config())
OPEN = ScopePolicy.from_scope_config(ScopeConfig(allow_private=True, allow_loopback=True))
EVERYTHING = ScopePolicy.from_scope_config(
    ScopeConfig(allow_private=True, allow_loopback=True, allowed_cidrs=["0.0.0.0/0", "::/0"])
)
LISTS = ScopePolicy.from_scope_config(
    ScopeConfig(
        allowed_cidrs=["8.8.0.0/16", "10.1.0.0/16", "127.0.0.0/8", "203.0.113.64/27", "2606:4700::/124"],
        denied_cidrs=["8.8.4.0/24", "8.8.8.128/26", "10.1.2.3/32"],
    )
)
NO_IPV6 = ScopePolicy.from_scope_config(
    ScopeConfig(allow_private=True, allow_loopback=True, allow_ipv6=False)
)
POLICIES = [DEFAULT, OPEN, EVERYTHING]
WITH_LISTS = [*POLICIES, LISTS]

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
ipv4 = st.integers(0, 2**32 - 1).map(IPv4)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6)
# IPv4 addresses where the rules change: inside, at and next to the edges of every range they name.
SPECIAL_V4 = [
    n
    for n in (*ALWAYS_DENIED, *LOOPBACK, *PRIVATE, *LISTS.allowed_cidrs, *LISTS.denied_cidrs)
    if n.version == 4
]
EDGES_V4 = sorted(
    {
        i
        for n in SPECIAL_V4
        for e in (int(n.network_address), int(n.broadcast_address))
        for i in (e - 1, e, e + 1)
        if 0 <= i < 2**32
    }
)
interesting_v4 = st.one_of(
    ipv4,
    st.sampled_from(EDGES_V4).map(IPv4),
    st.sampled_from(SPECIAL_V4).flatmap(lambda n: st.integers(0, n.num_addresses - 1).map(lambda i: n[i])),
)
SPECIAL_V6 = [
    n for n in (*ALWAYS_DENIED, *LOOPBACK, *PRIVATE, *(e.prefix for e in EMBEDDINGS)) if n.version == 6
]
EDGES_V6 = sorted(
    {
        i
        for n in SPECIAL_V6
        for e in (int(n.network_address), int(n.broadcast_address))
        for i in (e - 1, e, e + 1)
    }
    - {-1, 2**128}
)


def embeds_ipv4(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``addr`` is an IPv6 address of an embedding prefix (not :: or ::1)."""
    return addr.version == 6 and int(addr) > 1 and any(addr in e.prefix for e in EMBEDDINGS)


def embedding_forms(v4: ipaddress.IPv4Address, noise: int) -> dict[str, ipaddress.IPv6Address]:
    """``v4`` in each single-address embedding; ``noise`` fills the bits the form leaves free."""
    x = int(v4)
    local_use = 0x64FF9B0001 << 80
    forms = {
        "IPv4-mapped": IPv6((0xFFFF << 32) | x),
        "IPv4-translated": IPv6((0xFFFF << 48) | x),
        "6to4": IPv6((0x2002 << 112) | (x << 80) | (noise & (2**80 - 1))),
        "NAT64": IPv6((0x64FF9B << 96) | x),
        "local-use NAT64 /96": IPv6(local_use | x),
        "local-use NAT64 /48": IPv6(local_use | ((x >> 16) << 64) | ((x & 0xFFFF) << 40)),
    }
    if x != 1:  # ::1 is the IPv6 loopback address, not 0.0.0.1
        forms["IPv4-compatible"] = IPv6(x)
    return forms


def teredo(server: ipaddress.IPv4Address, client: ipaddress.IPv4Address, noise: int) -> ipaddress.IPv6Address:
    """The Teredo address of ``client`` behind ``server`` (flags and port from ``noise``)."""
    return IPv6(
        (0x20010000 << 96) | (int(server) << 64) | ((noise & 0xFFFFFFFF) << 32) | (int(client) ^ 0xFFFFFFFF)
    )


def small_network(draw: Any, v6: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """At most 256 addresses near the edge of a rule's range, or an embedding of one."""
    if not v6:
        base: int = int(draw(interesting_v4))
        return ipaddress.IPv4Network((base, draw(st.integers(24, 32))), strict=False)
    if draw(st.booleans()):
        form = draw(st.sampled_from(sorted(embedding_forms(IPv4(0), 0))))
        forms = embedding_forms(draw(interesting_v4), draw(st.integers(0, 2**80 - 1)))
        base = int(forms.get(form, forms["NAT64"]))
    elif draw(st.booleans()):
        base = int(teredo(draw(interesting_v4), draw(interesting_v4), draw(st.integers(0, 2**32 - 1))))
    else:
        base = draw(st.sampled_from(EDGES_V6))
    return ipaddress.IPv6Network((base, draw(st.integers(120, 128))), strict=False)


small_networks = st.composite(lambda draw: small_network(draw, draw(st.booleans())))()
link_local_v4 = st.integers(0, 2**16 - 1).map(
    lambda n: ipaddress.IPv4Address(int(ipaddress.IPv4Address("169.254.0.0")) + n)
)
link_local_v6 = st.integers(0, 2**118 - 1).map(lambda n: ipaddress.IPv6Address((0xFE80 << 112) + n))
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "target",
    [
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
        "metadata.google.internal",
        "METADATA.Google.Internal.",
        "metadata.goog",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
        "169.254.169.254:80",
        "169.254.0.0/24",
        "169.254.169.250-169.254.169.255",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
    ],
)
def test_metadata_link_local_and_reserved_are_always_denied(policy: ScopePolicy, target: str) -> None:
    assert policy.target_reason(target) is not None


@pytest.mark.parametrize(
    "target",
    ["10.0.0.0/8", "10.1.2.3", "192.168.1.0/24", "172.16.5.5", "fc00::1", "100.64.0.1", "127.0.0.1", "::1",
     "localhost", "a.localhost", "http://127.0.0.1:8080/", "10.0.0.1-10.0.0.5", "[::1]:22"],
)  # fmt: skip
def test_private_and_loopback_denied_by_default_allowed_when_enabled(target: str) -> None:
    assert DEFAULT.target_reason(target) is not None
    assert OPEN.target_reason(target) is None


@pytest.mark.parametrize(
    "target",
    ["8.8.8.8", "example.com", "http://example.com/x", "https://[2001:4860:4860::8888]/", "1.1.1.0/24",
     "example.com:8443", "xn--bcher-kva.example", "2606:4700:4700::1111"],
)  # fmt: skip
def test_public_targets_are_allowed_by_default(target: str) -> None:
    assert DEFAULT.target_reason(target) is None


def test_denied_and_allowed_lists() -> None:
    policy = ScopePolicy.from_scope_config(
        ScopeConfig(
            allowed_cidrs=["10.1.0.0/16", "203.0.113.0/24"],
            denied_cidrs=["10.1.99.0/24"],
            allowed_domains=["example.com", "*.corp.test"],
            denied_domains=["secret.example.com"],
        )
    )
    assert policy.allows_ip("10.1.2.3")  # an explicit allowed CIDR enables private addresses in it
    assert not policy.allows_ip("10.1.99.7")  # denied beats allowed
    assert not policy.allows_ip("10.2.0.1")  # outside the allowed list
    assert not policy.allows_ip("8.8.8.8")
    assert policy.target_reason("10.1.128.0/17") is None
    assert policy.target_reason("10.1.0.0/15") is not None  # only partly inside
    assert policy.allows_host("example.com") and policy.allows_host("a.b.example.com")
    assert policy.allows_host("x.corp.test")
    assert not policy.allows_host("badexample.com")
    assert not policy.allows_host("secret.example.com") and not policy.allows_host("a.secret.example.com")
    assert not policy.allows_host("other.org")


def test_idn_names_match_their_punycode() -> None:
    policy = ScopePolicy.from_scope_config(ScopeConfig(denied_domains=["bücher.example"]))
    assert not policy.allows_host("xn--bcher-kva.example")
    assert not policy.allows_host("www.BÜCHER.example")
    assert policy.allows_host("buecher.example")


def test_bad_scope_cidr_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="denied_cidrs"):
        ScopePolicy.from_scope_config(ScopeConfig(denied_cidrs=["10.0.0.0/33"]))


def test_check_is_the_worker_scope_check() -> None:
    # A name passes on its own; the address it resolves to is judged separately.
    assert DEFAULT.check("rebind.example.com")
    assert not DEFAULT.check("169.254.169.254")
    assert not DEFAULT.check("10.0.0.7")
    assert OPEN.check("10.0.0.7")
    assert DEFAULT("8.8.8.8") is True


@given(st.one_of(link_local_v4, link_local_v6))
def test_link_local_is_denied_whatever_the_config(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    for policy in POLICIES:
        assert not policy.allows_ip(addr)
        assert not policy.allows_ip(str(addr))
        assert not policy.allows_host(f"[{addr}]" if addr.version == 6 else str(addr))


@given(ipv4)
def test_mapped_ipv6_is_judged_as_its_ipv4(addr: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) + int(addr))
    for policy in POLICIES:
        assert policy.allows_ip(mapped) == policy.allows_ip(addr)
        assert policy.allows_ip(nat64) == policy.allows_ip(addr)


@given(st.one_of(ipv4, ipv6))
def test_verdicts_are_consistent(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    text = str(addr)
    for policy in POLICIES:
        verdict = policy.allows_ip(addr)
        assert policy.allows_host(text) == verdict
        assert policy.check(text) == verdict
        assert (policy.target_reason(text) is None) == verdict
        assert (policy.network_reason(ipaddress.ip_network(addr)) is None) == verdict
    # Configuration only ever widens: what the default allows, the open policies allow too.
    if DEFAULT.allows_ip(addr):
        assert OPEN.allows_ip(addr) and EVERYTHING.allows_ip(addr)
    if addr.is_global and not addr.is_multicast and not embeds_ipv4(addr):
        assert OPEN.allows_ip(addr) == DEFAULT.allows_ip(addr)


@given(ipv4, st.integers(16, 32))
def test_a_network_is_allowed_only_if_each_address_is(addr: ipaddress.IPv4Address, prefix: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    for policy in POLICIES:
        if policy.network_reason(net) is None:
            for probe in (
                net.network_address,
                net.broadcast_address,
                net[net.num_addresses // 2],
            ):
                assert policy.allows_ip(probe), (net, probe)


@given(st.lists(label, min_size=1, max_size=4), st.sampled_from(["example.com", "corp.test"]))
def test_suffix_rules_cover_subdomains_only(labels: list[str], suffix: str) -> None:
    policy = ScopePolicy.from_scope_config(ScopeConfig(denied_domains=[suffix]))
    name = ".".join([*labels, suffix])
    assert not policy.allows_host(name)
    assert not policy.allows_host(name.upper() + ".")
    glued = "".join(labels) + suffix  # "fooexample.com" is not under "example.com"
    assert policy.allows_host(glued)


# -- IPv6 forms that embed IPv4 addresses ------------------------------------------------

EMBEDDED_METADATA = [
    "::a9fe:a9fe",  # IPv4-compatible
    "::169.254.169.254",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (RFC 2765)
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215), a /96 inside it
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use NAT64, the RFC 6052 /48 layout
    "2002:a9fe:a9fe::1",  # 6to4
    "2001:0:a9fe:a9fe::1",  # Teredo server
    "2001:0:808:808:0:1:5601:5601",  # Teredo client (stored inverted)
    "64:ff9b::a9fe:a900/120",
    "2002:a9fe:a9fe::/120",
    "2002:a9fe::/32",
    "::ffff:a9fe:0/112",
    "64:ff9b:1::a9fe:a900-64:ff9b:1::a9fe:a9ff",
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("target", EMBEDDED_METADATA)
def test_embedded_metadata_and_link_local_are_always_denied(policy: ScopePolicy, target: str) -> None:
    reason = policy.target_reason(target)
    assert reason is not None and "never scanned" in reason and "169.254." in reason


@pytest.mark.parametrize(
    ("target", "reached"),
    [("::127.0.0.1", "127.0.0.1"), ("::ffff:127.0.0.1", "127.0.0.1"), ("64:ff9b::7f00:1", "127.0.0.1"),
     ("2002:7f00:1::", "127.0.0.1"), ("64:ff9b::a00:1", "10.0.0.1"), ("2002:c0a8:101::/48", "192.168.1.1"),
     ("::ffff:0:a00:0/120", "10.0.0.0/24")],
)  # fmt: skip
def test_embedded_loopback_and_private_follow_their_ipv4_rules(target: str, reached: str) -> None:
    reason = DEFAULT.target_reason(target)
    assert reason is not None and f"reaches {reached} " in reason
    assert OPEN.target_reason(target) is None


@pytest.mark.parametrize(
    "target",
    ["::ffff:8.8.8.8", "64:ff9b::808:808", "64:ff9b:1::808:808", "2002:808:808::1",
     "2001:0:808:808::f7f7:f7f7", "64:ff9b::808:800/120", "2002:808:808::/48"],
)  # fmt: skip
def test_embedded_public_addresses_are_allowed(target: str) -> None:
    assert DEFAULT.target_reason(target) is None


def test_embedding_layouts_match_the_standard_library() -> None:
    v4, other = IPv4("198.51.100.7"), IPv4("203.0.113.9")
    forms = embedding_forms(v4, 12345)
    assert forms["IPv4-mapped"].ipv4_mapped == v4
    assert forms["6to4"].sixtofour == v4
    assert forms["IPv4-compatible"] == IPv6("::198.51.100.7")
    assert forms["IPv4-translated"] == IPv6("::ffff:0:198.51.100.7")
    assert forms["local-use NAT64 /48"] == IPv6("64:ff9b:1:c633:64:700::")  # RFC 6052 2.2, u octet skipped
    assert teredo(v4, other, 99).teredo == (v4, other)


@given(interesting_v4, st.integers(0, 2**80 - 1))
def test_each_embedding_is_judged_as_its_ipv4_address(v4: ipaddress.IPv4Address, noise: int) -> None:
    for name, addr in embedding_forms(v4, noise).items():
        for policy in WITH_LISTS:
            assert policy.allows_ip(addr) == policy.allows_ip(v4), (name, addr, v4)
            assert policy.check(str(addr)) == policy.allows_ip(v4)
            assert (policy.target_reason(str(addr)) is None) == policy.allows_ip(v4)
        assert not NO_IPV6.allows_ip(addr) and not NO_IPV6.check(f"[{addr}]")


@given(interesting_v4, interesting_v4, st.integers(0, 2**32 - 1))
def test_teredo_is_judged_by_its_server_and_its_client(
    server: ipaddress.IPv4Address, client: ipaddress.IPv4Address, noise: int
) -> None:
    addr = teredo(server, client, noise)
    for policy in WITH_LISTS:
        assert policy.allows_ip(addr) == (policy.allows_ip(server) and policy.allows_ip(client)), addr


@settings(max_examples=40, deadline=None)
@given(small_networks)
@example(ipaddress.ip_network("203.0.113.0/24"))  # partly inside an allowed range
@example(ipaddress.ip_network("10.1.2.0/30"))  # a denied address inside an allowed range
@example(ipaddress.ip_network("2606:4700::/120"))
@example(ipaddress.ip_network("::/120"))  # ::, ::1 and IPv4-compatible addresses
@example(ipaddress.ip_network("64:ff9b:1:808:8:800::/120"))
def test_a_small_network_is_allowed_exactly_when_each_address_is(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> None:
    for policy in WITH_LISTS:
        assert (policy.network_reason(net) is None) == all(policy.allows_ip(a) for a in net), net
        assert (policy.target_reason(str(net)) is None) == (policy.network_reason(net) is None)


@pytest.mark.parametrize(
    "target",
    ["2606:4700:4700::1111", "2606:4700::/120", "https://[2606:4700:4700::1111]/", "::ffff:8.8.8.8",
     "[2606:4700:4700::1111]:443", "64:ff9b::808:808", "2606:4700::1-2606:4700::9", "::1", "fd00::1"],
)  # fmt: skip
def test_allow_ipv6_false_refuses_every_ipv6_target(target: str) -> None:
    reason = NO_IPV6.target_reason(target)
    assert reason is not None and "scope.allow_ipv6" in reason
    assert NO_IPV6.target_reason("8.8.8.8") is None and NO_IPV6.target_reason("example.com") is None
    assert OPEN.target_reason(target) is None


def test_allow_ipv6_false_refuses_aaaa_answers_in_the_worker_check() -> None:
    assert not NO_IPV6.check("2606:4700:4700::1111") and NO_IPV6.check("1.1.1.1")
    assert ScopePolicy.from_config(Config()).allow_ipv6  # the default allows global IPv6


def test_a_cidr_is_refused_when_any_part_is_denied() -> None:
    # Part loopback, part CGNAT: enabling loopback does not enable the private part.
    loopback_only = ScopePolicy.from_scope_config(ScopeConfig(allow_loopback=True))
    reason = loopback_only.target_reason("96.0.0.0/3")
    assert reason is not None and "includes 100.64.0.0/11" in reason and "allow_private" in reason
    # Two adjacent allowed CIDRs cover a network none covers alone.
    two = ScopePolicy.from_scope_config(ScopeConfig(allowed_cidrs=["10.0.0.0/25", "10.0.0.128/25"]))
    assert two.target_reason("10.0.0.0/24") is None
    assert two.target_reason("10.0.0.0/23") is not None
    # A v6 network overlapping an embedding prefix is judged by the IPv4 range it embeds.
    assert "reaches 0.0.0.0/8" in str(EVERYTHING.target_reason("2000::/3"))


def test_denied_ipv6_cidrs_also_deny_embedding_addresses() -> None:
    policy = ScopePolicy.from_scope_config(ScopeConfig(denied_cidrs=["64:ff9b::/96"]))
    assert not policy.allows_ip("64:ff9b::808:808") and policy.allows_ip("8.8.8.8")


@pytest.mark.parametrize("target", ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
                                    "http://2852039166/", "http://0xA9FEA9FE:80/x", "0x7f.1:22"])  # fmt: skip
def test_numeric_ipv4_forms_are_not_host_names(target: str) -> None:
    for policy in POLICIES:
        reason = policy.target_reason(target)
        assert reason is not None and "numeric IPv4 form" in reason
    assert DEFAULT.target_reason("0x7f.example") is None


# -- create: built-in and custom types -------------------------------------------------


class _Recorder:
    """Stands in for the submitter: records what create would store and publish."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    async def submit(self, item: Any) -> None:
        self.items.append(item)

    def close(self) -> None:
        pass


@pytest.fixture
def manager() -> Iterator[TaskManager]:
    """A TaskManager of the default scope with a custom type ``my_scan``; nothing is stored."""
    config = Config()
    config.tasks["my_scan"] = TaskTypeConfig(task="workers.tasks.testing:sleep", label="Mine")
    built = TaskManager(
        config, cast(Any, None), cast(Any, None), cast(Any, None), Registry.from_config(config)
    )
    built.submitter.close()
    built.submitter = cast(Any, _Recorder())
    try:
        yield built
    finally:
        built.close()


def _refusal(manager: TaskManager, task_type: str, data: dict[str, Any]) -> InvalidParam:
    with pytest.raises(InvalidParam) as caught:
        asyncio.run(manager.create(task_type, data))
    assert cast(_Recorder, manager.submitter).items == []
    return caught.value


@pytest.mark.parametrize(
    "target",
    ["::a9fe:a9fe", "::ffff:0:a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "::127.0.0.1", "64:ff9b::a9fe:a900/120",
     "2002:a9fe:a9fe::/120", "2001:0:4136:e378:8000:63bf:5601:5601"],
)  # fmt: skip
def test_ip_task_with_an_embedded_denied_address_is_refused_at_create(
    manager: TaskManager, target: str
) -> None:
    normalized = validate_task_data("ip_task", {"target": target})["targets"][0]
    assert DEFAULT.target_reason(normalized) is not None
    error = _refusal(manager, "ip_task", {"name": "n", "target": f"8.8.8.8, {target}"})
    assert error.field == "data.target" and error.data["index"] == 1
    assert error.reason.startswith(f"out of scope: {normalized} ")


@pytest.mark.parametrize(
    ("data", "field", "index"),
    [({"target": "169.254.169.254"}, "data.target", 0),
     ({"target": "example.com, http://[::ffff:169.254.169.254]/"}, "data.target", 1),
     ({"targets": ["8.8.8.8", "10.0.0.0/24"]}, "data.targets", 1),
     ({"target_url": "http://metadata.google.internal/"}, "data.target_url", 0),
     ({"TargetHost": "2852039166"}, "data.TargetHost", 0),
     ({"targets": [2852039166]}, "data.targets", 0),
     ({"options": {"target": "127.0.0.1:6379"}}, "data.options.target", 0),
     ({"webhook": "http://10.0.0.1/hook"}, "data.webhook", None)],
)  # fmt: skip
def test_custom_types_get_the_scope_check(
    manager: TaskManager, data: dict[str, Any], field: str, index: int | None
) -> None:
    error = _refusal(manager, "my_scan", {"name": "n", **data})
    assert error.field == field and error.reason.startswith("out of scope: ")
    assert error.data.get("index") == index


def test_custom_types_with_targets_in_scope_are_created(manager: TaskManager) -> None:
    data = {"target": "example.com 8.8.8.8", "targets": ["https://example.org/x"], "target_count": 3,
            "other": "10.0.0.1", "options": {"mode": "169.254.169.254"}}  # fmt: skip
    reply = asyncio.run(manager.create("my_scan", data))
    assert reply["status"] == "PENDING"
    assert len(cast(_Recorder, manager.submitter).items) == 1


def test_custom_targets_lists_target_fields_only() -> None:
    data = {"target": "a.example, b.example", "targets": ["c.example", 7, True, {"x": 1}], "tag": "10.0.0.1",
            "options": {"target_port": "x.example", "port": "80"}}  # fmt: skip
    assert list(custom_targets(data)) == [
        ("data.target", 0, "a.example"),
        ("data.target", 1, "b.example"),
        ("data.targets", 0, "c.example"),
        ("data.targets", 1, "7"),
        ("data.options.target_port", 0, "x.example"),
    ]
