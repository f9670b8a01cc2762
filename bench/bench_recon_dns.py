"""DNS brute force: the domain_task pipeline against the lab server's own ceiling, and dnspython.

A fast asyncio UDP authoritative server (``tests/lab/fastdns.py``) runs in a process of its own on
127.0.0.1 with two zones: ``wild.bench.test`` (a wildcard: every name answers 127.0.0.200, except
the planted ones) and ``plain.bench.test`` (no wildcard: unknown names are NXDOMAIN). Twenty
labels of the big wordlist are planted in each (some with AAAA, one a CNAME chain).

Measured in one run, rounds alternating:

- the server's ceiling: a minimal UDP client (prebuilt packets, one socket, a window of 256) asks
  random names of the wildcard zone as fast as the server answers: the physical limit here;
- ours: the domain task's pipeline (``ReconRun.run_domains``, timing its domain_brute stage) with
  the big wordlist (14,938 names) on each zone, wildcard detection and filtering included, names
  written to the embedded MongoDB-wire server as found; the whole task's time is shown too; and
  the same over 100,000 generated labels (the planted ones among them) in the wildcard zone;
- anchors: dnspython's asyncio resolver with 200 lookups in flight (the client this project used
  before) on the big wordlist, and a plain sequential dnspython resolver on a 500-name list, whose
  answers ours must match exactly.

Run: ``.venv/bin/python bench/bench_recon_dns.py [--rounds 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import select
import socket
import statistics
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.resolver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_recon_common import context, recon_store, timed
from bench.common import table, write_result
from tests.lab.dnszone import Zone
from tests.lab.fastdns import FastDNSProcess, encode_name
from workers.recon.datafiles import load_wordlist
from workers.recon.dns import NOERROR, DnsClient, DomainRecord, Wildcard, detect_wildcard, resolve_names
from workers.recon.scan import ReconRun

WILD, PLAIN = "wild.bench.test", "plain.bench.test"
WILD_IP = "127.0.0.200"
RUN_BOUND = 120.0
"""Seconds one measured run may take; a run cut by it is marked ``cut`` (and its rate is still right)."""
TARGET = 10_000


def planted_zones(
    labels: tuple[str, ...], count: int = 20, seed: int = 3
) -> tuple[list[Zone], dict[str, Any]]:
    rng = random.Random(seed)
    chosen = rng.sample(labels[50:], count)
    truth: dict[str, Any] = {}
    zones = []
    for origin, base in ((WILD, 100), (PLAIN, 150)):
        zone = Zone(origin)
        if origin == WILD:
            zone.add("*", "A", WILD_IP)
        for i, label in enumerate(chosen):
            name = f"{label}.{origin}"
            if i == 0:
                zone.add(label, "CNAME", f"{chosen[1]}.{origin}")
                truth[name] = {"a": [f"127.0.0.{base + 1}"], "aaaa": [], "cnames": [f"{chosen[1]}.{origin}"]}
                continue
            zone.add(label, "A", f"127.0.0.{base + i}")
            aaaa = [f"fd00::{base + i:x}"] if i % 7 == 3 else []
            for address in aaaa:
                zone.add(label, "AAAA", address)
            truth[name] = {"a": [f"127.0.0.{base + i}"], "aaaa": aaaa, "cnames": []}
        zones.append(zone)
    return zones, truth


def ceiling(port: int, queries: int, window: int = 256) -> dict[str, Any]:
    """Replies per second the server sustains to a minimal client (A questions of random names)."""
    rng = random.Random(queries)
    packets = [
        struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0)
        + encode_name(f"c{rng.getrandbits(48):x}.{WILD}")
        + b"\x00\x01\x00\x01"
        for i in range(queries)
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    sent = received = 0
    started = last = time.perf_counter()
    while received < queries and time.perf_counter() - last < 1.0:
        while sent < queries and sent - received < window:
            sock.send(packets[sent])
            sent += 1
        if not select.select([sock], [], [], 0.2)[0]:
            continue
        while True:
            try:
                sock.recv(512)
            except BlockingIOError:
                break
            received += 1
            last = time.perf_counter()
    sock.close()
    seconds = last - started
    return {
        "queries": queries,
        "answered": received,
        "seconds": round(seconds, 3),
        "per_s": round(received / seconds),
    }


class TimedRun(ReconRun):
    """The domain pipeline, timing its domain_brute stage (wildcard detection included); with
    ``labels``, brute-forcing those instead of a bundled wordlist."""

    brute_seconds = 0.0

    def __init__(self, ctx: Any, options: dict[str, Any], labels: Sequence[str] | None = None) -> None:
        super().__init__(ctx, options)
        self.labels = labels

    def wordlist(self) -> Sequence[str]:
        return self.labels if self.labels is not None else super().wordlist()

    async def brute_force(self) -> None:
        started = time.perf_counter()
        await super().brute_force()
        self.brute_seconds = time.perf_counter() - started


def pipeline(
    db: Any, resolvers: list[str], root: str, truth: dict[str, Any], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """The domain task's brute force (the big wordlist, or ``labels`` with the planted ones added),
    no other stage: the stage's rate and the whole task's."""
    started = time.monotonic()
    ctx = context(db, resolvers, should_stop=lambda: time.monotonic() - started > RUN_BOUND)
    options = {
        "domain_brute": True,
        "domain_brute_type": "big",
        "port_scan": False,
        "site_identify": False,
        "ssl_cert": False,
        "file_leak": False,
    }
    run = TimedRun(ctx, options, labels)
    seconds, stats = timed(lambda: run.results(lambda: run.run_domains([root])))
    names = len(run.wordlist())
    stored = {d["domain"]: d for d in db["domain"].find({"task_id": ctx.task_id}) if d["source"] == "brute"}
    expected = {n: t for n, t in truth.items() if n.endswith("." + root)}
    exact = set(stored) == set(expected) and all(
        {k: stored[n][k] for k in ("a", "aaaa", "cnames")} == expected[n] for n in expected
    )
    return {
        "names": names,
        "stage_seconds": round(run.brute_seconds, 3),
        "per_s": round(names / run.brute_seconds),
        "task_seconds": round(seconds, 3),
        "task_per_s": round(names / seconds),
        "found_exact": exact,
        "cut": bool(stats["partial"]),
    }


async def dnspython_async(host: str, port: int, names: list[str], concurrency: int = 200) -> int:
    """The previous client: dnspython's asyncio resolver, A then AAAA, ``concurrency`` in flight."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    resolver.timeout, resolver.lifetime = 2.0, 4.0
    gate = asyncio.Semaphore(concurrency)
    queue = iter(names)
    done = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal done
        for name in queue:
            if time.monotonic() - started > RUN_BOUND:
                return
            async with gate:
                try:
                    await resolver.resolve(name, "A", raise_on_no_answer=False, search=False)
                    await resolver.resolve(name, "AAAA", raise_on_no_answer=False, search=False)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout):
                    pass
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def previous(port: int, names: list[str]) -> dict[str, Any]:
    seconds, done = timed(lambda: asyncio.run(dnspython_async("127.0.0.1", port, names)))
    return {"names": done, "seconds": round(seconds, 3), "per_s": round(done / seconds)}


def sequential(host: str, port: int, names: list[str], root: str) -> tuple[dict[str, Any], float]:
    """A plain dnspython resolver, one name at a time, then the same wildcard filter."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]

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

    started = time.perf_counter()
    wildcard = Wildcard()
    for probe in (lookup(f"wc-{random.getrandbits(64):x}.{root}") for _ in range(3)):
        if probe is not None:
            wildcard.ips.update(probe.ips)
    out = {}
    for name in names:
        record = lookup(name)
        if record is not None and not wildcard.matches(record):
            out[name] = {"a": sorted(record.a), "aaaa": sorted(record.aaaa), "cnames": record.cnames}
    return out, time.perf_counter() - started


def ours_on(resolvers: list[str], names: list[str], root: str) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        client = DnsClient(resolvers)
        wildcard = await detect_wildcard(client, root)
        found: dict[str, DomainRecord] = {}
        await resolve_names(client, names, found, source="bench", concurrency=200, wildcard=wildcard)
        client.close()
        return {n: {"a": sorted(r.a), "aaaa": sorted(r.aaaa), "cnames": r.cnames} for n, r in found.items()}

    return asyncio.run(scenario())


def median_of(rows: list[dict[str, Any]], key: str = "per_s") -> int:
    return round(statistics.median(r[key] for r in rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, 20,000 generated names")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    generated_names = 20_000 if args.quick else 100_000
    labels = load_wordlist("big")
    zones, truth = planted_zones(labels)
    rng = random.Random(generated_names)
    planted = [n.removesuffix("." + WILD) for n in truth if n.endswith("." + WILD)]
    generated = [f"g{rng.getrandbits(48):x}" for _ in range(generated_names - len(planted))] + planted
    rng.shuffle(generated)
    server = FastDNSProcess(zones).start()
    resolvers = [server.address]
    kinds = ("ceiling", "wild", "plain", "generated", "previous")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        with recon_store() as db:
            for _ in range(rounds):
                runs["ceiling"].append(ceiling(server.port, 100_000))
                runs["wild"].append(pipeline(db, resolvers, WILD, truth))
                runs["plain"].append(pipeline(db, resolvers, PLAIN, truth))
                runs["generated"].append(pipeline(db, resolvers, WILD, truth, generated))
                runs["previous"].append(previous(server.port, [f"{label}.{WILD}" for label in labels]))
                print(f"  round: { {k: v[-1]['per_s'] for k, v in runs.items()} }", flush=True)
            small = [f"{label}.{WILD}" for label in labels[:480]] + [n for n in truth if n.endswith(WILD)]
            reference, seq_seconds = sequential("127.0.0.1", server.port, small, WILD)
            same_answers = ours_on(resolvers, small, WILD) == reference
            small_plain = [n.replace(WILD, PLAIN) for n in small]
            reference_plain, _ = sequential("127.0.0.1", server.port, small_plain, PLAIN)
            same_answers = same_answers and ours_on(resolvers, small_plain, PLAIN) == reference_plain
    finally:
        server.stop()
    top = median_of(runs["ceiling"])
    rows = [
        ["server ceiling (minimal UDP client)", "100,000 queries", f"{top:,}/s", "1.00", "—"],
        *(
            [
                f"ours: domain_task, domain_brute stage, {zone} zone"
                f" (whole task: {median_of(runs[key], 'task_per_s'):,}/s)",
                f"{runs[key][0]['names']:,} names",
                f"{median_of(runs[key]):,}/s",
                f"{median_of(runs[key]) / top:.2f}",
                "yes" if all(r["found_exact"] for r in runs[key]) else "NO",
            ]
            for key, zone in (("wild", "wildcard"), ("plain", "plain"))
        ),
        [
            "ours: domain_task, domain_brute stage, wildcard zone, generated labels"
            f" (whole task: {median_of(runs['generated'], 'task_per_s'):,}/s)",
            f"{generated_names:,} names",
            f"{median_of(runs['generated']):,}/s",
            f"{median_of(runs['generated']) / top:.2f}",
            "yes" if all(r["found_exact"] for r in runs["generated"]) else "NO",
        ],
        [
            "previous client: dnspython asyncio, 200 in flight",
            f"{len(labels):,} names",
            f"{median_of(runs['previous']):,}/s",
            f"{median_of(runs['previous']) / top:.2f}",
            "—",
        ],
        [
            "dnspython sequential (reference answers)",
            f"{len(small):,} names",
            f"{round(len(small) / seq_seconds):,}/s",
            f"{len(small) / seq_seconds / top:.2f}",
            "same answers as ours: " + ("yes" if same_answers else "NO"),
        ],
    ]
    print(table(["what", "workload", "names/s (median)", "of ceiling", "planted found exactly"], rows))
    result = {
        "rounds": rounds,
        "quick": args.quick,
        "target_per_s": TARGET,
        "results": [
            {"what": r[0], "workload": r[1], "per_s": r[2], "of_ceiling": r[3], "check": r[4]} for r in rows
        ],
        "headline": {
            "ours_per_s": median_of(runs["wild"]),
            "ours_task_per_s": median_of(runs["wild"], "task_per_s"),
            "ours_100k_per_s": median_of(runs["generated"]),
            "ours_100k_task_per_s": median_of(runs["generated"], "task_per_s"),
            "ceiling_per_s": top,
            "ours_of_ceiling": round(median_of(runs["wild"]) / top, 2),
            "meets_10k": median_of(runs["wild"]) >= TARGET,
            "previous_per_s": median_of(runs["previous"]),
            "same_answers_as_sequential": same_answers,
        },
        "runs": runs,
    }
    write_result("recon_dns", result)
    return result


if __name__ == "__main__":
    main()
