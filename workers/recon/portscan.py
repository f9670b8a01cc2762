"""Asynchronous TCP connect scanning with bounded concurrency and per-connect / per-host time limits."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


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


async def tcp_connect(ip: str, port: int, timeout: float) -> bool:
    """Try a TCP connect; True when the port accepted it within ``timeout`` seconds."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except (OSError, TimeoutError):
        return False
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return True
    finally:
        sock.close()


def _probes(ips: list[str], ports: list[int]) -> Iterator[tuple[str, int]]:
    """Host-major probe order: each host's ports in turn."""
    for ip in ips:
        for port in ports:
            yield ip, port


async def scan_ports(
    ips: Iterable[str],
    ports: Iterable[int],
    found: dict[str, dict[int, PortInfo]],
    *,
    connect_timeout: float = 1.0,
    concurrency: int = 200,
    host_timeout: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Connect-scan every (ip, port) pair, recording open ports into ``found[ip][port]`` as they appear.

    ``concurrency`` bounds the connects in flight. A host whose scan has run for longer than
    ``host_timeout`` seconds gets no further probes. The caller enforces the global deadline (and
    stop requests) by cancelling this coroutine: results stay in ``found``.
    """
    ip_list = list(dict.fromkeys(ips))
    port_list = list(dict.fromkeys(ports))
    total = len(ip_list) * len(port_list)
    probes = _probes(ip_list, port_list)
    started: dict[str, float] = {}
    done = 0

    async def worker() -> None:
        nonlocal done
        for ip, port in probes:
            first = started.setdefault(ip, time.monotonic())
            if host_timeout is None or time.monotonic() - first <= host_timeout:
                if await tcp_connect(ip, port, connect_timeout):
                    found.setdefault(ip, {})[port] = PortInfo(port)
            done += 1
            if on_progress is not None:
                on_progress(done, total)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, total)))))
