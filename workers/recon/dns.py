"""Asynchronous DNS: resolver setup, record lookup with CNAME chains, wildcard detection, brute force."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)


@dataclass
class DomainRecord:
    """What DNS says about one name: its CNAME chain (in order) and final A / AAAA addresses."""

    domain: str
    a: list[str] = field(default_factory=list)
    aaaa: list[str] = field(default_factory=list)
    cnames: list[str] = field(default_factory=list)
    source: str = "brute"

    @property
    def ips(self) -> list[str]:
        """All addresses, IPv4 first."""
        return self.a + self.aaaa

    @property
    def record_type(self) -> str:
        """ARL-style type of the record: CNAME when a chain exists, else A or AAAA (or "NONE")."""
        if self.cnames:
            return "CNAME"
        if self.a:
            return "A"
        return "AAAA" if self.aaaa else "NONE"


def parse_resolver(spec: str) -> tuple[str, int]:
    """Split ``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` into (ip, port); the port defaults to 53."""
    text = spec.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, 53
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"invalid resolver port in {spec!r}")
    return host, port


class DnsClient:
    """A dnspython asyncio resolver bound to explicit name servers, with bounded concurrency."""

    def __init__(self, resolvers: Iterable[str], timeout: float = 2.0, concurrency: int = 200) -> None:
        servers = [parse_resolver(s) for s in resolvers]
        if not servers:
            raise ValueError("at least one DNS resolver is required")
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout * 2
        self._resolver.retry_servfail = False
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self.queries = 0

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """Resolve one type; None when the name does not exist or the query failed."""
        async with self._sem:
            self.queries += 1
            try:
                return await self._resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
            except dns.resolver.NXDOMAIN:
                return None
            except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoAnswer) as exc:
                log.debug("DNS %s %s failed: %s", name, rdtype, exc)
                return None

    @staticmethod
    def _absorb(record: DomainRecord, answer: dns.resolver.Answer, rdtype: str) -> None:
        response = answer.response
        if not isinstance(response, dns.message.QueryMessage):
            return
        chain = response.resolve_chaining()
        for rrset in chain.cnames:
            for rdata in rrset:
                target = rdata.target.to_text(omit_final_dot=True).lower()
                if target not in record.cnames:
                    record.cnames.append(target)
        if chain.answer is not None and chain.answer.rdtype == dns.rdatatype.from_text(rdtype):
            bucket = record.a if rdtype == "A" else record.aaaa
            for rdata in chain.answer:
                address = str(ipaddress.ip_address(rdata.address))
                if address not in bucket:
                    bucket.append(address)

    async def lookup(self, name: str, source: str = "brute") -> DomainRecord | None:
        """Resolve A and AAAA for ``name`` (following CNAMEs); None when nothing resolves."""
        answer_a = await self._query(name, "A")
        if answer_a is None:
            return None
        record = DomainRecord(domain=name, source=source)
        self._absorb(record, answer_a, "A")
        answer_aaaa = await self._query(name, "AAAA")
        if answer_aaaa is not None:
            self._absorb(record, answer_aaaa, "AAAA")
        if not record.ips and not record.cnames:
            return None
        return record


@dataclass
class Wildcard:
    """The answers a wildcard zone gives to random names (empty when the zone has no wildcard)."""

    ips: set[str] = field(default_factory=set)
    cnames: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ips or self.cnames)

    def matches(self, record: DomainRecord) -> bool:
        """Tell whether ``record`` looks like a wildcard answer rather than a real name."""
        if not self:
            return False
        if record.ips:
            return set(record.ips) <= self.ips
        return bool(record.cnames) and set(record.cnames) <= self.cnames


def random_label() -> str:
    """A random label that no real zone is expected to contain."""
    return "wc-" + secrets.token_hex(8)


async def detect_wildcard(client: DnsClient, domain: str, probes: int = 3) -> Wildcard:
    """Resolve a few random labels below ``domain`` and collect their answers as the wildcard set."""
    results = await asyncio.gather(*(client.lookup(f"{random_label()}.{domain}") for _ in range(probes)))
    wildcard = Wildcard()
    for record in results:
        if record is not None:
            wildcard.ips.update(record.ips)
            wildcard.cnames.update(record.cnames)
    return wildcard


async def resolve_names(
    client: DnsClient,
    names: Iterable[str],
    found: dict[str, DomainRecord],
    *,
    source: str,
    concurrency: int,
    wildcard: Wildcard | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Resolve ``names`` with ``concurrency`` workers, storing every real answer into ``found``.

    Answers matching ``wildcard`` are dropped. ``found`` is filled as results arrive, so a cancelled
    call leaves everything resolved so far in place. ``on_progress`` receives the running done count.
    """
    queue = iter(list(dict.fromkeys(names)))
    done = 0

    async def worker() -> None:
        nonlocal done
        for name in queue:
            record = await client.lookup(name, source=source)
            done += 1
            if record is not None and not (wildcard and wildcard.matches(record)):
                found.setdefault(name, record)
            if on_progress is not None:
                on_progress(done)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
