"""Posting a task's new findings to a webhook: JSON over HTTP(S), bounded in time, never fatal.

The webhook's host goes through the same scope policy as scan targets (metadata endpoints and
denied ranges are never contacted); certificates are verified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

from controlplane.core.redact import redact_credential_url
from workers.recon.context import ReconContext
from workers.recon.http import HttpError, split_url
from workers.recon.poc.net import http_request
from workers.recon.run import HostLocator

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 10.0
MAX_ITEMS = 1000


async def _post(url: str, payload: dict[str, Any], ctx: ReconContext, timeout: float) -> str:
    scheme, host, port, path = split_url(url)
    ip = await HostLocator(ctx)(host)
    if ip is None:
        return "not sent: the webhook host is out of scope or unresolvable"
    body = json.dumps(payload, default=str).encode()
    response = await http_request(
        ip,
        port,
        tls=scheme == "https",
        host=host,
        method="POST",
        path=path,
        headers=[("Content-Type", "application/json")],
        body=body,
        timeout=timeout,
        ssl_context=ssl.create_default_context(),
    )
    if not 200 <= response.status < 300:
        return f"failed: the webhook answered {response.status}"
    return "sent"


def post_webhook(
    url: str, payload: dict[str, Any], ctx: ReconContext, timeout: float = WEBHOOK_TIMEOUT
) -> str:
    """POST ``payload`` as JSON to ``url``; returns "sent" or why not (logged, never raised)."""
    try:
        outcome = asyncio.run(asyncio.wait_for(_post(url, payload, ctx, timeout), timeout + 1))
    except (HttpError, ValueError, OSError, TimeoutError) as exc:
        outcome = f"failed: {exc}"
    if outcome != "sent":
        log.warning("webhook %s for task %s: %s", redact_credential_url(url), ctx.task_id, outcome)
    return outcome


def capped(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most ``MAX_ITEMS`` items of a webhook list, without Mongo ids."""
    return [{k: v for k, v in item.items() if k != "_id"} for item in items[:MAX_ITEMS]]
