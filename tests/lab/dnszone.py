"""A real DNS server for the lab: dnslib's threaded UDP server answering from an in-memory zone."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

_ROTATE_LOCK = threading.Lock()
"""Guards the zones' random generators (the dnslib server answers from many threads)."""


@dataclass
class Zone:
    """Records of one zone: name -> list of (type, value); names may start with ``*.`` for wildcards.

    ``rotate`` makes a name (a key of ``records``, such as ``*.example.test``) answer only some of
    its A records, a different random choice each time (a load-balanced or CDN wildcard); only
    :class:`LabDNSServer` honours it (the fast server's answers are precomputed).
    """

    origin: str
    records: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    rotate: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(self, name: str, rtype: str, value: str) -> None:
        """Add a record; ``name`` is relative to the origin ("@" is the apex)."""
        fqdn = self.origin if name == "@" else f"{name}.{self.origin}"
        self.records.setdefault(fqdn.lower(), []).append((rtype, value))

    def match(self, name: str) -> str | None:
        """The key of ``records`` that answers ``name`` (itself, else the closest wildcard), or None."""
        name = name.lower().rstrip(".")
        if name in self.records:
            return name
        if name.endswith("." + self.origin) and name != self.origin:
            parent = name.split(".", 1)[1]
            while True:
                wildcard = f"*.{parent}"
                if wildcard in self.records:
                    return wildcard
                if parent == self.origin or "." not in parent:
                    return None
                parent = parent.split(".", 1)[1]
        return None

    def lookup(self, name: str) -> list[tuple[str, str]] | None:
        """Records for ``name`` (exact, else the closest wildcard); None when the name does not exist."""
        key = self.match(name)
        return None if key is None else self.records[key]

    def answer(self, name: str) -> list[tuple[str, str]] | None:
        """Like :meth:`lookup`, with a random choice of the A records of the names in ``rotate``."""
        key = self.match(name)
        if key is None:
            return None
        records = self.records[key]
        count = self.rotate.get(key)
        if not count:
            return records
        addresses = [r for r in records if r[0] == "A"]
        with _ROTATE_LOCK:
            chosen = self.rng.sample(addresses, min(count, len(addresses)))
        return [r for r in records if r[0] != "A"] + chosen


class ZoneResolver(BaseResolver):
    """Answers A / AAAA / CNAME from zones, following CNAME chains inside them; NXDOMAIN otherwise."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones = list(zones)
        self.queries = 0

    def _zone_for(self, name: str) -> Zone | None:
        for zone in self.zones:
            if name == zone.origin or name.endswith("." + zone.origin):
                return zone
        return None

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        self.queries += 1
        reply = request.reply()
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        name = qname
        for _ in range(8):
            zone = self._zone_for(name)
            records = zone.answer(name) if zone else None
            if records is None:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN if zone else RCODE.REFUSED
                return reply
            cname = next((v for t, v in records if t == "CNAME"), None)
            if cname is not None and qtype != "CNAME":
                reply.add_answer(RR(DNSLabel(name), QTYPE.CNAME, rdata=CNAME(cname), ttl=60))
                name = cname.lower().rstrip(".")
                continue
            for rtype, value in records:
                if rtype == qtype == "A":
                    reply.add_answer(RR(DNSLabel(name), QTYPE.A, rdata=A(value), ttl=60))
                elif rtype == qtype == "AAAA":
                    reply.add_answer(RR(DNSLabel(name), QTYPE.AAAA, rdata=AAAA(value), ttl=60))
                elif rtype == qtype == "CNAME":
                    reply.add_answer(RR(DNSLabel(name), QTYPE.CNAME, rdata=CNAME(value), ttl=60))
            return reply
        return reply


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LabDNSServer:
    """dnslib's UDP server on a free loopback port serving ``zones`` (start/stop in a thread)."""

    def __init__(self, zones: Iterable[Zone], host: str = "127.0.0.1") -> None:
        self.resolver = ZoneResolver(zones)
        self.host = host
        self.port = 0
        self._server: DNSServer | None = None

    @property
    def address(self) -> str:
        """``ip:port`` as the pipeline's ``resolvers`` entries expect."""
        return f"{self.host}:{self.port}"

    def start(self) -> LabDNSServer:
        """Start serving (retrying if the chosen port was taken meanwhile)."""
        logger = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for _ in range(5):
            self.port = free_udp_port(self.host)
            try:
                self._server = DNSServer(self.resolver, port=self.port, address=self.host, logger=logger)
            except OSError:
                continue
            self._server.start_thread()
            return self
        raise RuntimeError("could not bind the lab DNS server")

    def stop(self) -> None:
        """Stop the server thread and close its socket."""
        if self._server is not None:
            self._server.stop()
            self._server.server.server_close()
            self._server = None
