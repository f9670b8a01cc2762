"""``add_asset_site_task`` and ``asset_site_update``: adding sites to a scope, and re-checking them.

Both store every site they fetch in the recon ``site`` collection tagged with the task, so a run's
results can be read like any recon task's; ``asset_site_update`` also writes change records
(see :mod:`workers.recon.siteassets`).
"""

from __future__ import annotations

from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.context import ReconContext
from workers.recon.control import run_pool
from workers.recon.fingerprints import load_rules
from workers.recon.run import HostLocator, Run
from workers.recon.scan import SITE_CONCURRENCY
from workers.recon.siteassets import CHANGE_COLLECTION, add_sites, apply_refresh, diff_site, known_sites
from workers.recon.sitefetch import asset_endpoint, fetch_sites, unique_candidates
from workers.recon.sites import SiteResult, identify_site
from workers.tasks.shared import recon_context, recon_results, required_scope_id


def _site_concurrency(ctx: ReconContext) -> int:
    return max(1, min(SITE_CONCURRENCY, ctx.concurrency))


def add_site_targets(targets: list[str], scope_id: str, ctx: ReconContext) -> dict[str, Any]:
    """Fetch the target sites that the scope does not hold yet and add those that answer."""
    known = known_sites(ctx.db, scope_id)
    candidates = unique_candidates(targets, known)
    run = Run(ctx)
    found: list[SiteResult] = []
    locate = HostLocator(ctx)
    rules = load_rules()

    async def body() -> None:
        report = run.reporter("site_identify", len(candidates))
        await run.step(
            fetch_sites(
                candidates,
                locate,
                rules,
                timeout=ctx.http_timeout,
                concurrency=_site_concurrency(ctx),
                on_progress=report,
                found=found,
            )
        )

    complete = run.execute(body)
    fresh = [s for s in found if s.site not in known]
    store = recon_results(ctx)
    store.insert("site", (s.to_doc() for s in fresh))
    added = add_sites(ctx.db, scope_id, ctx.task_id, fresh)
    store.finish(not complete)
    return {
        "site": len(fresh),
        "asset_site_added": added,
        "skipped_known": len(targets) - len(candidates) if len(candidates) < len(targets) else 0,
        "partial": not complete,
    }


def update_scope_sites(scope_id: str, ctx: ReconContext) -> dict[str, Any]:
    """Re-fetch every site of the scope; record and apply what changed."""
    assets = list(known_sites(ctx.db, scope_id).values())
    run = Run(ctx)
    locate = HostLocator(ctx)
    rules = load_rules()
    fetched: dict[str, SiteResult | None] = {}

    async def refetch(doc: dict[str, Any]) -> None:
        endpoint = await asset_endpoint(doc, locate)
        site = None
        if endpoint is not None:
            site = await identify_site(endpoint, rules, locate, ctx.http_timeout)
        fetched[doc["site"]] = site
        report(len(fetched))

    report = run.reporter("site_update", len(assets))

    async def body() -> None:
        await run.step(run_pool(assets, refetch, _site_concurrency(ctx)))

    complete = run.execute(body)
    changes = ResultWriter(ctx.db, ctx.task_id, [CHANGE_COLLECTION])
    changes.ensure_indexes()
    records = []
    counts = {"changed": 0, "removed": 0, "new": 0}
    for doc in assets:
        if doc["site"] not in fetched:
            continue
        site = fetched[doc["site"]]
        change = diff_site(doc, site)
        if change is not None:
            counts[change["change"]] += 1
            records.append({"scope_id": scope_id, "site": doc["site"], **change})
        apply_refresh(ctx.db, scope_id, ctx.task_id, doc, site)
    changes.insert(CHANGE_COLLECTION, records)
    changes.finish(not complete)
    store = recon_results(ctx)
    store.insert("site", (s.to_doc() for s in fetched.values() if s is not None))
    store.finish(not complete)
    return {
        "site": sum(1 for s in fetched.values() if s is not None),
        "checked": len(fetched),
        "asset_site_change": changes.count(CHANGE_COLLECTION),
        **counts,
        "partial": not complete,
    }


def add_asset_site_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fetch the target sites and add the new ones to the scope's site assets."""

    stats = add_site_targets(list(data.get("targets") or []), required_scope_id(data), recon_context(ctx))
    return ctx.finish(stats)


def asset_site_update(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Re-fetch every site of the scope; record changes in ``asset_site_change`` and update the assets."""

    return ctx.finish(update_scope_sites(required_scope_id(data), recon_context(ctx)))
