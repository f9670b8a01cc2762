"""Optional nmap back end for port scanning: command building, XML parsing, a killable child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from workers.recon.portscan import PortInfo


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
    command += ["--max-rtt-timeout", f"{int(connect_timeout * 1000)}ms"]
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


async def run_nmap(
    ips: list[str],
    ports: Iterable[int],
    found: dict[str, dict[int, PortInfo]],
    *,
    service_detection: bool,
    connect_timeout: float,
) -> None:
    """Run nmap over ``ips`` and merge its results into ``found``.

    nmap runs in its own process group; if this coroutine is cancelled (stop request or deadline)
    the whole group is killed before the cancellation propagates.
    """
    nmap = nmap_path()
    if nmap is None:
        raise RuntimeError("nmap is not installed")
    command = build_command(nmap, ips, ports, service_detection, connect_timeout)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    for ip, ports_found in parse_nmap_xml(output.decode("utf-8", "replace")).items():
        found.setdefault(ip, {}).update(ports_found)
