"""The host stages of a recon run: port scan (asyncio connect scan or nmap) and service probes."""

from __future__ import annotations

from pathlib import Path

from workers.recon.brute import plugins_for_options, run_brute, targets_from_ports
from workers.recon.control import run_pool
from workers.recon.portrun import run_port_scan, unsupported
from workers.recon.portscan import PortInfo
from workers.recon.portsettings import HostReport, ScanSettings, scan_settings
from workers.recon.services import detect_service
from workers.recon.state import ReconState

DEFAULT_SCAN_DEADLINE = 3600.0
FIREWALL_KEPT = frozenset({80, 443})
"""The ports ARL keeps of a host answering on absurdly many (a firewall artefact)."""
NPOC_SKIP_PORTS = frozenset({80, 443, 843})
"""Ports ARL's pure-Python service sniffer (``npoc_service_detection``) leaves to the site stage."""


class PortStages(ReconState):
    """Port scan and service detection over the task's in-scope IPs."""

    def port_settings(self) -> ScanSettings:
        """The port scan's settings from the task's ARL options (presets, exclusions, nmap, timeouts)."""
        return scan_settings(
            self.options,
            connect_timeout=self.ctx.connect_timeout,
            concurrency=self.ctx.scan_concurrency,
            retries=self.ctx.scan_retries,
        )

    def note_unsupported(self, settings: ScanSettings) -> None:
        """Name the scan options this worker cannot apply (nmap missing, OS detection without root …)."""
        for option, reason in unsupported(settings).items():
            self.skip(option, reason)
        if self.options.get("host_timeout") is not None and self.options.get("host_timeout_type") != "custom":
            self.skip("host_timeout", "applies only with host_timeout_type 'custom' (as in ARL)")

    def host_report(self, ip: str, report: HostReport) -> None:
        """A host's scan report: OS, timeout, or ARL's firewall guard (its ports but 80 and 443 dropped)."""
        if report.firewall:
            ports = self.open_ports.get(ip, {})
            for port in [p for p in ports if p not in FIREWALL_KEPT]:
                del ports[port]
            self.counts["firewall_hosts"] = self.counts.get("firewall_hosts", 0) + 1
        self.ip_docs.annotate(ip, report.to_doc())
        self.ip_docs.changed(ip)

    async def port_scan(self, ips: list[str]) -> None:
        """Stage port_scan: connect scan (or nmap) over ``ips``; open ports are stored as found."""
        settings = self.port_settings()
        self.note_unsupported(settings)
        deadline = float(self.options.get("port_scan_timeout") or DEFAULT_SCAN_DEADLINE)
        total = len(ips) * len(settings.ports)
        report = self.reporter("port_scan", total)

        def opened(ip: str, info: PortInfo) -> None:
            self.open_ports.setdefault(ip, {}).setdefault(info.port, info)
            self.ip_docs.changed(ip)

        found: dict[str, dict[int, PortInfo]] = {}
        scan = run_port_scan(
            ips,
            settings,
            found,
            on_open=opened,
            on_progress=lambda done, _: report(done),
            on_host=self.host_report,
        )
        if await self.step(scan, timeout=deadline):
            report(total)
        for ip, ports in found.items():
            for port, info in ports.items():
                known = self.open_ports.get(ip, {}).get(port)
                if known is not None and info.service and not known.service:
                    self.open_ports[ip][port] = info
                    self.ip_docs.changed(ip)
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

    async def service_brute(self) -> None:
        """Stages service_brute / brute_config: weak-password checks on the open services, into ``vuln``.

        One finding per service and plugin (the first credential accepted, or open access), with
        the password as found. Plugin names this worker does not have are reported by name.
        """
        plugins = plugins_for_options(self.options)
        if not plugins:
            return
        config = self.ctx.config
        outcome = []

        async def check() -> None:
            outcome.append(
                await run_brute(
                    targets_from_ports(self.open_ports),
                    plugins,
                    timeout=max(self.ctx.connect_timeout * 3, 3.0),
                    max_attempts_per_service=config.brute_max_attempts,
                    on_progress=lambda done, total: self.progress.report("service_brute", done, total),
                    should_stop=lambda: self.stopped,
                    credentials_dir=Path(config.brute_lists) if config.brute_lists else None,
                )
            )

        await self.step(check())
        if not outcome:
            return
        report = outcome[0]
        self.more.insert("vuln", (brute_doc(f.as_document()) for f in report.findings))
        missing = {name: "no such brute plugin" for name in report.unknown_plugins}
        missing.update(report.unsupported)
        if missing:
            self.skip("brute_config", "; ".join(f"{name}: {why}" for name, why in missing.items()))
        self.counts["service_brute"] = {
            "services_checked": report.services_checked,
            "attempts": report.attempts,
            "findings": len(report.findings),
            "errors": len(report.errors),
        }


def brute_doc(doc: dict[str, object]) -> dict[str, object]:
    """A weak-credential finding as a ``vuln`` document (one per service, plugin and credential)."""
    service = f"{doc['ip']}:{doc['port']}"
    evidence = "unauthenticated" if doc.get("unauthenticated") else str(doc.get("username") or "")
    return {
        **doc,
        "service": service,
        "poc_id": str(doc["plugin_name"]),
        "evidence": evidence,
        "name": str(doc.get("vul_name") or doc["plugin_name"]),
        "severity": "high",
        "hostnames": [],
    }
