"""Finding names under the task's root domains: brute force, passive sources, ARL history, alt-DNS.

Every stage resolves what it learns through the task's resolvers, drops wildcard answers, and
stores each real name at once (in batches), so a stopped run keeps what it found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from controlplane.config import ReconConfig
from workers.recon.altdns import AltDnsReport, alt_dns
from workers.recon.datafiles import load_wordlist
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, resolve_names
from workers.recon.history import known_subdomains
from workers.recon.sources import SourceConfig, SourceReport, SourcesSettings, query_sources
from workers.recon.state import ReconState
from workers.recon.targets import is_subdomain
from workers.recon.wildcards import learn_wildcard

BRUTE_LISTS = {"test": "small", "small": "small", "big": "big"}
"""``domain_brute_type`` -> bundled word list (``test`` is ARL's name for the small list)."""


def sources_settings(config: ReconConfig) -> SourcesSettings:
    """The passive sources' settings from ``recon.sources``; FOFA falls back to ``recon.fofa_*``."""
    plugins = config.sources.plugins
    sources = {
        name: SourceConfig(url=entry.url, key=entry.key, email=entry.email, enabled=entry.enabled)
        for name, entry in plugins.items()
    }
    fofa = sources.get("fofa") or SourceConfig()
    sources["fofa"] = SourceConfig(
        url=fofa.url or config.fofa_url,
        key=fofa.key or config.fofa_key,
        email=fofa.email or config.fofa_email,
        enabled=fofa.enabled,
    )
    bounds = config.sources
    return SourcesSettings(
        sources=sources,
        budget=bounds.budget,
        max_requests=bounds.max_requests,
        max_wait=bounds.max_wait,
        rate_retries=bounds.rate_retries,
        request_timeout=bounds.request_timeout,
    )


class ResolutionFailed(RuntimeError):
    """No name of the task resolved because the resolvers did not answer (the task fails with why)."""


class DomainDiscovery(ReconState):
    """The discovery stages of a domain task (see the module docstring)."""

    def client(self) -> DnsClient:
        """The DNS client; domain tasks refuse to start without resolvers."""
        client = self.dns()
        if client is None:
            raise ValueError("domain tasks need at least one DNS resolver")
        return client

    def wordlist(self) -> Sequence[str]:
        """The labels to brute-force: the bundled list named by ``domain_brute_type``."""
        return load_wordlist(BRUTE_LISTS.get(str(self.options.get("domain_brute_type") or "small"), "small"))

    async def wildcard(self, root: str) -> Wildcard:
        """The wildcard answers of ``root`` (detected once per run)."""
        if root not in self.wildcards:
            self.wildcards[root] = await learn_wildcard(self.client(), root)
        return self.wildcards[root]

    async def brute_force(self) -> None:
        """Stage domain_brute: wildcard detection then wordlist brute force for every root domain."""
        client = self.client()
        labels = self.wordlist()
        report = self.reporter("domain_brute", len(labels) * len(self.roots))
        found: dict[str, DomainRecord] = {}
        for offset, root in enumerate(self.roots):
            base = offset * len(labels)

            async def brute(root: str = root, base: int = base) -> None:
                await resolve_names(
                    client,
                    (f"{label}.{root}" for label in labels),
                    found,
                    source="brute",
                    concurrency=self.ctx.concurrency,
                    wildcard=await self.wildcard(root),
                    on_progress=lambda done: report(base + done),
                    on_found=self.keep_domain,
                )

            if not await self.step(brute()):
                break
        self.domain_docs.flush()

    async def lookup(
        self, todo: list[str], source: str, stage: str, wildcard: Wildcard | None = None
    ) -> None:
        """Resolve ``todo`` as stage ``stage``, keeping every name that resolves (with ``source``)."""
        await self.step(
            resolve_names(
                self.client(),
                todo,
                {},
                source=source,
                concurrency=self.ctx.concurrency,
                wildcard=wildcard,
                on_progress=self.reporter(stage, len(todo)),
                on_found=self.keep_domain,
            )
        )
        self.domain_docs.flush()

    async def resolve(self, names: Iterable[str], *, source: str, keep_empty: bool) -> None:
        """Stage resolve: look ``names`` up and store the ones that resolve.

        With ``keep_empty`` (the task's own targets) a name that does not resolve is stored too,
        with no records.
        """
        todo = [n for n in dict.fromkeys(names) if n not in self.domains]
        await self.lookup(todo, source, "resolve")
        if keep_empty and not self.stopped and self.resolution_ok():
            for name in todo:
                if name not in self.domains:
                    self.keep_domain(DomainRecord(domain=name, source=source))
        self.domain_docs.flush()

    async def resolve_under(self, root: str, names: Iterable[str], source: str, stage: str) -> int:
        """Resolve candidates under ``root``, dropping its wildcard answers; returns how many were new."""
        todo = [n for n in dict.fromkeys(names) if n not in self.domains and self.in_scope(n)]
        before = len(self.domains)
        await self.lookup(todo, source, stage, await self.wildcard(root))
        return len(self.domains) - before

    async def arl_search(self) -> None:
        """Stage arl_search: names earlier tasks and asset scopes found under each root, re-resolved."""
        total = 0
        for root in self.roots:
            if self.stopped:
                return
            names = known_subdomains(self.ctx.db, root, self.ctx.task_id)
            total += await self.resolve_under(root, names, "arl", "arl_search")
        self.counts["arl_search_found"] = total

    async def passive_sources(self) -> None:
        """Stage dns_query_plugin: ask the passive sources, then resolve what they name under each root.

        A name keeps the first source that reported it as its ``source``. The statistic gets
        ``dns_query_plugin`` (per source: names reported, failures, skips, requests) and each
        source that failed is also under ``failures`` as ``source:<name>``.
        """
        settings = sources_settings(self.ctx.config)
        first_source: dict[str, str] = {}

        def found(source: str, names: list[str]) -> None:
            for name in names:
                first_source.setdefault(name, source)

        outcome: list[SourceReport] = []

        async def ask() -> None:
            outcome.append(await query_sources(self.roots, settings, timeout=settings.budget, on_found=found))

        self.progress.report("dns_query_plugin", 0, 1)
        await self.step(ask())
        if outcome:
            self.counts["dns_query_plugin"] = outcome[0].to_doc()
            for source, reason in outcome[0].failed.items():
                self.fail(f"source:{source}", reason)
        self.progress.report("dns_query_plugin", 1, 1)
        by_source: dict[tuple[str, str], list[str]] = {}
        for name, source in first_source.items():
            root = next((r for r in self.roots if name == r or is_subdomain(name, r)), None)
            if root is not None and name != root:
                by_source.setdefault((root, source), []).append(name)
        for (root, source), names in by_source.items():
            if self.stopped:
                return
            await self.resolve_under(root, names, source, "dns_query_plugin")

    async def alt_dns(self) -> None:
        """Stage alt_dns: permutations of the names found so far under each root, resolved.

        Wildcard answers are dropped (names under a wildcard zone are confirmed again at the end);
        ``statistic.alt_dns`` counts candidates tried and names found.
        """
        client = self.client()
        reports: list[AltDnsReport] = []
        for root in self.roots:
            if self.stopped:
                break
            known = [n for n in self.domains if n == root or is_subdomain(n, root)]

            async def permute(root: str = root, known: list[str] = known) -> None:
                reports.append(
                    await alt_dns(
                        client,
                        root,
                        known,
                        await self.wildcard(root),
                        limit=self.ctx.config.alt_dns_limit,
                        concurrency=self.ctx.concurrency,
                        on_found=self.keep_domain,
                        on_progress=lambda done, total: self.progress.report("alt_dns", done, total),
                    )
                )

            if not await self.step(permute()):
                break
        self.domain_docs.flush()
        self.counts["alt_dns"] = {
            "candidates": sum(r.candidates for r in reports),
            "found": sum(len(r.found) for r in reports),
        }

    def resolution_ok(self) -> bool:
        """Whether the resolvers answered well enough that a name without records really has none."""
        client = self.dns()
        return client is None or client.health(max_failed=self.ctx.config.dns_max_failed).ok

    def check_resolution(self) -> None:
        """Raise :class:`ResolutionFailed` when lookups failed and nothing resolved at all."""
        if not self.note_dns_health() and not any(r.ips for r in self.domains.values()):
            raise ResolutionFailed("DNS resolution failed: " + self.counts["dns"]["reason"])

    def note_dns_health(self) -> bool:
        """Put the resolvers' health in the statistic (``dns``); False when lookups mostly failed.

        A resolver that failed beside working ones is named under ``failures`` as ``resolver``.
        """
        client = self.dns()
        if client is None:
            return True
        health = client.health(max_failed=self.ctx.config.dns_max_failed)
        self.counts["dns"] = health.to_doc()
        if health.problems:
            self.fail("resolver", health.reason)
        return health.ok
