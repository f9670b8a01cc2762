"""The DNS client and brute force against real lab DNS servers on loopback (fast and dnslib ones)."""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import struct
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.nameserver
import dns.resolver
import pytest

from tests.lab.dnszone import LabDNSServer, Zone
from tests.lab.fastdns import FastDNSServer, encode_name
from workers.recon.dns import (
    FAILED,
    NOERROR,
    NXDOMAIN,
    DnsClient,
    DomainRecord,
    Wildcard,
    detect_wildcard,
    parse_reply,
    resolve_names,
)

WILD_IP = "127.66.0.9"
PLANTED: dict[str, dict[str, list[str]]] = {
    "www.brute.test": {"a": ["127.66.0.10"], "aaaa": [], "cnames": []},
    "api.brute.test": {"a": ["127.66.0.11"], "aaaa": ["fd00::11"], "cnames": []},
    "v6only.brute.test": {"a": [], "aaaa": ["fd00::12"], "cnames": []},
    "alias.brute.test": {"a": ["127.66.0.13"], "aaaa": [], "cnames": ["target.brute.test"]},
    "target.brute.test": {"a": ["127.66.0.13"], "aaaa": [], "cnames": []},
    "multi.brute.test": {"a": ["127.66.0.14", "127.66.0.15"], "aaaa": [], "cnames": []},
}
"""Every real name of the wildcard zone brute.test; any other name answers WILD_IP."""


def zones() -> list[Zone]:
    """brute.test (a wildcard zone with the planted names) and plain.test (no wildcard)."""
    brute = Zone("brute.test")
    brute.add("*", "A", WILD_IP)
    brute.add("www", "A", "127.66.0.10")
    brute.add("api", "A", "127.66.0.11")
    brute.add("api", "AAAA", "fd00::11")
    brute.add("v6only", "AAAA", "fd00::12")
    brute.add("alias", "CNAME", "target.brute.test")
    brute.add("target", "A", "127.66.0.13")
    brute.add("multi", "A", "127.66.0.14")
    brute.add("multi", "A", "127.66.0.15")
    brute.add("intowild", "CNAME", "somewhere.brute.test")
    plain = Zone("plain.test")
    plain.add("www", "A", "127.66.1.10")
    plain.add("mail", "CNAME", "www.plain.test")
    plain.add("out", "CNAME", "elsewhere.example")
    return [brute, plain]


@pytest.fixture(scope="module")
def fast_dns() -> Iterator[FastDNSServer]:
    server = FastDNSServer(zones()).start()
    yield server
    server.stop()


def shape(record: DomainRecord) -> dict[str, list[str]]:
    return {"a": sorted(record.a), "aaaa": sorted(record.aaaa), "cnames": record.cnames}


def brute(
    resolvers: list[str], names: list[str], root: str, concurrency: int, timeout: float = 1.0
) -> tuple[dict[str, DomainRecord], Wildcard, int]:
    """Wildcard detection then the brute force pump, as the domain_brute stage runs them."""

    async def scenario() -> tuple[dict[str, DomainRecord], Wildcard, int]:
        client = DnsClient(resolvers, timeout=timeout, concurrency=concurrency)
        wildcard = await detect_wildcard(client, root)
        found: dict[str, DomainRecord] = {}
        streamed: list[str] = []
        await resolve_names(
            client,
            names,
            found,
            source="brute",
            concurrency=concurrency,
            wildcard=wildcard,
            on_found=lambda record: streamed.append(record.domain),
        )
        assert sorted(streamed) == sorted(found), "every found record is handed over once as found"
        queries = client.queries
        client.close()
        return found, wildcard, queries

    return asyncio.run(scenario())


def wordlist(size: int, planted: list[str], seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    labels = [f"n{rng.getrandbits(40):x}" for _ in range(size)] + planted
    rng.shuffle(labels)
    return labels


def test_brute_force_in_a_wildcard_zone_finds_exactly_the_planted_names(fast_dns: FastDNSServer) -> None:
    labels = wordlist(4000, [n.removesuffix(".brute.test") for n in PLANTED] + ["intowild"])
    found, wildcard, queries = brute(
        [fast_dns.address], [f"{lb}.brute.test" for lb in labels], "brute.test", 500
    )
    assert wildcard.ips == {WILD_IP}
    assert set(found) == set(PLANTED)
    for name, truth in PLANTED.items():
        assert shape(found[name]) == {k: sorted(v) if k != "cnames" else v for k, v in truth.items()}, name
    # Wildcard answers are not asked for AAAA: about one query per name, two per real name.
    assert queries < len(labels) + 3 * len(PLANTED) + 20


def test_lost_queries_are_retried_until_answered() -> None:
    server = FastDNSServer(zones(), drop_first=True).start()
    try:
        labels = wordlist(300, [n.removesuffix(".brute.test") for n in PLANTED])
        found, _, _ = brute([server.address], [f"{lb}.brute.test" for lb in labels], "brute.test", 200, 0.2)
        assert server.dropped > len(labels)
        assert set(found) == set(PLANTED)
    finally:
        server.stop()


def sequential_reference(address: str, names: list[str], root: str) -> dict[str, dict[str, list[str]]]:
    """What a plain dnspython resolver finds for ``names``, one query at a time, wildcards dropped."""
    host, port = address.split(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
    resolver.timeout, resolver.lifetime = 2.0, 4.0

    def lookup(name: str) -> DomainRecord | None:
        record = DomainRecord(name)
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
            except dns.resolver.NXDOMAIN:
                return None
            response = answer.response
            assert isinstance(response, dns.message.QueryMessage)
            chain = response.resolve_chaining()
            cnames = [r.target.to_text(omit_final_dot=True).lower() for rr in chain.cnames for r in rr]
            addresses = [r.address for r in chain.answer] if chain.answer is not None else []
            record.absorb((NOERROR, cnames, addresses), rdtype)
        return record if record.ips or record.cnames else None

    wildcard = Wildcard()
    for _ in range(3):
        probe = lookup(f"wc-{secrets.token_hex(8)}.{root}")
        if probe is not None:
            wildcard.ips.update(probe.ips)
            wildcard.cnames.update(probe.cnames)
    out = {}
    for name in names:
        record = lookup(name)
        if record is not None and not wildcard.matches(record):
            out[name] = shape(record)
    return out


@pytest.mark.parametrize("server_kind", ["fast", "dnslib"])
@pytest.mark.parametrize("root", ["brute.test", "plain.test"])
def test_brute_force_finds_what_a_sequential_dnspython_resolver_finds(server_kind: str, root: str) -> None:
    server: Any = (FastDNSServer if server_kind == "fast" else LabDNSServer)(zones()).start()
    try:
        planted = ["www", "api", "v6only", "alias", "target", "multi", "intowild", "mail", "out"]
        labels = wordlist(150, planted, seed=11)
        names = [f"{lb}.{root}" for lb in labels]
        found, _, _ = brute([server.address], names, root, 100)
        reference = sequential_reference(server.address, names, root)
        assert reference, "the reference finds real names"
        assert {n: shape(r) for n, r in found.items()} == reference
    finally:
        server.stop()


def reply_packet(qname: str, qtype: int, rcode: int, answers: bytes, count: int, ident: int = 1) -> bytes:
    header = struct.pack(">HHHHHH", ident, 0x8180 | rcode, 1, count, 0, 0)
    return header + encode_name(qname) + struct.pack(">HH", qtype, 1) + answers


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata


def test_reply_parsing_follows_compressed_cname_chains_and_rejects_other_questions() -> None:
    qname = "a.example.test"
    answers = rr(b"\xc0\x0c", 5, b"\x01b\xc0\x0e") + rr(b"\x01b\xc0\x0e", 1, bytes([10, 0, 0, 1]))
    packet = reply_packet(qname, 1, 0, answers, 2)
    wire = encode_name(qname)
    assert parse_reply(packet, qname, wire, 1) == (NOERROR, ["b.example.test"], ["10.0.0.1"])
    assert parse_reply(packet.replace(b"\x01a", b"\x01A", 1), qname, wire, 1) is not None
    assert parse_reply(packet, "c.example.test", encode_name("c.example.test"), 1) is None
    assert parse_reply(packet, qname, wire, 28) is None
    assert parse_reply(reply_packet(qname, 1, 3, b"", 0), qname, wire, 1) == (NXDOMAIN, [], [])
    assert parse_reply(reply_packet(qname, 1, 2, b"", 0), qname, wire, 1) == (FAILED, [], [])
    assert parse_reply(packet[:14], qname, wire, 1) is None


def test_a_silent_server_fails_the_lookup_after_its_retries() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.66.0.1", 0))  # bound but never read: queries arrive, nothing answers

    async def scenario() -> tuple[DomainRecord | None, int]:
        client = DnsClient([f"127.66.0.1:{silent.getsockname()[1]}"], timeout=0.1, retries=2)
        record = await client.lookup("www.brute.test")
        queries = client.queries
        client.close()
        return record, queries

    try:
        record, queries = asyncio.run(scenario())
    finally:
        silent.close()
    assert record is None and queries == 3


def test_client_ignores_replies_to_questions_it_did_not_ask(fast_dns: FastDNSServer) -> None:
    async def scenario() -> DomainRecord | None:
        client = DnsClient([fast_dns.address], timeout=1.0)
        engine = client.engine()
        replies: list[Any] = []
        engine.send("www.brute.test", 1, replies.append)
        ident = next(iter(engine.pending))
        forged = reply_packet("evil.brute.test", 1, 0, rr(b"\xc0\x0c", 1, bytes([6, 6, 6, 6])), 1, ident)
        engine.receive(forged)
        assert ident in engine.pending, "a reply to another question does not settle the query"
        while not replies:
            await asyncio.sleep(0.01)
        assert replies == [(NOERROR, [], ["127.66.0.10"])]
        record = await client.lookup("alias.brute.test")
        client.close()
        return record

    record = asyncio.run(scenario())
    assert record is not None and record.cnames == ["target.brute.test"] and record.a == ["127.66.0.13"]
