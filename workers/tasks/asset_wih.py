"""``asset_wih_update``: hunt a scope's sites and their JavaScript for endpoints, hosts and secrets.

For every live site of the scope: fetch its front page (following in-scope redirects), then the
scripts it loads (at most ``MAX_SCRIPTS`` per site, ``MAX_SCRIPT_BYTES`` each, in-scope hosts only),
and run the WIH rules over all of it. Records new to the scope go into ``wih`` — unique per
(scope_id, hash) — with the URL they were found in and the task that found them. Domains found
that belong to the scope (same registrable suffix as one of its domains or site hosts, and
allowed by the scope policy) and in-scope URL origins that are not sites yet are fetched as sites
and added to the scope's site assets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from pymongo.database import Database

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.assets import scope_assets
from workers.recon.context import ReconContext
from workers.recon.control import run_pool
from workers.recon.fingerprints import load_rules
from workers.recon.http import HttpError, split_url
from workers.recon.run import HostLocator, Run
from workers.recon.siteassets import add_sites, known_sites
from workers.recon.sitefetch import Candidate, asset_endpoint, candidates_for, fetch_sites
from workers.recon.sites import Endpoint, SiteResult, follow
from workers.recon.targets import is_ip
from workers.recon.wih import (
    WihRecord,
    WihRule,
    extract,
    host_of,
    load_wih_rules,
    registrable_suffix,
    script_sources,
)
from workers.tasks.shared import recon_context, recon_results, required_scope_id

WIH_COLLECTION = "wih"
MAX_SCRIPTS = 20
MAX_SCRIPT_BYTES = 512 * 1024
SITE_CONCURRENCY = 20


@dataclass
class Hunt:
    """What one pass collected: records by hash (with the first source), scripts fetched."""

    records: dict[str, tuple[WihRecord, str, str]] = field(default_factory=dict)
    scripts: int = 0

    def add(self, records: Iterable[WihRecord], source: str, site: str) -> None:
        """Keep each record once, with the first URL it was found in."""
        for record in records:
            self.records.setdefault(record.hash, (record, source, site))


async def hunt_site(
    doc: dict[str, Any], locate: HostLocator, rules: list[WihRule], hunt: Hunt, timeout: float
) -> None:
    """Fetch one site's page and scripts and collect what the rules find."""
    start = await asset_endpoint(doc, locate)
    if start is None:
        return
    try:
        endpoint, response, chain = await follow(start, "/", locate, timeout)
    except HttpError:
        return
    page_url = chain[-1] if chain else endpoint.origin + "/"
    text = response.text()
    hunt.add(extract(text, rules), page_url, doc["site"])
    for src in script_sources(text)[:MAX_SCRIPTS]:
        script_url = urljoin(page_url, src)
        try:
            s_scheme, s_host, s_port, s_path = split_url(script_url)
        except ValueError:
            continue
        s_ip = await locate(s_host)
        if s_ip is None:
            continue
        try:
            script = await Endpoint(s_scheme, s_host, s_ip, s_port).get(s_path, timeout, MAX_SCRIPT_BYTES)
        except HttpError:
            continue
        if script.status == 200:
            hunt.scripts += 1
            hunt.add(extract(script.text(), rules), script_url, doc["site"])


def scope_names(db: Database[Any], scope_id: str, sites: Iterable[dict[str, Any]]) -> set[str]:
    """Every host name the scope knows: its asset domains and its sites' host names."""
    names = {str(d["domain"]) for d in scope_assets(db, scope_id, "domain")}
    names.update(str(s.get("hostname")) for s in sites if s.get("hostname") and not is_ip(str(s["hostname"])))
    return names


def discovery_candidates(
    records: Iterable[WihRecord], known_names: set[str], known_sites: set[str], locate: HostLocator
) -> list[Candidate]:
    """Sites to try: in-scope URL origins that are not sites yet, and new in-scope domains."""
    suffixes = {registrable_suffix(n) for n in known_names}
    out: dict[Candidate, None] = {}

    def belongs(host: str) -> bool:
        return registrable_suffix(host) in suffixes and locate.in_scope(host)

    for record in records:
        if record.type == "url":
            host = host_of(record.value)
            if host and belongs(host):
                for candidate in candidates_for(record.value):
                    if not set(candidate.origins) & known_sites:
                        out.setdefault(candidate)
        elif record.type == "domain" and record.value not in known_names and belongs(record.value):
            for candidate in candidates_for(record.value):
                if not set(candidate.origins) & known_sites:
                    out.setdefault(candidate)
    return list(out)


def hunt_scope(scope_id: str, ctx: ReconContext) -> dict[str, Any]:
    """Run the WIH pass over the scope; returns the stats."""
    sites = [s for s in known_sites(ctx.db, scope_id).values() if s.get("alive", True)]
    rules = load_wih_rules()
    run = Run(ctx)
    locate = HostLocator(ctx)
    hunt = Hunt()
    found_sites: list[SiteResult] = []
    names = scope_names(ctx.db, scope_id, sites)
    site_urls = {str(s["site"]) for s in sites}
    candidates: list[Candidate] = []

    async def body() -> None:
        nonlocal candidates
        report = run.reporter("wih", len(sites))
        done = 0

        async def one(doc: dict[str, Any]) -> None:
            nonlocal done
            await hunt_site(doc, locate, rules, hunt, ctx.http_timeout)
            done += 1
            report(done)

        if not await run.step(run_pool(sites, one, SITE_CONCURRENCY)):
            return
        records = [r for r, _, _ in hunt.records.values()]
        candidates = discovery_candidates(records, names, site_urls, locate)
        await run.step(
            fetch_sites(
                candidates,
                locate,
                load_rules(),
                timeout=ctx.http_timeout,
                concurrency=SITE_CONCURRENCY,
                on_progress=run.reporter("site_identify", len(candidates)),
                found=found_sites,
            )
        )

    complete = run.execute(body)
    store = ResultWriter(ctx.db, ctx.task_id, [WIH_COLLECTION])
    store.ensure_indexes()
    known = {
        d["hash"]
        for d in ctx.db[WIH_COLLECTION].find(
            {"scope_id": scope_id, "hash": {"$in": list(hunt.records)}}, {"hash": 1}
        )
    }
    added = store.insert(
        WIH_COLLECTION,
        (
            {**record.to_doc(), "scope_id": scope_id, "source": source, "site": site}
            for digest, (record, source, site) in hunt.records.items()
            if digest not in known
        ),
    )
    store.finish(not complete)
    fresh = [s for s in found_sites if s.site not in site_urls]
    results = recon_results(ctx)
    results.insert("site", (s.to_doc() for s in fresh))
    results.finish(not complete)
    return {
        "wih": added,
        "wih_found": len(hunt.records),
        "sites_checked": len(sites),
        "scripts": hunt.scripts,
        "site_candidates": len(candidates),
        "asset_site_added": add_sites(ctx.db, scope_id, ctx.task_id, fresh),
        "partial": not complete,
    }


def asset_wih_update(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Web Info Hunter over the scope's sites and their scripts; new in-scope hosts become site assets."""

    return ctx.finish(hunt_scope(required_scope_id(data), recon_context(ctx)))
