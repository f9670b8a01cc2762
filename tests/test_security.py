"""Security on a real ``controlplane serve``: authentication, roles, rate limits, body limits,
scan scope, security headers, CORS, operator injection, token tooling, and the OpenAPI document."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import ConfigError, load_config
from controlplane.handlers.base import SECURITY_HEADERS
from controlplane.runtime import embedded
from controlplane.runtime.webapp import routes
from controlplane.service import openapi
from controlplane.service.auth import (
    OPERATOR,
    Authenticator,
    ensure_operator_token,
    hash_token,
    new_token,
    read_token_file,
    token_entry,
)
from tests.conftest import fresh_redis_url
from tests.stack import OPERATOR_TOKEN, TEST_AUTH, VIEWER_TOKEN, Response, Stack, wait_for

pytestmark = pytest.mark.integration

BODY_LIMIT = 64 * 1024
ORIGIN = "https://console.example"
API = "/api/celery_task"
SLEEP = {"task_type": "sleep_task", "data": {"name": "s", "seconds": 0}}


def _api_stack(tmp: Path, mongo: str, **extra: Any) -> Iterator[Stack]:
    stack = Stack(tmp, fresh_redis_url(), mongo, extra_config=extra)
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    """Only the API (no workers: nothing created here ever runs), default scope, a small body limit."""
    yield from _api_stack(
        tmp_path_factory.mktemp("sec"),
        mongo_server,
        api={"max_body_bytes": BODY_LIMIT, "cors_origins": [ORIGIN]},
        scope={"allow_private": False, "allow_loopback": False},
    )


def envelope(resp: Response) -> dict[str, Any]:
    assert isinstance(resp.json, dict) and set(resp.json) == {"code", "message", "data"}, resp
    assert "Traceback" not in resp.raw.decode("utf-8", "replace")
    return resp.json


# -- authentication and roles --------------------------------------------------------

PROTECTED = [
    ("GET", f"{API}/types/", None),
    ("GET", f"{API}/", None),
    ("GET", f"{API}/{uuid.uuid4()}/", None),
    ("GET", f"{API}/active/", None),
    ("POST", f"{API}/", SLEEP),
    ("POST", f"{API}/revoke/", {"celery_id": str(uuid.uuid4())}),
    ("POST", f"{API}/batch_revoke/", {"celery_ids": [str(uuid.uuid4())]}),
    ("DELETE", f"{API}/{uuid.uuid4()}/", None),
]
WRONG_TOKENS = [
    {"Authorization": "Bearer cp_00000000000000a1_not-the-operator-secret-0123456789"},  # known salt
    {"Authorization": "Bearer cp_ffffffffffffffff_operator-test-secret-0123456789abcdef"},  # unknown salt
    {"Authorization": "Bearer " + "x" * 5000},
    {"Authorization": f"Basic {OPERATOR_TOKEN}"},
    {"Authorization": "Bearer"},
    {"Token": "' OR 1=1 --"},
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_every_endpoint_needs_a_token(api: Stack, method: str, path: str, body: Any) -> None:
    before = api.db.tasks.count_documents({})
    resp = api.request(method, path, body, token=None)
    assert resp.status == 401 and envelope(resp)["code"] == 401 and resp.json["message"] == "NotLogin"
    assert {k.lower(): v for k, v in resp.headers.items()}["www-authenticate"].startswith("Bearer")
    for headers in WRONG_TOKENS:
        resp = api.request(method, path, body, headers=headers)
        assert resp.status == 401 and envelope(resp)["code"] == 401, (headers, resp)
    # Tokens in the query string are for the WebSocket only, never for REST.
    resp = api.request(method, path + f"?token={OPERATOR_TOKEN}", body, token=None)
    assert resp.status == 401
    assert api.db.tasks.count_documents({}) == before


def test_both_header_forms_and_both_roles_read(api: Stack) -> None:
    for headers in (
        {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        {"Authorization": f"bearer {VIEWER_TOKEN}"},
        {"Token": VIEWER_TOKEN},
        {"Token": OPERATOR_TOKEN},
    ):
        resp = api.request("GET", f"{API}/types/", headers=headers)
        assert resp.status == 200 and resp.code == 200, (headers, resp)


def test_viewer_cannot_create_or_revoke(api: Stack) -> None:
    before = api.db.tasks.count_documents({})
    for method, path, body in PROTECTED:
        resp = api.request(method, path, body, token=VIEWER_TOKEN)
        if method == "GET":
            assert resp.status != 403, (path, resp)
        else:
            assert resp.status == 403 and envelope(resp)["code"] == 403, (path, resp)
            assert resp.json["message"] == "Forbidden" and resp.data["reason"] == "requires the operator role"
    assert api.db.tasks.count_documents({}) == before


@pytest.mark.parametrize(
    "token", [VIEWER_TOKEN, OPERATOR_TOKEN, None], ids=["viewer", "operator", "anonymous"]
)
def test_a_method_the_route_lacks_is_405_whatever_the_role(api: Stack, token: str | None) -> None:
    for method, path in [
        ("PUT", f"{API}/"),
        ("PATCH", f"{API}/"),
        ("PUT", f"{API}/{uuid.uuid4()}/"),
        ("PATCH", f"{API}/revoke/"),
        ("DELETE", f"{API}/types/"),
        ("POST", f"{API}/active/"),
        ("PUT", "/api/health/"),
    ]:
        for body in (None, {"celery_id": str(uuid.uuid4())}):
            resp = api.request(method, path, body, token=token)
            assert resp.status == 405 and envelope(resp)["code"] == 405, (method, path, token, resp)
            assert resp.json["message"] == "MethodNotAllowed" and resp.data == {"method": method}
    # A method the route has still needs its role.
    assert api.request("POST", f"{API}/", SLEEP, token=token).status == (
        200 if token == OPERATOR_TOKEN else 403 if token else 401
    )


def test_operator_creates_and_the_audit_log_names_the_token(api: Stack) -> None:
    resp = api.request("POST", f"{API}/", SLEEP)
    assert resp.code == 200, resp
    cid = resp.data["celery_id"]
    assert api.request("GET", f"{API}/{cid}/", token=VIEWER_TOKEN).code == 200
    log = api.log("serve")
    assert f"audit: test-operator (operator) POST {API}/ -> 200" in log
    assert OPERATOR_TOKEN not in log and "operator-test-secret" not in log


def test_public_endpoints_reveal_nothing_about_tasks(api: Stack) -> None:
    cid = api.request("POST", f"{API}/", SLEEP).data["celery_id"]
    health = api.request("GET", "/api/health/", token=None)
    assert health.status == 200 and health.json == {
        "code": 200,
        "message": "success",
        "data": {"status": "ok", "auth": "token"},
    }
    doc = api.request("GET", "/api/openapi.json", token=None)
    assert doc.status == 200 and doc.json["openapi"].startswith("3.1")
    for resp in (health, doc):
        assert cid.encode() not in resp.raw and b"test-operator" not in resp.raw
    assert api.request("POST", "/api/health/", {}, token=None).status == 405


# -- request size and shape ----------------------------------------------------------


def _raw(port: int, payload: bytes, chunks: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                out += data
        except ConnectionResetError:
            pass
    return out


def _head(method: str, path: str, extra: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_body_far_over_the_limit_is_413_before_it_is_read(api: Stack) -> None:
    started = time.monotonic()
    out = _raw(api.port, _head("POST", f"{API}/", "Content-Length: 53687091200\r\n") + b'{"task_type": "')
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    body = out.split(b"\r\n\r\n", 1)[1]
    assert b'"code": 413' in body and b"PayloadTooLarge" in body
    assert b"X-Content-Type-Options: nosniff" in out
    assert time.monotonic() - started < 5


def test_chunked_body_over_the_limit_is_413(api: Stack) -> None:
    piece = b"x" * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out = _raw(
        api.port, _head("POST", f"{API}/", "Transfer-Encoding: chunked\r\n"), [chunk] * 5 + [b"0\r\n\r\n"]
    )
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b"PayloadTooLarge" in out


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_body_on_a_method_that_takes_none_is_bounded_too(api: Stack, method: str) -> None:
    path = f"{API}/" if method == "GET" else f"{API}/00000000-0000-4000-8000-000000000000/"
    out = _raw(api.port, _head(method, path, "Content-Length: 53687091200\r\n") + b"{")
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    piece = b"x" * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out = _raw(api.port, _head(method, path, "Transfer-Encoding: chunked\r\n"), [chunk] * 5 + [b"0\r\n\r\n"])
    assert out.startswith(b"HTTP/1.1 413"), out[:200]


def test_body_at_the_limit_is_read(api: Stack) -> None:
    body = b'{"celery_ids": ["x"], "pad": "' + b"a" * (BODY_LIMIT - 40) + b'"}'
    assert len(body) <= BODY_LIMIT
    resp = api.request("POST", f"{API}/batch_revoke/", raw=body)
    assert resp.status == 400 and resp.data["field"] == "celery_ids[0]"
    resp = api.request("POST", f"{API}/batch_revoke/", raw=body + b" " * 64)
    assert resp.status == 413 and envelope(resp)["code"] == 413


def test_unauthenticated_large_body_is_401_not_read(api: Stack) -> None:
    out = _raw(api.port, b"POST /api/celery_task/ HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401"), out[:200]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", f"{API}/?status=%7B%22%24ne%22%3A%20null%7D", None, "status"),
        ("GET", f"{API}/?celery_id=%7B%22%24gt%22%3A%22%22%7D", None, "celery_id"),
        ("GET", f"{API}/?task_type=%7B%22%24ne%22%3A1%7D", None, "task_type"),
        ("POST", f"{API}/revoke/", {"celery_id": {"$ne": None}}, "celery_id"),
        ("POST", f"{API}/batch_revoke/", {"celery_ids": [{"$ne": None}]}, "celery_ids[0]"),
        ("POST", f"{API}/", {"task_type": {"$ne": None}, "data": {}}, "task_type"),
        ("POST", f"{API}/", {"task_type": "domain_task", "data": {"$where": "1"}}, "data"),
        ("POST", f"{API}/", {"task_type": "sleep_task", "data": {"a": {"$gt": 1}}}, "data.a"),
        ("GET", f"{API}/%24ne/", None, "celery_id"),
    ],
)
def test_operator_injection_is_400(api: Stack, method: str, path: str, body: Any, field: str) -> None:
    before = api.db.tasks.count_documents({})
    resp = api.request(method, path, body)
    assert resp.status == 400 and envelope(resp)["data"]["field"] == field, resp
    assert api.db.tasks.count_documents({}) == before


# -- scan scope ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "target", "words"),
    [
        ("ip_task", "169.254.169.254", "metadata"),
        ("ip_task", "fd00:ec2::254", "metadata"),
        ("ip_task", "169.254.0.0/24", "link-local"),
        ("domain_task", "metadata.google.internal", "metadata"),
        ("domain_task", "example.com, metadata.google.internal.", "metadata"),
        ("ip_task", "10.0.0.0/24", "private"),
        ("ip_task", "10.1.2.3", "private"),
        ("ip_task", "127.0.0.1", "loopback"),
        ("run_risk_cruising", "http://169.254.169.254/latest/meta-data/", "metadata"),
        ("run_risk_cruising", "http://192.168.1.1:8080/", "private"),
        ("add_asset_site_task", "http://[fd00:ec2::254]/", "metadata"),
    ],
)
def test_targets_out_of_scope_are_400_and_not_stored(
    api: Stack, task_type: str, target: str, words: str
) -> None:
    data: dict[str, Any] = {"name": "scope", "target": target}
    if task_type == "add_asset_site_task":
        data["scope_id"] = "s1"
    before = api.db.tasks.count_documents({})
    resp = api.request("POST", f"{API}/", {"task_type": task_type, "data": data})
    body = envelope(resp)
    assert resp.status == 400 and body["data"]["field"] == "data.target", resp
    assert "out of scope" in body["data"]["reason"] and words in body["data"]["reason"]
    assert api.db.tasks.count_documents({}) == before


def test_huge_private_cidr_is_400(api: Stack) -> None:
    resp = api.request(
        "POST", f"{API}/", {"task_type": "ip_task", "data": {"name": "n", "target": "10.0.0.0/8"}}
    )
    assert resp.status == 400 and resp.data["field"] == "data.target"


def test_public_target_in_scope_is_created(api: Stack) -> None:
    resp = api.request(
        "POST", f"{API}/", {"task_type": "ip_task", "data": {"name": "n", "target": "192.0.43.10"}}
    )
    assert resp.code == 200, resp


# -- headers and CORS ----------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(api: Stack) -> None:
    answers = [
        api.request("GET", f"{API}/types/"),
        api.request("GET", f"{API}/not-a-uuid/"),
        api.request("GET", f"{API}/", token=None),
        api.request("POST", f"{API}/", SLEEP, token=VIEWER_TOKEN),
        api.request("GET", "/nowhere"),
        api.request("GET", "/api/openapi.json"),
    ]
    for resp in answers:
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers.get(name) == value, (resp, name)
        assert resp.headers["Content-Type"].startswith("application/json")
        assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_only_for_configured_origins(api: Stack) -> None:
    resp = api.request("GET", f"{API}/types/", headers={"Origin": "https://evil.example"})
    assert resp.code == 200 and "Access-Control-Allow-Origin" not in resp.headers
    resp = api.request("GET", f"{API}/types/", headers={"Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in resp.headers["Vary"]
    pre = api.request(
        "OPTIONS", f"{API}/", token=None, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "Token" in pre.headers["Access-Control-Allow-Headers"]
    pre = api.request("OPTIONS", f"{API}/", token=None, headers={"Origin": "https://evil.example"})
    assert pre.status == 403 and "Access-Control-Allow-Origin" not in pre.headers


def test_cors_is_off_by_default(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> None:
    for stack in _api_stack(tmp_path_factory.mktemp("nocors"), mongo_server):
        resp = stack.request("GET", f"{API}/types/", headers={"Origin": ORIGIN})
        assert resp.code == 200 and "Access-Control-Allow-Origin" not in resp.headers
        pre = stack.request("OPTIONS", f"{API}/", token=None, headers={"Origin": ORIGIN})
        assert pre.status == 403


# -- rate limits ---------------------------------------------------------------------

SECOND_OPERATOR = "cp_00000000000000c3_second-operator-secret-0123456789abcdef"


def test_rate_limits_per_token(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> None:
    tokens = [*TEST_AUTH["tokens"], token_entry("second", "operator", SECOND_OPERATOR, iterations=1000)]  # type: ignore[misc]
    for stack in _api_stack(
        tmp_path_factory.mktemp("rate"),
        mongo_server,
        auth={"tokens": tokens},
        rate_limit={"create_per_minute": 6, "create_burst": 3, "revoke_per_minute": 6, "revoke_burst": 2},
    ):
        codes = [stack.request("POST", f"{API}/", SLEEP).status for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        resp = stack.request("POST", f"{API}/", SLEEP)
        assert (
            resp.status == 429 and envelope(resp)["code"] == 429 and resp.json["message"] == "TooManyRequests"
        )
        assert 1 <= int(resp.headers["Retry-After"]) <= 10
        assert resp.data["retry_after"] > 0
        # Another token has its own bucket; reads and the other action are not limited.
        assert stack.request("POST", f"{API}/", SLEEP, token=SECOND_OPERATOR).code == 200
        assert stack.request("GET", f"{API}/").code == 200
        revokes = [
            stack.request("POST", f"{API}/revoke/", {"celery_id": str(uuid.uuid4())}).status for _ in range(3)
        ]
        assert revokes == [404, 404, 429]
        assert stack.request("DELETE", f"{API}/{uuid.uuid4()}/").status == 429


# -- auth disabled -------------------------------------------------------------------


def test_auth_can_be_disabled_only_explicitly_and_then_warns(
    tmp_path_factory: pytest.TempPathFactory, mongo_server: str
) -> None:
    for stack in _api_stack(tmp_path_factory.mktemp("noauth"), mongo_server, auth={"enabled": False}):
        resp = stack.request("POST", f"{API}/", SLEEP, token=None)
        assert resp.code == 200
        assert "AUTHENTICATION IS DISABLED" in stack.log("serve")
        # Written after the response went out: wait for it rather than race it.
        wait_for(lambda s=stack: "audit: anonymous (operator) POST" in s.log("serve"), 5, what="audit line")


# -- non-UUID ids never reach the database or broker -----------------------------------


def test_bad_ids_are_400_even_without_database_or_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    dead_mongo = f"mongodb://127.0.0.1:{embedded.free_port()}"
    dead_broker = f"redis://127.0.0.1:{embedded.free_port()}/0"
    stack = Stack(tmp_path_factory.mktemp("dead"), dead_broker, dead_mongo)
    try:
        stack.start_api()
        for method, path, body in [
            ("GET", f"{API}/not-a-uuid/", None),
            ("DELETE", f"{API}/1%20OR%201/", None),
            ("POST", f"{API}/revoke/", {"celery_id": "../../etc"}),
            ("POST", f"{API}/batch_revoke/", {"celery_ids": ["x"]}),
        ]:
            started = time.monotonic()
            resp = stack.request(method, path, body)
            assert resp.status == 400 and envelope(resp)["data"]["field"].startswith("celery_id"), resp
            assert time.monotonic() - started < 2
    finally:
        stack.close()


# -- tokens: hashing, the CLI, the first-start file ------------------------------------


def test_config_holds_only_salted_hashes() -> None:
    token = new_token()
    entry = token_entry("ci", "operator", token)
    secret = token.split("_", 2)[2]  # the secret itself may hold "_"
    assert token not in str(entry) and secret not in entry["hash"]
    assert entry["hash"].startswith("pbkdf2_sha256$")
    assert hash_token(token) != hash_token(new_token())
    auth = Authenticator([entry])
    assert auth.authenticate(token).name == "ci" and auth.authenticate(token).role == OPERATOR


def test_bad_token_entries_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for tokens in (
        [{"name": "x", "role": "admin", "hash": hash_token(new_token())}],
        [{"name": "x", "hash": "plain"}],
    ):
        path.write_text(yaml.safe_dump({"auth": {"tokens": tokens}}))
        with pytest.raises(ConfigError):
            load_config(path, env={})


def test_a_token_configured_twice_names_both_entries_and_where_they_are(tmp_path: Path) -> None:
    token = new_token()
    in_config = token_entry("ci", "operator", token)
    file = tmp_path / "tokens.yaml"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "auth": {"tokens": [in_config]}}))
    file.write_text(yaml.safe_dump({"tokens": [token_entry("again", "viewer", token)]}))
    with pytest.raises(ConfigError) as err:
        Authenticator.from_config(load_config(path, env={}))
    assert str(err.value) == (
        f"token file {file} and auth.tokens: token 'again': the same token as 'ci' is configured twice"
    )
    file.write_text(
        yaml.safe_dump({"tokens": [token_entry("a", "viewer", token), token_entry("b", "viewer", token)]})
    )
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path)}))
    with pytest.raises(ConfigError) as err:
        Authenticator.from_config(load_config(path, env={}))
    assert str(err.value) == f"token file {file}: token 'b': the same token as 'a' is configured twice"


def test_token_create_prints_token_once_and_a_working_entry(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    cmd = embedded.controlplane_command(
        "--config", str(config_path), "token", "create", "--role", "operator", "--name", "ci"
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    token = next(line.split(": ", 1)[1].strip() for line in out.splitlines() if line.startswith("token"))
    assert out.count(token) == 1
    entry_yaml = out[out.index("auth:") :]
    config_path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **yaml.safe_load(entry_yaml)}))
    config = load_config(config_path, env={})
    principal = Authenticator.from_config(config).authenticate(token)
    assert principal.name == "ci" and principal.role == "operator"
    # --write adds it to the owner-only token file instead.
    cmd = embedded.controlplane_command(
        "--config", str(config_path), "token", "create", "--name", "dash", "--write"
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    token2 = next(line.split(": ", 1)[1].strip() for line in out.splitlines() if line.startswith("token"))
    token_file = tmp_path / "data" / "tokens.yaml"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token2 not in token_file.read_text()
    assert Authenticator.from_config(load_config(config_path, env={})).authenticate(token2).role == "viewer"


def test_first_start_creates_an_owner_only_operator_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = ensure_operator_token(data)
    assert token is not None
    for name in ("tokens.yaml", "operator.token"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert (data / "operator.token").read_text().strip() == token
    assert token not in (data / "tokens.yaml").read_text()
    assert [t["role"] for t in read_token_file(data / "tokens.yaml")] == ["operator"]
    assert ensure_operator_token(data) is None, "only on first start"
    config = load_config(None, env={"CP_DATA_DIR": str(data)})
    assert Authenticator.from_config(config).authenticate(token) == Authenticator([]).__class__(
        read_token_file(data / "tokens.yaml")
    ).authenticate(token)


# -- the OpenAPI document --------------------------------------------------------------


def test_every_route_is_in_the_openapi_document() -> None:
    templates = [openapi.template_of(pattern) for pattern, *_ in routes({})]
    assert openapi.undocumented(templates) == []
    doc = openapi.build(templates)
    assert set(doc["paths"]) == set(templates)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert "200" in op["responses"] or "101" in op["responses"], (path, method)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tokens: [unclosed\n", "while parsing"),
        ("tokens: {name: x}\n", "expected `tokens: [{name, role, hash}, ...]`"),
        ("tokens:\n  - {name: x, role: admin, hash: h}\n", "role must be one of"),
        ("tokens:\n  - {name: x, role: viewer, hash: plain}\n", "expected pbkdf2_sha256"),
        ("tokens:\n  - {name: x, role: viewer, hash: h, extra: 1}\n", "extra"),
    ],
)
def test_a_broken_token_file_stops_serve_with_its_reason(tmp_path: Path, text: str, reason: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "tokens.yaml").write_text(text)
    os.chmod(data / "tokens.yaml", 0o600)
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(data), "api": {"port": embedded.free_port()}}))
    cmd = embedded.controlplane_command("--config", str(config_path), "serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert f"token file {data / 'tokens.yaml'}" in done.stderr and reason in done.stderr
    assert "Traceback" not in done.stderr
