"""The recon pipeline behind ``domain_task`` and ``ip_task``: discovery, scanning, sites, certs, leaks.

Entry points :func:`run_domain_task` and :func:`run_ip_task` are synchronous (they run their own
asyncio loop) so they can be called straight from a Celery prefork child.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.store.results import RECON_KINDS, ResultWriter
from workers.recon.certs import fetch_certificate_der, parse_certificate
from workers.recon.context import ReconContext, ScopeCheck
from workers.recon.control import run_pool
from workers.recon.datafiles import load_leak_paths, load_wordlist, ports_for_preset
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, detect_wildcard, resolve_names
from workers.recon.fileleak import LeakFinding, check_site
from workers.recon.fingerprints import load_rules
from workers.recon.nmap import nmap_path, run_nmap
from workers.recon.portscan import PortInfo, scan_ports
from workers.recon.run import Run
from workers.recon.services import detect_service
from workers.recon.sites import Endpoint, SiteResult, identify_site
from workers.recon.targets import expand_ip_targets, is_ip, is_subdomain, normalize_domain

log = logging.getLogger(__name__)

STAGES = (
    "domain_brute",
    "resolve",
    "port_scan",
    "service_detection",
    "site_identify",
    "ssl_cert",
    "file_leak",
)
MAX_DISCOVERY_ROUNDS = 3
SITE_CONCURRENCY = 50
LEAK_SITE_CONCURRENCY = 16
DEFAULT_SCAN_DEADLINE = 3600.0


class ReconRun(Run):
    """One execution of the pipeline: a :class:`Run` with the accumulated assets and the result writer."""

    def __init__(self, ctx: ReconContext, options: dict[str, Any]) -> None:
        super().__init__(ctx)
        self.options = options
        self.store = ResultWriter(ctx.db, ctx.task_id, RECON_KINDS)
        self.in_scope = ScopeCheck(ctx)
        self.rules = load_rules(options.get("extra_fingerprint_files") or ())
        self.roots: list[str] = []
        self.wildcards: dict[str, Wildcard] = {}
        self.domains: dict[str, DomainRecord] = {}
        self.host_ips: dict[str, list[str]] = {}
        self.scanned_ips: set[str] = set()
        self.stored_ips: set[str] = set()
        self.open_ports: dict[str, dict[int, PortInfo]] = {}
        self.sites: dict[str, SiteResult] = {}
        self.cert_keys: set[tuple[str, int]] = set()
        self._dns: DnsClient | None = None

    def dns(self) -> DnsClient | None:
        """The DNS client (None when no resolvers were configured)."""
        if self._dns is None and self.ctx.resolvers:
            self._dns = DnsClient(self.ctx.resolvers, self.ctx.dns_timeout, self.ctx.concurrency)
        return self._dns

    def settle(self, partial: bool) -> None:
        """Clear the partial flag of the run's results when it completed."""
        self.store.finish(partial)

    def results(self, body: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        """Run ``body`` (see :meth:`Run.execute`) over indexed result collections.

        Returns how many documents each collection holds for the task, and ``partial``.
        """

        async def indexed() -> None:
            self.store.ensure_indexes()
            await body()

        complete = self.execute(indexed)
        stats: dict[str, Any] = dict(self.store.counts())
        stats["partial"] = not complete
        return stats

    async def run_domains(self, targets: list[str]) -> None:
        """The domain task: brute force, resolve, then scan / identify / collect in discovery rounds."""
        self.roots = list(dict.fromkeys(normalize_domain(t) for t in targets))
        if self.dns() is None:
            raise ValueError("domain tasks need at least one DNS resolver")
        if self.options.get("domain_brute"):
            await self.brute_force()
        if self.stopped:
            return
        await self.resolve(self.roots, source="target", keep_empty=True)
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
        if not self.stopped and self.options.get("file_leak"):
            await self.file_leak()

    async def run_ips(self, targets: list[str]) -> None:
        """The IP task: expand targets, then one discovery round with the IPs as hosts, then leaks."""
        addresses = expand_ip_targets(targets, self.ctx.max_cidr_addresses)
        hosts = {ip: [ip] for ip in addresses if self.in_scope(ip)}
        await self.discovery_round(hosts)
        if not self.stopped and self.options.get("file_leak"):
            await self.file_leak()

    async def brute_force(self) -> None:
        """Stage domain_brute: wildcard detection then wordlist brute force for every root domain."""
        client = self.dns()
        assert client is not None
        labels = load_wordlist(str(self.options.get("domain_brute_type") or "small"))
        total = len(labels) * len(self.roots)
        report = self.reporter("domain_brute", total)
        offset = 0
        for root in self.roots:
            self.wildcards[root] = wildcard = Wildcard()
            found: dict[str, DomainRecord] = {}

            async def brute(
                root: str = root, wildcard: Wildcard = wildcard, found: dict = found, base: int = offset
            ) -> None:
                detected = await detect_wildcard(client, root)
                wildcard.ips, wildcard.cnames = detected.ips, detected.cnames
                await resolve_names(
                    client,
                    (f"{label}.{root}" for label in labels),
                    found,
                    source="brute",
                    concurrency=self.ctx.concurrency,
                    wildcard=wildcard,
                    on_progress=lambda done: report(base + done),
                )

            finished = await self.step(brute())
            for name, record in found.items():
                self.domains.setdefault(name, record)
            offset += len(labels)
            if not finished:
                return

    async def resolve(self, names: list[str], *, source: str, keep_empty: bool) -> None:
        """Stage resolve: look ``names`` up, store their domain documents, and group IPs by host."""
        client = self.dns()
        assert client is not None
        todo = [n for n in dict.fromkeys(names) if n not in self.domains]
        found: dict[str, DomainRecord] = {}
        report = self.reporter("resolve", len(todo))
        await self.step(
            resolve_names(
                client, todo, found, source=source, concurrency=self.ctx.concurrency, on_progress=report
            )
        )
        for name in todo:
            if name in found:
                self.domains[name] = found[name]
            elif keep_empty:
                self.domains[name] = DomainRecord(domain=name, source=source)
        fresh = [self.domains[n] for n in self.domains if n not in self.host_ips]
        for record in fresh:
            self.host_ips[record.domain] = record.ips
        self.store.insert("domain", (self._domain_doc(r) for r in fresh))

    @staticmethod
    def _domain_doc(record: DomainRecord) -> dict[str, Any]:
        return {
            "domain": record.domain,
            "type": record.record_type,
            "record": record.cnames if record.cnames else record.ips,
            "ips": record.ips,
            "a": record.a,
            "aaaa": record.aaaa,
            "cnames": record.cnames,
            "source": record.source,
        }

    async def discovery_round(self, hosts: dict[str, list[str]]) -> list[str]:
        """Scan new IPs of ``hosts``, identify their sites, collect certificates.

        Returns in-scope names learnt from certificate SANs that are not known yet.
        """
        ips = [
            ip for ip in dict.fromkeys(ip for v in hosts.values() for ip in v) if ip not in self.scanned_ips
        ]
        if ips and self.options.get("port_scan"):
            await self.port_scan(ips)
            if not self.stopped and self.options.get("service_detection"):
                await self.detect_services(ips)
        elif ips:
            for ip in ips:
                self.open_ports.setdefault(ip, {})
        self.scanned_ips.update(ips)
        self.save_ips(hosts)
        if self.stopped:
            return []
        if self.options.get("site_identify"):
            await self.identify_sites(hosts)
        if self.stopped or not self.options.get("ssl_cert"):
            return []
        return await self.collect_certs(hosts)

    async def port_scan(self, ips: list[str]) -> None:
        """Stage port_scan: connect scan (or nmap) over ``ips`` with the configured preset."""
        ports = ports_for_preset(
            str(self.options.get("port_scan_type") or "test"), self.options.get("port_custom")
        )
        found: dict[str, dict[int, PortInfo]] = {}
        deadline = float(self.options.get("port_scan_timeout") or DEFAULT_SCAN_DEADLINE)
        report = self.reporter("port_scan", len(ips) * len(ports))
        if self.options.get("use_nmap") and nmap_path():
            scan = run_nmap(
                ips,
                ports,
                found,
                service_detection=bool(self.options.get("service_detection")),
                connect_timeout=self.ctx.connect_timeout,
            )
        else:
            host_timeout = self.options.get("port_scan_host_timeout")
            scan = scan_ports(
                ips,
                ports,
                found,
                connect_timeout=self.ctx.connect_timeout,
                concurrency=self.ctx.concurrency,
                host_timeout=float(host_timeout) if host_timeout else None,
                on_progress=lambda done, total: report(done),
            )
        finished = await self.step(scan, timeout=deadline)
        if finished:
            report(len(ips) * len(ports))
        for ip in ips:
            self.open_ports.setdefault(ip, {}).update(found.get(ip, {}))

    async def detect_services(self, ips: list[str]) -> None:
        """Stage service_detection: banner / TLS / HTTP probes on every open port of ``ips``."""
        targets = [
            (ip, port) for ip in ips for port, info in self.open_ports.get(ip, {}).items() if not info.service
        ]
        report = self.reporter("service_detection", len(targets))
        done = 0

        async def probe(target: tuple[str, int]) -> None:
            nonlocal done
            ip, port = target
            self.open_ports[ip][port] = await detect_service(ip, port, timeout=self.ctx.connect_timeout)
            done += 1
            report(done)

        await self.step(run_pool(targets, probe, self.ctx.concurrency))

    def save_ips(self, hosts: dict[str, list[str]]) -> None:
        """Store ``ip`` documents for newly scanned IPs; add newly seen host names to stored ones."""
        names_by_ip: dict[str, list[str]] = {}
        for host, ips in hosts.items():
            for ip in ips:
                if host != ip:
                    names_by_ip.setdefault(ip, []).append(host)
        docs = []
        for ip in dict.fromkeys(ip for v in hosts.values() for ip in v):
            ports = self.open_ports.get(ip, {})
            if ip in self.stored_ips:
                if names_by_ip.get(ip):
                    self.ctx.db["ip"].update_one(
                        {"task_id": self.ctx.task_id, "ip": ip},
                        {"$addToSet": {"domains": {"$each": names_by_ip[ip]}}},
                    )
                continue
            if not ports and not names_by_ip.get(ip):
                continue
            self.stored_ips.add(ip)
            docs.append(
                {
                    "ip": ip,
                    "domains": names_by_ip.get(ip, []),
                    "ports": [ports[p].to_doc() for p in sorted(ports)]
                    if self.options.get("port_scan")
                    else [],
                    "port_count": len(ports) if self.options.get("port_scan") else 0,
                }
            )
        self.store.insert("ip", docs)

    def _web_ports(self, ip: str) -> list[tuple[int, list[str]]]:
        """(port, schemes to try) for every port of ``ip`` that may serve HTTP."""
        if not self.options.get("port_scan"):
            return [(80, ["http"]), (443, ["https"])]
        out = []
        for port, info in sorted(self.open_ports.get(ip, {}).items()):
            if info.service == "http":
                out.append((port, ["http"]))
            elif info.service == "https":
                out.append((port, ["https"]))
            elif not info.service:
                out.append((port, ["https", "http"]))
        return out

    async def locate(self, host: str) -> str | None:
        """An in-scope IP for ``host`` (for redirects), resolving names not seen yet."""
        if not self.in_scope(host):
            return None
        if is_ip(host):
            return host
        ips = self.host_ips.get(host)
        if ips is None:
            client = self.dns()
            record = await client.lookup(host) if client is not None else None
            ips = record.ips if record is not None else []
        return next((ip for ip in ips if self.in_scope(ip)), None)

    async def identify_sites(self, hosts: dict[str, list[str]]) -> None:
        """Stage site_identify: fetch every (host, web port) once, trying the candidate schemes in order."""
        candidates: dict[tuple[str, int], tuple[str, list[str]]] = {}
        for host, ips in hosts.items():
            for ip in ips:
                for port, schemes in self._web_ports(ip):
                    candidates.setdefault((host, port), (ip, schemes))
        report = self.reporter("site_identify", len(candidates))
        found: list[SiteResult] = []
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
                    found.append(site)
                    break
            done += 1
            report(done)

        await self.step(run_pool(candidates.items(), probe, min(SITE_CONCURRENCY, self.ctx.concurrency)))
        fresh = [s for s in found if s.site not in self.sites]
        for site in fresh:
            self.sites[site.site] = site
        self.store.insert("site", (s.to_doc() for s in fresh))

    def _tls_ports(self, ip: str) -> list[int]:
        ports = {p for p, info in self.open_ports.get(ip, {}).items() if info.tls or info.service == "https"}
        ports.update(s.port for s in self.sites.values() if s.ip == ip and s.scheme == "https")
        if self.options.get("port_scan") and not self.options.get("service_detection"):
            ports.update(self.open_ports.get(ip, {}))
        return sorted(ports)

    async def collect_certs(self, hosts: dict[str, list[str]]) -> list[str]:
        """Stage ssl_cert: fetch certificates of TLS endpoints; return new in-scope SAN names."""
        endpoints: dict[tuple[str, int], str] = {}
        for host, ips in hosts.items():
            for ip in ips:
                for port in self._tls_ports(ip):
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
        """Stage file_leak: probe the bundled leak paths on every identified site."""
        probes = load_leak_paths()
        sites = list(self.sites.values())
        report = self.reporter("file_leak", len(sites) * len(probes))
        found: list[LeakFinding] = []
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            report(done)

        async def check(site: SiteResult) -> None:
            endpoint = Endpoint(site.scheme, site.hostname, site.ip, site.port)
            await check_site(endpoint, probes, found, timeout=self.ctx.http_timeout, on_probe=tick)

        await self.step(run_pool(sites, check, LEAK_SITE_CONCURRENCY))
        self.store.insert("fileleak", (f.to_doc() for f in found))


def run_domain_task(targets: list[str], options: dict[str, Any], ctx: ReconContext) -> dict[str, Any]:
    """Run the domain pipeline over ``targets`` and return per-collection counts plus ``partial``."""
    run = ReconRun(ctx, options)
    return run.results(lambda: run.run_domains(targets))


def run_ip_task(targets: list[str], options: dict[str, Any], ctx: ReconContext) -> dict[str, Any]:
    """Run the IP pipeline over ``targets`` (IPs, CIDRs, ranges) and return counts plus ``partial``."""
    run = ReconRun(ctx, options)
    return run.results(lambda: run.run_ips(targets))
