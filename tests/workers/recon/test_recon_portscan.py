"""The connect scanner against planted listeners on loopback: exact findings under pressure."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.ports import PlantedPorts, wildcard_listeners
from workers.recon.portscan import ConnectScanner, PortInfo, ScanCounters, scan_ports

ROOT = Path(__file__).resolve().parents[3]
HOSTS = [f"127.66.10.{i}" for i in range(1, 5)]
SCANNED = range(1, 20001)


@pytest.fixture(scope="module")
def planted() -> Iterator[PlantedPorts]:
    ports = PlantedPorts(HOSTS, per_host=6, low=1024, high=SCANNED[-1], seed=5).start()
    yield ports
    ports.stop()


def found_pairs(found: dict[str, dict[int, PortInfo]]) -> set[tuple[str, int]]:
    return {(ip, port) for ip, ports in found.items() for port in ports}


def scan(hosts: list[str], ports: list[int], **kwargs: object) -> tuple[set[tuple[str, int]], ScanCounters]:
    found: dict[str, dict[int, PortInfo]] = {}
    counters: list[ScanCounters] = []
    asyncio.run(scan_ports(hosts, ports, found, counters=counters, **kwargs))  # type: ignore[arg-type]
    return found_pairs(found), counters[0]


def test_finds_exactly_the_planted_ports_with_a_huge_window_and_parallel_scans(planted: PlantedPorts) -> None:
    busy = wildcard_listeners()
    ports = [p for p in SCANNED if p not in busy]
    results: list[tuple[set[tuple[str, int]], ScanCounters]] = []

    def one(hosts: list[str]) -> None:
        results.append(scan(hosts, ports, concurrency=20000, connect_timeout=1.0))

    # Three scans at once over the same hosts: the kernel and the listeners see triple the load.
    threads = [threading.Thread(target=one, args=(HOSTS,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for pairs, counters in results:
        assert pairs == planted.pairs
        assert counters.done == counters.total == len(HOSTS) * len(ports)
        assert counters.open == len(planted.pairs) and counters.filtered == 0


def test_a_listener_dropping_syns_is_found_thanks_to_retries() -> None:
    host = "127.66.11.1"

    def choked() -> tuple[socket.socket, socket.socket]:
        """A listener whose accept queue is full: the kernel drops new SYNs until it accepts one."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname(), timeout=2)
        return listener, filler

    def run(retries: int) -> tuple[set[tuple[str, int]], ScanCounters, int]:
        listener, filler = choked()
        port = listener.getsockname()[1]
        scanner_counters: list[ScanCounters] = []
        found: dict[str, dict[int, PortInfo]] = {}

        def release_after_first_timeout() -> None:
            # Room in the queue only once the scanner gave up on a connect at least once.
            while not scanner_counters or scanner_counters[0].retries + scanner_counters[0].filtered == 0:
                threading.Event().wait(0.01)
            listener.accept()[0].close()

        releaser = threading.Thread(target=release_after_first_timeout, daemon=True)
        releaser.start()
        asyncio.run(
            scan_ports(
                [host],
                [port - 1, port, port + 1],
                found,
                connect_timeout=0.2,
                retries=retries,
                counters=scanner_counters,
            )
        )
        releaser.join(5)
        filler.close()
        listener.close()
        return found_pairs(found), scanner_counters[0], port

    pairs, counters, port = run(retries=3)
    assert pairs == {(host, port)} and counters.retries >= 1 and counters.filtered == 0
    missed, counters, _ = run(retries=0)
    assert missed == set() and counters.filtered == 1


def test_descriptor_starvation_delays_but_loses_no_port(planted: PlantedPorts) -> None:
    busy = wildcard_listeners()
    ports = [p for p in sorted({p for _, p in planted.pairs} | set(range(1000, 3000))) if p not in busy]
    args = {"hosts": HOSTS, "ports": ports, "limit": 128, "concurrency": 5000}
    done = subprocess.run(
        [sys.executable, "-m", "tests.lab.fdpressure", json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {(ip, port) for ip, port in result["found"]} == planted.pairs
    assert result["counters"]["resource_waits"] > 0, "the descriptor hog never got in the way"
    assert result["counters"]["done"] == len(HOSTS) * len(ports)


def test_a_connection_to_the_scanning_socket_itself_is_not_an_open_port() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.66.12.1", 0))
    port = sock.getsockname()[1]
    sock.connect(("127.66.12.1", port))  # TCP simultaneous open with itself
    scanner = ConnectScanner(["127.66.12.1"], [port])
    scanner._opened(sock, "127.66.12.1", port)
    sock.close()
    assert scanner.take_open() == [] and scanner.counters.closed == 1 and scanner.counters.open == 0


def test_stopping_a_scan_returns_promptly_with_what_was_found(planted: PlantedPorts) -> None:
    host = HOSTS[0]
    first = min(planted.planted[host])

    async def scenario() -> tuple[set[tuple[str, int]], ScanCounters]:
        found: dict[str, dict[int, PortInfo]] = {}
        counters: list[ScanCounters] = []
        seen = asyncio.Event()
        task = asyncio.ensure_future(
            scan_ports(
                [host, *(f"127.66.13.{i}" for i in range(1, 200))],
                list(range(1, 65536)),
                found,
                counters=counters,
                on_open=lambda ip, info: seen.set() if (ip, info.port) == (host, first) else None,
            )
        )
        await asyncio.wait_for(seen.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return found_pairs(found), counters[0]

    pairs, counters = asyncio.run(scenario())
    assert (host, first) in pairs
    assert counters.done < counters.total
