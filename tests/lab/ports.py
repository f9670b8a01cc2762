"""Planted TCP listeners for port-scan tests and benchmarks, and what the machine listens on.

:class:`PlantedPorts` opens listening sockets on chosen loopback addresses at random free ports and
accepts (then closes) whatever connects, in one selector thread, so repeated scans never fill an
accept queue. :func:`wildcard_listeners` reads ``/proc/net/tcp*`` for the ports other processes
listen on for every address (0.0.0.0 / ::): those answer on any 127.x address too, so a scan
that must find exactly the planted ports leaves them out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import selectors
import socket
import threading
from collections.abc import Iterable
from pathlib import Path


def _listening(path: Path) -> Iterable[tuple[str, int]]:
    try:
        lines = path.read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":
            continue
        address, _, port = fields[1].partition(":")
        yield address, int(port, 16)


def _address(hex_address: str) -> str:
    """A /proc/net/tcp* address (host byte order per 32-bit word) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening() -> set[tuple[str, int]]:
    """Every (address, port) some process listens on now (0.0.0.0 / :: for all addresses)."""
    out = {(_address(a), p) for a, p in _listening(Path("/proc/net/tcp"))}
    return out | {(_address(a), p) for a, p in _listening(Path("/proc/net/tcp6"))}


def wildcard_listeners() -> set[int]:
    """Ports some process listens on for all addresses (IPv4 0.0.0.0 or IPv6 ::)."""
    ports = {port for address, port in _listening(Path("/proc/net/tcp")) if address == "00000000"}
    ports |= {port for address, port in _listening(Path("/proc/net/tcp6")) if set(address) == {"0"}}
    return ports


class PlantedPorts:
    """``per_host`` listening sockets on each of ``hosts`` at random free ports in ``low..high``
    (or among ``choices``)."""

    def __init__(
        self,
        hosts: Iterable[str],
        per_host: int,
        low: int = 1024,
        high: int = 65535,
        seed: int | None = None,
        backlog: int = 128,
        choices: list[int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.avoid = wildcard_listeners()
        self.sockets: list[socket.socket] = []
        self.planted: dict[str, set[int]] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        for host in hosts:
            ports = self.planted.setdefault(host, set())
            while len(ports) < per_host:
                port = self.rng.choice(choices) if choices else self.rng.randint(low, high)
                if port in ports or port in self.avoid:
                    continue
                sock = self._bind(host, port, backlog)
                if sock is not None:
                    ports.add(port)
        self._thread = threading.Thread(target=self._serve, name="planted-ports", daemon=True)

    def _bind(self, host: str, port: int, backlog: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            return None
        sock.listen(backlog)
        sock.setblocking(False)
        self.sockets.append(sock)
        self._selector.register(sock, selectors.EVENT_READ)
        return sock

    @property
    def pairs(self) -> set[tuple[str, int]]:
        """Every planted (host, port)."""
        return {(host, port) for host, ports in self.planted.items() for port in ports}

    def start(self) -> PlantedPorts:
        """Accept in the background."""
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        break
                    conn.close()

    def stop(self) -> None:
        """Stop accepting and close the listeners."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self.sockets:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()
