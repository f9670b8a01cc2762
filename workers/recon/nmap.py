"""The nmap back end of the port scan: command building, XML parsing, a killable child process.

The command follows ARL's (``app/services/portScan.py``): a TCP connect scan of the open ports,
``-sV`` for service and version detection, ``-O`` for OS detection, ``--min-parallelism``,
``--min-rate``, ``--host-timeout``, ``--max-retries`` 3 (2 above 60 ports) and
``--max-hostgroup`` 32 (2 for every port). Unlike ARL it never pings first (``-Pn``): every
target is scanned, as the connect scanner does.

nmap writes its XML as it goes: each ``<host>`` element once the host is done, and with
``--stats-every`` a ``<taskprogress>`` element now and then. :func:`run_nmap_scan` reads the output
line by line, so open ports reach the caller per host and progress every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workers.recon.portscan import PortInfo
from workers.recon.portsettings import FIREWALL_KEEP, HostReport, ScanSettings

STATS_EVERY = "1s"
CAP_NET_RAW = 13
OS_ACCURACY = 90
"""ARL keeps the first OS match whose accuracy is above this."""
_PERCENT = re.compile(rb'<taskprogress [^>]*percent="([0-9.]+)"')


class NmapError(RuntimeError):
    """nmap ended with an error (its last lines of standard error are in the message)."""


def nmap_path() -> str | None:
    """The nmap executable on PATH, or None when it is not installed."""
    return shutil.which("nmap")


def effective_capabilities() -> int:
    """This process's effective capability set (``CapEff`` of ``/proc/self/status``); 0 if unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def os_detection_blocker(
    nmap: str | None = None, euid: int | None = None, capabilities: int | None = None
) -> str | None:
    """Why nmap's OS detection (``-O``) cannot run here, or None when it can.

    ``-O`` sends raw packets: nmap needs root with ``CAP_NET_RAW`` (a container may drop it), or file
    capabilities (``cap_net_raw``, ``cap_net_admin``) on nmap with ``NMAP_PRIVILEGED`` set; without
    them it refuses the whole scan. ``euid`` and ``capabilities`` default to this process's.
    """
    nmap = nmap or nmap_path()
    if nmap is None:
        return "nmap is not installed (OS detection needs nmap: apt-get install nmap)"
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        caps = effective_capabilities() if capabilities is None else capabilities
        if caps & (1 << CAP_NET_RAW):
            return None
        return (
            "nmap -O needs raw sockets: the worker runs as root without CAP_NET_RAW (add it to the container)"
        )
    if os.environ.get("NMAP_PRIVILEGED") is not None:
        with contextlib.suppress(OSError):
            if os.getxattr(os.path.realpath(nmap), "security.capability"):
                return None
    return (
        f"nmap -O needs raw sockets and the worker runs as uid {uid}: run it as root, or give nmap "
        "cap_net_raw,cap_net_admin+eip and set NMAP_PRIVILEGED=1"
    )


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


def nmap_command(nmap: str, ips: list[str], settings: ScanSettings) -> list[str]:
    """The nmap argument list for ``settings``: connect scan, no ping, no DNS, XML to stdout."""
    command = [nmap, "-sT", "-Pn", "-n", "--open", "-oX", "-", "-p", compress_ports(settings.ports)]
    command += ["--max-rtt-timeout", f"{max(1, round(settings.connect_timeout * 1000))}ms"]
    command += ["--stats-every", STATS_EVERY]
    command += ["--min-parallelism", str(settings.parallelism), "--min-rate", str(settings.min_rate)]
    retries = 3 if len(settings.ports) <= 60 else 2
    command += ["--max-retries", str(retries), "--max-hostgroup", "2" if settings.all_ports else "32"]
    if settings.host_timeout is not None:
        command += ["--host-timeout", f"{max(1, round(settings.host_timeout * 1000))}ms"]
    if settings.service_detection:
        command.append("-sV")
    if settings.os_detection:
        command.append("-O")
    if any(":" in ip for ip in ips):
        command.append("-6")
    return command + list(settings.nmap_args) + ips


def build_command(
    nmap: str, ips: list[str], ports: Iterable[int], service_detection: bool, connect_timeout: float
) -> list[str]:
    """:func:`nmap_command` for the given ports and otherwise default settings."""
    settings = ScanSettings(
        ports=tuple(ports), service_detection=service_detection, connect_timeout=connect_timeout
    )
    return nmap_command(nmap, ips, settings)


def _os_info(host: ET.Element) -> dict[str, Any]:
    """The first ``osmatch`` above :data:`OS_ACCURACY` (name, accuracy, its OS classes), or {}."""
    for match in host.iter("osmatch"):
        accuracy = int(match.get("accuracy", "0") or 0)
        if accuracy <= OS_ACCURACY:
            continue
        classes = [
            {
                **{k: c.get(k, "") for k in ("type", "vendor", "osfamily", "osgen")},
                "accuracy": int(c.get("accuracy", "0") or 0),
                "cpe": [cpe.text or "" for cpe in c.iter("cpe")],
            }
            for c in match.iter("osclass")
        ]
        return {"name": match.get("name", ""), "accuracy": accuracy, "osclass": classes}
    return {}


def parse_nmap_hosts(text: str) -> dict[str, tuple[dict[int, PortInfo], HostReport]]:
    """Each host of nmap's XML: its open TCP ports (service, product, version) and a :class:`HostReport`
    (``timed_out``, ``os_info``)."""
    out: dict[str, tuple[dict[int, PortInfo], HostReport]] = {}
    root = ET.fromstring(text)  # noqa: S314 - the XML comes from our own nmap child, not from targets
    for host in root.iter("host"):
        address = next(
            (a.get("addr") for a in host.iter("address") if a.get("addrtype") in ("ipv4", "ipv6")), None
        )
        if not address:
            continue
        ports: dict[int, PortInfo] = {}
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
            ports[info.port] = info
        report = HostReport(timed_out=host.get("timedout") == "true", os_info=_os_info(host))
        out[address] = (ports, report)
    return out


def parse_nmap_xml(text: str) -> dict[str, dict[int, PortInfo]]:
    """The open TCP ports of each host of nmap's XML (with service names, products, versions)."""
    return {ip: ports for ip, (ports, _) in parse_nmap_hosts(text).items() if ports}


def firewall_guard(ports: dict[int, PortInfo], report: HostReport, threshold: int) -> dict[int, PortInfo]:
    """ARL's guard: more than ``threshold`` open ports is a firewall; keep 80 and 443 and say so."""
    if len(ports) <= threshold:
        return ports
    report.firewall, report.open_seen = True, len(ports)
    return {port: info for port, info in ports.items() if port in FIREWALL_KEEP}


class _Stream:
    """Turns nmap's XML output, fed line by line, into per-host results and progress fractions."""

    def __init__(
        self,
        found: dict[str, dict[int, PortInfo]],
        hosts: dict[str, HostReport],
        settings: ScanSettings,
        hosts_total: int,
    ) -> None:
        self.found = found
        self.hosts = hosts
        self.threshold = settings.firewall_threshold
        self.on_open: Callable[[str, PortInfo], None] | None = None
        self.on_progress: Callable[[float], None] | None = None
        self.on_host: Callable[[str, HostReport], None] | None = None
        self.hosts_total = max(1, hosts_total)
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
        for ip, (ports, report) in parse_nmap_hosts(text.decode("utf-8", "replace")).items():
            kept = firewall_guard(ports, report, self.threshold)
            for port, info in kept.items():
                self.found.setdefault(ip, {})[port] = info
                if self.on_open is not None:
                    self.on_open(ip, info)
            if report.firewall or report.timed_out or report.os_info:
                self.hosts[ip] = report
                if self.on_host is not None:
                    self.on_host(ip, report)
        self._progress()

    def _progress(self) -> None:
        """Report the larger of the finished hosts' share and nmap's estimate, never less than before
        (nmap's percentage restarts with each group of hosts)."""
        share = self.done_hosts / self.hosts_total
        self.reported = max(self.reported, share, min(self.task_fraction, 0.999))
        if self.on_progress is not None:
            self.on_progress(self.reported)


async def run_nmap_scan(
    ips: list[str],
    settings: ScanSettings,
    found: dict[str, dict[int, PortInfo]],
    *,
    hosts: dict[str, HostReport] | None = None,
    on_open: Callable[[str, PortInfo], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_host: Callable[[str, HostReport], None] | None = None,
) -> None:
    """Run nmap over ``ips`` with ``settings``, merging its results into ``found`` as each host completes.

    ``on_open`` gets every open port of a finished host (after ARL's firewall guard); ``on_host`` and
    ``hosts`` the host's :class:`HostReport` when it has something to say (firewall, host timeout, OS);
    ``on_progress`` the fraction done (nmap's estimate each second, or the share of finished hosts).
    OS detection is left out when it cannot run (see :func:`os_detection_blocker`), since nmap would
    refuse the whole scan. nmap runs in its own process group; if this coroutine is cancelled (stop
    request or deadline) the whole group is killed before the cancellation propagates. Raises
    :class:`NmapError` when nmap fails.
    """
    nmap = nmap_path()
    if nmap is None:
        raise NmapError("nmap is not installed")
    if settings.os_detection and os_detection_blocker(nmap) is not None:
        settings = dataclasses.replace(settings, os_detection=False)
    stream = _Stream(found, hosts if hosts is not None else {}, settings, len(ips))
    stream.on_open, stream.on_progress, stream.on_host = on_open, on_progress, on_host
    process = await asyncio.create_subprocess_exec(
        *nmap_command(nmap, ips, settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=1 << 22,
    )
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read(1 << 16))
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
        stderr = await errors
    if process.returncode != 0:
        tail = " | ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
        raise NmapError(f"nmap exited with status {process.returncode}: {tail or 'no message'}")


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
    """:func:`run_nmap_scan` over ``ports`` with ARL's default settings otherwise."""
    settings = ScanSettings(
        ports=tuple(ports), service_detection=service_detection, connect_timeout=connect_timeout
    )
    await run_nmap_scan(ips, settings, found, on_open=on_open, on_progress=on_progress)
