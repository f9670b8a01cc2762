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
from typing import Any

from pymongo.database import Database

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.assets import scope_assets
from workers.recon.context import ReconContext
from workers.recon.control import run_pool
from workers.recon.fingerprints import load_rules
from workers.recon.run import HostLocator, Run
from workers.recon.siteassets import add_sites, known_sites
from workers.recon.sitefetch import Candidate, candidates_for, fetch_sites
from workers.recon.sites import SiteResult
from workers.recon.targets import is_ip
from workers.recon.wih import WihRecord, host_of, load_wih_rules, registrable_suffix
from workers.recon.wihhunt import Hunt, hunt_site
from workers.tasks.shared import recon_context, recon_results, required_scope_id

WIH_COLLECTION = "wih"
SITE_CONCURRENCY = 20


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
