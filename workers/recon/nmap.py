"""Optional nmap back end for port scanning: command building, XML parsing, a killable child process.

nmap writes its XML as it goes: each ``<host>`` element once the host is done, and with
``--stats-every`` a ``<taskprogress>`` element now and then. :func:`run_nmap` reads the output
line by line, so open ports reach the caller per host and progress every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from workers.recon.portscan import PortInfo

STATS_EVERY = "1s"
_PERCENT = re.compile(rb'<taskprogress [^>]*percent="([0-9.]+)"')


def nmap_path() -> str | None:
    """The nmap executable on PATH, or None when it is not installed."""
    return shutil.which("nmap")


def compress_ports(ports: Iterable[int]) -> str:
    """Render ports as nmap's ``-p`` syntax with ranges: [1, 2, 3, 80] -> "1-3,80"."""
    ordered = sorted(set(ports))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = end = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)


def build_command(
    nmap: str, ips: list[str], ports: Iterable[int], service_detection: bool, connect_timeout: float
) -> list[str]:
    """The nmap argument list: TCP connect scan, no ping, no DNS, XML to stdout."""
    command = [nmap, "-sT", "-Pn", "-n", "--open", "-oX", "-", "-p", compress_ports(ports)]
    command += ["--max-rtt-timeout", f"{int(connect_timeout * 1000)}ms", "--stats-every", STATS_EVERY]
    if service_detection:
        command += ["-sV", "--version-light"]
    if any(":" in ip for ip in ips):
        command.append("-6")
    return command + ips


def parse_nmap_xml(text: str) -> dict[str, dict[int, PortInfo]]:
    """Extract the open TCP ports (with service names, products, versions) from nmap's XML output."""
    found: dict[str, dict[int, PortInfo]] = {}
    root = ET.fromstring(text)  # noqa: S314 - the XML comes from our own nmap child, not from targets
    for host in root.iter("host"):
        address = next(
            (a.get("addr") for a in host.iter("address") if a.get("addrtype") in ("ipv4", "ipv6")), None
        )
        if not address:
            continue
        for port in host.iter("port"):
            state = port.find("state")
            if port.get("protocol") != "tcp" or state is None or state.get("state") != "open":
                continue
            info = PortInfo(int(port.get("portid", "0")))
            service = port.find("service")
            if service is not None:
                name = service.get("name", "")
                info.tls = service.get("tunnel") == "ssl"
                info.service = "https" if name == "http" and info.tls else name
                info.product = service.get("product", "")
                info.version = service.get("version", "")
            found.setdefault(address, {})[info.port] = info
    return found


class _Stream:
    """Turns nmap's XML output, fed line by line, into per-host results and progress fractions."""

    def __init__(
        self,
        found: dict[str, dict[int, PortInfo]],
        on_open: Callable[[str, PortInfo], None] | None,
        on_progress: Callable[[float], None] | None,
        hosts: int,
    ) -> None:
        self.found = found
        self.on_open = on_open
        self.on_progress = on_progress
        self.hosts = max(1, hosts)
        self.done_hosts = 0
        self.task_fraction = 0.0
        self.reported = 0.0
        self._host: list[bytes] | None = None

    def feed(self, line: bytes) -> None:
        if self._host is not None or line.lstrip().startswith(b"<host "):
            self._host = [*(self._host or []), line]
            if b"</host>" in line:
                self._finish_host(b"".join(self._host))
                self._host = None
            return
        match = _PERCENT.search(line)
        if match is not None:
            self.task_fraction = min(1.0, float(match.group(1)) / 100)
            self._progress()

    def _finish_host(self, chunk: bytes) -> None:
        self.done_hosts += 1
        text = b"<nmaprun>" + chunk + b"</nmaprun>"
        for ip, ports in parse_nmap_xml(text.decode("utf-8", "replace")).items():
            for port, info in ports.items():
                self.found.setdefault(ip, {})[port] = info
                if self.on_open is not None:
                    self.on_open(ip, info)
        self._progress()

    def _progress(self) -> None:
        """Report the larger of the finished hosts' share and nmap's estimate, never less than before
        (nmap's percentage restarts with each group of hosts)."""
        self.reported = max(self.reported, self.done_hosts / self.hosts, min(self.task_fraction, 0.999))
        if self.on_progress is not None:
            self.on_progress(self.reported)


async def run_nmap(
    ips: list[str],
    ports: Iterable[int],
    found: dict[str, dict[int, PortInfo]],
    *,
    service_detection: bool,
    connect_timeout: float,
    on_open: Callable[[str, PortInfo], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> None:
    """Run nmap over ``ips`` and merge its results into ``found`` as each host completes.

    ``on_open`` gets every open port of a finished host; ``on_progress`` the fraction done (nmap's
    own estimate each second, or the share of finished hosts). nmap runs in its own process group;
    if this coroutine is cancelled (stop request or deadline) the whole group is killed before the
    cancellation propagates.
    """
    nmap = nmap_path()
    if nmap is None:
        raise RuntimeError("nmap is not installed")
    command = build_command(nmap, ips, ports, service_detection, connect_timeout)
    stream = _Stream(found, on_open, on_progress, len(ips))
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        limit=1 << 22,
    )
    assert process.stdout is not None
    try:
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            stream.feed(line)
        await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
