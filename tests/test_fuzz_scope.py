"""The scope policy's properties over random configurations: the heavy variant of tests/test_scope.py.

Pure, no I/O. ``CP_FUZZ_EXAMPLES`` sets the examples per property (a few by
default, so a short run is part of the normal suite; ``make fuzz`` runs many more).
Properties: every IPv6 form that embeds an IPv4 address is judged as that
address; a small network is allowed exactly when each of its addresses is
(checked by enumerating them); the denied piece a large network reports is
inside it and really denied, and an allowed large network has no denied address
among many sampled ones.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controlplane.config import ScopeConfig
from controlplane.core.scope import ScopePolicy
from tests.test_scope import (
    EDGES_V4,
    EDGES_V6,
    IPv4,
    IPv6,
    embedding_forms,
    interesting_v4,
    small_network,
    teredo,
)

EXAMPLES = int(os.environ.get("CP_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@st.composite
def scope_networks(draw: Any) -> IPNet:
    """A network for a policy's lists: around a rule's edge, or an embedding of one, or global IPv6."""
    kind = draw(st.sampled_from(["v4", "v4-edge", "v6-edge", "embedded"]))
    if kind == "v4":
        return ipaddress.IPv4Network((int(draw(interesting_v4)), draw(st.integers(8, 32))), strict=False)
    if kind == "v4-edge":
        return ipaddress.IPv4Network(
            (draw(st.sampled_from(EDGES_V4)), draw(st.integers(16, 32))), strict=False
        )
    if kind == "v6-edge":
        return ipaddress.IPv6Network(
            (draw(st.sampled_from(EDGES_V6)), draw(st.integers(96, 128))), strict=False
        )
    forms = embedding_forms(draw(interesting_v4), draw(st.integers(0, 2**80 - 1)))
    base = int(draw(st.sampled_from(sorted(forms.values()))))
    return ipaddress.IPv6Network((base, draw(st.integers(100, 128))), strict=False)


@st.composite
def policies(draw: Any) -> ScopePolicy:
    """A random ``scope`` section: flags, allowed and denied CIDRs near the rules' edges."""
    nets = st.lists(scope_networks(), max_size=4)
    allowed = draw(st.one_of(st.just([]), nets))
    config = ScopeConfig(
        allow_private=draw(st.booleans()),
        allow_loopback=draw(st.booleans()),
        allow_ipv6=draw(st.sampled_from([True, True, True, False])),
        allowed_cidrs=[str(n) for n in allowed],
        denied_cidrs=[str(n) for n in draw(nets)],
    )
    return ScopePolicy.from_scope_config(config)


def _v6_denied(policy: ScopePolicy, addr: ipaddress.IPv6Address) -> bool:
    return not policy.allow_ipv6 or any(n.version == 6 and addr in n for n in policy.denied_cidrs)


@st.composite
def networks_near(draw: Any, policy: ScopePolicy) -> IPNet:
    """A small network (at most 256 addresses) around the edge of a rule or of one of ``policy``'s lists."""
    own = [*policy.allowed_cidrs, *policy.denied_cidrs]
    if own and draw(st.booleans()):
        net = draw(st.sampled_from(own))
        edge = draw(st.sampled_from([int(net.network_address), int(net.broadcast_address)]))
        edge += draw(st.integers(-300, 300))
        if net.version == 4:
            return ipaddress.IPv4Network((edge % 2**32, draw(st.integers(24, 32))), strict=False)
        return ipaddress.IPv6Network((edge % 2**128, draw(st.integers(120, 128))), strict=False)
    return small_network(draw, draw(st.booleans()))


@FUZZ
@given(policies(), interesting_v4, interesting_v4, st.integers(0, 2**80 - 1))
def test_embeddings_are_judged_as_their_ipv4_addresses(
    policy: ScopePolicy, v4: ipaddress.IPv4Address, other: ipaddress.IPv4Address, noise: int
) -> None:
    for name, addr in embedding_forms(v4, noise).items():
        expected = policy.allows_ip(v4) and not _v6_denied(policy, addr)
        assert policy.allows_ip(addr) == expected, (name, addr, v4)
        assert policy.check(f"[{addr}]") == expected
    addr = teredo(v4, other, noise)
    expected = policy.allows_ip(v4) and policy.allows_ip(other) and not _v6_denied(policy, addr)
    assert policy.allows_ip(addr) == expected, addr


@FUZZ
@given(st.data())
def test_small_networks_are_allowed_exactly_when_every_address_is(data: st.DataObject) -> None:
    policy = data.draw(policies())
    net = data.draw(networks_near(policy))
    verdicts = [policy.allows_ip(a) for a in net]
    assert (policy.network_reason(net) is None) == all(verdicts), net
    found = policy.find_denied(net)
    if found is not None:
        part = found[0]
        assert part.subnet_of(net)  # type: ignore[arg-type]
        assert not any(verdicts[int(a) - int(net.network_address)] for a in part)


@st.composite
def large_networks(draw: Any) -> IPNet:
    """A network of up to 2**32 (IPv4) or 2**64 (IPv6) addresses, around a rule's edge or an embedding."""
    if draw(st.booleans()):
        return ipaddress.IPv4Network((int(draw(interesting_v4)), draw(st.integers(0, 24))), strict=False)
    if draw(st.booleans()):
        base = draw(st.sampled_from(EDGES_V6))
    else:
        base = int(draw(st.sampled_from(sorted(embedding_forms(draw(interesting_v4), 0).values()))))
    return ipaddress.IPv6Network((base, draw(st.integers(16, 120))), strict=False)


PICKS = [7**i for i in range(32)]


@FUZZ
@given(policies(), large_networks(), st.lists(st.integers(0, 2**128 - 1), min_size=32, max_size=32))
@example(ScopePolicy(), ipaddress.ip_network("64:ff9b:1::/64"), PICKS)  # 0.0.0.0 readings are ignored
@example(ScopePolicy(), ipaddress.ip_network("2001:0:808:808::/64"), PICKS)  # the Teredo client
@example(ScopePolicy(), ipaddress.ip_network("64::/16"), PICKS)
@example(ScopePolicy(allow_loopback=True), ipaddress.ip_network("96.0.0.0/3"), PICKS)
def test_large_networks_report_a_real_denied_piece(policy: ScopePolicy, net: IPNet, picks: list[int]) -> None:
    found = policy.find_denied(net)
    base, size = int(net.network_address), net.num_addresses
    if found is None:
        for pick in picks:
            address = IPv4(base + pick % size) if net.version == 4 else IPv6(base + pick % size)
            assert policy.allows_ip(address), (net, address)
        return
    part, _ = found
    assert part.subnet_of(net)  # type: ignore[arg-type]
    assert policy.network_reason(net) is not None
    start, count = int(part.network_address), part.num_addresses
    for pick in [0, count - 1, *picks[:8]]:
        address = IPv4(start + pick % count) if part.version == 4 else IPv6(start + pick % count)
        assert not policy.allows_ip(address), (net, part, address)
