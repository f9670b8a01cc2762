"""``controlplane check``: validate a config and reach its broker, result backend and database.

Prints one line per check (``ok`` / ``FAIL`` / ``warn``), or with ``--json`` one
object ``{"ok": bool, "checks": [{"name", "ok", "detail", "seconds"}]}``.  Exit
code 0 when every check passed, 1 otherwise (a warning does not fail).  Each
network check is bounded by ``--timeout`` seconds.

With ``--up``, or on its own while a ``controlplane up`` holds the config's data
dir, it checks the servers that ``up`` runs instead of ``broker.url`` and
``mongo.url``: the embedded Redis (with the password ``up`` keeps in the data
dir), the embedded database and the API, found exactly as ``up`` finds them
(:func:`controlplane.runtime.embedded.stack_urls`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

from controlplane.config import Config, ConfigError, load_config
from controlplane.runtime import embedded


@dataclass
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    warning: bool = False


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: never print a password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def _timed(name: str, fn: Callable[[], str]) -> Check:
    start = time.monotonic()
    try:
        detail = fn()
        return Check(name, True, detail, time.monotonic() - start)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal here
        text = str(exc).split(", Topology Description")[0].split(" (configured timeouts")[0]
        return Check(name, False, f"{type(exc).__name__}: {text}"[:300], time.monotonic() - start)


def ping_broker(url: str, timeout: float) -> str:
    """Connect to the Celery broker (Redis or AMQP) once."""
    from kombu import Connection

    with Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout}) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        return f"{redact_url(url)} ({conn.transport_cls})"


def ping_redis(url: str, timeout: float) -> str:
    """PING a Redis URL (result backend or feed)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return redact_url(url)


def ping_mongo(url: str, database: str, timeout: float) -> str:
    """``ping`` the MongoDB server and read the task collection's indexes."""
    from pymongo import MongoClient

    ms = max(1, int(timeout * 1000))
    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
        names = client[database].list_collection_names()
    finally:
        client.close()
    return f"{redact_url(url)} database {database!r} ({len(names)} collections)"


def run_checks(config: Config, timeout: float) -> list[Check]:
    """Every check after the config loaded."""
    checks = [_timed("broker", lambda: ping_broker(config.broker.url, timeout))]
    backend = config.result_backend
    if backend.startswith(("redis://", "rediss://")) and backend != config.broker.url:
        checks.append(_timed("result_backend", lambda: ping_redis(backend, timeout)))
    elif not backend:
        checks.append(
            Check("result_backend", True, "none: reconciliation of missed events is off", warning=True)
        )
    feed = config.feed.redis_url(config.broker.url)
    if feed and feed not in (config.broker.url, backend):
        checks.append(_timed("feed", lambda: ping_redis(feed, timeout)))
    checks.append(_timed("database", lambda: ping_mongo(config.mongo.url, config.mongo.database, timeout)))
    if config.auth.enabled and not config.auth.tokens and not config.auth.token_file:
        checks.append(
            Check(
                "auth",
                True,
                "no tokens in config (only <data_dir>/tokens.yaml, if any); see `controlplane token create`",
                warning=True,
            )
        )
    elif not config.auth.enabled:
        checks.append(Check("auth", True, "authentication is DISABLED", warning=True))
    return checks


def ping_api(config: Config, timeout: float) -> str:
    """``GET /api/health/`` of the API on ``api.host:api.port``."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(config.api.host, config.api.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{config.api.port}/api/health/"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return f"{url} ({resp.status})"


def as_up(config: Config) -> Config:
    """``config`` pointed at the embedded servers of ``controlplane up`` (RuntimeError: none yet)."""
    urls = embedded.stack_urls(config)
    broker = dataclasses.replace(config.broker, url=urls.broker, result_backend=urls.broker)
    mongo = dataclasses.replace(config.mongo, url=urls.mongo)
    feed = dataclasses.replace(config.feed, url=urls.broker)
    return dataclasses.replace(config, broker=broker, mongo=mongo, feed=feed)


def up_checks(config: Config, timeout: float) -> list[Check]:
    """The checks of the stack ``controlplane up`` runs for ``config``."""
    pid = embedded.up_running(config)
    running = f"`controlplane up` (pid {pid})" if pid else "`controlplane up` (not running now)"
    mode = Check("mode", True, f"the embedded servers of {running}, data dir {embedded.data_dir(config)}")
    try:
        stack = as_up(config)
    except RuntimeError as exc:
        return [mode, Check("embedded", False, str(exc))]
    checks = [mode, *run_checks(stack, timeout)]
    checks.append(_timed("api", lambda: ping_api(stack, timeout)))
    return checks


def check(
    config_path: str | None,
    *,
    timeout: float = 3.0,
    as_json: bool = False,
    out: TextIO | None = None,
    up: bool = False,
) -> int:
    """Run ``controlplane check``; returns the exit code (0 all passed, 1 otherwise).

    ``up``: check ``controlplane up``'s embedded servers; they are also checked, without
    it, while an ``up`` holds the config's data dir.
    """
    out = out or sys.stdout
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        checks = [Check("config", False, str(exc))]
    else:
        checks = [Check("config", True, config_path or "(defaults and environment)")]
        if up or embedded.up_running(config):
            checks.extend(up_checks(config, timeout))
        else:
            checks.extend(run_checks(config, timeout))
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2), file=out)
    else:
        for c in checks:
            mark = "FAIL" if not c.ok else "warn" if c.warning else "ok"
            took = f" ({c.seconds * 1000:.0f} ms)" if c.seconds else ""
            print(f"{mark:<5} {c.name:<15} {c.detail}{took}", file=out)
    return 0 if ok else 1
