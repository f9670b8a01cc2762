"""Finding names under the task's root domains: brute force, passive sources, ARL history, alt-DNS.

Every stage resolves what it learns through the task's resolvers, drops wildcard answers, and
stores each real name at once (in batches), so a stopped run keeps what it found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from workers.recon.datafiles import load_wordlist
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, detect_wildcard, resolve_names
from workers.recon.history import known_subdomains
from workers.recon.state import ReconState

BRUTE_LISTS = {"test": "small", "small": "small", "big": "big"}
"""``domain_brute_type`` -> bundled word list (``test`` is ARL's name for the small list)."""


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
            self.wildcards[root] = await detect_wildcard(self.client(), root)
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

    async def resolve(self, names: Iterable[str], *, source: str, keep_empty: bool) -> None:
        """Stage resolve: look ``names`` up and store the ones that resolve.

        With ``keep_empty`` (the task's own targets) a name that does not resolve is stored too,
        with no records.
        """
        todo = [n for n in dict.fromkeys(names) if n not in self.domains]
        report = self.reporter("resolve", len(todo))
        await self.step(
            resolve_names(
                self.client(),
                todo,
                {},
                source=source,
                concurrency=self.ctx.concurrency,
                on_progress=report,
                on_found=self.keep_domain,
            )
        )
        if keep_empty and not self.stopped:
            for name in todo:
                if name not in self.domains:
                    self.keep_domain(DomainRecord(domain=name, source=source))
        self.domain_docs.flush()

    async def resolve_under(self, root: str, names: Iterable[str], source: str) -> int:
        """Resolve candidates under ``root``, dropping its wildcard answers; returns how many were new."""
        todo = [n for n in dict.fromkeys(names) if n not in self.domains and self.in_scope(n)]
        before = len(self.domains)
        report = self.reporter(source, len(todo))
        await self.step(
            resolve_names(
                self.client(),
                todo,
                {},
                source=source,
                concurrency=self.ctx.concurrency,
                wildcard=await self.wildcard(root),
                on_progress=report,
                on_found=self.keep_domain,
            )
        )
        self.domain_docs.flush()
        return len(self.domains) - before

    async def arl_search(self) -> None:
        """Stage arl_search: names earlier tasks and asset scopes found under each root, re-resolved."""
        total = 0
        for root in self.roots:
            if self.stopped:
                return
            names = known_subdomains(self.ctx.db, root, self.ctx.task_id)
            total += await self.resolve_under(root, names, "arl")
        self.counts["arl_search_found"] = total

    async def passive_sources(self) -> None:
        """Stage dns_query_plugin: not available until the passive source plugins are wired in."""
        self.skip("dns_query_plugin", "passive subdomain sources are not available in this build")

    async def alt_dns(self) -> None:
        """Stage alt_dns: not available until permutation generation is wired in."""
        self.skip("alt_dns", "alt-DNS permutations are not available in this build")
