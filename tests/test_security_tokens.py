"""Tokens under attack, on a real ``controlplane serve``: nobody can lock a token out by
hammering its salt, and no token reaches a log file, whatever the client sends.

Extra loopback addresses (127.0.0.2) stand for other clients; nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controlplane.runtime import embedded
from controlplane.runtime.logs import JsonFormatter, RedactFilter
from controlplane.service.auth import MAX_FAILURES, token_entry
from tests.conftest import fresh_redis_url
from tests.stack import OPERATOR_TOKEN, TEST_AUTH, VIEWER_TOKEN, Stack

pytestmark = pytest.mark.integration

API = "/api/celery_task"
FEED = f"{API}/ws/"
# Tokens no request has used before its test (so no API process has them cached).
VICTIMS = {
    "far": "cp_00000000000000d4_victim-far-secret-0123456789abcdefgh",
    "near": "cp_00000000000000e5_victim-near-secret-0123456789abcdefg",
    "busy": "cp_00000000000000f6_victim-busy-secret-0123456789abcdefg",
    "feed": "cp_0000000000000a07_victim-feed-secret-0123456789abcdefg",
    "metrics": "cp_0000000000000b18_victim-metrics-secret-0123456789abc",
}


def _tokens() -> list[dict[str, str]]:
    extra = [token_entry(f"victim-{k}", "viewer", t, iterations=1000) for k, t in VICTIMS.items()]
    return [*TEST_AUTH["tokens"], *extra]


def salt(token: str) -> str:
    return token.split("_")[1]


def secret(token: str) -> str:
    return token.split("_", 2)[2]


def wrong(token: str, i: int) -> str:
    return f"cp_{salt(token)}_wrong-guess-{i:05d}-xxxxxxxxxxxxxxxxxxxx"


def call(
    port: int, path: str, token: str | None, source: str = "127.0.0.1", method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


def log_files(stack: Stack) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in Path(stack.workdir).rglob("*.log")}


def assert_nothing_secret_logged(stack: Stack, tokens: list[str]) -> str:
    """No token, secret part or salt of ``tokens`` in any log file of the stack; returns serve's log."""
    files = log_files(stack)
    assert files, "no log files"
    for name, text in files.items():
        for token in tokens:
            for needle in (token, secret(token), salt(token)):
                assert needle not in text, f"{needle!r} in {name}"
    return stack.log("serve")


# -- lockout ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim_api(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("lockout"),
        fresh_redis_url(),
        mongo_server,
        extra_config={"auth": {"tokens": _tokens()}},
    )
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()


def hammer(
    port: int, token: str, count: int, source: str = "127.0.0.1"
) -> list[tuple[int, dict[str, str], Any]]:
    return [call(port, f"{API}/types/", wrong(token, i), source) for i in range(count)]


def test_hammering_a_salt_never_locks_its_token_out(victim_api: Stack) -> None:
    port = victim_api.port
    answers = hammer(port, VICTIMS["far"], MAX_FAILURES + 10)
    statuses = [status for status, _, _ in answers]
    assert statuses[: MAX_FAILURES - 1] == [401] * (MAX_FAILURES - 1), statuses
    assert set(statuses[MAX_FAILURES - 1 :]) == {429}, statuses
    status, headers, body = answers[-1]
    assert (
        body["code"] == 429
        and body["message"] == "TooManyRequests"
        and set(body) == {"code", "message", "data"}
    )
    assert 1 <= int(headers["Retry-After"]) <= 11 and body["data"]["retry_after"] > 0

    # From elsewhere: the correct token works at once, and a wrong guess there is only a 401.
    started = time.monotonic()
    status, _, body = call(port, f"{API}/types/", VICTIMS["far"], "127.0.0.2")
    assert status == 200 and body["code"] == 200 and time.monotonic() - started < 0.5
    assert call(port, f"{API}/types/", wrong(VICTIMS["far"], 999), "127.0.0.2")[0] == 401

    # From the hammering address itself: a correct token is still accepted (at the address's next turn).
    hammer(port, VICTIMS["near"], 5)
    started = time.monotonic()
    status, _, body = call(port, f"{API}/types/", VICTIMS["near"])
    assert status == 200 and body["code"] == 200 and time.monotonic() - started < 2.5
    assert call(port, f"{API}/types/", wrong(VICTIMS["near"], 998))[0] == 429


def test_metrics_throttle_the_hammering_address_not_the_token(victim_api: Stack) -> None:
    port, victim = victim_api.port, VICTIMS["metrics"]
    answers = [call(port, "/metrics", wrong(victim, i), "127.0.0.3") for i in range(MAX_FAILURES + 5)]
    statuses = [status for status, _, _ in answers]
    assert statuses[: MAX_FAILURES - 1] == [401] * (MAX_FAILURES - 1), statuses
    assert statuses[-1] == 429 and answers[-1][2]["message"] == "TooManyRequests", answers[-1]
    assert int(answers[-1][1]["Retry-After"]) >= 1
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=("127.0.0.4", 0))
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {victim}"})
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200 and "controlplane_tasks" in text, (
        "Prometheus's token works while its salt is hammered"
    )


def test_a_token_works_from_elsewhere_while_its_salt_is_being_hammered(victim_api: Stack) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def keep_hammering() -> None:
        i = 0
        while not stop.is_set():
            seen.append(call(victim_api.port, f"{API}/types/", wrong(VICTIMS["busy"], i))[0])
            i += 1

    thread = threading.Thread(target=keep_hammering)
    thread.start()
    try:
        time.sleep(1.0)
        for _ in range(3):
            status, _, _ = call(victim_api.port, f"{API}/types/", VICTIMS["busy"], "127.0.0.2")
            assert status == 200
    finally:
        stop.set()
        thread.join(30)
    assert 429 in seen and 200 not in seen


def test_the_feed_takes_a_correct_token_from_a_throttled_address(victim_api: Stack) -> None:
    hammer(victim_api.port, VICTIMS["feed"], MAX_FAILURES + 2)
    url = f"ws://127.0.0.1:{victim_api.port}{FEED}"

    async def run() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{url}?token={wrong(VICTIMS['feed'], 5000)}")
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["code"] == 429
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"action": "auth", "token": wrong(VICTIMS["feed"], 5001)}))
            err = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert err["type"] == "error" and err["code"] == 429
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"action": "auth", "token": VICTIMS["feed"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "authenticated"

    asyncio.run(run())


def test_failures_are_logged_with_the_address_never_the_salt(victim_api: Stack) -> None:
    log = assert_nothing_secret_logged(victim_api, list(VICTIMS.values()))
    assert "wrong secret for an API token from 127.0.0.1" in log
    assert "throttling API token checks from 127.0.0.1" in log


# -- no token in any log -----------------------------------------------------------------------

# ``controlplane serve`` with two handlers made to fail on request, so that an uncaught exception
# (whose text carries the request's URI, headers and message) goes through the real logging.
FAULTY_SERVE = """
import sys
from controlplane.handlers import feed, tasks
from controlplane.runtime import cli

def explode(what):
    raise RuntimeError(f"injected fault: {what}")

types_get = tasks.TypesHandler.get
def get(self):
    if "explode" in self.request.query_arguments:
        explode(f"{self.request.uri} {dict(self.request.headers)}")
    return types_get(self)
tasks.TypesHandler.get = get

subscribe = feed.FeedHandler._subscribe
def failing_subscribe(self, body):
    if "explode" in body:
        explode(f"{body} {self.request.uri}")
    return subscribe(self, body)
feed.FeedHandler._subscribe = failing_subscribe
sys.exit(cli.main())
"""
UNKNOWN_SALT = "cp_ffffffffffffffff_unknown-salt-secret-0123456789abcdefgh"
WRONG_SECRET = "cp_00000000000000b2_not-the-viewer-secret-0123456789abcdef"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_hostile_session_leaves_no_token_in_the_logs(
    tmp_path_factory: pytest.TempPathFactory, mongo_server: str, log_format: str
) -> None:
    stack = Stack(
        tmp_path_factory.mktemp(f"logs-{log_format}"),
        fresh_redis_url(),
        mongo_server,
        extra_config={"log_format": log_format},
    )
    proc = embedded.spawn(
        [sys.executable, "-c", FAULTY_SERVE, "--config", str(stack.config_path), "serve"],
        log_path=stack.workdir / "serve.log",
        env=stack.env(),
    )
    stack.procs["serve"] = proc
    try:
        embedded.wait_port(stack.port, 30, proc)
        _hostile_session(stack)
        time.sleep(0.5)  # the access log line of the last request follows its response
        log = assert_nothing_secret_logged(stack, [OPERATOR_TOKEN, VIEWER_TOKEN, UNKNOWN_SALT, WRONG_SECRET])
    finally:
        stack.close()
    # The session did reach the paths that log: an uncaught exception in a REST handler and in
    # the feed (with their request's URI), refused tokens, query tokens in the access log.
    assert f"uncaught exception in GET {API}/types/?explode=1&token=[redacted]" in log
    assert f"uncaught exception in GET {FEED}?token=[redacted]" in log
    assert log.count("injected fault") >= 2 and "RuntimeError" in log
    assert "HTTPServerRequest(" not in log, "the request's repr is never logged"
    assert f"GET {API}/?token=[redacted]" in log and "access_token=[redacted]" in log
    assert "wrong secret for an API token from 127.0.0.1" in log
    if log_format == "json":
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any("injected fault" in line.get("exc", "") for line in lines)


def _hostile_session(stack: Stack) -> None:
    port = stack.port
    # REST: tokens where REST takes none (query string, path), wrong and unknown tokens.
    assert stack.request("GET", f"{API}/?token={OPERATOR_TOKEN}", token=None).status == 401
    resp = stack.request(
        "GET", f"{API}/types/?token={VIEWER_TOKEN}&access_token={OPERATOR_TOKEN}", token=VIEWER_TOKEN
    )
    assert resp.status == 200
    assert stack.request("GET", f"{API}/{OPERATOR_TOKEN}/").status == 400
    assert stack.request("GET", f"{API}/types/", token=WRONG_SECRET).status == 401
    assert stack.request("GET", f"{API}/types/", headers={"Token": UNKNOWN_SALT}).status == 401
    assert (
        stack.request("POST", f"{API}/revoke/", {"celery_id": OPERATOR_TOKEN, "token": VIEWER_TOKEN}).status
        == 400
    )
    # REST: a handler that raises, with tokens in the query string and the headers.
    resp = stack.request("GET", f"{API}/types/?explode=1&token={VIEWER_TOKEN}")
    assert resp.status == 500 and resp.json == {"code": 500, "message": "Error", "data": {}}
    assert call(port, f"{API}/types/", WRONG_SECRET)[0] == 401

    async def feed() -> None:
        url = f"ws://127.0.0.1:{port}{FEED}"
        with pytest.raises(InvalidStatus):
            await websockets.connect(f"{url}?token={WRONG_SECRET}")
        async with websockets.connect(url) as ws:  # the token as a message, and a wrong one
            await ws.send(json.dumps({"action": "auth", "token": WRONG_SECRET}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        async with websockets.connect(f"{url}?token={VIEWER_TOKEN}", max_size=None) as ws:
            await ws.send("[" * 30_000)  # too deep: an error frame
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] in ("error", "synced")
            await ws.send(json.dumps({"action": "subscribe", "explode": 1, "token": OPERATOR_TOKEN}))
            with pytest.raises(ConnectionClosed):  # the handler raised: Tornado drops the socket
                while True:
                    await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(feed())
    # Hammering: wrong secrets until the address is throttled.
    for i in range(MAX_FAILURES + 2):
        call(port, f"{API}/types/", wrong(VIEWER_TOKEN, i))


@pytest.mark.parametrize("formatter", [logging.Formatter("%(message)s %(uri)s"), JsonFormatter()])
def test_the_filter_redacts_every_part_of_a_record(formatter: logging.Formatter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    logger = logging.Logger("isolated")  # outside the logger tree: only this handler sees its records
    logger.addHandler(handler)
    try:
        try:
            raise KeyError(f"no such token {VIEWER_TOKEN}")
        except KeyError:
            logger.exception(
                "request %s with %r",
                f"/ws/?token={OPERATOR_TOKEN}&x=1",
                {"Authorization": "Bearer opaque-credential", "token": "plain-secret-value"},
                extra={"uri": f"/a?access_token={OPERATOR_TOKEN}"},
                stack_info=True,
            )
        logger.warning("bad arguments %s %s", UNKNOWN_SALT, extra={"uri": "-"})  # arguments that do not fit
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    for secret_text in (
        OPERATOR_TOKEN,
        VIEWER_TOKEN,
        UNKNOWN_SALT,
        "opaque-credential",
        "plain-secret-value",
    ):
        assert secret_text not in text
        assert secret(secret_text) not in text if secret_text.startswith("cp_") else True
    assert "token=[redacted]&x=1" in text and "KeyError" in text and "bad arguments" in text
