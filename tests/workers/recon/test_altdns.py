"""Alt-DNS against lab DNS: planted permutations found, wildcard answers (rotating, CNAME) never."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.lab.dnszone import LabDNSServer, Zone
from tests.lab.fastdns import FastDNSServer
from workers.recon.altdns import SOURCE, AltDnsReport, alt_dns, load_words, permutations
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, detect_wildcard, resolve_names

KNOWN = {"api": "127.77.0.1", "www": "127.77.0.2", "web01": "127.77.0.3", "shop-eu": "127.77.0.4"}
"""Names the brute force found in every zone below (label -> address)."""
PLANTED = {
    "dev-api": "127.77.0.11",
    "www2": "127.77.0.12",
    "web02": "127.77.0.13",
    "eu-shop": "127.77.0.14",
    "dev.api": "127.77.0.15",
    "apitest": "127.77.0.16",
}
"""Names reachable only by permutation of KNOWN (label -> address)."""
HIDDEN = {"zq-secret": "127.77.0.30"}
"""A real name no permutation of KNOWN gives: it must not be found."""
POOL = [f"127.77.1.{i}" for i in range(1, 13)]
SUB_WILDCARD = "127.77.2.1"
"""perm.test has no wildcard of its own, but every name below api.perm.test answers this."""
"""Addresses a rotating wildcard picks from, two per answer."""
LIMIT = 800


def planted_zone(origin: str) -> Zone:
    zone = Zone(origin)
    for label, ip in {**KNOWN, **PLANTED, **HIDDEN}.items():
        zone.add(label, "A", ip)
    return zone


def zones() -> list[Zone]:
    """perm.test (a wildcard below api only), rot.test (a rotating one), cw.test (CNAME, rotating pool)."""
    perm = planted_zone("perm.test")
    perm.add("*.api", "A", SUB_WILDCARD)
    rot = planted_zone("rot.test")
    for ip in POOL:
        rot.add("*", "A", ip)
    rot.rotate["*.rot.test"] = 2
    cw = planted_zone("cw.test")
    cw.add("*", "CNAME", "edge.cdnlab.test")
    cw.records["www2.cw.test"] = [("CNAME", "www2-origin.cdnlab.test")]
    cdn = Zone("cdnlab.test", seed=1)
    for ip in POOL:
        cdn.add("edge", "A", ip)
    cdn.rotate["edge.cdnlab.test"] = 2
    cdn.add("www2-origin", "A", PLANTED["www2"])
    return [perm, rot, cw, cdn]


@pytest.fixture(scope="module")
def lab_dns() -> Iterator[LabDNSServer]:
    server = LabDNSServer(zones()).start()
    yield server
    server.stop()


def names(root: str, labels: dict[str, str]) -> set[str]:
    return {f"{label}.{root}" for label in labels}


def run_alt_dns(
    resolver: str, root: str, limit: int = LIMIT
) -> tuple[AltDnsReport, list[DomainRecord], list[tuple[int, int]], Wildcard]:
    """Brute-force wildcard detection as the pipeline does it, then alt_dns from KNOWN."""

    async def scenario() -> tuple[AltDnsReport, list[DomainRecord], list[tuple[int, int]], Wildcard]:
        client = DnsClient([resolver], timeout=1.0, concurrency=100)
        detected = await detect_wildcard(client, root)
        streamed: list[DomainRecord] = []
        progress: list[tuple[int, int]] = []
        report = await alt_dns(
            client,
            root,
            names(root, KNOWN),
            detected,
            limit=limit,
            concurrency=100,
            on_found=streamed.append,
            on_progress=lambda done, total: progress.append((done, total)),
        )
        assert client.health().ok
        client.close()
        return report, streamed, progress, detected

    return asyncio.run(scenario())


def test_permutations_are_capped_deterministic_new_and_below_the_root() -> None:
    known = names("x.test", KNOWN) | {"other.example", "x.test"}
    first = permutations("x.test", known, limit=2000)
    again = permutations("X.test.", sorted(known, reverse=True), limit=2000)
    assert first == again
    assert len(first) == len(set(first)) == 2000
    assert not set(first) & known
    assert all(name.endswith(".x.test") for name in first)
    assert all(0 < len(label) < 64 and label.strip("-") == label for n in first for label in n.split("."))
    assert names("x.test", PLANTED) <= set(first[:LIMIT])
    assert permutations("x.test", {"x.test", "a.example"}, limit=100) == []


def test_permutations_follow_the_altdns_rules() -> None:
    candidates = permutations(
        "x.test", ["api.x.test", "web01.x.test", "a.b.x.test"], words=["dev"], limit=10_000
    )
    expected = {
        "dev-api.x.test",
        "api-dev.x.test",
        "devapi.x.test",
        "apidev.x.test",
        "dev.api.x.test",
        "api.dev.x.test",
        "api2.x.test",
        "web02.x.test",
        "web00.x.test",
        "b.a.x.test",
        "a.dev.b.x.test",
    }
    assert expected <= set(candidates)
    # Numbers and swaps come before any word.
    assert candidates.index("web02.x.test") < candidates.index("dev-api.x.test")
    assert "dev" in load_words() and len(load_words()) > 100


def test_planted_permutations_are_found_and_a_wildcard_below_a_known_name_is_dropped(
    lab_dns: LabDNSServer,
) -> None:
    report, streamed, progress, detected = run_alt_dns(lab_dns.address, "perm.test")
    assert not detected
    assert set(report.found) == names("perm.test", PLANTED)
    assert sorted(r.domain for r in streamed) == sorted(report.found)
    assert all(r.source == SOURCE == "altdns" for r in streamed)
    assert report.found["dev-api.perm.test"].a == [PLANTED["dev-api"]]
    assert report.wildcards == {"api.perm.test": Wildcard({SUB_WILDCARD})}
    assert progress[0] == (0, report.candidates) and progress[-1] == (report.candidates, report.candidates)


def test_a_rotating_wildcard_is_learnt_and_none_of_its_answers_is_reported(lab_dns: LabDNSServer) -> None:
    report, streamed, _, detected = run_alt_dns(lab_dns.address, "rot.test")
    # Three probes see at most six of the twelve addresses: the brute force's filter alone is not enough.
    assert detected and len(detected.ips) <= 6
    assert set(report.found) == names("rot.test", PLANTED)
    assert sorted(r.domain for r in streamed) == sorted(report.found)
    assert report.wildcards["rot.test"].ips == set(POOL)
    # Every parent inside the zone shares the zone's one wildcard.
    assert report.to_doc() == {
        "candidates": LIMIT,
        "found": len(PLANTED),
        "unconfirmed": report.unconfirmed,
        "wildcards": 1,
    }


def test_the_three_probe_filter_alone_lets_rotating_wildcard_answers_through(lab_dns: LabDNSServer) -> None:
    """The case the learning exists for: resolving the same candidates with the brute force's filter."""

    async def scenario() -> dict[str, DomainRecord]:
        client = DnsClient([lab_dns.address], timeout=1.0, concurrency=100)
        detected = await detect_wildcard(client, "rot.test")
        found: dict[str, DomainRecord] = {}
        candidates = permutations("rot.test", names("rot.test", KNOWN), limit=200)
        await resolve_names(client, candidates, found, source="altdns", concurrency=100, wildcard=detected)
        client.close()
        return found

    found = asyncio.run(scenario())
    assert len(set(found) - names("rot.test", PLANTED)) > 20


def test_a_wildcard_cname_to_a_rotating_edge_is_dropped(lab_dns: LabDNSServer) -> None:
    report, _, _, detected = run_alt_dns(lab_dns.address, "cw.test")
    assert detected.cnames == {"edge.cdnlab.test"}
    assert set(report.found) == names("cw.test", PLANTED)
    assert report.found["www2.cw.test"].cnames == ["www2-origin.cdnlab.test"]
    assert report.found["www2.cw.test"].a == [PLANTED["www2"]]


def test_the_fast_resolver_runs_alt_dns_at_scale() -> None:
    """A few thousand candidates through the fast lab server: found exactly the planted names."""
    server = FastDNSServer([planted_zone("big.test")]).start()
    try:
        report, _, _, _ = run_alt_dns(server.address, "big.test", limit=3000)
    finally:
        server.stop()
    assert report.candidates == 3000
    assert set(report.found) == names("big.test", PLANTED)
