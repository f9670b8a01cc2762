"""Fixtures for the recon tests: an nx-27017 MongoDB-wire server, the loopback lab, contexts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controlplane.config import ReconConfig  # noqa: E402
from tests.lab import LAB_LEAK_LIST, Lab, MongoServer, start_lab  # noqa: E402
from tests.lab.scenarios import in_lab_scope, new_task_id  # noqa: E402
from workers.recon import ReconContext  # noqa: E402


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A real MongoDB-wire server (nx-27017) for the whole session."""
    server = MongoServer(tmp_path_factory.mktemp("nx27017")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def recon_db(mongo_server: MongoServer) -> Iterator[Any]:
    """A pymongo Database on the session's server."""
    client = mongo_server.client()
    yield client["recon_tests"]
    client.close()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The loopback lab (DNS, sites, TCP services) for the whole session."""
    running = start_lab()
    yield running
    running.stop()


@pytest.fixture
def make_ctx(lab: Lab, recon_db: Any) -> Callable[..., ReconContext]:
    """Build a ReconContext against the lab; keyword arguments override fields.

    The ``recon`` config probes the lab's short leak list (``LAB_LEAK_LIST``), not the bundled one.
    """

    def build(**overrides: Any) -> ReconContext:
        fields: dict[str, Any] = {
            "task_id": new_task_id(),
            "db": recon_db,
            "resolvers": lab.resolvers,
            "progress": lambda stage, done, total: None,
            "should_stop": lambda: False,
            "scope_check": in_lab_scope,
            "connect_timeout": 0.5,
            "http_timeout": 3.0,
            "config": ReconConfig(file_leak_list=str(LAB_LEAK_LIST)),
        }
        fields.update(overrides)
        return ReconContext(**fields)

    return build
