"""DnsClient.health against real loopback servers: silent, unreachable, SERVFAIL, REFUSED and healthy ones."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tests.lab.dnszone import Zone, free_udp_port
from tests.lab.fastdns import FastDNSServer
from workers.recon.dns import DnsClient, DomainRecord, resolve_names
from workers.recon.dnshealth import DnsHealth

NAMES = [f"n{i}.health.test" for i in range(20)] + ["www.health.test"]


def zone() -> Zone:
    health = Zone("health.test")
    health.add("www", "A", "127.70.0.10")
    return health


@pytest.fixture(scope="module")
def good_dns() -> Iterator[FastDNSServer]:
    server = FastDNSServer([zone()]).start()
    yield server
    server.stop()


def run(resolvers: list[str], names: list[str] = NAMES) -> tuple[dict[str, DomainRecord], DnsHealth]:
    """Resolve ``names`` with short timeouts and one retry; what was found and the health verdict."""

    async def scenario() -> tuple[dict[str, DomainRecord], DnsHealth]:
        client = DnsClient(resolvers, timeout=0.2, concurrency=50, retries=1)
        found: dict[str, DomainRecord] = {}
        await resolve_names(client, names, found, source="brute", concurrency=50)
        health = client.health()
        client.close()
        return found, health

    return asyncio.run(scenario())


def test_a_port_nobody_listens_on_is_named_as_not_answering() -> None:
    address = f"127.0.0.9:{free_udp_port('127.0.0.9')}"
    found, health = run([address])
    assert found == {}
    assert not health.ok
    sent = 2 * len(NAMES)
    assert f"resolver {address} did not answer {sent} of {sent} queries (port unreachable)" in health.reason
    assert health.failed == health.questions == len(NAMES)
    [resolver] = health.resolvers
    assert (resolver.resolver, resolver.sent, resolver.answered, resolver.timeouts) == (
        address,
        sent,
        0,
        sent,
    )
    assert resolver.unreachable > 0


def test_a_server_that_swallows_queries_is_named_as_not_answering() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.7", 0))
        address = f"127.0.0.7:{silent.getsockname()[1]}"
        found, health = run([address])
    sent = 2 * len(NAMES)
    assert found == {}
    assert not health.ok
    assert health.problems == [f"resolver {address} did not answer {sent} of {sent} queries"]
    assert health.reason == f"{len(NAMES)} of {len(NAMES)} DNS lookups failed: {health.problems[0]}"
    assert health.resolvers[0].unreachable == 0


@pytest.mark.parametrize(("rcode", "label"), [(2, "SERVFAIL"), (5, "REFUSED")])
def test_error_answers_are_reported_by_their_rcode(rcode: int, label: str) -> None:
    server = FastDNSServer([zone()], rcode=rcode).start()
    try:
        found, health = run([server.address])
    finally:
        server.stop()
    sent = 2 * len(NAMES)
    assert found == {}
    assert not health.ok
    assert health.problems == [f"resolver {server.address} answered {label} to {sent} of {sent} queries"]
    [resolver] = health.resolvers
    assert resolver.answered == sent
    assert (resolver.servfail, resolver.refused) == ((sent, 0) if rcode == 2 else (0, sent))
    assert health.failed == len(NAMES)


def test_a_healthy_resolver_gets_an_ok_verdict(good_dns: FastDNSServer) -> None:
    found, health = run([good_dns.address])
    assert set(found) == {"www.health.test"}
    assert health.ok and health.problems == [] and health.failed == 0
    # One A query per name, one AAAA query for the name that exists.
    assert health.questions == len(NAMES) + 1
    assert health.reason == f"{len(NAMES) + 1} of {len(NAMES) + 1} DNS queries answered"
    assert health.to_doc()["resolvers"][0]["answered"] == len(NAMES) + 1


def test_a_dead_resolver_beside_a_good_one_is_named_while_the_lookups_succeed(
    good_dns: FastDNSServer,
) -> None:
    dead = f"127.0.0.9:{free_udp_port('127.0.0.9')}"
    names = [f"m{i}.health.test" for i in range(40)] + ["www.health.test"]
    found, health = run([dead, good_dns.address], names)
    assert set(found) == {"www.health.test"}
    assert health.ok and health.failed == 0
    [problem] = health.problems
    assert problem.startswith(f"resolver {dead} did not answer ")
    assert health.reason.startswith(problem)
    assert health.reason.endswith(
        f"{health.questions} of {health.questions} DNS lookups were answered in the end"
    )
