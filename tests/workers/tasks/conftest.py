"""Fixtures for the recon2 tests: nx-27017, the loopback lab, a worker config and real task contexts."""

from __future__ import annotations

import ssl
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controlplane.store.tasks import TaskStore  # noqa: E402
from tests.lab import Lab, MongoServer, start_lab  # noqa: E402
from tests.lab.support import Worker, lab_config  # noqa: E402


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A real MongoDB-wire server (nx-27017) for the whole session."""
    server = MongoServer(tmp_path_factory.mktemp("nx27017_recon2")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The loopback lab (DNS, sites, TCP services)."""
    running = start_lab()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def server_tls() -> ssl.SSLContext:
    """A server TLS context for lab sites (certificate from a throwaway CA)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("recon2.lab.test", "127.88.1.1", "127.88.2.1").configure_cert(context)
    return context


@pytest.fixture
def worker(mongo_server: MongoServer, lab: Lab) -> Iterator[Worker]:
    """A Worker on the lab config (each test may adjust ``worker.config``)."""
    config = lab_config(mongo_server, lab)
    store = TaskStore(config.mongo)
    yield Worker(config, store)
    store.close()


@pytest.fixture
def new_scope() -> Callable[[], str]:
    """A fresh scope id per call."""
    return lambda: f"scope-{uuid.uuid4().hex[:12]}"
