"""A fast authoritative DNS server for the lab: asyncio on a raw non-blocking UDP socket.

It answers A / AAAA / CNAME from :class:`~tests.lab.dnszone.Zone` objects, with the same
semantics as the dnslib lab server (exact names, then the closest ``*.`` wildcard, CNAME chains
followed inside the zones, NXDOMAIN for unknown names of a zone, REFUSED outside them), but
builds its replies from precomputed bytes: the answer records point at the question's name
(compression pointer ``0xC00C``), so one reply is the query's ID and question plus constant
bytes. Every readiness event drains the socket, so a burst costs one loop iteration.

:class:`FastDNSServer` serves in a thread (tests); :class:`FastDNSProcess` serves in a child
process of its own (benchmarks: the client then has the other core). ``python -m
tests.lab.fastdns --wild N`` serves a wildcard zone from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import multiprocessing
import os
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Any

from tests.lab.dnszone import Zone

TYPES = {"A": 1, "CNAME": 5, "AAAA": 28}
RCODE_NXDOMAIN, RCODE_REFUSED = 3, 5
QUERY_POINTER = b"\xc0\x0c"
RECV_BUFFER = 8 * 1024 * 1024
MAX_CHAIN = 8


def encode_name(name: str) -> bytes:
    """``name`` in DNS wire format (lower case, uncompressed)."""
    out = b""
    for label in name.lower().rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def _rdata(rtype: str, value: str) -> bytes:
    if rtype == "A":
        return ipaddress.IPv4Address(value).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(value).packed
    return encode_name(value)


def _rr(owner: bytes, rtype: str, value: str, ttl: int = 60) -> bytes:
    data = _rdata(rtype, value)
    return owner + struct.pack(">HHIH", TYPES[rtype], 1, ttl, len(data)) + data


class FastZones:
    """The zones compiled into reply tails: (rcode, answer count, answer bytes) per name and type."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones = list(zones)
        self.origins = {encode_name(z.origin) for z in self.zones}
        self.names: set[bytes] = set()
        self.answers: dict[tuple[bytes, int], tuple[int, int, bytes]] = {}
        for zone in self.zones:
            for name, records in zone.records.items():
                wire = encode_name(name)
                self.names.add(wire)
                for qtype in TYPES.values():
                    self.answers[(wire, qtype)] = self._answer(records, qtype)

    def _zone_for(self, name: str) -> Zone | None:
        return next((z for z in self.zones if name == z.origin or name.endswith("." + z.origin)), None)

    def _answer(self, records: list[tuple[str, str]], qtype: int) -> tuple[int, int, bytes]:
        """Walk the records of a name (its first owner is the question's name) as ZoneResolver does."""
        owner, count, body = QUERY_POINTER, 0, b""
        for _ in range(MAX_CHAIN):
            cname = next((v for t, v in records if t == "CNAME"), None)
            if cname is not None and qtype != TYPES["CNAME"]:
                body += _rr(owner, "CNAME", cname)
                count += 1
                target = cname.lower().rstrip(".")
                zone = self._zone_for(target)
                found = zone.lookup(target) if zone else None
                if found is None:
                    break
                owner, records = encode_name(target), found
                continue
            for rtype, value in records:
                if TYPES[rtype] == qtype:
                    body += _rr(owner, rtype, value)
                    count += 1
            break
        return 0, count, body

    def reply(self, query: bytes) -> bytes | None:
        """The reply to one query packet, or None for a packet that is not a plain query."""
        if len(query) < 17 or query[2] & 0x80:
            return None
        end = query.find(b"\x00", 12)
        if end < 0 or len(query) < end + 5:
            return None
        qname = query[12 : end + 1].lower()
        qtype = (query[end + 1] << 8) | query[end + 2]
        answer = self.answers.get((qname, qtype)) or self._closest(qname, qtype)
        rcode, count, body = answer
        flags = 0x8400 | (query[2] & 0x01) << 8 | rcode
        return query[:2] + struct.pack(">HHHHH", flags, 1, count, 0, 0) + query[12 : end + 5] + body

    def _closest(self, qname: bytes, qtype: int) -> tuple[int, int, bytes]:
        """A name without its own answer: the closest wildcard, NXDOMAIN inside a zone, REFUSED outside."""
        if qname in self.names:
            return 0, 0, b""
        inside = False
        parent = qname[qname[0] + 1 :] if len(qname) > 1 else qname
        while len(parent) > 1:
            wildcard = b"\x01*" + parent
            if wildcard in self.names:
                return self.answers.get((wildcard, qtype), (0, 0, b""))
            if parent in self.origins:
                inside = True
                break
            parent = parent[parent[0] + 1 :]
        if inside or qname in self.origins:
            return RCODE_NXDOMAIN, 0, b""
        return RCODE_REFUSED, 0, b""


class _Serve:
    """The asyncio side: one non-blocking socket, drained on every readiness event.

    With ``drop_first`` the first copy of every question is ignored (a lossy path: only a client
    that retries gets answers); with ``delay`` every answer leaves that many seconds late (a slow
    server, for runs that must last); a non-zero ``rcode`` answers every question with that error
    and no records (2: a resolver whose upstream fails, SERVFAIL; 5: REFUSED).
    """

    def __init__(
        self,
        zones: FastZones,
        sock: socket.socket,
        drop_first: bool = False,
        delay: float = 0.0,
        rcode: int = 0,
    ) -> None:
        self.zones = zones
        self.sock = sock
        self.delay = delay
        self.rcode = rcode
        self.queries = 0
        self.dropped = 0
        self.seen: set[bytes] | None = set() if drop_first else None

    def drain(self) -> None:
        recv, send, reply = self.sock.recvfrom, self.sock.sendto, self.zones.reply
        while True:
            try:
                packet, peer = recv(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.queries += 1
            if self.seen is not None and packet[12:].lower() not in self.seen:
                self.seen.add(packet[12:].lower())
                self.dropped += 1
                continue
            answer = reply(packet)
            if answer is None:
                continue
            if self.rcode:
                answer = error_reply(answer, self.rcode)
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._send, answer, peer)
                continue
            with contextlib.suppress(OSError):
                send(answer, peer)

    def _send(self, answer: bytes, peer: Any) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(answer, peer)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self.drain)
        try:
            await stop.wait()
        finally:
            loop.remove_reader(self.sock.fileno())


def error_reply(answer: bytes, rcode: int) -> bytes:
    """``answer`` turned into an error reply: the same ID and question, ``rcode``, no records."""
    end = answer.find(b"\x00", 12) + 5
    flags = (answer[2] << 8 | answer[3]) & 0xFFF0 | rcode
    return answer[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + answer[12:end]


def bind_udp(host: str, port: int = 0) -> socket.socket:
    """A non-blocking UDP socket on ``host:port`` with a large receive buffer."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, RECV_BUFFER)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class FastDNSServer:
    """The fast server in a daemon thread with its own event loop, on a free port of ``host``."""

    def __init__(
        self,
        zones: Iterable[Zone],
        host: str = "127.0.0.1",
        drop_first: bool = False,
        delay: float = 0.0,
        rcode: int = 0,
    ) -> None:
        self.zones = FastZones(zones)
        self.drop_first = drop_first
        self.delay = delay
        self.rcode = rcode
        self.host = host
        self.port = 0
        self._serve: _Serve | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``ip:port`` as the pipeline's ``resolvers`` entries expect."""
        return f"{self.host}:{self.port}"

    @property
    def queries(self) -> int:
        """How many packets the server has received."""
        return self._serve.queries if self._serve else 0

    @property
    def dropped(self) -> int:
        """How many packets the server ignored (``drop_first``)."""
        return self._serve.dropped if self._serve else 0

    def start(self) -> FastDNSServer:
        """Bind and serve in a thread; returns once the socket is bound."""
        sock = bind_udp(self.host)
        self.port = int(sock.getsockname()[1])
        self._serve = _Serve(self.zones, sock, self.drop_first, self.delay, self.rcode)
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            ready.set()
            assert self._serve is not None
            try:
                loop.run_until_complete(self._serve.run(self._stop))
            finally:
                loop.close()
                sock.close()

        self._thread = threading.Thread(target=main, name="lab-fastdns", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)
            self._loop = None


def _child(zones: list[Zone], sock: socket.socket, counter: Any) -> None:
    """Child process body: serve until SIGTERM, counting queries into the shared ``counter``."""
    serve = _Serve(FastZones(zones), sock)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(15, stop.set)
        task = asyncio.ensure_future(serve.run(stop))
        while not stop.is_set():
            counter.value = serve.queries
            await asyncio.sleep(0.1)
        await task
        counter.value = serve.queries

    asyncio.run(main())


class FastDNSProcess:
    """The fast server in a child process (fork), so that it does not share the client's GIL."""

    def __init__(self, zones: Iterable[Zone], host: str = "127.0.0.1") -> None:
        self.zone_list = list(zones)
        self.host = host
        self.port = 0
        self._process: multiprocessing.process.BaseProcess | None = None
        self._counter: Any = None

    @property
    def address(self) -> str:
        """``ip:port`` as the pipeline's ``resolvers`` entries expect."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def queries(self) -> int:
        """Packets received so far (updated by the child every 0.1 s)."""
        return int(self._counter.value) if self._counter is not None else 0

    def start(self) -> FastDNSProcess:
        """Bind here (so the port is known at once) and serve in a forked child."""
        sock = bind_udp(self.host)
        self.port = int(sock.getsockname()[1])
        context = multiprocessing.get_context("fork")
        self._counter = context.Value("q", 0, lock=False)
        self._process = context.Process(
            target=_child, args=(self.zone_list, sock, self._counter), name="lab-fastdns", daemon=True
        )
        self._process.start()
        sock.close()
        return self

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        if self._process is not None:
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._process = None


def wildcard_zone(origin: str, wildcard_ip: str, names: dict[str, str]) -> Zone:
    """A zone whose every name answers ``wildcard_ip`` except ``names`` (label -> address)."""
    zone = Zone(origin)
    zone.add("*", "A", wildcard_ip)
    zone.add("@", "A", wildcard_ip)
    for label, ip in names.items():
        zone.add(label, "AAAA" if ":" in ip else "A", ip)
    return zone


def main() -> None:
    """Serve a wildcard zone in the foreground (for manual runs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5353)
    parser.add_argument("--origin", default="wild.test")
    args = parser.parse_args()
    zone = wildcard_zone(args.origin, "127.0.0.9", {"www": "127.0.0.10"})
    serve = _Serve(FastZones([zone]), bind_udp(args.host, args.port))
    print(f"serving {args.origin} on {args.host}:{args.port} (pid {os.getpid()})", flush=True)
    asyncio.run(serve.run(asyncio.Event()))


if __name__ == "__main__":
    main()
