"""The recon pipeline behind ``domain_task`` and ``ip_task``: the order of the stages.

The stages are in :mod:`workers.recon.discovery` (names), :mod:`workers.recon.portstage` (ports
and services) and :mod:`workers.recon.webstages` (sites and what is done to them); their shared
state is :class:`workers.recon.state.ReconState`. Entry points :func:`run_domain_task` and
:func:`run_ip_task` are synchronous (they run their own asyncio loop) so they can be called
straight from a Celery prefork child.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.recon.context import ReconContext
from workers.recon.crawlstages import CrawlStages
from workers.recon.discovery import DomainDiscovery
from workers.recon.portstage import PortStages
from workers.recon.screenshot import CaptureSettings
from workers.recon.targets import expand_ip_targets, normalize_domain
from workers.recon.webstages import SITE_CONCURRENCY, WebStages

__all__ = [
    "MAX_DISCOVERY_ROUNDS",
    "OPTION_STAGES",
    "SITE_CONCURRENCY",
    "STAGES",
    "ReconRun",
    "run_domain_task",
    "run_ip_task",
]

STAGES = (
    "domain_brute",
    "resolve",
    "port_scan",
    "service_detection",
    "site_identify",
    "ssl_cert",
    "file_leak",
)
"""Progress stages of a domain task with brute force, ports, services, sites, certs and leaks on."""
OPTION_STAGES = {
    "dns_query_plugin": "dns_query_plugin",
    "arl_search": "arl_search",
    "alt_dns": "alt_dns",
    "site_capture": "site_capture",
    "nuclei_scan": "poc",
    "poc_config": "poc",
    "web_info_hunter": "web_info_hunter",
    "search_engines": "search_engines",
    "site_spider": "site_spider",
    "findvhost": "findvhost",
}
"""Option -> the progress stage it adds."""
MAX_DISCOVERY_ROUNDS = 3


class ReconRun(DomainDiscovery, PortStages, WebStages, CrawlStages):
    """One execution of the pipeline over a task's targets (see the module docstring)."""

    async def run_domains(self, targets: list[str]) -> None:
        """The domain task: find names, resolve, then scan / identify / collect in discovery rounds."""
        self.roots = list(dict.fromkeys(normalize_domain(t) for t in targets))
        self.client()
        if self.wants("domain_brute"):
            await self.brute_force()
        for option, stage in (
            ("dns_query_plugin", self.passive_sources),
            ("arl_search", self.arl_search),
        ):
            if self.wants(option) and not self.stopped:
                await stage()
        if self.wants("search_engines") and not self.stopped:
            await self.searched_names()
        if self.stopped:
            return
        await self.resolve(self.roots, source="target", keep_empty=True)
        self.check_resolution()
        if self.wants("alt_dns") and not self.stopped:
            await self.alt_dns()
        names = list(self.domains)
        for _ in range(MAX_DISCOVERY_ROUNDS):
            if not names or self.stopped:
                break
            hosts = {n: [ip for ip in self.domains[n].ips if self.in_scope(ip)] for n in names}
            new_names = await self.discovery_round({h: ips for h, ips in hosts.items() if self.in_scope(h)})
            if self.stopped or not new_names:
                break
            before = set(self.domains)
            await self.resolve(new_names, source="cert", keep_empty=False)
            names = [n for n in self.domains if n not in before]
        await self.site_followups()
        self.note_dns_health()

    async def searched_names(self) -> None:
        """Resolve the names the search engine returned, under their root (wildcards dropped)."""
        names = await self.search_engines()
        for root in self.roots:
            mine = [n for n in names if n.endswith("." + root)]
            if mine and not self.stopped:
                await self.resolve_under(root, mine, "search_engine", "search_engines")

    async def run_ips(self, targets: list[str]) -> None:
        """The IP task: expand targets, then one discovery round with the IPs as hosts, then follow-ups."""
        addresses = expand_ip_targets(targets, self.ctx.max_cidr_addresses)
        hosts = {ip: [ip] for ip in addresses if self.in_scope(ip)}
        await self.discovery_round(hosts)
        await self.site_followups()

    async def discovery_round(self, hosts: dict[str, list[str]]) -> list[str]:
        """Scan new IPs of ``hosts``, identify their sites, collect certificates.

        Returns in-scope names learnt from certificate SANs that are not known yet.
        """
        ips = [
            ip for ip in dict.fromkeys(ip for v in hosts.values() for ip in v) if ip not in self.scanned_ips
        ]
        for host, addresses in hosts.items():
            for ip in addresses:
                if host != ip and self.ip_docs.add_names(ip, [host]) and ip in self.ip_docs.stored:
                    self.ip_docs.changed(ip)
        self.place(ips, hosts)
        if self.wants("skip_scan_cdn_ip"):
            ips = self.without_cdn(ips)
        if ips and self.wants("port_scan"):
            await self.scan_hosts(ips)
        self.scanned_ips.update(ips)
        self.save_ips(hosts)
        if self.stopped:
            return []
        if self.wants("site_identify"):
            await self.identify_sites(hosts)
            if self.capture is not None and not self.stopped:
                await self.capture_sites()
        if self.stopped or not self.wants("ssl_cert"):
            return []
        return await self.collect_certs(hosts)

    def place(self, ips: list[str], hosts: dict[str, list[str]]) -> None:
        """CDN, address type and geolocation of new addresses, by their own range and their names' CNAMEs."""
        cnames: dict[str, list[str]] = {}
        for host, addresses in hosts.items():
            record = self.domains.get(host)
            for ip in addresses:
                cnames.setdefault(ip, []).extend(record.cnames if record is not None else [])
        for ip in ips:
            self.ip_docs.annotate(ip, self.places.ip_fields(ip, cnames.get(ip, [])))

    def without_cdn(self, ips: list[str]) -> list[str]:
        """``skip_scan_cdn_ip``: CDN addresses stay out of the port scan (sites are tried on 80 and 443)."""
        cdn = [ip for ip in ips if self.ip_docs.extra.get(ip, {}).get("cdn_name")]
        self.cdn_ips.update(cdn)
        self.counts["skipped_cdn_ip"] = len(self.cdn_ips)
        return [ip for ip in ips if ip not in self.cdn_ips]

    async def site_followups(self) -> None:
        """What runs once over every site found: leaks, templates, Web Info Hunter."""
        self.note_needs()
        if self.stopped:
            return
        if self.wants("file_leak"):
            await self.file_leak()
        if not self.stopped and (self.wants("nuclei_scan") or self.options.get("poc_config")):
            await self.run_templates()
        if not self.stopped and self.wants("web_info_hunter"):
            await self.web_info_hunter()
        if not self.stopped and self.wants("port_scan"):
            await self.service_brute()
        if not self.stopped and self.search_urls:
            await self.store_search_urls()
        if not self.stopped and self.wants("site_spider") and self.wants("site_identify"):
            await self.site_spider()
        if not self.stopped and self.wants("findvhost") and self.wants("site_identify"):
            await self.findvhost()

    def note_needs(self) -> None:
        """Name the options that had nothing to work on because another option was off."""
        if not self.wants("port_scan"):
            for option in ("service_detection", "npoc_service_detection", "os_detection"):
                if self.wants(option):
                    self.skip(option, "needs port_scan")
        if not self.wants("port_scan") and (self.wants("service_brute") or self.options.get("brute_config")):
            self.skip("service_brute", "needs port_scan (the services it checks)")
        if not self.wants("site_identify"):
            for option in ("file_leak", "web_info_hunter", "nuclei_scan", "site_spider", "findvhost"):
                if self.wants(option):
                    self.skip(option, "needs site_identify (the sites it works on)")


def run_domain_task(
    targets: list[str],
    options: dict[str, Any],
    ctx: ReconContext,
    capture: CaptureSettings | None = None,
) -> dict[str, Any]:
    """Run the domain pipeline over ``targets`` and return per-collection counts plus ``partial``.

    ``capture``: the screenshot settings of the ``site_capture`` option (the defaults when None).
    """
    run = ReconRun(ctx, options, capture)
    return run.results(lambda: run.run_domains(targets))


def run_ip_task(
    targets: list[str],
    options: dict[str, Any],
    ctx: ReconContext,
    capture: CaptureSettings | None = None,
    known_ports: Mapping[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Run the IP pipeline over ``targets`` (IPs, CIDRs, ranges) and return counts plus ``partial``.

    ``capture``: the screenshot settings of the ``site_capture`` option (the defaults when None).
    ``known_ports``: ports another source reported per IP, tried by the site stage when the task
    does not scan ports (``fofa_task``).
    """
    run = ReconRun(ctx, options, capture, known_ports)
    return run.results(lambda: run.run_ips(targets))
