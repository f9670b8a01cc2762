"""The recon pipeline behind ``domain_task`` and ``ip_task``: discovery, scanning, sites, certs, leaks.

Entry points :func:`run_domain_task` and :func:`run_ip_task` are synchronous (they run their own
asyncio loop) so they can be called straight from a Celery prefork child.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymongo import UpdateOne

from controlplane.store.results import RECON_KINDS, ResultWriter
from workers.recon.certs import fetch_certificate_der, parse_certificate
from workers.recon.context import ReconContext, ScopeCheck
from workers.recon.control import Batcher, run_pool
from workers.recon.datafiles import load_leak_paths, load_wordlist, ports_for_preset
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, detect_wildcard, resolve_names
from workers.recon.fileleak import LeakFinding, check_site
from workers.recon.fingerprints import load_rules
from workers.recon.nmap import nmap_path, run_nmap
from workers.recon.portscan import PortInfo, scan_ports
from workers.recon.run import Run
from workers.recon.screenshot import CaptureSettings, SiteCapture
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
RESULT_BATCH = 500
RESULT_INTERVAL = 1.0
"""Results go to the store in batches of at most this many, at least once a second while found."""


class IpDocuments:
    """The run's ``ip`` documents, written while ports are found and rewritten as they are learnt.

    :meth:`changed` marks an address whose ports (or names) changed: its document is inserted the
    first time and its port list rewritten after that (``$set``; the embedded server mangles a
    ``$push`` of documents). The writes go out in batches (:class:`Batcher`), so a stopped or
    killed run keeps what it found up to the last second.
    """

    def __init__(
        self, store: ResultWriter, open_ports: dict[str, dict[int, PortInfo]], with_ports: bool
    ) -> None:
        self.store = store
        self.open_ports = open_ports
        self.with_ports = with_ports
        self.names: dict[str, list[str]] = {}
        self.stored: set[str] = set()
        self.batch: Batcher[str] = Batcher(self._write, RESULT_BATCH, RESULT_INTERVAL)

    def changed(self, ip: str) -> None:
        """``ip``'s ports or names changed: write its document with the next batch."""
        self.batch.add(ip)

    def add_names(self, ip: str, names: list[str]) -> bool:
        """Remember host names of ``ip``; True when some were new."""
        known = self.names.setdefault(ip, [])
        fresh = [n for n in names if n not in known]
        known.extend(fresh)
        return bool(fresh)

    def _write(self, ips: list[str]) -> None:
        inserts: list[dict[str, Any]] = []
        updates: list[UpdateOne] = []
        for ip in dict.fromkeys(ips):
            info = self.open_ports.get(ip, {})
            ports = [info[p].to_doc() for p in sorted(info)] if self.with_ports else []
            names = self.names.get(ip, [])
            if ip not in self.stored:
                self.stored.add(ip)
                inserts.append({"ip": ip, "domains": list(names), "ports": ports, "port_count": len(ports)})
                continue
            change: dict[str, Any] = {"$set": {"ports": ports, "port_count": len(ports)}}
            if names:
                change["$addToSet"] = {"domains": {"$each": list(names)}}
            updates.append(UpdateOne({"task_id": self.store.task_id, "ip": ip}, change))
        self.store.insert("ip", inserts)
        if updates:
            self.store.db["ip"].bulk_write(updates, ordered=False)


class ReconRun(Run):
    """One execution of the pipeline: a :class:`Run` with the accumulated assets and the result writer."""

    def __init__(
        self, ctx: ReconContext, options: dict[str, Any], capture: CaptureSettings | None = None
    ) -> None:
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
        self.open_ports: dict[str, dict[int, PortInfo]] = {}
        self.ip_docs = IpDocuments(self.store, self.open_ports, bool(options.get("port_scan")))
        self.domain_docs: Batcher[DomainRecord] = Batcher(
            lambda records: self.store.insert("domain", (self._domain_doc(r) for r in records)),
            RESULT_BATCH,
            RESULT_INTERVAL,
        )
        self.sites: dict[str, SiteResult] = {}
        self.cert_keys: set[tuple[str, int]] = set()
        self._dns: DnsClient | None = None
        self.capture: SiteCapture | None = None
        if options.get("site_capture"):
            self.capture = SiteCapture(capture or CaptureSettings(), ctx.db, ctx.task_id, self.in_scope)
            if not options.get("site_identify"):
                self.capture.unavailable = "needs site_identify"

    def dns(self) -> DnsClient | None:
        """The DNS client (None when no resolvers were configured)."""
        if self._dns is None and self.ctx.resolvers:
            self._dns = DnsClient(self.ctx.resolvers, self.ctx.dns_timeout, self.ctx.concurrency)
        return self._dns

    def settle(self, partial: bool) -> None:
        """Write what is still queued, close the DNS client, clear the partial flag if the run completed."""
        self.domain_docs.flush()
        self.ip_docs.batch.flush()
        if self._dns is not None:
            self._dns.close()
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
        if self.capture is not None:
            stats.update(self.capture.stats())
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

    def wordlist(self) -> Sequence[str]:
        """The labels to brute-force: the bundled list named by ``domain_brute_type``."""
        return load_wordlist(str(self.options.get("domain_brute_type") or "small"))

    async def brute_force(self) -> None:
        """Stage domain_brute: wildcard detection then wordlist brute force for every root domain.

        Every real name found is stored at once (in batches), so a stopped run keeps them.
        """
        client = self.dns()
        assert client is not None
        labels = self.wordlist()
        total = len(labels) * len(self.roots)
        report = self.reporter("domain_brute", total)
        offset = 0
        found: dict[str, DomainRecord] = {}

        def keep(record: DomainRecord) -> None:
            if record.domain not in self.domains:
                self.domains[record.domain] = record
                self.host_ips[record.domain] = record.ips
                self.domain_docs.add(record)

        for root in self.roots:
            self.wildcards[root] = wildcard = Wildcard()

            async def brute(root: str = root, wildcard: Wildcard = wildcard, base: int = offset) -> None:
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
                    on_found=keep,
                )

            finished = await self.step(brute())
            offset += len(labels)
            if not finished:
                break
        self.domain_docs.flush()

    async def resolve(self, names: list[str], *, source: str, keep_empty: bool) -> None:
        """Stage resolve: look ``names`` up, store their domain documents, and group IPs by host."""
        client = self.dns()
        assert client is not None
        todo = [n for n in dict.fromkeys(names) if n not in self.domains]
        found: dict[str, DomainRecord] = {}
        report = self.reporter("resolve", len(todo))

        def keep(record: DomainRecord) -> None:
            self.domains[record.domain] = record
            self.host_ips[record.domain] = record.ips
            self.domain_docs.add(record)

        await self.step(
            resolve_names(
                client,
                todo,
                found,
                source=source,
                concurrency=self.ctx.concurrency,
                on_progress=report,
                on_found=keep,
            )
        )
        if keep_empty and not self.stopped:
            for name in todo:
                if name not in self.domains:
                    keep(DomainRecord(domain=name, source=source))
        self.domain_docs.flush()

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
        for host, addresses in hosts.items():
            for ip in addresses:
                if host != ip and self.ip_docs.add_names(ip, [host]) and ip in self.ip_docs.stored:
                    self.ip_docs.changed(ip)
        if ips and self.options.get("port_scan"):
            await self.port_scan(ips)
            if not self.stopped and self.options.get("service_detection"):
                await self.detect_services(ips)
        self.scanned_ips.update(ips)
        self.save_ips(hosts)
        if self.stopped:
            return []
        if self.options.get("site_identify"):
            await self.identify_sites(hosts)
            if self.capture is not None and not self.stopped:
                await self.capture_sites()
        if self.stopped or not self.options.get("ssl_cert"):
            return []
        return await self.collect_certs(hosts)

    async def port_scan(self, ips: list[str]) -> None:
        """Stage port_scan: connect scan (or nmap) over ``ips`` with the configured preset.

        Open ports are stored as they are found (see :class:`IpDocuments`).
        """
        ports = ports_for_preset(
            str(self.options.get("port_scan_type") or "test"), self.options.get("port_custom")
        )
        deadline = float(self.options.get("port_scan_timeout") or DEFAULT_SCAN_DEADLINE)
        total = len(ips) * len(ports)
        report = self.reporter("port_scan", total)

        def opened(ip: str, info: PortInfo) -> None:
            self.open_ports.setdefault(ip, {}).setdefault(info.port, info)
            self.ip_docs.changed(ip)

        found: dict[str, dict[int, PortInfo]] = {}
        if self.options.get("use_nmap") and nmap_path():
            scan = run_nmap(
                ips,
                ports,
                found,
                service_detection=bool(self.options.get("service_detection")),
                connect_timeout=self.ctx.connect_timeout,
                on_open=opened,
                on_progress=lambda fraction: report(int(total * fraction)),
            )
        else:
            host_timeout = self.options.get("port_scan_host_timeout")
            scan = scan_ports(
                ips,
                ports,
                found,
                connect_timeout=self.ctx.connect_timeout,
                concurrency=self.ctx.scan_concurrency,
                retries=self.ctx.scan_retries,
                host_timeout=float(host_timeout) if host_timeout else None,
                on_progress=lambda done, _: report(done),
                on_open=opened,
            )
        finished = await self.step(scan, timeout=deadline)
        if finished:
            report(total)
        self.ip_docs.batch.flush()

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
            self.ip_docs.changed(ip)
            done += 1
            report(done)

        await self.step(run_pool(targets, probe, self.ctx.concurrency))
        self.ip_docs.batch.flush()

    def save_ips(self, hosts: dict[str, list[str]]) -> None:
        """Store the ``ip`` documents not written yet of the round's addresses with open ports or names."""
        for ip in dict.fromkeys(ip for v in hosts.values() for ip in v):
            if ip not in self.ip_docs.stored and (self.open_ports.get(ip) or self.ip_docs.names.get(ip)):
                self.ip_docs.changed(ip)
        self.ip_docs.batch.flush()

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


def run_domain_task(
    targets: list[str], options: dict[str, Any], ctx: ReconContext, capture: CaptureSettings | None = None
) -> dict[str, Any]:
    """Run the domain pipeline over ``targets`` and return per-collection counts plus ``partial``.

    ``capture``: the screenshot settings of the ``site_capture`` option (the defaults when None).
    """
    run = ReconRun(ctx, options, capture)
    return run.results(lambda: run.run_domains(targets))


def run_ip_task(
    targets: list[str], options: dict[str, Any], ctx: ReconContext, capture: CaptureSettings | None = None
) -> dict[str, Any]:
    """Run the IP pipeline over ``targets`` (IPs, CIDRs, ranges) and return counts plus ``partial``.

    ``capture``: the screenshot settings of the ``site_capture`` option (the defaults when None).
    """
    run = ReconRun(ctx, options, capture)
    return run.results(lambda: run.run_ips(targets))
