"""Pipelines of ``fofa_task`` and ``domain_task_sync_task``.

``fofa_task`` searches FOFA (:mod:`workers.recon.fofa`), stores the hits in the
``fofa`` collection, then runs the ip_task pipeline over the in-scope IPs FOFA
returned; without ``port_scan`` its sites are fetched on the web ports FOFA reported
(the pipeline's ``known_ports``).  ``domain_task_sync_task`` merges a finished task's domain, IP and site
results into an asset scope (:mod:`workers.recon.assets`).
"""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId

from controlplane.store.results import RECON_KINDS
from workers.context import TaskContext
from workers.recon.assets import sync_into_scope, sync_results, task_scope_id
from workers.recon.fofa import FofaClient, store_hits, unique_addresses, web_ports
from workers.recon.scan import run_ip_task
from workers.recon.screenshot import CaptureSettings
from workers.recon.state import OPTION_KINDS
from workers.tasks.livestats import LiveStatistic
from workers.tasks.shared import recon_context

DEFAULT_SIZE = 100
SUCCESS = "SUCCESS"
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")


def fofa_client(data: dict[str, Any], ctx: TaskContext) -> FofaClient:
    """A FOFA client with the key/email of the task's options, else of ``recon`` config."""
    options = data.get("options") or {}
    recon = ctx.config.recon
    return FofaClient(
        recon.fofa_url,
        str(options.get("email") or recon.fofa_email or ""),
        str(options.get("key") or recon.fofa_key or ""),
    )


def fofa_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Search FOFA for ``data["query"]``, store the hits, then scan the in-scope IPs like ip_task.

    Options: ``size`` (results wanted, default 100, capped by the account's remaining
    allowance), ``page`` (first page, default 1), ``key``/``email`` (override config), and
    the ip_task options (port scan, sites, certificates, file leaks; with ``port_scan`` off the
    sites are fetched on the ports FOFA reported) and ``scope_id`` (the results are merged into
    that asset scope at the end, as ip_task does).  Progress stage
    ``fofa`` comes first, then the ip pipeline's stages.  Returns the number of stored hits
    (``fofa``), of distinct IPs (``fofa_ip``), of IPs skipped as out of scope
    (``out_of_scope``), the ip pipeline's per-collection counts and ``partial``.
    A rejected key or an exhausted quota raises :class:`workers.recon.fofa.FofaError`.
    """
    query = str(data.get("query") or "").strip()
    if not query:
        raise ValueError("fofa_task needs a non-empty query")
    options = dict(data.get("options") or {})
    size = int(options.get("size") or DEFAULT_SIZE)
    client = fofa_client(data, ctx)
    ctx.progress("fofa", 0, size, force=True)
    found = client.search_all(
        query,
        size,
        start_page=int(options.get("page") or 1),
        on_page=lambda done, wanted: ctx.progress("fofa", done, wanted),
        should_stop=ctx.should_stop,
    )
    ctx.check_stop()
    stored = store_hits(ctx.store.db, ctx.task_id, found.hits)
    ctx.progress("fofa", len(found.hits), len(found.hits), force=True)
    recon = recon_context(ctx)
    addresses = unique_addresses(found.hits)
    targets = [ip for ip in addresses if recon.scope_check(ip)]
    stats: dict[str, Any] = {
        "fofa": stored,
        "fofa_ip": len(addresses),
        "out_of_scope": len(addresses) - len(targets),
    }
    if targets:
        recon.max_cidr_addresses = max(recon.max_cidr_addresses, len(targets))
        capture = CaptureSettings.from_config(ctx.config.recon)
        ports = web_ports(found.hits)
        with LiveStatistic(ctx, ("fofa", *RECON_KINDS), OPTION_KINDS):
            stats.update(run_ip_task(targets, options, recon, capture, known_ports=ports))
    else:
        stats.update({**dict.fromkeys(RECON_KINDS, 0), "partial": False})
    stats.update(sync_into_scope(ctx.store.db, ctx.task_id, task_scope_id(data)))
    return ctx.finish(stats)


def find_source_task(ctx: TaskContext, reference: str) -> dict[str, Any]:
    """The task document ``reference`` names (a celery_id or a document ``_id``), finished with SUCCESS.

    Raises ValueError saying why when there is no such task or it has not succeeded.
    """
    ref = reference.strip()
    if not ref:
        raise ValueError("domain_task_sync_task needs the id of the task to sync (task_id)")
    query: dict[str, Any] = {"celery_id": ref}
    if _OBJECT_ID.fullmatch(ref):
        query = {"$or": [{"_id": ObjectId(ref)}, {"celery_id": ref}]}
    doc = ctx.store.tasks.find_one(query, {"_id": 1, "celery_id": 1, "status": 1, "data.task_id": 1})
    if doc is None:
        raise ValueError(f"source task {ref} does not exist")
    status = doc.get("status")
    if status != SUCCESS:
        raise ValueError(
            f"source task {ref} is {status}; only a task that finished with SUCCESS can be synced"
        )
    return dict(doc)


def domain_task_sync_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Merge the domain, IP and site results of a successful task into the asset scope ``scope_id``.

    ``data["source_task_id"]`` (the client's ``task_id``) names the source task by celery_id or
    document id.  Idempotent: a second run adds nothing.  Returns, per kind, the assets added
    and the known ones seen again (see :func:`workers.recon.assets.sync_results`).
    """
    scope_id = str(data.get("scope_id") or "").strip()
    if not scope_id:
        raise ValueError("domain_task_sync_task needs a scope_id")
    source = find_source_task(ctx, str(data.get("source_task_id") or ""))
    task_id = str(source["_id"])
    tags = [str(t) for t in (source.get("celery_id"), (source.get("data") or {}).get("task_id")) if t]
    ctx.progress("sync", 0, 1, force=True)
    stats: dict[str, Any] = dict(sync_results(ctx.store.db, task_id, scope_id, result_tags=tags))
    ctx.progress("sync", 1, 1, force=True)
    stats["partial"] = False
    return ctx.finish(stats)
