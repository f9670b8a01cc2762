"""What every stage of a recon run shares: the options, the result writer, the assets found so far,
and the notes a task reports besides its results (options it could not apply, sources that failed).

The stages live in their own modules as classes deriving from :class:`ReconState`
(:mod:`workers.recon.discovery`, :mod:`workers.recon.portstage`, :mod:`workers.recon.webstages`);
:class:`workers.recon.scan.ReconRun` combines them and orders them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controlplane.store.results import RECON_KINDS, ResultWriter
from workers.recon.context import ReconContext, ScopeCheck
from workers.recon.control import Batcher
from workers.recon.dns import DnsClient, DomainRecord, Wildcard
from workers.recon.fingerprints import load_rules
from workers.recon.ipdocs import RESULT_BATCH, RESULT_INTERVAL, IpDocuments
from workers.recon.placement import Placement
from workers.recon.portscan import PortInfo
from workers.recon.run import Run
from workers.recon.screenshot import CaptureSettings, SiteCapture
from workers.recon.sites import SiteResult
from workers.recon.targets import is_ip

OPTION_KINDS = ("vuln", "wih", "url", "vhost")
"""Result collections only some options write to; the statistic counts them when they hold any."""


class ReconState(Run):
    """A :class:`Run` with the accumulated assets of one recon task and its report.

    ``skipped`` maps an option the task was given but could not apply to the reason (it ends up
    in the statistic as ``skipped_options``); ``failures`` maps a part that failed while the task
    went on (a resolver, a passive source) to what happened. ``known_ports`` are ports other
    sources reported per IP (FOFA): the site stage tries them when the task does not scan ports.
    """

    def __init__(
        self,
        ctx: ReconContext,
        options: dict[str, Any],
        capture: CaptureSettings | None = None,
        known_ports: Mapping[str, list[int]] | None = None,
    ) -> None:
        super().__init__(ctx)
        self.options = options
        self.store = ResultWriter(ctx.db, ctx.task_id, RECON_KINDS)
        self.more = ResultWriter(ctx.db, ctx.task_id, OPTION_KINDS)
        self.in_scope = ScopeCheck(ctx)
        self.rules = load_rules(options.get("extra_fingerprint_files") or ())
        self.known_ports = dict(known_ports or {})
        self.roots: list[str] = []
        self.wildcards: dict[str, Wildcard] = {}
        self.domains: dict[str, DomainRecord] = {}
        self.host_ips: dict[str, list[str]] = {}
        self.scanned_ips: set[str] = set()
        self.open_ports: dict[str, dict[int, PortInfo]] = {}
        self.ip_docs = IpDocuments(self.store, self.open_ports, bool(options.get("port_scan")))
        self.domain_docs: Batcher[DomainRecord] = Batcher(
            lambda records: self.store.insert("domain", (self.domain_doc(r) for r in records)),
            RESULT_BATCH,
            RESULT_INTERVAL,
        )
        self.sites: dict[str, SiteResult] = {}
        self.cert_keys: set[tuple[str, int]] = set()
        self.skipped: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.counts: dict[str, Any] = {}
        self.places = Placement.from_config(ctx.config, self.fail)
        self.cdn_ips: set[str] = set()
        self.search_urls: list[str] = []
        self._dns: DnsClient | None = None
        self.capture: SiteCapture | None = None
        if options.get("site_capture"):
            self.capture = SiteCapture(capture or CaptureSettings(), ctx.db, ctx.task_id, self.in_scope)
            if not options.get("site_identify"):
                self.capture.unavailable = "needs site_identify"

    def wants(self, option: str) -> bool:
        """Whether the task turned ``option`` on."""
        return bool(self.options.get(option))

    def skip(self, option: str, reason: str) -> None:
        """Record that ``option`` was asked for but could not be applied, and why."""
        self.skipped.setdefault(option, reason)

    def fail(self, part: str, reason: str) -> None:
        """Record that ``part`` (``resolver``, ``source:crtsh`` …) failed while the task went on."""
        self.failures[part] = reason

    def dns(self) -> DnsClient | None:
        """The DNS client (None when no resolvers were configured)."""
        if self._dns is None and self.ctx.resolvers:
            self._dns = DnsClient(self.ctx.resolvers, self.ctx.dns_timeout, self.ctx.concurrency)
        return self._dns

    def keep_domain(self, record: DomainRecord) -> None:
        """Remember a resolved name and queue its ``domain`` document (a known name stays as it was)."""
        if record.domain not in self.domains:
            self.domains[record.domain] = record
            self.host_ips[record.domain] = record.ips
            self.domain_docs.add(record)

    def settle(self, partial: bool) -> None:
        """Write what is still queued, close the DNS client, clear the partial flag if the run completed."""
        self.domain_docs.flush()
        self.ip_docs.batch.flush()
        if self._dns is not None:
            self._dns.close()
        self.store.finish(partial)
        self.more.finish(partial)

    def results(self, body: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        """Run ``body`` (see :meth:`Run.execute`) over indexed result collections.

        Returns how many documents each collection holds for the task, ``partial``, and the
        notes: ``skipped_options`` and ``failures`` when there are any, and the stage counters.
        """

        async def indexed() -> None:
            self.store.ensure_indexes()
            self.more.ensure_indexes()
            await body()

        complete = self.execute(indexed)
        stats: dict[str, Any] = dict(self.store.counts())
        stats.update(self.counts)
        for kind in OPTION_KINDS:
            if count := self.more.count(kind):
                stats[kind] = count
        if self.capture is not None:
            capture = self.capture.stats()
            self.skipped.update(capture.pop("skipped_options", {}))
            stats.update(capture)
        if self.skipped:
            stats["skipped_options"] = dict(self.skipped)
        if self.failures:
            stats["failures"] = dict(self.failures)
        if self.places.unavailable():
            stats["geo"] = self.places.unavailable()
        stats["partial"] = not complete
        return stats

    def domain_doc(self, record: DomainRecord) -> dict[str, Any]:
        """The ``domain`` document of a resolved name (with ``cdn_name`` by its CNAME chain)."""
        return {
            "domain": record.domain,
            "type": record.record_type,
            "record": record.cnames if record.cnames else record.ips,
            "ips": record.ips,
            "a": record.a,
            "aaaa": record.aaaa,
            "cnames": record.cnames,
            "source": record.source,
            "cdn_name": self.places.domain_cdn(record.cnames),
        }

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
