"""The site stages of a recon run: identify sites, screenshots, certificates, file leaks, templates
(``nuclei_scan`` / ``poc_config``) and Web Info Hunter.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from workers.recon.certs import fetch_certificate_der, parse_certificate
from workers.recon.control import Batcher, run_pool
from workers.recon.datafiles import LeakPath, load_leak_paths, parse_leak_groups, read_yaml
from workers.recon.fileleak import LeakFinding, LeakStream, check_site
from workers.recon.ipdocs import RESULT_BATCH, RESULT_INTERVAL
from workers.recon.nuclei import TemplateScan
from workers.recon.sites import Endpoint, SiteResult, identify_site
from workers.recon.state import ReconState
from workers.recon.targets import is_ip, is_subdomain
from workers.recon.wih import load_wih_rules
from workers.recon.wihhunt import Hunt, hunt_site

log = logging.getLogger(__name__)

SITE_CONCURRENCY = 50
LEAK_SITE_CONCURRENCY = 16
WIH_CONCURRENCY = 20


def leak_probes(path: str) -> tuple[LeakPath, ...]:
    """The probes of ``recon.file_leak_list`` (in the ``fileleak.yaml`` format), else the bundled ones."""
    if not path:
        return load_leak_paths()
    return tuple(parse_leak_groups(read_yaml(path), path))


class WebStages(ReconState):
    """Everything done to the web sites a task finds."""

    def web_ports(self, ip: str) -> list[tuple[int, list[str]]]:
        """(port, schemes to try) for every port of ``ip`` that may serve HTTP.

        Without a port scan (or for a CDN address left out of it): 80 and 443, plus the ports another
        source reported (``known_ports``).
        """
        if not self.wants("port_scan") or ip in self.cdn_ips:
            ports = [(80, ["http"]), (443, ["https"])]
            ports += [(p, ["https", "http"]) for p in self.known_ports.get(ip, ()) if p not in (80, 443)]
            return ports
        out = []
        for port, info in sorted(self.open_ports.get(ip, {}).items()):
            if info.service == "http":
                out.append((port, ["http"]))
            elif info.service == "https":
                out.append((port, ["https"]))
            elif not info.service:
                out.append((port, ["https", "http"]))
        return out

    async def identify_sites(self, hosts: dict[str, list[str]]) -> None:
        """Stage site_identify: fetch every (host, web port) once, trying the candidate schemes in order."""
        candidates: dict[tuple[str, int], tuple[str, list[str]]] = {}
        for host, ips in hosts.items():
            for ip in ips:
                for port, schemes in self.web_ports(ip):
                    candidates.setdefault((host, port), (ip, schemes))
        report = self.reporter("site_identify", len(candidates))
        batch: Batcher[SiteResult] = Batcher(
            lambda sites: self.store.insert("site", (s.to_doc() for s in sites)),
            RESULT_BATCH,
            RESULT_INTERVAL,
        )
        done = 0

        async def probe(item: tuple[tuple[str, int], tuple[str, list[str]]]) -> None:
            nonlocal done
            (host, port), (ip, schemes) = item
            for scheme in schemes:
                endpoint = Endpoint(scheme, host, ip, port)
                if endpoint.origin in self.sites:
                    break
                site = await identify_site(endpoint, self.rules, self.locate, self.ctx.http_timeout)
                if site is not None:
                    if site.site not in self.sites:
                        self.sites[site.site] = site
                        batch.add(site)
                    break
            done += 1
            report(done)

        await self.step(run_pool(candidates.items(), probe, min(SITE_CONCURRENCY, self.ctx.concurrency)))
        batch.flush()

    async def capture_sites(self) -> None:
        """Stage site_capture: screenshots of the sites not captured yet (:mod:`workers.recon.screenshot`)."""
        assert self.capture is not None
        hosts = {**self.host_ips, **{ip: [ip] for ip in self.scanned_ips}}
        report = functools.partial(self.progress.report, "site_capture")
        await self.step(self.capture.capture(list(self.sites.values()), hosts, report))

    def tls_ports(self, ip: str) -> list[int]:
        """The ports of ``ip`` that may speak TLS."""
        ports = {p for p, info in self.open_ports.get(ip, {}).items() if info.tls or info.service == "https"}
        ports.update(s.port for s in self.sites.values() if s.ip == ip and s.scheme == "https")
        if self.wants("port_scan") and not self.wants("service_detection"):
            ports.update(self.open_ports.get(ip, {}))
        return sorted(ports)

    async def collect_certs(self, hosts: dict[str, list[str]]) -> list[str]:
        """Stage ssl_cert: fetch certificates of TLS endpoints; return new in-scope SAN names."""
        endpoints: dict[tuple[str, int], str] = {}
        for host, ips in hosts.items():
            for ip in ips:
                for port in self.tls_ports(ip):
                    if (host, port) not in self.cert_keys:
                        endpoints.setdefault((host, port), ip)
        report = self.reporter("ssl_cert", len(endpoints))
        docs: list[dict[str, Any]] = []
        sans: set[str] = set()
        done = 0

        async def grab(item: tuple[tuple[str, int], str]) -> None:
            nonlocal done
            (host, port), ip = item
            der = await fetch_certificate_der(
                ip, port, None if is_ip(host) else host, self.ctx.connect_timeout * 3
            )
            if der is not None:
                try:
                    info = parse_certificate(der)
                except ValueError:
                    log.debug("unparsable certificate at %s:%s", ip, port)
                else:
                    docs.append({"host": host, "ip": ip, "port": port, **info.to_doc()})
                    sans.update(info.sans)
            done += 1
            report(done)

        await self.step(run_pool(endpoints.items(), grab, min(SITE_CONCURRENCY, self.ctx.concurrency)))
        self.cert_keys.update(endpoints)
        self.store.insert("cert", docs)
        return sorted(
            name
            for name in sans
            if not name.startswith("*.")
            and name not in self.domains
            and any(is_subdomain(name, root) for root in self.roots)
        )

    async def file_leak(self) -> None:
        """Stage file_leak: probe the leak paths (bundled, or ``recon.file_leak_list``) on every site.

        Leaks are stored as they are found, one per leak of a service with its host names.
        """
        probes = leak_probes(self.ctx.config.file_leak_list)
        sites = list(self.sites.values())
        report = self.reporter("file_leak", len(sites) * len(probes))
        found: list[LeakFinding] = []
        stream = LeakStream(self.store)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            report(done)
            stream.write(found)

        async def check(site: SiteResult) -> None:
            endpoint = Endpoint(site.scheme, site.hostname, site.ip, site.port)
            await check_site(endpoint, probes, found, timeout=self.ctx.http_timeout, on_probe=tick)

        try:
            await self.step(run_pool(sites, check, LEAK_SITE_CONCURRENCY))
        finally:
            stream.write(found, force=True)

    def template_targets(self) -> list[str]:
        """What templates run against: every site, and every open non-web service as ``ip:port``."""
        targets = [s.site for s in self.sites.values()]
        web = {(s.ip, s.port) for s in self.sites.values()}
        for ip, ports in self.open_ports.items():
            targets += [f"{ip}:{port}" for port in sorted(ports) if (ip, port) not in web]
        return targets

    async def run_templates(self) -> None:
        """Stages nuclei_scan (every bundled and configured template) and poc_config (the templates named)."""
        if self.wants("nuclei_scan"):
            selection: dict[str, Any] = {}
        else:
            enabled = [
                p["plugin_name"] for p in self.options.get("poc_config") or () if p.get("enable", True)
            ]
            if not enabled:
                return
            selection = {"ids": enabled}
        config = self.ctx.config
        scan = TemplateScan(
            self.template_targets(),
            selection,
            self.ctx,
            poc_dirs=config.poc_dirs,
            config=config,
            locate=self.locate,
            on_progress=lambda done, total: self.progress.report("poc", done, total),
        )
        if scan.unknown_ids:
            self.skip("poc_config", "no such template: " + ", ".join(scan.unknown_ids[:20]))
        try:
            await self.step(scan.run())
        finally:
            self.more.insert("vuln", scan.docs())
        self.counts["templates_run"] = len(scan.refs)

    async def web_info_hunter(self) -> None:
        """Stage web_info_hunter: the WIH rules over every site's page and scripts, into ``wih``.

        ``wih`` keeps one record per (scope_id, hash): records of a task with ``scope_id`` count
        for that scope; without one they are keyed to the task (``task:<task_id>``).
        """
        rules = load_wih_rules()
        hunt = Hunt()
        sites = list(self.sites.values())
        report = self.reporter("web_info_hunter", len(sites))
        done = 0

        async def one(site: SiteResult) -> None:
            nonlocal done
            doc = {"site": site.site, "hostname": site.hostname, "port": site.port, "scheme": site.scheme}
            await hunt_site(doc, self.locate, rules, hunt, self.ctx.http_timeout)
            done += 1
            report(done)

        await self.step(run_pool(sites, one, WIH_CONCURRENCY))
        scope = str(self.options.get("scope_id") or f"task:{self.ctx.task_id}")
        self.more.insert(
            "wih",
            (
                {**record.to_doc(), "scope_id": scope, "source": source, "site": site}
                for record, source, site in hunt.records.values()
            ),
        )
