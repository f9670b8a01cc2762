"""TCP connect scanning: one epoll loop in a worker thread, an adaptive window, retries of timeouts.

:class:`ConnectScanner` keeps up to ``window`` non-blocking connects in flight. A refused connect
is usually known as soon as ``connect`` returns (loopback and LAN answers come back within the
call), so it costs four system calls and never enters the epoll set. A connect that times out is
retried (with a doubled timeout) before the port counts as filtered, and each timeout halves the
window (it grows back as answers arrive), so an overloaded target or path costs time, not misses.
Local resource errors (file descriptors, ephemeral ports, buffers) put the probe back and cap the
window at what is in flight. A connect that reaches the scanning socket itself (a loopback port in
the ephemeral range) is not an open port. A host showing more open ports than the firewall
threshold (ARL's 600) gets no further probes except 80 and 443, and only those are kept.

:func:`scan_ports` runs a scanner from asyncio and hands its findings over as they come.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import errno
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from workers.recon.portsettings import FIREWALL_KEEP, HostReport

LINGER_RESET = struct.pack("ii", 1, 0)
EINPROGRESS, ECONNREFUSED, ECONNABORTED = errno.EINPROGRESS, errno.ECONNREFUSED, errno.ECONNABORTED
SOCK_TYPE = _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK
SPARE_SOCKETS = 64
LAUNCH_BATCH = 512
SOL_SOCKET, SO_ERROR = socket.SOL_SOCKET, socket.SO_ERROR
HOST_GROUP = 64
MIN_WINDOW = 8
RESOURCE_ERRORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EAGAIN}
)
UNREACHABLE_ERRORS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM})


@dataclass
class PortInfo:
    """An open TCP port and what service detection learned about it."""

    port: int
    service: str = ""
    product: str = ""
    version: str = ""
    banner: str = ""
    tls: bool = False

    def to_doc(self) -> dict[str, object]:
        """The port as stored inside an ``ip`` document."""
        return {
            "port": self.port,
            "protocol": "tcp",
            "service": self.service,
            "product": self.product,
            "version": self.version,
            "banner": self.banner,
            "tls": self.tls,
        }


@dataclass
class ScanCounters:
    """What a scan did so far: final outcomes per kind, attempts, retries and the window's range."""

    total: int = 0
    done: int = 0
    open: int = 0
    closed: int = 0
    filtered: int = 0
    skipped: int = 0
    attempts: int = 0
    retries: int = 0
    resource_waits: int = 0
    window: int = 0
    smallest_window: int = 0


Probe = tuple[str, int, int, dict[str, float]]
"""(ip, port, attempt, start times of the probe's host group) of one connect to make."""


def descriptor_budget() -> int:
    """How many sockets a scan may hold open: half the free part of the process's file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(MIN_WINDOW, (soft - 64) // 2)


class ConnectScanner:
    """A TCP connect scan of ``ips`` x ``ports``; call :meth:`run` in a thread of its own.

    Hosts are taken in groups of ``group_size``, each group's probes port by port across its
    hosts, so no single host sees the whole window. Open ports are queued for :meth:`take_open`
    (safe from another thread); :attr:`counters` may be read at any time; :meth:`stop` makes
    :meth:`run` close its sockets and return within a poll interval.

    The window never shrinks below ``min_window`` on timeouts (only a local resource shortage takes
    it lower). ``host_timeout`` is a per-host deadline from the host's first probe. A host with more
    than ``firewall_threshold`` open ports is a firewall artefact: only its ports 80 and 443 are
    probed and reported from then on. Both kinds of host are queued for :meth:`take_hosts`.
    """

    def __init__(
        self,
        ips: list[str],
        ports: list[int],
        *,
        connect_timeout: float = 1.0,
        concurrency: int = 1000,
        retries: int = 2,
        host_timeout: float | None = None,
        group_size: int = HOST_GROUP,
        min_window: int = MIN_WINDOW,
        firewall_threshold: int | None = None,
    ) -> None:
        self.ips = ips
        self.ports = ports
        self.connect_timeout = connect_timeout
        self.limit = max(1, min(concurrency, descriptor_budget()))
        self.retries = max(0, retries)
        self.host_timeout = host_timeout
        self.group_size = max(1, group_size)
        self.counters = ScanCounters(total=len(ips) * len(ports))
        self.min_window = max(1, min(min_window, self.limit))
        self.firewall_threshold = firewall_threshold
        self.window = float(min(self.limit, max(256, self.min_window)))
        self.counters.window = self.counters.smallest_window = int(self.window)
        self._threshold = float(self.limit)
        self._found: collections.deque[tuple[str, int]] = collections.deque()
        self.open_count: collections.Counter[str] = collections.Counter()
        self.firewalled: set[str] = set()
        self.timed_out: set[str] = set()
        self._hosts: collections.deque[tuple[str, str]] = collections.deque()
        self._retry_queue: collections.deque[tuple[float, Probe]] = collections.deque()
        self._stopped = threading.Event()
        self._last_cut = 0.0
        self.error: Exception | None = None
        self._spare: dict[int, list[_socket.socket]] = {_socket.AF_INET: [], _socket.AF_INET6: []}

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopped.set()

    def take_open(self) -> list[tuple[str, int]]:
        """The open (ip, port) pairs found since the last call."""
        out = []
        while self._found:
            out.append(self._found.popleft())
        return out

    def take_hosts(self) -> list[tuple[str, str]]:
        """(ip, "firewall" | "timed_out") for the hosts that became so since the last call."""
        out = []
        while self._hosts:
            out.append(self._hosts.popleft())
        return out

    def _probes(self) -> Iterator[Probe]:
        for start in range(0, len(self.ips), self.group_size):
            group = self.ips[start : start + self.group_size]
            started: dict[str, float] = {}
            for port in self.ports:
                for ip in group:
                    yield ip, port, 0, started

    def _next_probe(self, probes: Iterator[Probe], now: float) -> Probe | None:
        if self._retry_queue and self._retry_queue[0][0] <= now:
            return self._retry_queue.popleft()[1]
        return next(probes, None)

    def _final(self, kind: str) -> None:
        counters = self.counters
        counters.done += 1
        setattr(counters, kind, getattr(counters, kind) + 1)

    def _timed_out(self, probe: Probe, now: float) -> None:
        """A connect got no answer: retry it (shrinking the window) or call the port filtered."""
        if now - self._last_cut > self.connect_timeout:
            self._last_cut = now
            self._threshold = max(float(self.min_window), self.window / 2)
            self.window = self._threshold
            self.counters.smallest_window = min(self.counters.smallest_window, int(self.window))
        ip, port, attempt, started = probe
        if attempt < self.retries:
            self.counters.retries += 1
            self._retry_queue.append((now, (ip, port, attempt + 1, started)))
        else:
            self._final("filtered")

    def _answered(self) -> None:
        """An answer came: grow the window (doubling per round trip below the threshold)."""
        if self.window < self.limit:
            step = 1.0 if self.window < self._threshold else 1.0 / self.window
            self.window = min(float(self.limit), self.window + step)

    def _opened(self, sock: _socket.socket, ip: str, port: int) -> None:
        try:
            own = sock.getsockname()[:2] == sock.getpeername()[:2]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            own = True
        if own:
            self._final("closed")
            return
        self._final("open")
        self.open_count[ip] += 1
        if self.firewall_threshold is not None and ip not in self.firewalled:
            if self.open_count[ip] > self.firewall_threshold:
                self.firewalled.add(ip)
                self._hosts.append((ip, "firewall"))
        if ip not in self.firewalled or port in FIREWALL_KEEP:
            self._found.append((ip, port))

    def _settle(self, sock: _socket.socket, probe: Probe, error: int, now: float) -> bool:
        """Record the outcome of a finished connect; False when the probe must be made again."""
        if error in RESOURCE_ERRORS:
            self._retry_queue.appendleft((now, probe))
            self.counters.resource_waits += 1
            return False
        if error == errno.ETIMEDOUT:
            self._timed_out(probe, now)
            return True
        if error == 0:
            self._opened(sock, probe[0], probe[1])
        elif error in UNREACHABLE_ERRORS:
            self._final("filtered")
        else:
            self._final("closed")
        self._answered()
        return True

    def run(self) -> None:
        """Scan until every probe has an outcome or :meth:`stop` is called (errors go to :attr:`error`)."""
        poller = select.epoll()
        inflight: dict[int, tuple[_socket.socket, Probe, float]] = {}
        try:
            self._loop(poller, inflight)
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting side, which raises it
            self.error = exc
        finally:
            for sock, _, _ in inflight.values():
                sock.close()
            for spare in self._spare.values():
                for sock in spare:
                    sock.close()
                spare.clear()
            poller.close()

    def _loop(self, poller: select.epoll, inflight: dict[int, tuple[_socket.socket, Probe, float]]) -> None:
        probes = self._probes()
        fresh = True
        next_sweep = 0.0
        sweep_every = min(0.1, max(0.01, self.connect_timeout / 10))
        while not self._stopped.is_set():
            now = time.monotonic()
            starved = False
            for _ in range(LAUNCH_BATCH):
                if len(inflight) >= int(self.window):
                    break
                probe = None
                if self._retry_queue and self._retry_queue[0][0] <= now:
                    probe = self._retry_queue.popleft()[1]
                elif fresh:
                    probe = next(probes, None)
                    fresh = probe is not None
                if probe is None:
                    break
                if not self._launch(probe, now, poller, inflight):
                    starved = True
                    break
            if not fresh and not inflight and not self._retry_queue:
                return
            if inflight:
                for fd, _ in poller.poll(sweep_every):
                    entry = inflight.pop(fd, None)
                    if entry is not None:
                        sock, probe, _ = entry
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if not self._settle(sock, probe, error, time.monotonic()):
                            self._starved()
                        sock.close()
            else:
                due = self._retry_queue[0][0] - now if self._retry_queue else 0.0
                time.sleep(max(0.0, min(sweep_every, 0.05 if starved else due)))
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self._sweep(inflight, now)
            self.counters.window = int(self.window)

    def _launch(
        self,
        probe: Probe,
        now: float,
        poller: select.epoll,
        inflight: dict[int, tuple[_socket.socket, Probe, float]],
    ) -> bool:
        """Start one connect; False when a local resource ran out (the probe is queued again).

        This is the scan's hot path: a refused connect is settled here without entering epoll.
        """
        ip, port, attempt, started = probe
        if self.host_timeout is not None and now - started.setdefault(ip, now) > self.host_timeout:
            if ip not in self.timed_out:
                self.timed_out.add(ip)
                self._hosts.append((ip, "timed_out"))
            self._final("skipped")
            return True
        if ip in self.firewalled and port not in FIREWALL_KEEP:
            self._final("skipped")
            return True
        family = _socket.AF_INET6 if ":" in ip else _socket.AF_INET
        spare = self._spare[family]
        try:
            sock = spare.pop() if spare else _socket.socket(family, SOCK_TYPE)
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRORS:
                self._final("filtered")
                return True
            self._retry_queue.appendleft((now, probe))
            self.counters.resource_waits += 1
            return self._starved()
        counters = self.counters
        counters.attempts += 1
        error = sock.connect_ex((ip, port))
        if error == EINPROGRESS:
            error = sock.getsockopt(SOL_SOCKET, SO_ERROR)
            if error == 0:
                fd = sock.fileno()
                inflight[fd] = (sock, probe, now + self.connect_timeout * (2**attempt))
                poller.register(fd, select.EPOLLOUT)
                return True
        if error == ECONNREFUSED:
            if len(spare) < SPARE_SOCKETS and sock.connect_ex((ip, port)) == ECONNABORTED:
                spare.append(sock)
            else:
                sock.close()
            counters.done += 1
            counters.closed += 1
            if self.window < self.limit:
                self._answered()
            return True
        settled = self._settle(sock, probe, error, now)
        sock.close()
        return settled or self._starved()

    def _starved(self) -> bool:
        """A local resource ran out (the probe is queued again): halve the window; returns False."""
        self.window = max(1.0, self.window / 2)
        self.counters.smallest_window = min(self.counters.smallest_window, int(self.window))
        return False

    def _sweep(self, inflight: dict[int, tuple[_socket.socket, Probe, float]], now: float) -> None:
        """Give up on connects past their deadline (they are retried or counted filtered)."""
        expired = [fd for fd, (_, _, deadline) in inflight.items() if deadline <= now]
        for fd in expired:
            sock, probe, _ = inflight.pop(fd)
            sock.close()
            self._timed_out(probe, now)


async def scan_ports(
    ips: Iterable[str],
    ports: Iterable[int],
    found: dict[str, dict[int, PortInfo]],
    *,
    connect_timeout: float = 1.0,
    concurrency: int = 1000,
    retries: int = 2,
    host_timeout: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_open: Callable[[str, PortInfo], None] | None = None,
    counters: list[ScanCounters] | None = None,
    poll_interval: float = 0.1,
    min_window: int = MIN_WINDOW,
    firewall_threshold: int | None = None,
    hosts: dict[str, HostReport] | None = None,
    on_host: Callable[[str, HostReport], None] | None = None,
) -> None:
    """Connect-scan every (ip, port) pair, recording open ports into ``found[ip][port]`` as they appear.

    The scan runs in a thread (see :class:`ConnectScanner`); every ``poll_interval`` seconds the
    new open ports go into ``found`` (and to ``on_open``) and ``on_progress(done, total)`` is
    called. ``concurrency`` is the largest window. A host whose scan has run for longer than
    ``host_timeout`` seconds gets no further probes. The caller enforces the global deadline (and
    stop requests) by cancelling this coroutine: the thread is stopped and what it found stays in
    ``found``. ``counters``, when given, receives the scan's :class:`ScanCounters`.

    ``min_window`` and ``firewall_threshold`` are :class:`ConnectScanner`'s. A host found to be a
    firewall artefact loses its ports in ``found`` except 80 and 443 (some may have gone to
    ``on_open`` already: ``on_host`` tells the caller to drop them too); it and a host cut by
    ``host_timeout`` get a :class:`HostReport` in ``hosts`` and are passed to ``on_host``.
    """
    scanner = ConnectScanner(
        list(dict.fromkeys(ips)),
        list(dict.fromkeys(ports)),
        connect_timeout=connect_timeout,
        concurrency=concurrency,
        retries=retries,
        host_timeout=host_timeout,
        min_window=min_window,
        firewall_threshold=firewall_threshold,
    )
    reports: dict[str, HostReport] = hosts if hosts is not None else {}
    if counters is not None:
        counters.append(scanner.counters)
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not finished.done():
            finished.set_result(None)

    def body() -> None:
        try:
            scanner.run()
        finally:
            loop.call_soon_threadsafe(settle)

    def deliver() -> None:
        for ip, port in scanner.take_open():
            info = found.setdefault(ip, {}).setdefault(port, PortInfo(port))
            if on_open is not None:
                on_open(ip, info)
        for ip, kind in scanner.take_hosts():
            report = reports.setdefault(ip, HostReport())
            if kind == "firewall":
                report.firewall = True
                by_port = found.get(ip, {})
                for port in [p for p in by_port if p not in FIREWALL_KEEP]:
                    del by_port[port]
            else:
                report.timed_out = True
            report.open_seen = scanner.open_count[ip]
            if on_host is not None:
                on_host(ip, report)
        if on_progress is not None:
            on_progress(scanner.counters.done, scanner.counters.total)

    thread = threading.Thread(target=body, name="portscan", daemon=True)
    thread.start()
    try:
        while not finished.done():
            await asyncio.wait([finished], timeout=poll_interval)
            deliver()
    finally:
        scanner.stop()
        thread.join()
        deliver()
    if scanner.error is not None:
        raise scanner.error
