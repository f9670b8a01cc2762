"""The scan scope policy: unit and property tests (pure, no I/O)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.config import Config, ScopeConfig
from controlplane.core.scope import ScopePolicy

DEFAULT = ScopePolicy.from_config(Config())
OPEN = ScopePolicy.from_scope_config(ScopeConfig(allow_private=True, allow_loopback=True))
EVERYTHING = ScopePolicy.from_scope_config(
    ScopeConfig(allow_private=True, allow_loopback=True, allowed_cidrs=["0.0.0.0/0", "::/0"])
)
POLICIES = [DEFAULT, OPEN, EVERYTHING]

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
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
    if addr.is_global and not addr.is_multicast:
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
