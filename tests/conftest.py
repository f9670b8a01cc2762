"""Session fixtures that start the real services the integration tests talk to.

* a MongoDB-wire server (nx-27017, the embedded default) on a free port;
* the machine's Redis (``CP_TEST_REDIS_URL``, default 127.0.0.1:6379) — one
  Redis database index per stack, flushed first, from ``CP_TEST_REDIS_DBS`` (default 1-15);
* RabbitMQ when ``CP_TEST_AMQP_URL`` is set (``.ci/run`` sets it and fails if
  the AMQP tests skip).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from controlplane.config import Config, load_config
from controlplane.runtime import embedded
from tests.stack import Stack

REDIS_URL = os.environ.get("CP_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def redis_db_range(spec: str) -> range:
    """The Redis database indexes a test session may use: ``"1-15"`` (the default) or ``"8-15"``.

    ``make test`` runs two pytest sessions at once (tests/shards.py), each on indexes of its own,
    so that neither flushes a database the other is using.
    """
    low, _, high = spec.partition("-")
    first, last = int(low), int(high or low)
    if not 0 < first <= last <= 15:
        raise ValueError(f"CP_TEST_REDIS_DBS={spec!r}: expected a range within 1-15")
    return range(first, last + 1)


REDIS_DBS = redis_db_range(os.environ.get("CP_TEST_REDIS_DBS", "1-15"))
_db_numbers = itertools.cycle(REDIS_DBS)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MongoDB-wire server for the whole session; yields its URL."""
    url = os.environ.get("CP_TEST_MONGO_URL")
    if url:
        yield url
        return
    port = embedded.free_port()
    proc: subprocess.Popen[bytes] = embedded.start_mongo(port, tmp_path_factory.mktemp("mongo"))
    try:
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        embedded.stop(proc)


def fresh_redis_url() -> str:
    """A flushed Redis database index of its own (cycling through ``REDIS_DBS``)."""
    number = next(_db_numbers)
    url = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def in_process_config(mongo_url: str, prefix: str) -> Config:
    """Defaults for services built inside the test: a fresh Redis database, a MongoDB database of
    its own named ``prefix_…``, no authentication."""
    config = load_config(None, env={})
    config.broker.url = fresh_redis_url()
    config.mongo.url = mongo_url
    config.mongo.database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    config.auth.enabled = False
    return config


def amqp_url() -> str | None:
    return os.environ.get("CP_TEST_AMQP_URL") or None


def require_rabbitmq() -> str:
    """RabbitMQ's URL: skip when CP_TEST_AMQP_URL is unset, fail when it is set but unreachable."""
    url = amqp_url()
    if not url:
        pytest.skip("CP_TEST_AMQP_URL is not set")
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(f"CP_TEST_AMQP_URL={url} is set but unreachable: {exc}")
    return url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    """API + consumer + one prefork worker (concurrency 2) on Redis, shared by a module."""
    s = Stack(tmp_path_factory.mktemp("stack"), fresh_redis_url(), mongo_server)
    try:
        s.start()
        yield s
    finally:
        s.close()


def make_stack(tmp: Path, mongo_url: str, **kwargs: object) -> Stack:
    """A stack on a fresh Redis database (for tests that need their own)."""
    return Stack(tmp, fresh_redis_url(), mongo_url, **kwargs)  # type: ignore[arg-type]
