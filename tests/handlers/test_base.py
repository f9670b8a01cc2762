"""The base handler in-process (pytest-tornado): envelope, errors, headers, auth — on real services."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
import yaml

from controlplane.config import load_config
from controlplane.runtime.server import Services
from controlplane.runtime.webapp import make_app
from tests.conftest import fresh_redis_url
from tests.stack import OPERATOR_TOKEN, TEST_AUTH, VIEWER_TOKEN

pytestmark = pytest.mark.integration


@pytest.fixture
def services(mongo_server: str, tmp_path: Path, io_loop: Any) -> Iterator[Services]:
    path = tmp_path / "config.yaml"
    raw = {
        "broker": {"url": fresh_redis_url()},
        "mongo": {"url": mongo_server, "database": f"h_{uuid.uuid4().hex[:8]}"},
        "auth": TEST_AUTH,
    }
    path.write_text(yaml.safe_dump(raw))
    built = Services(load_config(path, env={}))
    yield built
    built.writer.client.drop_database(built.config.mongo.database)
    io_loop.run_sync(built.close)


@pytest.fixture
def app(services: Services) -> tornado.web.Application:
    return make_app(services.config, manager=services.manager)


def _body(resp: Any) -> dict[str, Any]:
    body = json.loads(resp.body)
    assert set(body) == {"code", "message", "data"}
    return dict(body)


@pytest.mark.gen_test
async def test_unknown_route_and_method_use_the_envelope(http_client: Any, base_url: str) -> None:
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    resp = await http_client.fetch(f"{base_url}/api/nowhere", headers=headers, raise_error=False)
    assert resp.code == 404 and _body(resp)["code"] == 404
    resp = await http_client.fetch(
        f"{base_url}/api/celery_task/types/",
        method="PUT",
        body="{}",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        raise_error=False,
    )
    assert resp.code == 405 and _body(resp)["code"] == 405


@pytest.mark.gen_test
async def test_the_feed_route_answers_other_methods_with_the_envelope(
    http_client: Any, base_url: str
) -> None:
    # The live feed is a WebSocket handler; found by schemathesis: DELETE got Tornado's HTML 405.
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    for method, body in (("DELETE", None), ("POST", "{}"), ("PUT", "{}")):
        resp = await http_client.fetch(
            f"{base_url}/api/celery_task/ws/", method=method, body=body, headers=headers, raise_error=False
        )
        assert resp.code == 405 and resp.headers["Content-Type"].startswith("application/json")
        assert _body(resp) == {"code": 405, "message": "MethodNotAllowed", "data": {"method": method}}


@pytest.mark.gen_test
async def test_no_token_is_401_and_viewer_cannot_create(http_client: Any, base_url: str) -> None:
    resp = await http_client.fetch(f"{base_url}/api/celery_task/", raise_error=False)
    assert resp.code == 401 and _body(resp)["message"] == "NotLogin"
    resp = await http_client.fetch(
        f"{base_url}/api/celery_task/",
        method="POST",
        body=json.dumps({"task_type": "ip_task", "data": {"target": "8.8.8.8"}}),
        headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
        raise_error=False,
    )
    assert resp.code == 403 and _body(resp)["message"] == "Forbidden"


@pytest.mark.gen_test
async def test_success_envelope_and_security_headers(http_client: Any, base_url: str) -> None:
    resp = await http_client.fetch(
        f"{base_url}/api/celery_task/?size=1", headers={"Token": OPERATOR_TOKEN}, raise_error=False
    )
    body = _body(resp)
    assert resp.code == 200 and body["code"] == 200 and body["message"] == "success"
    assert body["data"] == {"total": 0, "page": 1, "size": 1, "items": []}
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


@pytest.mark.gen_test
async def test_bad_json_names_the_body(http_client: Any, base_url: str) -> None:
    resp = await http_client.fetch(
        f"{base_url}/api/celery_task/revoke/",
        method="POST",
        body="{oops",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        raise_error=False,
    )
    body = _body(resp)
    assert resp.code == 400 and body["data"]["field"] == "body"
    assert "Traceback" not in resp.body.decode()
