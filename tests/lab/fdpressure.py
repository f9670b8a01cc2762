"""Run a port scan in a process starved of file descriptors (a child process for one test).

The process lowers its own descriptor limit, starts the scan, then a hog thread keeps taking every
free descriptor and giving them back a moment later, so the scanner's ``socket()`` calls fail with
EMFILE again and again. Prints the open ports found and the scanner's counters as JSON.

Run: ``python -m tests.lab.fdpressure '{"hosts": [...], "ports": [...], "limit": 256}'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.recon.portscan import PortInfo, ScanCounters, scan_ports  # noqa: E402


def hog(stop: threading.Event, hold: float = 0.004, rest: float = 0.0005) -> None:
    """Take every free descriptor, hold them ``hold`` seconds, release, rest ``rest``; until stopped."""
    while not stop.is_set():
        held = []
        with contextlib.suppress(OSError):
            while True:
                held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        time.sleep(hold)
        for sock in held:
            sock.close()
        time.sleep(rest)


async def scan(hosts: list[str], ports: list[int], concurrency: int) -> dict[str, object]:
    found: dict[str, dict[int, PortInfo]] = {}
    counters: list[ScanCounters] = []
    stop = threading.Event()
    thread = threading.Thread(target=hog, args=(stop,), daemon=True)
    task = asyncio.ensure_future(
        scan_ports(hosts, ports, found, connect_timeout=1.0, concurrency=concurrency, counters=counters)
    )
    while not counters or counters[0].attempts == 0:
        await asyncio.sleep(0.001)
    thread.start()
    try:
        await task
    finally:
        stop.set()
        thread.join()
    return {
        "found": sorted([ip, port] for ip, by_port in found.items() for port in by_port),
        "counters": asdict(counters[0]),
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    limit = int(args.get("limit", 256))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    result = asyncio.run(scan(list(args["hosts"]), list(args["ports"]), int(args.get("concurrency", 1000))))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
