"""Slow and greedy clients, deeply nested JSON, and the feed's refusals, on a real ``controlplane serve``.

The stack here runs with deliberately small limits so that the tests take seconds:
``api.header_timeout`` and ``api.body_timeout`` of 1 s (default 10 s and 60 s),
``api.max_connections_per_address`` of 8 (default 256) and ``feed.max_unauthenticated``
of 3 (default 1000), with ``feed.auth_timeout`` raised to 30 s so that sockets waiting
for their token stay waiting. Extra loopback addresses (127.0.0.2, 127.0.0.3) stand for
other clients; nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controlplane.handlers.base import json_depth_exceeds
from tests.conftest import fresh_redis_url
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Stack

pytestmark = pytest.mark.integration

API = "/api/celery_task"
FEED = f"{API}/ws/"
ORIGIN = "https://console.example"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
PER_ADDRESS = 8
PENDING = 3
DEPTH = 32  # api.max_json_depth's default


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("limits"),
        fresh_redis_url(),
        mongo_server,
        extra_config={
            "api": {
                "header_timeout": HEADER_TIMEOUT,
                "body_timeout": BODY_TIMEOUT,
                "max_connections_per_address": PER_ADDRESS,
                "cors_origins": [ORIGIN],
            },
            "feed": {"max_unauthenticated": PENDING, "auth_timeout": 30.0},
        },
    )
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``within`` seconds, and what it sent before."""
    deadline = time.monotonic() + within
    got = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return True, got
        if not data:
            return True, got
        got += data
    return False, got


def get(port: int, path: str, source: str = "127.0.0.1", token: str = VIEWER_TOKEN) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def ws_url(stack: Stack, token: str | None = VIEWER_TOKEN, **params: str) -> str:
    query = dict(params)
    if token is not None:
        query["token"] = token
    return f"ws://127.0.0.1:{stack.port}{FEED}?" + "&".join(f"{k}={v}" for k, v in query.items())


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def until(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


def envelope(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert isinstance(body, dict) and set(body) == {"code", "message", "data"}, raw
    return body


# -- slow clients --------------------------------------------------------------------------


def test_sockets_dripping_headers_are_closed_after_the_header_timeout(limited: Stack) -> None:
    """Five sockets send a request line, then one header line every 0.2 s, forever."""
    socks = [connect(limited.port) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(b"GET /api/celery_task/types/ HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed_at: dict[int, float] = {}
        while len(closed_at) < len(socks) and time.monotonic() - started < HEADER_TIMEOUT + 5:
            for i, sock in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    sock.sendall(b"X-Drip: 1\r\n")
                    done, sent = closed_by_server(sock, 0.04)
                except OSError:
                    done, sent = True, b""
                if done:
                    assert sent == b"", sent[:200]
                    closed_at[i] = time.monotonic() - started
            time.sleep(0.2)
        assert len(closed_at) == len(socks), f"still open after {HEADER_TIMEOUT + 5}s: {closed_at}"
        assert max(closed_at.values()) < HEADER_TIMEOUT + 2.5, closed_at
    finally:
        for sock in socks:
            sock.close()
    assert get(limited.port, f"{API}/types/")[0] == 200


def test_idle_and_kept_alive_connections_are_closed_after_the_header_timeout(limited: Stack) -> None:
    silent = connect(limited.port)
    kept = connect(limited.port)
    try:
        kept.sendall(
            f"GET {API}/types/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {VIEWER_TOKEN}\r\n\r\n".encode()
        )
        started = time.monotonic()
        done, sent = closed_by_server(silent, HEADER_TIMEOUT + 3)
        assert done and sent == b"" and time.monotonic() - started < HEADER_TIMEOUT + 2.5
        done, sent = closed_by_server(kept, HEADER_TIMEOUT + 3)
        assert done and sent.startswith(b"HTTP/1.1 200"), sent[:200]
    finally:
        silent.close()
        kept.close()


def test_a_body_slower_than_the_body_timeout_is_cut_off(limited: Stack) -> None:
    sock = connect(limited.port)
    try:
        sock.sendall(
            (
                f"POST {API}/revoke/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            ).encode()
            + b'{"celery_id": '
        )
        started = time.monotonic()
        done, _ = closed_by_server(sock, BODY_TIMEOUT + 4)
        assert done and time.monotonic() - started < BODY_TIMEOUT + 3
    finally:
        sock.close()


def test_connections_per_address_are_capped(limited: Stack) -> None:
    async def run() -> None:
        held = [await websockets.connect(ws_url(limited)) for _ in range(PER_ADDRESS)]
        try:
            for ws in held:
                await until(ws, "synced")
            # One more from the same address: closed at once, unanswered, before anything is read.
            extra = connect(limited.port)
            try:
                extra.sendall(f"GET {API}/types/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            except OSError:
                pass
            done, sent = closed_by_server(extra, 2.0)
            extra.close()
            assert done and sent == b""
            # Another address is served, and so is this one once a connection closes.
            assert (await asyncio.to_thread(get, limited.port, f"{API}/types/", "127.0.0.2"))[0] == 200
            await held.pop().close()
            await asyncio.sleep(0.2)
            assert (await asyncio.to_thread(get, limited.port, f"{API}/types/"))[0] == 200
        finally:
            await asyncio.gather(*(ws.close() for ws in held))

    asyncio.run(run())
    assert "over api.max_connections_per_address (8)" in limited.log("serve")


def test_sockets_waiting_to_authenticate_are_capped(limited: Stack) -> None:
    other = {"local_addr": ("127.0.0.3", 0)}

    async def run() -> None:
        waiting = [await websockets.connect(ws_url(limited, token=None), **other) for _ in range(PENDING)]
        try:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(ws_url(limited, token=None), **other)
            resp = refused.value.response
            body = envelope(resp.body)
            assert resp.status_code == 429 and body["code"] == 429 and body["message"] == "TooManyRequests"
            assert "feed.max_unauthenticated" in body["data"]["reason"]
            assert int(resp.headers["Retry-After"]) >= 1
            # A token in the upgrade request needs no waiting slot.
            async with websockets.connect(ws_url(limited), **other) as ws:
                await until(ws, "synced")
            # Authenticating frees a slot; so does leaving.
            await waiting[0].send(json.dumps({"action": "auth", "token": VIEWER_TOKEN}))
            assert (await recv_json(waiting[0]))["type"] == "authenticated"
            waiting.append(await websockets.connect(ws_url(limited, token=None), **other))
            await waiting[1].close()
            await asyncio.sleep(0.2)
            waiting.append(await websockets.connect(ws_url(limited, token=None), **other))
            with pytest.raises(InvalidStatus):
                await websockets.connect(ws_url(limited, token=None), **other)
        finally:
            await asyncio.gather(*(ws.close() for ws in waiting))

    asyncio.run(run())


# -- deeply nested JSON --------------------------------------------------------------------


def test_deeply_nested_bodies_are_400_naming_body_and_the_limit(limited: Stack) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for path, raw in [
        (f"{API}/", deep),
        (f"{API}/", b'{"task_type": "sleep_task", "data": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001),
        (f"{API}/batch_revoke/", b"[" * 100_000),  # never closed
        (f"{API}/revoke/", b'{"celery_id": ' + b"[" * (DEPTH) + b"]" * DEPTH + b"}"),  # one too deep
    ]:
        resp = limited.request("POST", path, raw=raw)
        assert resp.status == 400 and resp.json["code"] == 400, (path, resp)
        assert resp.data["field"] == "body" and resp.data["limit"] == DEPTH, resp
        assert str(DEPTH) in resp.data["reason"]
    # At the limit the body is parsed (and judged on its content); brackets in strings do not count.
    at_limit = b'{"celery_id": ' + b"[" * (DEPTH - 1) + b"]" * (DEPTH - 1) + b"}"
    resp = limited.request("POST", f"{API}/revoke/", raw=at_limit)
    assert resp.status == 400 and resp.data["field"] == "celery_id", resp
    resp = limited.request("POST", f"{API}/revoke/", {"celery_id": "[{" * 50_000})
    assert resp.status == 400 and resp.data["field"] == "celery_id", resp
    assert "Traceback" not in limited.log("serve")


def test_a_deeply_nested_feed_message_gets_an_error_and_the_socket_stays(limited: Stack) -> None:
    async def run() -> None:
        async with websockets.connect(ws_url(limited), max_size=None) as ws:
            await until(ws, "synced")
            for frame in ("[" * 30_000 + "]" * 30_000, '{"action": ' + "[" * 60_000):
                await ws.send(frame)
                err = await until(ws, "error")
                assert err["code"] == 400 and err["data"]["field"] == "message", err
                assert err["data"]["limit"] == DEPTH
            await ws.send(json.dumps({"action": "ping"}))
            assert (await until(ws, "pong"))["type"] == "pong"

    asyncio.run(run())
    assert "Traceback" not in limited.log("serve")


def _nest(depth: int, kinds: list[bool]) -> str:
    opens = "".join("[" if kinds[i % len(kinds)] else '{"k":' for i in range(depth))
    closes = "".join("]" if kinds[i % len(kinds)] else "}" for i in reversed(range(depth)))
    return opens + '"x"' + closes


@given(
    st.integers(0, 80),
    st.lists(st.booleans(), min_size=1, max_size=5),
    st.text(alphabet='[]{}"\\ab', max_size=30),
)
@settings(max_examples=200, deadline=None)
def test_depth_scan_agrees_with_the_parser(depth: int, kinds: list[bool], noise: str) -> None:
    text = _nest(depth, kinds)
    assert json_depth_exceeds(text, DEPTH) == (depth > DEPTH)
    # Brackets inside strings (escaped quotes included) never count.
    wrapped = json.dumps({"s": noise, "v": json.loads(text)})
    assert json_depth_exceeds(wrapped, DEPTH) == (depth + 1 > DEPTH)


# -- the feed's refusals -------------------------------------------------------------------


def test_a_foreign_origin_is_refused_with_the_envelope(limited: Stack) -> None:
    async def run() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(ws_url(limited), origin="https://evil.example")
        resp = refused.value.response
        body = envelope(resp.body)
        assert resp.status_code == 403 and body["code"] == 403 and body["message"] == "Forbidden"
        assert "origin" in body["data"]["reason"] and body["data"]["origin"] == "https://evil.example"
        assert resp.headers["Content-Type"].startswith("application/json")
        async with websockets.connect(ws_url(limited), origin=ORIGIN) as ws:
            await until(ws, "synced")

    asyncio.run(run())


def test_a_celery_id_filter_must_be_a_uuid_as_in_the_rest_list(limited: Stack) -> None:
    rest = limited.request("GET", f"{API}/?celery_id=.*")
    assert rest.status == 400 and rest.data["field"] == "celery_id"
    cid = str(uuid.uuid4())

    async def run() -> None:
        async with websockets.connect(ws_url(limited, celery_id=".*")) as ws:
            err = await recv_json(ws)
            assert err["type"] == "error" and err["code"] == 400
            assert err["data"] == rest.data, (err, rest.data)
            with pytest.raises(ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
        async with websockets.connect(ws_url(limited)) as ws:
            await until(ws, "synced")
            for bad in (".*", [cid, "x"], f"{cid},*"):
                await ws.send(json.dumps({"action": "subscribe", "celery_id": bad}))
                err = await until(ws, "error")
                assert err["code"] == 400 and err["data"]["field"] == "celery_id", (bad, err)
            await ws.send(json.dumps({"action": "subscribe", "celery_id": cid.upper()}))
            assert (await until(ws, "subscribed"))["filters"]["celery_id"] == [cid]

    asyncio.run(run())
