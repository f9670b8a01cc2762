"""``domain_exec_task`` and ``ip_exec_task``: one monitoring pass over an asset scope.

The pass runs the recon engine's discovery (:func:`run_domain_task` / :func:`run_ip_task`, results
tagged with the task as usual) on the given targets, or on the scope's own assets when none are
given (its root domains: asset domains not under another asset domain; or its asset IPs). What
the results hold that the scope does not — new subdomains, new IPs, newly open ports on known
IPs, new sites — is written to ``monitor_new``, one document per (task_id, kind, value), and then
merged into the scope.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controlplane.store.results import ResultWriter
from workers.context import TaskContext
from workers.recon.assets import asset_collection, scope_assets, sync_results
from workers.recon.context import ReconContext
from workers.recon.scan import run_domain_task, run_ip_task
from workers.recon.webhook import capped, post_webhook
from workers.tasks.shared import recon_context, required_scope_id, webhook_url

NEW_COLLECTION = "monitor_new"


def root_domains(domains: list[str]) -> list[str]:
    """The domains not under another domain of the list (``a.x.com`` goes when ``x.com`` is there)."""
    names = set(domains)
    return sorted(d for d in names if not any(d.endswith("." + other) for other in names if other != d))


def scope_targets(ctx: ReconContext, scope_id: str, kind: str) -> list[str]:
    """Default targets of a pass: the scope's root domains (kind "domain") or its IPs (kind "ip")."""
    if kind == "domain":
        return root_domains([str(d["domain"]) for d in scope_assets(ctx.db, scope_id, "domain")])
    return [str(d["ip"]) for d in scope_assets(ctx.db, scope_id, "ip")]


def _ports(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(p["port"]): p for p in doc.get("ports") or [] if isinstance(p, dict) and "port" in p}


def new_findings(ctx: ReconContext, scope_id: str) -> list[dict[str, Any]]:
    """What this task's results hold that scope ``scope_id`` does not (before they are merged)."""
    db, task = ctx.db, {"task_id": ctx.task_id}
    found: list[dict[str, Any]] = []
    known_domains = {d["domain"] for d in scope_assets(db, scope_id, "domain")}
    for doc in db["domain"].find(task, {"_id": 0}).sort("domain", 1):
        if doc["domain"] not in known_domains:
            found.append({"kind": "domain", "value": doc["domain"], "detail": {"ips": doc.get("ips", [])}})
    known_ips = {d["ip"]: d for d in scope_assets(db, scope_id, "ip")}
    for doc in db["ip"].find(task, {"_id": 0}).sort("ip", 1):
        ports = _ports(doc)
        if doc["ip"] not in known_ips:
            found.append({"kind": "ip", "value": doc["ip"], "detail": {"ports": sorted(ports)}})
            continue
        old = _ports(known_ips[doc["ip"]])
        for port in sorted(set(ports) - set(old)):
            found.append({"kind": "port", "value": f"{doc['ip']}:{port}", "detail": ports[port]})
    known_sites = {d["site"] for d in scope_assets(db, scope_id, "site")}
    for doc in db["site"].find(task, {"_id": 0}).sort("site", 1):
        if doc["site"] not in known_sites:
            detail = {k: doc.get(k) for k in ("title", "status", "ip", "port", "fingerprints")}
            found.append({"kind": "site", "value": doc["site"], "detail": detail})
    return found


def add_new_ports(ctx: ReconContext, scope_id: str, findings: list[dict[str, Any]]) -> None:
    """Merge newly open ports into the scope's existing IP assets (new IPs come in whole via sync)."""
    by_ip: dict[str, list[dict[str, Any]]] = {}
    for item in findings:
        if item["kind"] == "port":
            ip = item["value"].rsplit(":", 1)[0]
            by_ip.setdefault(ip, []).append(item["detail"])
    collection = ctx.db[asset_collection("ip")]
    for ip, ports in by_ip.items():
        doc = collection.find_one({"scope_id": scope_id, "ip": ip}) or {}
        merged = {**_ports(doc), **{int(p["port"]): p for p in ports}}
        collection.update_one(
            {"scope_id": scope_id, "ip": ip},
            {
                "$set": {
                    "ports": [merged[p] for p in sorted(merged)],
                    "port_count": len(merged),
                    "updated_time": time.time(),
                    "last_seen_task": ctx.task_id,
                }
            },
        )


def monitor_pass(
    kind: str, targets: list[str], options: dict[str, Any], scope_id: str, ctx: ReconContext
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one pass; returns (stats, the new findings as stored)."""
    targets = targets or scope_targets(ctx, scope_id, kind)
    run: Callable[[list[str], dict[str, Any], ReconContext], dict[str, Any]]
    run = run_domain_task if kind == "domain" else run_ip_task
    stats = run(targets, options, ctx) if targets else {"partial": False}
    findings = new_findings(ctx, scope_id)
    store = ResultWriter(ctx.db, ctx.task_id, [NEW_COLLECTION])
    store.ensure_indexes()
    store.insert(NEW_COLLECTION, ({"scope_id": scope_id, **item} for item in findings))
    store.finish(bool(stats.get("partial")))
    add_new_ports(ctx, scope_id, findings)
    synced = sync_results(ctx.db, ctx.task_id, scope_id)
    counts = {
        f"new_{k}": sum(1 for f in findings if f["kind"] == k) for k in ("domain", "ip", "port", "site")
    }
    summary = {
        **stats,
        **counts,
        "targets": len(targets),
        "asset_added": sum(v for k, v in synced.items() if not k.endswith("_updated")),
    }
    return summary, [{"scope_id": scope_id, **item} for item in findings]


def _exec_task(kind: str, data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:

    scope_id = required_scope_id(data)
    options = {k: v for k, v in dict(data.get("options") or {}).items() if k != "scope_id"}
    recon = recon_context(ctx)
    stats, new = monitor_pass(kind, list(data.get("targets") or []), options, scope_id, recon)
    webhook = webhook_url(data, ctx)
    if webhook and new:
        payload = {
            "task_id": ctx.task_id,
            "task_type": ctx.task_type,
            "scope_id": scope_id,
            "new": capped(new),
        }
        stats["webhook"] = post_webhook(webhook, payload, recon)
    return ctx.finish(stats)


def domain_exec_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Monitoring pass over a scope's domains: new subdomains, IPs, ports and sites go to ``monitor_new``."""
    return _exec_task("domain", data, ctx)


def ip_exec_task(data: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Monitoring pass over a scope's IPs: new IPs, ports and sites go to ``monitor_new``."""
    return _exec_task("ip", data, ctx)
