"""The crawling stages of a recon run: search engines (``search_engines``), the site spider
(``site_spider``) and virtual-host discovery (``findvhost``); URLs go to ``url``, virtual hosts
to ``vhost``.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from workers.recon.control import run_pool
from workers.recon.searchengine import SOURCE as SEARCH_SOURCE
from workers.recon.searchengine import SearchEngineError, SearchOutcome, search_domain
from workers.recon.sites import SiteResult
from workers.recon.spider import UrlRecord, fetch_pages, spider_site
from workers.recon.state import ReconState
from workers.recon.vhost import VhostRecord, VhostTarget, find_vhosts

SPIDER_SITES_AT_ONCE = 4


class CrawlStages(ReconState):
    """Search engines, spider and findvhost over what the task found."""

    def url_host_in_scope(self, url: str) -> bool:
        """Whether the host of ``url`` may be contacted."""
        host = urlsplit(url).hostname
        return bool(host) and self.in_scope(str(host))

    async def search_engines(self) -> list[str]:
        """Stage search_engines: ``site:<root>`` on the configured engine for every root.

        Returns the names found (the caller resolves them); the URLs are kept for the spider
        and stored in ``url`` by :meth:`store_search_urls`.
        """
        config = self.ctx.config
        names: list[str] = []
        for index, root in enumerate(self.roots):
            self.progress.report("search_engines", index, len(self.roots))
            outcome = SearchOutcome()
            deadline = time.monotonic() + config.search_engine_time_budget
            try:
                await self.step(
                    search_domain(
                        root,
                        in_scope=self.in_scope,
                        base_url=config.search_engine_url,
                        max_pages=config.search_engine_max_pages,
                        timeout=self.ctx.http_timeout,
                        deadline=deadline,
                        outcome=outcome,
                    )
                )
            except SearchEngineError as exc:
                self.skip("search_engines", str(exc))
                return names
            if outcome.error:
                self.fail("search_engine", outcome.error)
            names += [n for n in outcome.domains if n != root]
            self.search_urls += outcome.urls
            if self.stopped:
                break
        self.progress.report("search_engines", len(self.roots), len(self.roots))
        return names

    async def store_search_urls(self) -> None:
        """Fetch the pages the search engine returned and store them in ``url`` (ARL's page fetch)."""
        if not self.search_urls:
            return
        found: list[UrlRecord] = []
        try:
            await self.step(
                fetch_pages(
                    list(dict.fromkeys(self.search_urls)),
                    self.locate,
                    source=SEARCH_SOURCE,
                    timeout=self.ctx.http_timeout,
                    found=found,
                )
            )
        finally:
            self.more.insert("url", (r.to_doc() for r in found))

    async def site_spider(self) -> None:
        """Stage site_spider: crawl every identified site for same-scope URLs, into ``url``."""
        config = self.ctx.config
        sites = list(self.sites.values())
        report = self.reporter("site_spider", len(sites))
        found: list[UrlRecord] = []
        done = 0

        async def crawl(site: SiteResult) -> None:
            nonlocal done
            seeds = [u for u in self.search_urls if u.startswith(site.site + "/")]
            await spider_site(
                site.site,
                site.ip,
                in_scope=self.url_host_in_scope,
                max_depth=config.spider_max_depth,
                max_pages=config.spider_max_pages,
                timeout=self.ctx.http_timeout,
                deadline=time.monotonic() + config.spider_time_budget,
                seeds=seeds,
                found=found,
            )
            done += 1
            report(done)

        try:
            await self.step(run_pool(sites, crawl, SPIDER_SITES_AT_ONCE))
        finally:
            self.more.insert("url", (r.to_doc() for r in found))

    async def findvhost(self) -> None:
        """Stage findvhost: the task's names as Host headers on every web endpoint found, into ``vhost``."""
        config = self.ctx.config
        targets = list(dict.fromkeys(VhostTarget(s.ip, s.port, s.scheme) for s in self.sites.values()))
        found: list[VhostRecord] = []
        try:
            await self.step(
                find_vhosts(
                    targets,
                    list(self.domains),
                    in_scope=self.in_scope,
                    timeout=self.ctx.http_timeout,
                    deadline=time.monotonic() + config.findvhost_time_budget,
                    max_names=config.findvhost_max_names,
                    found=found,
                    on_progress=lambda done, total: self.progress.report("findvhost", done, total),
                )
            )
        finally:
            self.more.insert("vhost", (r.to_doc() for r in found))
