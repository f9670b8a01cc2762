"""The host stages of a recon run: port scan (asyncio connect scan or nmap) and service probes."""

from __future__ import annotations

from workers.recon.control import run_pool
from workers.recon.datafiles import ports_for_preset
from workers.recon.nmap import nmap_path, run_nmap
from workers.recon.portscan import PortInfo, scan_ports
from workers.recon.services import detect_service
from workers.recon.state import ReconState

DEFAULT_SCAN_DEADLINE = 3600.0
NPOC_SKIP_PORTS = frozenset({80, 443, 843})
"""Ports ARL's pure-Python service sniffer (``npoc_service_detection``) leaves to the site stage."""


class PortStages(ReconState):
    """Port scan and service detection over the task's in-scope IPs."""

    def scan_ports_list(self) -> list[int]:
        """The ports to scan: the ``port_scan_type`` preset (or ``port_custom``) minus ``exclude_ports``."""
        ports = ports_for_preset(
            str(self.options.get("port_scan_type") or "test"), self.options.get("port_custom")
        )
        excluded = set(self.options.get("exclude_ports") or ())
        return [p for p in ports if p not in excluded]

    def host_timeout(self) -> float | None:
        """Seconds one host may take (ARL: only with ``host_timeout_type: custom``)."""
        if self.options.get("host_timeout_type") == "custom" and self.options.get("host_timeout"):
            return float(self.options["host_timeout"])
        if self.options.get("host_timeout") is not None:
            self.skip("host_timeout", "applies only with host_timeout_type 'custom' (as in ARL)")
        return None

    def use_nmap(self) -> bool:
        """Whether this scan runs nmap: asked for (``use_nmap``) and installed."""
        if not self.wants("use_nmap"):
            return False
        if nmap_path() is None:
            self.skip("use_nmap", "nmap is not installed on this worker; the built-in scanner ran")
            return False
        return True

    def note_unsupported(self, with_nmap: bool) -> None:
        """Name the scan options this backend cannot apply."""
        for option in ("os_detection", "port_parallelism", "port_min_rate"):
            if self.options.get(option):
                self.skip(option, "not supported by this worker's port scanner")
        if self.wants("service_brute") or self.options.get("brute_config"):
            self.skip("service_brute", "weak-password checks are not available in this build")

    async def port_scan(self, ips: list[str]) -> None:
        """Stage port_scan: connect scan (or nmap) over ``ips``; open ports are stored as found."""
        ports = self.scan_ports_list()
        deadline = float(self.options.get("port_scan_timeout") or DEFAULT_SCAN_DEADLINE)
        total = len(ips) * len(ports)
        report = self.reporter("port_scan", total)

        def opened(ip: str, info: PortInfo) -> None:
            self.open_ports.setdefault(ip, {}).setdefault(info.port, info)
            self.ip_docs.changed(ip)

        found: dict[str, dict[int, PortInfo]] = {}
        with_nmap = self.use_nmap()
        self.note_unsupported(with_nmap)
        if with_nmap:
            scan = run_nmap(
                ips,
                ports,
                found,
                service_detection=self.wants("service_detection"),
                connect_timeout=self.ctx.connect_timeout,
                on_open=opened,
                on_progress=lambda fraction: report(int(total * fraction)),
            )
        else:
            host_timeout = self.host_timeout()
            scan = scan_ports(
                ips,
                ports,
                found,
                connect_timeout=self.ctx.connect_timeout,
                concurrency=self.ctx.scan_concurrency,
                retries=self.ctx.scan_retries,
                host_timeout=host_timeout,
                on_progress=lambda done, _: report(done),
                on_open=opened,
            )
        if await self.step(scan, timeout=deadline):
            report(total)
        self.ip_docs.batch.flush()

    async def detect_services(self, ips: list[str], skip_ports: frozenset[int] = frozenset()) -> None:
        """Stage service_detection: banner / TLS / HTTP probes on the open ports of ``ips`` not known yet."""
        targets = [
            (ip, port)
            for ip in ips
            for port, info in self.open_ports.get(ip, {}).items()
            if not info.service and port not in skip_ports
        ]
        report = self.reporter("service_detection", len(targets))
        done = 0

        async def probe(target: tuple[str, int]) -> None:
            nonlocal done
            ip, port = target
            self.open_ports[ip][port] = await detect_service(ip, port, timeout=self.ctx.connect_timeout)
            self.ip_docs.changed(ip)
            done += 1
            report(done)

        await self.step(run_pool(targets, probe, self.ctx.concurrency))
        self.ip_docs.batch.flush()

    async def scan_hosts(self, ips: list[str]) -> None:
        """Port scan then the service probes the options ask for."""
        await self.port_scan(ips)
        if self.stopped:
            return
        if self.wants("service_detection"):
            await self.detect_services(ips)
        elif self.wants("npoc_service_detection"):
            await self.detect_services(ips, NPOC_SKIP_PORTS)

    def save_ips(self, hosts: dict[str, list[str]]) -> None:
        """Store the ``ip`` documents not written yet of the round's addresses with open ports or names."""
        for ip in dict.fromkeys(ip for v in hosts.values() for ip in v):
            if ip not in self.ip_docs.stored and (self.open_ports.get(ip) or self.ip_docs.names.get(ip)):
                self.ip_docs.changed(ip)
        self.ip_docs.batch.flush()
