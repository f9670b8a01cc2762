"""A small Python client of the live task feed (``/api/celery_task/ws/``).

::

    import asyncio
    from controlplane.runtime.feedclient import TaskFeed

    async def main():
        feed = TaskFeed("http://127.0.0.1:5013", token="cp_...", task_type=["domain_task"])
        async for change in feed:
            print(change.rev, change.task["celery_id"], change.task["status"])

    asyncio.run(main())

The client reconnects after a dropped connection (or a ``resync`` from a
server it could not keep up with) with capped exponential backoff, resuming
with ``since`` = the last revision it received (or the last ``synced`` or
``heartbeat`` revision, which also mark "everything before is delivered"),
so no change is missed.  On
one connection revisions only grow (replay, then live), so anything at or
below the last revision is dropped: no change is yielded twice.

With a ``status`` or ``task_type`` filter, a task that stops matching it is
yielded once more as a ``leave`` (its new state).  The client remembers the
last :data:`HOLDING` tasks it yielded that have not left, and names them
(``holding``) when it resumes, so a task that left while it was away is a
``leave`` too.

With ``retries`` set, the feed gives up after that many failed connection attempts in
a row (each connection that opens starts the count again) and raises
:class:`FeedUnreachable`; by default it retries for ever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
import websockets.exceptions

log = logging.getLogger(__name__)

PATH = "/api/celery_task/ws/"
#: Tasks a client names as held when it resumes (each id costs ~37 bytes of URL).
HOLDING = 200


class FeedError(Exception):
    """The server refused the subscription (bad token, bad filter): reconnecting would not help."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code} {message}: {data}")
        self.code = code
        self.message = message
        self.data = data


class FeedUnreachable(Exception):
    """The feed could not be reached in ``retries + 1`` attempts in a row; says the last error."""


@dataclass
class Change:
    """One task change: ``kind`` is ``replay`` (since the last revision), ``change`` (live) or
    ``leave`` (a task yielded before no longer matches the filter)."""

    kind: str
    rev: int
    task: dict[str, Any]


def _values(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def feed_url(base: str, **params: Any) -> str:
    """``ws(s)://host/api/celery_task/ws/?...`` from an ``http(s)://`` or ``ws(s)://`` base URL."""
    parts = urlsplit(base if "://" in base else f"http://{base}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.rstrip("/").endswith("/ws") else PATH
    query = urlencode([(k, v) for k, vs in params.items() for v in _values(vs)], doseq=False)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class TaskFeed:
    """Iterate over task changes, for ever, resuming by revision across reconnects."""

    url: str
    token: str | None = None
    celery_id: str | list[str] | None = None
    task_type: str | list[str] | None = None
    status: str | list[str] | None = None
    since: int | None = None
    reconnect: bool = True
    max_backoff: float = 10.0
    open_timeout: float = 10.0
    retries: int | None = None
    connections: int = field(default=0, init=False)
    # Tasks yielded that have not left the filter, oldest first (only with a status or type filter).
    held: dict[str, None] = field(default_factory=dict, init=False)

    def _url(self) -> str:
        return feed_url(
            self.url,
            celery_id=self.celery_id,
            task_type=self.task_type,
            status=self.status,
            since=None if self.since is None else str(self.since),
            holding=",".join(self.held) if self.held and self.since is not None else None,
        )

    def _hold(self, kind: str, celery_id: Any) -> None:
        if not (self.status or self.task_type) or not isinstance(celery_id, str):
            return
        self.held.pop(celery_id, None)
        if kind != "leave":
            self.held[celery_id] = None
            if len(self.held) > HOLDING:
                del self.held[next(iter(self.held))]

    async def __aiter__(self) -> AsyncIterator[Change]:
        delay = 0.2
        failures = 0  # connection attempts in a row that did not open
        while True:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            opened = False
            why = ""
            try:
                async with websockets.connect(
                    self._url(), additional_headers=headers, open_timeout=self.open_timeout, max_size=2**24
                ) as ws:
                    self.connections += 1
                    opened = True
                    failures = 0
                    delay = 0.2
                    async for raw in ws:
                        message = json.loads(raw)
                        kind = message.get("type")
                        if kind in ("replay", "change", "leave"):
                            rev = int(message["rev"])
                            if kind != "leave" and self.since is not None and rev <= self.since:
                                continue
                            self.since = max(self.since or 0, rev)
                            self._hold(kind, message["task"].get("celery_id"))
                            yield Change(kind, rev, message["task"])
                        elif kind in ("synced", "heartbeat") and isinstance(message.get("rev"), int):
                            # Everything at or below these revisions has been delivered already.
                            self.since = max(self.since or 0, message["rev"])
                        elif kind == "error":
                            raise FeedError(
                                message.get("code", 0), message.get("message", ""), message.get("data")
                            )
                        elif kind == "resync":
                            log.warning(
                                "feed: %s; resuming from revision %d", message.get("reason"), self.since
                            )
                            break
            except websockets.exceptions.InvalidStatus as exc:
                body = exc.response.body or b""
                try:
                    envelope = json.loads(body)
                except ValueError:
                    envelope = {"code": exc.response.status_code, "message": "refused"}
                if exc.response.status_code < 500:
                    raise FeedError(
                        envelope.get("code", 0), envelope.get("message", ""), envelope.get("data")
                    ) from None
                why = f"the server answered HTTP {exc.response.status_code}"
                log.warning("feed: %s; retrying", why)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                why = str(exc) or type(exc).__name__
                if opened:
                    log.warning("feed: connection lost (%s); resuming from revision %s", why, self.since)
                else:  # the caller hears of it once, when the retries are spent
                    log.debug("feed: cannot connect (%s); retrying", why)
            if not self.reconnect:
                return
            if not opened:
                failures += 1
                if self.retries is not None and failures > self.retries:
                    raise FeedUnreachable(
                        f"cannot reach {feed_url(self.url)}: {why} ({failures} attempt(s) in a row)"
                    )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)


def progress_bar(progress: dict[str, Any], width: int = 20) -> str:
    """`` [#######.............]  35% port_scan 350/1000`` for a task that reports progress, else ``""``."""
    done, total, stage = progress.get("done"), progress.get("total"), progress.get("stage") or ""
    if not isinstance(done, int) or not isinstance(total, int) or isinstance(done, bool) or total <= 0:
        return f" {stage}" if stage else ""
    ratio = min(max(done / total, 0.0), 1.0)
    filled = round(ratio * width)
    return f" [{'#' * filled}{'.' * (width - filled)}] {ratio:4.0%} {stage} {done}/{total}"


async def watch(feed: TaskFeed, *, as_json: bool = False, out: Any = None) -> None:
    """Print every change as a line (or as JSON) until cancelled (``controlplane watch``)."""
    out = out or sys.stdout
    async for change in feed:
        task = change.task
        if as_json:
            line = json.dumps({"type": change.kind, "rev": change.rev, "task": task}, ensure_ascii=False)
        else:
            step = progress_bar(task.get("progress") or {})
            line = (
                f"{change.rev:>8} {task.get('status', ''):<8} {task.get('task_type', '')} "
                f"{task.get('celery_id', '')}{step}"
            )
            if change.kind == "leave":
                line += " (left the filter)"
        print(line, file=out, flush=True)
