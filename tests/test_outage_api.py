"""The API when the broker or the database is unreachable: 503 in the envelope, fast, nothing left behind."""

from __future__ import annotations

import time

import pytest

from controlplane.runtime import embedded
from tests.conftest import fresh_redis_url
from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_broker_down_create_is_503_and_leaves_no_task(
    tmp_path_factory: pytest.TempPathFactory, mongo_server: str
) -> None:
    dead = f"redis://127.0.0.1:{embedded.free_port()}/0"
    stack = Stack(tmp_path_factory.mktemp("nobroker"), dead, mongo_server)
    try:
        stack.start_api()
        started = time.monotonic()
        resp = stack.request("POST", "/api/celery_task/", {"task_type": "sleep_task", "data": {"seconds": 0}})
        elapsed = time.monotonic() - started
        assert resp.status == 503 and resp.code == 503, resp
        assert resp.data["service"] == "broker"
        assert resp.headers.get("Retry-After")
        assert elapsed < 10, "the API must answer within its broker timeout"
        listing = stack.request("GET", "/api/celery_task/")
        assert listing.code == 200 and listing.data["total"] == 0, "no task may be left PENDING"
        resp = stack.request("GET", "/api/celery_task/active/")
        assert resp.code == 503 or (resp.code == 200 and resp.data["active_tasks"] == [])
    finally:
        stack.close()


def test_database_down_is_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    dead = f"mongodb://127.0.0.1:{embedded.free_port()}"
    stack = Stack(tmp_path_factory.mktemp("nodb"), fresh_redis_url(), dead)
    try:
        stack.start_api()
        for method, path, body in [
            ("GET", "/api/celery_task/", None),
            ("GET", "/api/celery_task/00000000-0000-4000-8000-000000000000/", None),
            ("POST", "/api/celery_task/", {"task_type": "sleep_task", "data": {"seconds": 0}}),
            ("POST", "/api/celery_task/revoke/", {"celery_id": "00000000-0000-4000-8000-000000000000"}),
        ]:
            started = time.monotonic()
            resp = stack.request(method, path, body)
            assert resp.status == 503 and resp.code == 503 and resp.data["service"] == "database", (
                path,
                resp,
            )
            assert time.monotonic() - started < 10
        types = stack.request("GET", "/api/celery_task/types/")
        assert types.code == 200, "endpoints that need no database keep working"
    finally:
        stack.close()
