"""Asynchronous DNS: a lean UDP client, record lookup with CNAME chains, wildcard detection, brute force.

The client builds queries and parses replies itself (A, AAAA and CNAME only) on one connected,
non-blocking UDP socket per name server, drained on each readiness event; a query costs a few
microseconds of Python, so a brute force is limited by the server, not by the client. Replies are
matched by ID *and* question; timed-out queries are retried on the next server; a truncated reply
is asked again over TCP (dnspython). Every packet is counted per server (:mod:`workers.recon.dnshealth`),
so :meth:`DnsClient.health` can tell a task whose resolvers did not answer from one with no names.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import random
import secrets
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.message

from workers.recon.dnshealth import MAX_FAILED_SHARE, DnsHealth, ServerStats, verdict

log = logging.getLogger(__name__)

QTYPES = {"A": 1, "CNAME": 5, "AAAA": 28}
NOERROR, NXDOMAIN = 0, 3
FAILED = -1
"""The rcode of a query that got no usable answer (timeouts, SERVFAIL, REFUSED, garbage)."""
MAX_CHAIN = 16
SOCKET_BUFFER = 4 * 1024 * 1024
QUERY_FLAGS_COUNTS = struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0)
"""A query's header after its ID: recursion desired, one question."""
QUESTION_TAILS = {qtype: struct.pack(">HH", qtype, 1) for qtype in QTYPES.values()}

Reply = tuple[int, list[str], list[str]]
"""(rcode or FAILED, CNAME chain in order, final addresses of the asked type)."""


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

    def absorb(self, reply: Reply, rdtype: str) -> None:
        """Add a reply's CNAMEs and addresses of ``rdtype`` (A or AAAA), without duplicates."""
        _, chain, addresses = reply
        for target in chain:
            if target not in self.cnames:
                self.cnames.append(target)
        bucket = self.a if rdtype == "A" else self.aaaa
        for address in addresses:
            if address not in bucket:
                bucket.append(address)


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


def encode_name(name: str) -> bytes:
    """``name`` in DNS wire format, lower case; a ValueError for labels that do not fit."""
    out = bytearray()
    for label in name.lower().rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"not a DNS name: {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The (lower-case) name at ``offset``, following compression pointers; and the offset after it."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels).lower(), end if end >= 0 else offset + 1
        labels.append(data[offset + 1 : offset + 1 + length].decode("latin-1"))
        offset += 1 + length
    raise ValueError("compression loop")


def parse_reply(data: bytes, qname: str, qwire: bytes, qtype: int) -> Reply | None:
    """Parse a reply to (``qname``, ``qtype``); None when it does not answer that question.

    Follows the CNAME chain from ``qname`` through the answer section and returns the addresses the
    last name of the chain owns (dnspython's ``resolve_chaining``).
    """
    end = 12 + len(qwire)
    if len(data) < end + 4 or data[4:6] != b"\x00\x01" or not data[2] & 0x80:
        return None
    if data[12:end].lower() != qwire or (data[end] << 8 | data[end + 1]) != qtype:
        return None
    rcode = data[3] & 0x0F
    count = data[6] << 8 | data[7]
    if rcode != NOERROR or not count:
        return (rcode if rcode in (NOERROR, NXDOMAIN) else FAILED), [], []
    offset = end + 4
    cnames: dict[str, str] = {}
    owned: dict[str, list[str]] = {}
    for _ in range(count):
        if data[offset] == 0xC0 and data[offset + 1] == 0x0C:
            owner, offset = qname, offset + 2
        else:
            owner, offset = _read_name(data, offset)
        rtype, rclass, _, length = struct.unpack_from(">HHIH", data, offset)
        offset += 10
        if rclass == 1 and rtype == QTYPES["CNAME"]:
            cnames[owner] = _read_name(data, offset)[0]
        elif rclass == 1 and rtype == qtype and length in (4, 16):
            family = socket.AF_INET if length == 4 else socket.AF_INET6
            owned.setdefault(owner, []).append(socket.inet_ntop(family, data[offset : offset + length]))
        offset += length
    chain: list[str] = []
    name = qname
    while name in cnames and len(chain) < MAX_CHAIN:
        name = cnames[name]
        chain.append(name)
    return NOERROR, chain, owned.get(name, [])


class _Query:
    """One outstanding question: its packet, where it went, and whom to tell."""

    __slots__ = ("attempts", "callback", "deadline", "packet", "qname", "qtype", "qwire", "server")

    def __init__(self, qname: str, qwire: bytes, qtype: int, callback: Callable[[Reply], None]) -> None:
        self.qname = qname
        self.qwire = qwire
        self.qtype = qtype
        self.callback = callback
        self.packet = b""
        self.server = 0
        self.attempts = 0
        self.deadline = 0.0


class UdpEngine:
    """Outstanding queries of one event loop over one connected UDP socket per name server.

    Its traffic is counted into ``stats`` (a fresh :class:`ServerStats` unless one is given).
    """

    def __init__(
        self,
        servers: list[tuple[str, int]],
        timeout: float,
        retries: int,
        stats: ServerStats | None = None,
    ) -> None:
        self.servers = servers
        self.timeout = timeout
        self.retries = retries
        self.stats = stats if stats is not None else ServerStats(len(servers))
        self._sent_by = self.stats.sent
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, _Query] = {}
        self.sent = 0
        self.timeouts = 0
        self._next_id = random.randrange(65536)
        self._sockets: list[socket.socket] = []
        self._reading = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._tcp: set[asyncio.Task[None]] = set()
        self._outbox: list[_Query] = []
        self._flush_scheduled = False
        for host, port in servers:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            except OSError:
                log.debug("could not enlarge the DNS socket's receive buffer")
            sock.setblocking(False)
            sock.connect((host, port))
            self._sockets.append(sock)

    def send(self, qname: str, qtype: int, callback: Callable[[Reply], None], qwire: bytes = b"") -> None:
        """Ask (``qname``, ``qtype``); ``callback`` gets the reply (FAILED after the last retry)."""
        query = _Query(qname, qwire or encode_name(qname), qtype, callback)
        query.server = random.randrange(len(self._sockets)) if len(self._sockets) > 1 else 0
        self._transmit(query)

    def _transmit(self, query: _Query) -> None:
        ident = self._next_id
        while ident in self.pending:
            ident = (ident + 1) & 0xFFFF
        self._next_id = (ident + 1) & 0xFFFF
        query.packet = (
            ident.to_bytes(2, "big") + QUERY_FLAGS_COUNTS + query.qwire + QUESTION_TAILS[query.qtype]
        )
        query.attempts += 1
        query.deadline = math.inf
        self.pending[ident] = query
        self.sent += 1
        self._sent_by[query.server] += 1
        if not self._reading:
            for index, sock in enumerate(self._sockets):
                self.loop.add_reader(sock.fileno(), self._drain, sock, index)
            self._reading = True
            self._sweeper = self.loop.call_later(min(0.1, self.timeout / 4), self._sweep)
        self._outbox.append(query)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send the queued packets in one burst (the server drains a burst in one wake-up)."""
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        sockets = self._sockets
        if not sockets:
            return
        deadline = self.loop.time() + self.timeout
        for query in outbox:
            query.deadline = deadline
            try:
                sockets[query.server].send(query.packet)
            except OSError as exc:
                self.stats.unreachable[query.server] += 1
                log.debug("DNS send failed (%s); the query will time out and be retried", exc)

    def _drain(self, sock: socket.socket, index: int) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.stats.unreachable[index] += 1
                log.debug("DNS receive failed: %s", exc)
                break
            self.receive(data)
        self._idle()

    def receive(self, data: bytes) -> None:
        """Handle one reply packet: settle the query it answers (by ID and question), else drop it."""
        if len(data) < 12:
            return
        ident = data[0] << 8 | data[1]
        query = self.pending.get(ident)
        if query is None:
            return
        try:
            reply = parse_reply(data, query.qname, query.qwire, query.qtype)
        except (ValueError, IndexError, struct.error):
            reply = None
        if reply is None:
            return
        del self.pending[ident]
        if data[2] & 0x02:
            self._over_tcp(query)
        elif reply[0] == FAILED:
            self.stats.error_reply(query.server, data[3] & 0x0F)
            if query.attempts <= self.retries:
                self._retry(query)
            else:
                self._fail(query)
        else:
            self._answer(query, reply)

    def _fail(self, query: _Query) -> None:
        """Settle ``query`` without an answer (counted as a failed lookup)."""
        self.stats.failed += 1
        self._answer(query, (FAILED, [], []))

    def _answer(self, query: _Query, reply: Reply) -> None:
        try:
            query.callback(reply)
        except Exception:
            log.exception("DNS reply callback failed")

    def _retry(self, query: _Query) -> None:
        self.stats.retries += 1
        query.server = (query.server + 1) % len(self._sockets)
        self._transmit(query)

    def _sweep(self) -> None:
        """Retry or fail the queries whose deadline passed (``pending`` is in deadline order)."""
        self._sweeper = None
        now = self.loop.time()
        expired = []
        for ident, query in self.pending.items():
            if query.deadline > now:
                break
            expired.append(ident)
        for ident in expired:
            query = self.pending.pop(ident)
            self.timeouts += 1
            self.stats.timeouts[query.server] += 1
            if query.attempts <= self.retries:
                self._retry(query)
            else:
                self._fail(query)
        if self.pending:
            self._sweeper = self.loop.call_later(min(0.1, self.timeout / 4), self._sweep)
        else:
            self._idle()

    def _idle(self) -> None:
        """Stop watching the sockets while nothing is outstanding (a dropped client leaves no reader)."""
        if self.pending or not self._reading:
            return
        for sock in self._sockets:
            self.loop.remove_reader(sock.fileno())
        self._reading = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _over_tcp(self, query: _Query) -> None:
        task = self.loop.create_task(self._ask_tcp(query))
        self._tcp.add(task)
        task.add_done_callback(self._tcp.discard)

    async def _ask_tcp(self, query: _Query) -> None:
        host, port = self.servers[query.server]
        message = dns.message.from_wire(query.packet)
        try:
            response = await dns.asyncquery.tcp(message, host, port=port, timeout=self.timeout)
            reply = parse_reply(response.to_wire(), query.qname, query.qwire, query.qtype)
        except (dns.exception.DNSException, OSError, ValueError, IndexError, struct.error) as exc:
            log.debug("DNS over TCP for %s failed: %s", query.qname, exc)
            reply = None
        if reply is None or reply[0] == FAILED:
            self._fail(query)
        else:
            self._answer(query, reply)

    def close(self) -> None:
        """Forget every outstanding query and close the sockets."""
        for query in self.pending.values():
            self.stats.abandoned[query.server] += 1
        self.pending.clear()
        self._outbox.clear()
        self._idle()
        for sock in self._sockets:
            sock.close()
        self._sockets = []


class DnsClient:
    """A DNS client bound to explicit name servers: single lookups and the brute-force pump.

    ``concurrency`` bounds the queries :meth:`lookup` callers have outstanding; ``timeout`` is per
    attempt, and a query is tried ``retries`` more times (on the next server) before it fails.
    """

    def __init__(
        self, resolvers: Iterable[str], timeout: float = 2.0, concurrency: int = 200, retries: int = 2
    ) -> None:
        self.servers = [parse_resolver(s) for s in resolvers]
        if not self.servers:
            raise ValueError("at least one DNS resolver is required")
        self.timeout = timeout
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.stats = ServerStats(len(self.servers))
        self._engine: UdpEngine | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def queries(self) -> int:
        """Query packets sent so far (retries included)."""
        return self._engine.sent if self._engine is not None else 0

    def engine(self) -> UdpEngine:
        """The running loop's engine (made on first use, again if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._engine is None or self._engine.loop is not loop:
            self._engine = UdpEngine(self.servers, self.timeout, self.retries, self.stats)
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._engine

    async def query(self, name: str, rdtype: str) -> Reply:
        """One question; the reply (rcode FAILED when none came)."""
        engine = self.engine()
        assert self._sem is not None
        async with self._sem:
            future: asyncio.Future[Reply] = engine.loop.create_future()

            def done(reply: Reply) -> None:
                if not future.done():
                    future.set_result(reply)

            try:
                engine.send(name.lower().rstrip("."), QTYPES[rdtype], done)
            except ValueError:
                return FAILED, [], []
            return await future

    async def lookup(self, name: str, source: str = "brute") -> DomainRecord | None:
        """Resolve A and AAAA for ``name`` (following CNAMEs); None when nothing resolves."""
        answer_a = await self.query(name, "A")
        if answer_a[0] != NOERROR:
            return None
        record = DomainRecord(domain=name, source=source)
        record.absorb(answer_a, "A")
        answer_aaaa = await self.query(name, "AAAA")
        if answer_aaaa[0] == NOERROR:
            record.absorb(answer_aaaa, "AAAA")
        if not record.ips and not record.cnames:
            return None
        return record

    def health(self, max_failed: float = MAX_FAILED_SHARE) -> DnsHealth:
        """The verdict on the name servers over everything this client asked so far.

        Not ok when more than ``max_failed`` of the lookups got no usable answer after retries;
        see :class:`~workers.recon.dnshealth.DnsHealth`.
        """
        inflight = [0] * len(self.servers)
        if self._engine is not None:
            for query in self._engine.pending.values():
                inflight[query.server] += 1
        return verdict(self.stats, self.servers, inflight, max_failed)

    def close(self) -> None:
        """Close the sockets (the client makes new ones if used again)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


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


class _Pump:
    """Keeps up to ``window`` names in flight through an engine with callbacks (no task per name)."""

    def __init__(
        self,
        engine: UdpEngine,
        names: Iterator[str],
        window: int,
        source: str,
        wildcard: Wildcard | None,
        on_record: Callable[[DomainRecord], None],
        on_done: Callable[[int], None],
    ) -> None:
        self.engine = engine
        self.names = names
        self.limit = max(1, window)
        self.window = float(min(self.limit, 64))
        self.source = source
        self.wildcard = wildcard if wildcard else None
        self.on_record = on_record
        self.on_done = on_done
        self.inflight = 0
        self.done = 0
        self.exhausted = False
        self.cancelled = False
        self.finished: asyncio.Future[None] = engine.loop.create_future()
        self._suffixes: dict[str, bytes] = {}

    def fill(self) -> None:
        """Start names until the window is full or the names run out."""
        while not self.cancelled and not self.exhausted and self.inflight < int(self.window):
            name = next(self.names, None)
            if name is None:
                self.exhausted = True
                break
            name = name.lower().rstrip(".")
            try:
                qwire = self._wire(name)
            except ValueError:
                self.done += 1
                continue
            self.inflight += 1
            self.engine.send(name, QTYPES["A"], functools.partial(self._on_a, name, qwire), qwire)
        if self.exhausted and not self.inflight and not self.finished.done():
            self.finished.set_result(None)

    def _wire(self, name: str) -> bytes:
        """``name`` in wire format, its parent's encoding cached (brute-force names share it)."""
        label, _, parent = name.partition(".")
        suffix = self._suffixes.get(parent)
        if suffix is None:
            suffix = self._suffixes[parent] = encode_name(parent) if parent else b"\x00"
        raw = label.encode("ascii") if label.isascii() else label.encode("idna")
        if not 0 < len(raw) < 64 or len(raw) + len(suffix) > 254:
            raise ValueError(f"not a DNS name: {name!r}")
        return bytes((len(raw),)) + raw + suffix

    def _adapt(self, reply: Reply) -> None:
        if reply[0] == FAILED:
            self.window = max(8.0, self.window / 2)
        elif self.window < self.limit:
            self.window = min(float(self.limit), self.window + 4.0 / self.window + 0.5)

    def _on_a(self, name: str, qwire: bytes, reply: Reply) -> None:
        if reply[0] == FAILED or self.window < self.limit:
            self._adapt(reply)
        if self.cancelled or reply[0] != NOERROR:
            self._finish()
            return
        _, chain, addresses = reply
        wildcard = self.wildcard
        if wildcard is not None and (
            wildcard.ips.issuperset(addresses) if addresses else chain and wildcard.cnames.issuperset(chain)
        ):
            self._finish()
            return
        record = DomainRecord(domain=name, source=self.source)
        record.absorb(reply, "A")
        self.engine.send(name, QTYPES["AAAA"], functools.partial(self._on_aaaa, record), qwire)

    def _on_aaaa(self, record: DomainRecord, reply: Reply) -> None:
        self._adapt(reply)
        if reply[0] == NOERROR:
            record.absorb(reply, "AAAA")
        if (
            not self.cancelled
            and (record.ips or record.cnames)
            and not (self.wildcard is not None and self.wildcard.matches(record))
        ):
            try:
                self.on_record(record)
            except Exception:
                log.exception("brute force record callback failed")
        self._finish()

    def _finish(self) -> None:
        self.inflight -= 1
        self.done += 1
        if self.done & 0x3F == 0:
            self.on_done(self.done)
        self.fill()


async def resolve_names(
    client: DnsClient,
    names: Iterable[str],
    found: dict[str, DomainRecord],
    *,
    source: str,
    concurrency: int,
    wildcard: Wildcard | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_found: Callable[[DomainRecord], None] | None = None,
) -> None:
    """Resolve ``names`` with up to ``concurrency`` in flight, storing every real answer into ``found``.

    Answers matching ``wildcard`` are dropped (a name whose A answer is the wildcard's is not asked
    for AAAA). ``found`` is filled (and ``on_found`` called) as results arrive, so a cancelled call
    leaves everything resolved so far in place. ``on_progress`` receives the running done count
    (every 64 names and at the end). ``names`` is consumed lazily and not deduplicated.
    """

    def record(rec: DomainRecord) -> None:
        if rec.domain not in found:
            found[rec.domain] = rec
            if on_found is not None:
                on_found(rec)

    pump = _Pump(
        client.engine(),
        iter(names),
        concurrency,
        source,
        wildcard,
        record,
        on_progress or (lambda done: None),
    )
    pump.fill()
    try:
        await pump.finished
    finally:
        pump.cancelled = True
    if on_progress is not None:
        on_progress(pump.done)
