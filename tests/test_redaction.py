"""Credentials and server paths never reach clients; the worker still gets the real values.

Pure tests of :mod:`controlplane.core.redact` and the document views, then one real
stack (API, consumer, worker, the lab FOFA server on loopback) for the REST views, the
live feed, the stored data and the dashboard's Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import BulkWriteError

from controlplane.core import redact
from controlplane.core.documents import detail, list_item, list_item_of_detail
from controlplane.core.redact import (
    REDACTED,
    is_credential_name,
    redact_credential_url,
    redact_message_kwargs,
    redact_task_data,
    redact_url,
    redact_value,
    scrub_secrets,
    shorten_paths,
)
from controlplane.core.tasktypes import SPEC_TYPES
from controlplane.core.validate import validate_task_data
from controlplane.handlers import pages
from controlplane.store.errors import DatabaseError
from tests.conftest import make_stack
from tests.lab.fofa import FofaAccount, FofaServer, FofaState
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Stack

FOFA_KEY = "k3y-Redaction-Test-0123456789abcdef"
FOFA_EMAIL = "redaction-ops@fofa.test"
TERMINAL = ("SUCCESS", "FAILURE")

# -- names and values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "key", "api_key", "apiKey", "APIKey", "fofa_key", "access-key", "secret_key", "keys",
        "token", "github_token", "accessToken", "refresh_tokens", "secret", "client_secret",
        "password", "db_password", "passwd", "passphrase", "credentials", "cookie",
        "auth", "basic_auth", "Authorization", "pwd", "sig", "signature",
    ],
)  # fmt: skip
def test_credential_names(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "keyword", "monkey", "hockey", "port_scan", "scope_id", "task_id", "query", "size",
        "page", "max_results", "email", "domain_brute_type", "author", "oauth_provider", "design",
    ],
)  # fmt: skip
def test_other_names(name: str) -> None:
    assert not is_credential_name(name)


def test_a_credential_shows_that_it_was_given_never_its_value() -> None:
    assert redact_value("abc") == REDACTED and redact_value(12345) == REDACTED
    assert redact_value({"a": "b"}) == REDACTED and redact_value(["x"]) == REDACTED
    # Nothing to hide: shown as given.
    assert redact_value(None) is None and redact_value("") == "" and redact_value(True) is True


def test_fofa_key_and_email_are_declared_and_redacted() -> None:
    fofa = next(t for t in SPEC_TYPES if t.value == "fofa_task")
    assert set(fofa.credentials) == {"options.key", "options.email"}
    data = validate_task_data(
        "fofa_task", {"query": 'domain="example.com"', "options": {"key": FOFA_KEY, "email": FOFA_EMAIL}}
    )
    shown = redact_task_data("fofa_task", data)
    assert shown["options"]["key"] == REDACTED and shown["options"]["email"] == REDACTED
    assert shown["options"]["size"] == 100 and shown["query"] == 'domain="example.com"'
    assert data["options"]["key"] == FOFA_KEY, "the input is not changed"
    # The email is a credential of FOFA only, by declaration.
    assert (
        redact_task_data("sleep_task", {"options": {"email": FOFA_EMAIL}})["options"]["email"] == FOFA_EMAIL
    )


def test_a_webhook_shows_only_its_origin_for_every_type() -> None:
    scheduled = {t.value for t in SPEC_TYPES if t.credential_urls == ("webhook",)}
    assert scheduled == {
        "domain_exec_task", "ip_exec_task", "github_task_monitor", "asset_site_update", "asset_wih_update"
    }  # fmt: skip
    for kind in SPEC_TYPES:
        data = {"webhook": "https://hooks.example.com/services/T000/B000/XXXXXXXXXXXX", "scope_id": "s"}
        shown = redact_task_data(kind.value, data)
        assert shown["webhook"] == "https://hooks.example.com/***", kind.value
        assert "XXXXXXXXXXXX" not in json.dumps(shown)


def test_extra_types_are_redacted_by_name_at_any_depth() -> None:
    data = {
        "name": "custom",
        "target": "https://u:hunter22@example.com/path?token=tok-123456&page=2",
        "api_key": "ak-123456",
        "options": {
            "apiKey": "ak-abcdef",
            "github_token": "ghp_0123456789",
            "use_token": True,
            "retries": 3,
            "sort_key": None,
            "nested": {"headers": [{"Authorization": "Bearer abcdef123"}], "depth": 2},
            "password": "",
            "callback": "https://svc.example/cb?sig=s1gnature&x=1#access_token=frag-token-1",
            "my_webhook": "https://hooks.example/T/B/secretpath",
        },
    }
    shown = redact_task_data("my_custom_type", data)
    assert shown["api_key"] == REDACTED
    assert shown["target"] == "https://***@example.com/path?token=***&page=2"
    opts = shown["options"]
    assert opts["apiKey"] == REDACTED and opts["github_token"] == REDACTED
    assert opts["use_token"] is True and opts["retries"] == 3 and opts["sort_key"] is None
    assert opts["nested"] == {"headers": [{"Authorization": REDACTED}], "depth": 2}
    assert opts["password"] == ""
    assert opts["callback"] == "https://svc.example/cb?sig=***&x=1#access_token=***"
    assert opts["my_webhook"] == "https://hooks.example/***"
    text = json.dumps(shown)
    for secret in (
        "hunter22",
        "tok-123456",
        "ak-",
        "ghp_",
        "abcdef123",
        "s1gnature",
        "frag-token",
        "secretpath",
    ):
        assert secret not in text


def test_urls_lose_userinfo_and_credential_parameters_only() -> None:
    assert redact_url("https://example.com/a?page=2") == "https://example.com/a?page=2"
    assert redact_url("https://user:pw@example.com/") == "https://***@example.com/"
    assert redact_url("https://example.com/?api_key=1234&q=a") == "https://example.com/?api_key=***&q=a"
    assert redact_url("not a url") == "not a url"
    # A webhook (for a log line, say): its origin only.
    assert (
        redact_credential_url("https://u:p@hooks.example:8443/T0/B0/XXXX") == "https://hooks.example:8443/***"
    )
    assert redact_credential_url("https://hooks.example") == "https://hooks.example"
    assert redact_credential_url("no url at all") == REDACTED


def test_message_kwargs_are_redacted_in_arls_shape() -> None:
    kwargs = {"options": {"celery_action": "fofa_task", "data": {"query": "q", "options": {"key": FOFA_KEY}}}}
    shown = redact_message_kwargs(kwargs)
    assert shown == {
        "options": {"celery_action": "fofa_task", "data": {"query": "q", "options": {"key": REDACTED}}}
    }
    assert kwargs["options"]["data"]["options"]["key"] == FOFA_KEY
    assert redact_message_kwargs({"token": "abcd1234"}) == {"token": REDACTED}
    assert redact_message_kwargs("see https://u:p@h/") == "see https://***@h/"


def test_secret_values_are_scrubbed_from_free_text() -> None:
    assert scrub_secrets(f"bad key {FOFA_KEY}!", {FOFA_KEY: REDACTED}) == "bad key ***!"
    assert scrub_secrets(None, {FOFA_KEY: REDACTED}) is None
    assert scrub_secrets("x", {}) == "x"


secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=12, max_size=24).map(
    lambda s: f"S3CR3T{s}"
)
plain = st.one_of(st.none(), st.booleans(), st.integers(), st.text(alphabet="abc xyz", max_size=6))
cred_names = st.sampled_from(["key", "token", "api_key", "clientSecret", "password", "auth", "x_token"])
other_names = st.sampled_from(["a", "name", "size", "note", "items", "mode"])


@st.composite
def data_with_secrets(draw: Any) -> tuple[dict[str, Any], list[str]]:
    secrets: list[str] = []

    def tree(depth: int) -> Any:
        choice = draw(st.integers(0, 4 if depth < 3 else 1))
        if choice == 0:
            return draw(plain)
        if choice == 1:
            value = draw(secret_text)
            secrets.append(value)
            return {draw(cred_names): value, draw(other_names): draw(plain)}
        if choice == 2:
            return [tree(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        if choice == 3:
            value = draw(secret_text)
            secrets.append(value)
            return f"https://example.com/x?{draw(cred_names)}={value}&page=1"
        return {draw(other_names): tree(depth + 1) for _ in range(draw(st.integers(0, 3)))}

    return {"options": tree(0), "extra": tree(0)}, secrets


@settings(max_examples=300, deadline=None)
@given(data_with_secrets(), st.sampled_from(["my_type", "fofa_task", "domain_task", "ip_exec_task"]))
def test_no_secret_survives_redaction(case: tuple[dict[str, Any], list[str]], task_type: str) -> None:
    data, secrets = case
    shown = redact_task_data(task_type, data)
    text = json.dumps(shown)
    for secret in secrets:
        assert secret not in text
    assert redact_task_data(task_type, shown) == shown, "redaction is idempotent"


# -- the document views ------------------------------------------------------------------


def _fofa_doc(**outcome: Any) -> dict[str, Any]:
    options = {"size": 10, "key": FOFA_KEY, "email": FOFA_EMAIL}
    return {
        "_id": ObjectId(),
        "celery_id": "c6a1e0b3-5263-4d8c-ae38-f5c4f9ad7c32",
        "task_type": "fofa_task",
        "name": "fofa",
        "target": "q",
        "status": "FAILURE" if outcome else "STARTED",
        "options": options,
        "data": {"query": "q", "options": options, "task_id": "x"},
        "outcome": outcome,
        "rev": 3,
    }


def test_detail_and_list_show_credentials_redacted_and_keep_the_keys() -> None:
    doc = _fofa_doc()
    shown = detail(doc)
    assert shown["options"] == {"size": 10, "key": REDACTED, "email": REDACTED}
    assert FOFA_KEY not in json.dumps(shown, default=str) and FOFA_EMAIL not in json.dumps(shown, default=str)
    assert "options" not in list_item(doc) and list_item_of_detail(shown) == list_item(doc)
    assert doc["options"]["key"] == FOFA_KEY and doc["data"]["options"]["key"] == FOFA_KEY


def test_the_tasks_own_secrets_are_scrubbed_from_its_error_texts() -> None:
    doc = _fofa_doc(
        exception=f"FofaError: https://fofa.info/api?email={FOFA_EMAIL}&key={FOFA_KEY}",
        traceback=f'Traceback:\n  File "x.py", line 1\nFofaError: bad key {FOFA_KEY}',
        result=f"key={FOFA_KEY}",
    )
    doc["retry_reason"] = f"RuntimeError('{FOFA_EMAIL}')"
    text = json.dumps(detail(doc), default=str)
    assert FOFA_KEY not in text and FOFA_EMAIL not in text


TRACEBACK = """Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
  File "/usr/lib/python3/dist-packages/kombu/utils.py", line 2, in f
  File "/usr/lib/python3.11/concurrent/futures/_base.py", line 449, in result
  File "{root}/workers/tasks/fofa.py", line 51, in fofa_task
  File "/srv/deploy/releases/7/controlplane/core/merge.py", line 3, in g
  File "/home/alice/custom/mytasks/scan.py", line 9, in run
  File "<frozen importlib._bootstrap>", line 1, in _load
FileNotFoundError: [Errno 2] No such file or directory: '/home/alice/data/wordlist.txt' (see http://host/a/b/c)
"""


def test_tracebacks_lose_absolute_server_paths() -> None:
    root = redact._PROJECT_ROOT.rstrip("/")
    shown = shorten_paths(TRACEBACK.format(root=root))
    assert 'File "celery/app/trace.py", line 453' in shown
    assert 'File "kombu/utils.py"' in shown
    assert 'File "concurrent/futures/_base.py"' in shown
    assert 'File "workers/tasks/fofa.py"' in shown
    assert 'File "controlplane/core/merge.py"' in shown
    assert 'File "mytasks/scan.py"' in shown
    assert 'File "<frozen importlib._bootstrap>"' in shown
    assert "'data/wordlist.txt'" in shown and "http://host/a/b/c" in shown, "URLs are left alone"
    for leak in ("/work/", "/usr/", "/srv/", "/home/", root, "site-packages"):
        assert leak not in shown, leak


def test_the_failure_view_has_no_server_paths_for_any_role() -> None:
    doc = _fofa_doc(
        exception="OSError: cannot open /var/lib/app/state/x.db", traceback=TRACEBACK.format(root="/opt/cp")
    )
    shown = detail(doc)
    assert shown["exception"] == "OSError: cannot open state/x.db"
    assert 'File "/' not in shown["traceback"] and "/home/" not in shown["traceback"]


def test_the_dashboard_connects_only_to_its_own_origin() -> None:
    directives = dict(d.split(" ", 1) for d in pages.CSP.split("; "))
    assert directives["connect-src"] == "'self'"
    assert "ws:" not in pages.CSP and "wss:" not in pages.CSP


# -- a real stack ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fofa() -> Iterator[FofaServer]:
    server = FofaServer(FofaState(account=FofaAccount(email=FOFA_EMAIL, key=FOFA_KEY))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str, fofa: FofaServer) -> Iterator[Stack]:
    s = make_stack(
        tmp_path_factory.mktemp("redaction"),
        mongo_server,
        # The config has no FOFA account: only the task's options can authenticate.
        extra_config={"recon": {"fofa_url": fofa.url, "fofa_key": "", "fofa_email": ""}},
    )
    try:
        s.start()
        yield s
    finally:
        s.close()


def _feed_url(stack: Stack, token: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {**params, "token": token}.items())
    return f"ws://127.0.0.1:{stack.port}/api/celery_task/ws/?{query}"


async def _frames(ws: Any, celery_id: str, kind: str) -> list[str]:
    """Every frame until a ``kind`` message shows ``celery_id`` in a terminal status."""
    frames: list[str] = []
    while True:
        raw = str(await asyncio.wait_for(ws.recv(), 60))
        frames.append(raw)
        msg = json.loads(raw)
        task = msg.get("task") or {}
        if msg["type"] == kind and task.get("celery_id") == celery_id and task.get("status") in TERMINAL:
            return frames


def _watch_create(stack: Stack, task_type: str, data: dict[str, Any]) -> tuple[str, dict[str, list[str]]]:
    """Create a task while a viewer's and an operator's feed watch; then replay it to both.

    Returns the celery_id and, per token, every frame received (live changes, then the replay).
    """

    async def run() -> tuple[str, dict[str, list[str]]]:
        tokens = (VIEWER_TOKEN, OPERATOR_TOKEN)
        sockets = [await websockets.connect(_feed_url(stack, t), max_size=None) for t in tokens]
        try:
            for ws in sockets:
                while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "synced":
                    pass
            cid = await asyncio.to_thread(stack.create, task_type, data)
            live = await asyncio.gather(*(_frames(ws, cid, "change") for ws in sockets))
        finally:
            for ws in sockets:
                await ws.close()
        out = {}
        for token, frames in zip(tokens, live, strict=True):
            async with websockets.connect(_feed_url(stack, token, since="0", celery_id=cid)) as ws:
                out[token] = frames + await _frames(ws, cid, "replay")
        return cid, out

    return asyncio.run(run())


def test_fofa_key_reaches_the_worker_but_no_client(rstack: Stack, fofa: FofaServer) -> None:
    options = {"key": FOFA_KEY, "email": FOFA_EMAIL}
    cid, frames = _watch_create(rstack, "fofa_task", {"query": 'domain="redaction.test"', "options": options})
    # The worker authenticated with the task's key (the lab answers 401 to any other).
    done = rstack.wait_status(cid, *TERMINAL, timeout=60)
    assert done["status"] == "SUCCESS", done
    assert fofa.state.requests and all(r.email == FOFA_EMAIL for r in fofa.state.requests)
    # The stored data keeps the real values (the worker needs them).
    stored = rstack.db.tasks.find_one({"celery_id": cid})
    assert stored is not None and stored["data"]["options"]["key"] == FOFA_KEY

    for token in (VIEWER_TOKEN, OPERATOR_TOKEN):
        resp = rstack.request("GET", f"/api/celery_task/{cid}/", token=token)
        assert resp.code == 200
        assert resp.data["options"] == {**resp.data["options"], "key": REDACTED, "email": REDACTED}
        listing = rstack.request("GET", f"/api/celery_task/?celery_id={cid}", token=token)
        everything = rstack.request("GET", "/api/celery_task/?size=100", token=token)
        assert listing.data["total"] == 1
        for body in (resp.raw, listing.raw, everything.raw):
            assert FOFA_KEY.encode() not in body and FOFA_EMAIL.encode() not in body
        # The feed: live changes (through the Redis channel) and the replay (from MongoDB).
        kinds = {json.loads(f)["type"] for f in frames[token]}
        assert {"change", "replay"} <= kinds
        for frame in frames[token]:
            assert FOFA_KEY not in frame and FOFA_EMAIL not in frame
        shown = [
            m["task"] for m in map(json.loads, frames[token]) if (m.get("task") or {}).get("celery_id") == cid
        ]
        assert shown and all(t["options"]["key"] == REDACTED for t in shown)


def test_a_failure_shows_neither_the_key_nor_server_paths(rstack: Stack) -> None:
    wrong = "wrong-key-0123456789-zyxw"
    cid = rstack.create("fofa_task", {"query": 'domain="x.test"', "options": {"key": wrong}})
    for token in (VIEWER_TOKEN, OPERATOR_TOKEN):
        rstack.wait_status(cid, "FAILURE", timeout=60)
        resp = rstack.request("GET", f"/api/celery_task/{cid}/", token=token)
        shown = resp.data
        assert "FofaAuthError" in shown["exception"] and shown["options"]["key"] == REDACTED
        assert shown["traceback"] and 'File "' in shown["traceback"]
        assert 'File "/' not in shown["traceback"], shown["traceback"]
        assert rstack.workdir.as_posix() not in resp.raw.decode()
        assert redact._PROJECT_ROOT.encode() not in resp.raw and b"site-packages" not in resp.raw
        assert wrong.encode() not in resp.raw


def test_the_dashboard_csp_allows_only_its_own_origin(rstack: Stack) -> None:
    resp = rstack.request("GET", "/dashboard/", token=None)
    csp = resp.headers["Content-Security-Policy"]
    assert "connect-src 'self';" in csp and "ws:" not in csp and "wss:" not in csp


def test_active_tasks_show_the_message_redacted(rstack: Stack, fofa: FofaServer) -> None:
    fofa.state.delay = 3.0  # the task waits on FOFA while the worker reports it active
    try:
        cid = rstack.create("fofa_task", {"query": 'domain="active.test"', "options": {"key": FOFA_KEY}})
        deadline = time.monotonic() + 20
        seen = None
        while seen is None and time.monotonic() < deadline:
            resp = rstack.request("GET", "/api/celery_task/active/", token=VIEWER_TOKEN)
            seen = next((t for t in resp.data["active_tasks"] if t.get("id") == cid), None)
            if seen is not None:
                assert FOFA_KEY.encode() not in resp.raw
        assert seen is not None, "the task never showed as active"
    finally:
        fofa.state.delay = 0.0
        rstack.wait_status(cid, *TERMINAL, timeout=60)


def test_a_failed_bulk_write_is_summarised_without_its_documents() -> None:
    """The store's error text (logged by handlers) never carries the documents it tried to write."""
    cause = BulkWriteError(
        {"writeErrors": [{"code": 121, "errmsg": "bad", "op": {"options": {"key": FOFA_KEY}}}]}
    )
    error = DatabaseError(cause)
    assert FOFA_KEY not in str(error) and "121" in str(error)
