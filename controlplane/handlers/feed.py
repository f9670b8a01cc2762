"""``/api/celery_task/ws/``: the live task feed over WebSocket.

Protocol (every frame is one JSON object):

client → server
    ``{"action": "auth", "token": "..."}`` — only when no token came with the
    upgrade request (``Authorization: Bearer``/``Token`` header or ``?token=``);
    ``{"action": "subscribe", "celery_id"?, "task_type"?, "status"?, "since"?, "holding"?}``
    — replace the filters (each a string, comma-separated string or list);
    with ``since`` (or ``holding``) the stream restarts from that revision;
    ``{"action": "ping"}`` — answered with ``{"type": "pong"}``.

Query arguments: ``celery_id``, ``task_type``, ``status`` (repeat them or separate
values with commas), ``since`` (replay every matching task changed after that
revision first; without it only live changes are sent), ``holding`` (ids of tasks
the client already shows: those that no longer match are sent as leaves), ``token``.

server → client
    ``{"type": "replay", "rev", "task"}`` — a task changed after ``since`` (from MongoDB);
    ``{"type": "synced", "rev"}`` — the replay is complete, live changes follow;
    ``{"type": "change", "rev", "task"}`` — a live change;
    ``{"type": "leave", "rev", "task"}`` — a task the client was sent (or holds) no longer
    matches its filter (``task`` is its new state);
    ``{"type": "subscribed", "filters", "since"}``, ``{"type": "heartbeat", "rev", "time"}``,
    ``{"type": "resync", "reason"}`` (the client was too slow; the socket closes; reconnect
    with ``since`` = the last revision received), and errors, envelope-shaped:
    ``{"type": "error", "code", "message", "data"}``.

``task`` is the detail endpoint's document (:func:`controlplane.core.documents.detail`).
See :mod:`controlplane.service.feedhub` for the resume guarantee.

Refusals before the upgrade are HTTP answers with the REST envelope: 401 for a bad token,
403 for a foreign origin, 429 for an address throttled for wrong tokens or when
``feed.max_unauthenticated`` sockets of this process are still waiting for their ``auth``
message (each with Retry-After), 503 without a feed. After the upgrade an error frame
precedes the close: 4400 bad query, 4401 no or wrong token, 4429 throttled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlparse

import tornado.web
import tornado.websocket

from controlplane.config import Config
from controlplane.core import documents
from controlplane.core.errors import (
    ApiError,
    Forbidden,
    InvalidParam,
    NotLogin,
    ServiceUnavailable,
    StoreError,
    TooManyRequests,
)
from controlplane.handlers.base import log_uncaught, parse_json, redact, request_summary, status_error
from controlplane.service.auth import token_from_request
from controlplane.service.feedhub import FeedClient, FeedFilter, FeedHub, change_message, parse_holding

log = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's).
CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_LOGIN = 4401
CLOSE_RESYNC = 4408
CLOSE_TOO_MANY = 4429
CLOSE_UNAVAILABLE = 4503


class PendingSockets:
    """This process's feed sockets that have not authenticated yet, at most ``limit`` (0: any number)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def enter(self) -> bool:
        """Count one more; False (and not counted) when the limit is reached."""
        if self.limit and self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        """Count one fewer."""
        self.count = max(0, self.count - 1)


def error_frame(error: ApiError) -> str:
    """An error as sent on the socket: the REST envelope plus ``type``."""
    return json.dumps(
        {"type": "error", "code": error.code, "message": error.message, "data": error.data},
        ensure_ascii=False,
        default=str,
    )


def parse_since(value: Any) -> int:
    """A revision: a non-negative integer (string or number); InvalidParam otherwise."""
    if isinstance(value, bool):
        raise InvalidParam("since", "must be a non-negative integer")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 18:
            raise InvalidParam("since", "must be a non-negative integer")
        return int(value)
    if isinstance(value, int) and 0 <= value < 10**18:
        return value
    raise InvalidParam("since", "must be a non-negative integer")


class FeedHandler(tornado.websocket.WebSocketHandler):
    """One feed connection."""

    config: Config

    def initialize(self, **services: Any) -> None:
        self.services = services
        self.config = self.settings["cp_config"]
        self.hub: FeedHub | None = services.get("feed_hub")
        manager = services.get("manager")
        self.task_types: list[str] = list(manager.registry.values()) if manager is not None else []
        self.client: FeedClient | None = None
        self.principal: Any = None
        self.pump: asyncio.Task[None] | None = None
        self.since: int | None = None
        self.holding: frozenset[str] = frozenset()
        self.filter = FeedFilter()
        self.auth_timer: Any = None
        self.pending: PendingSockets | None = None

    # -- tornado knobs -------------------------------------------------------------

    @property
    def ping_interval(self) -> float | None:
        return self.config.feed.ping_interval or None

    @property
    def ping_timeout(self) -> float | None:
        return self.config.feed.ping_timeout or None

    @property
    def max_message_size(self) -> int:
        # Frames up to 16× the limit are read and answered with an error; larger ones close (1009).
        return self.config.feed.max_message_bytes * 16

    def check_origin(self, origin: str) -> bool:
        # Tokens, not cookies, authenticate the feed, so a foreign page gains nothing
        # from opening it; browsers on the configured CORS origins are welcome too.
        allowed = list(getattr(self.config.api, "cors_origins", []) or [])
        if "*" in allowed or origin in allowed:
            return True
        host = urlparse(origin).netloc.lower()
        return host == (self.request.host or "").lower() or super().check_origin(origin)

    def _foreign_origin(self) -> str | None:
        """The origin of a cross-origin upgrade that :meth:`check_origin` refuses, else None.

        Checked here, before Tornado's own check (the same rule), so that the refusal is the
        envelope rather than Tornado's plain text.
        """
        headers = self.request.headers
        site, origin = headers.get("Sec-Fetch-Site"), headers.get("Origin")
        if site in ("same-origin", "none") or (site is None and origin is None):
            return None
        if origin and self.check_origin(origin):
            return None
        return origin or ""

    def _request_summary(self) -> str:
        # Logs must not record a token given as ``?token=``.
        return request_summary(self.request)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Never Tornado's request repr (it holds the URI, ``?token=`` included)."""
        if isinstance(value, tornado.web.HTTPError):
            log.info("%s %s -> %s", self.request.method, redact(self.request.path), value.status_code)
            return
        log_uncaught(self.request, typ, value, tb)

    # -- upgrade ---------------------------------------------------------------------

    def _refuse(self, error: ApiError) -> None:
        self.set_status(200 if self.config.api.always_http_200 else error.http_status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            self.set_header("Retry-After", str(max(1, int(retry_after + 0.999))))
        self.finish(
            json.dumps({"code": error.code, "message": error.message, "data": error.data}, default=str)
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Another method than the upgrade's GET (or a request Tornado refused): the API's envelope.

        Without this, Tornado answers such requests with its own HTML page.
        """
        self.clear()
        self._refuse(status_error(self, status_code))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.hub is None:
            self._refuse(ServiceUnavailable("feed", "the live feed needs a Redis URL (feed.url)"))
            return
        origin = self._foreign_origin()
        if origin is not None:
            log.info("feed: refused a socket from %s: origin not allowed", self.request.remote_ip)
            reason = "cross-origin WebSocket refused: the origin check failed (see api.cors_origins)"
            self._refuse(Forbidden({"reason": reason, "origin": origin[:256]}))
            return
        token = token_from_request(self.request)
        auth = self.settings.get("cp_auth")
        if token is not None and auth is not None:
            try:
                self.principal = await auth.authenticate_async(token, self.request.remote_ip)
            except (NotLogin, TooManyRequests) as exc:
                log.info("feed: refused a token from %s", self.request.remote_ip)
                self._refuse(exc)
                return
        if self.principal is None and auth is not None and auth.enabled:
            pending: PendingSockets | None = self.settings.get("cp_feed_pending")
            if pending is not None and not pending.enter():
                log.warning(
                    "feed: refused a socket from %s: %d wait to authenticate",
                    self.request.remote_ip,
                    pending.count,
                )
                error = TooManyRequests(self.config.feed.auth_timeout)
                error.data["reason"] = "too many sockets waiting to authenticate (feed.max_unauthenticated)"
                self._refuse(error)
                return
            self.pending = pending
        try:
            await super().get(*args, **kwargs)
        finally:
            self._authenticated()

    def _authenticated(self) -> None:
        """No longer among the sockets waiting for their token (authenticated, or gone)."""
        if self.pending is not None:
            self.pending.leave()
            self.pending = None

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        # A bounded kernel send buffer: a client that stops reading backs up into its
        # queue (and is dropped) instead of parking megabytes in the kernel.
        stream = getattr(self.ws_connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is not None and self.config.feed.send_buffer_bytes > 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.feed.send_buffer_bytes)
        try:
            raw = {
                k: [v.decode("utf-8", "replace") for v in vs]
                for k, vs in self.request.query_arguments.items()
            }
            for key in ("since",):
                if len(raw.get(key, [])) > 1:
                    raise InvalidParam(key, "must be given once")
            self.since = parse_since(raw["since"][0]) if raw.get("since") else None
            self.holding = parse_holding(raw["holding"]) if raw.get("holding") else frozenset()
            self.filter = FeedFilter.parse(raw, self.task_types)
        except ApiError as exc:
            self.write_message(error_frame(exc))
            self.close(CLOSE_BAD_REQUEST, "bad request")
            return
        if self.principal is None:
            auth = self.settings.get("cp_auth")
            try:
                self.principal = auth.authenticate(None) if auth is not None else "anonymous"
            except NotLogin:
                # A browser: the token may come as the first message.
                loop = asyncio.get_running_loop()
                self.auth_timer = loop.call_later(self.config.feed.auth_timeout, self._auth_expired)
                return
        self._start(self.since, self.holding)

    def _auth_expired(self) -> None:
        if self.principal is None:
            self._fail(NotLogin({"reason": "a valid API token is required"}), CLOSE_NOT_LOGIN)

    def _fail(self, error: ApiError, code: int) -> None:
        try:
            self.write_message(error_frame(error))
        except tornado.websocket.WebSocketClosedError:
            pass
        self.close(code, error.message[:100])

    # -- the stream ------------------------------------------------------------------

    def _start(self, since: int | None, holding: frozenset[str] = frozenset()) -> None:
        hub = self.hub
        assert hub is not None
        if self.client is None:
            self.client = hub.register(self.filter, self._overflow)
        self.client.filter = self.filter
        if self.pump is not None:
            self.pump.cancel()
        self.pump = asyncio.ensure_future(self._run(since, holding))

    async def _run(self, since: int | None, holding: frozenset[str]) -> None:
        hub, client = self.hub, self.client
        assert hub is not None and client is not None
        try:
            if not hub.ready.is_set():
                try:
                    await asyncio.wait_for(hub.ready.wait(), 10)
                except TimeoutError:
                    self._fail(ServiceUnavailable("feed", "the feed bus is unreachable"), CLOSE_UNAVAILABLE)
                    return
            seam = hub.begin(client, since, holding)
            flt = client.filter
            try:
                # Leaves of held tasks go out among the replayed changes, in revision order.
                leaves = collections.deque(await hub.departed(seam, client))
                async for docs in hub.replay(seam, flt):
                    for doc in docs:
                        while leaves and int(leaves[0]["rev"]) < int(doc["rev"]):
                            await self.write_message(
                                change_message("leave", documents.detail(leaves.popleft()))
                            )
                        await self.write_message(change_message("replay", documents.detail(doc)))
                for doc in leaves:
                    await self.write_message(change_message("leave", documents.detail(doc)))
            except OverflowError:
                self._overflow(client, "more changes since that revision than feed.max_replay")
                return
            except StoreError as exc:
                log.warning("feed replay failed: %s", exc)
                self._fail(
                    ServiceUnavailable("database", type(exc.__cause__ or exc).__name__), CLOSE_UNAVAILABLE
                )
                return
            await self.write_message(json.dumps({"type": "synced", "rev": seam.floor}))
            while True:
                await client.wakeup.wait()
                client.wakeup.clear()
                for entry in client.take():
                    client.sent += 1
                    await self.write_message(entry.text)
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass
        except asyncio.CancelledError:
            raise

    def _overflow(self, client: FeedClient, reason: str = "the client did not keep up") -> None:
        """Tell a slow client to resync and drop it; never waits for it."""
        if self.pump is not None:
            self.pump.cancel()
        if self.hub is not None:
            self.hub.unregister(client)
        try:
            self.write_message(json.dumps({"type": "resync", "reason": reason}))
        except tornado.websocket.WebSocketClosedError:
            return
        self.close(CLOSE_RESYNC, "resync")

    # -- client messages -----------------------------------------------------------

    async def on_message(self, message: str | bytes) -> None:
        try:
            await self._handle(message)
        except ApiError as exc:
            self.write_message(error_frame(exc))
        except tornado.websocket.WebSocketClosedError:
            pass

    async def _handle(self, message: str | bytes) -> None:
        if len(message) > self.config.feed.max_message_bytes:
            raise InvalidParam("message", f"is larger than {self.config.feed.max_message_bytes} bytes")
        body = parse_json(message, "message", self.config.api.max_json_depth)
        if not isinstance(body, dict):
            raise InvalidParam("message", "must be a JSON object")
        action = body.get("action")
        if action == "auth":
            await self._auth(body)
        elif self.principal is None:
            self._fail(NotLogin({"reason": 'send {"action": "auth", "token": ...} first'}), CLOSE_NOT_LOGIN)
        elif action == "subscribe":
            self._subscribe(body)
        elif action == "ping":
            self.write_message(json.dumps({"type": "pong", "time": time.time()}))
        elif isinstance(action, str):
            raise InvalidParam("action", f"unknown action {action[:64]!r}; valid: auth, subscribe, ping")
        else:
            raise InvalidParam("action", "is required: auth, subscribe or ping")

    async def _auth(self, body: dict[str, Any]) -> None:
        if self.principal is not None:
            self.write_message(json.dumps({"type": "authenticated"}))
            return
        token = body.get("token")
        auth = self.settings.get("cp_auth")
        try:
            if not isinstance(token, str):
                raise NotLogin({"reason": "a valid API token is required"})
            principal = (
                await auth.authenticate_async(token, self.request.remote_ip)
                if auth is not None
                else "anonymous"
            )
        except NotLogin as exc:
            self._fail(exc, CLOSE_NOT_LOGIN)
            return
        except TooManyRequests as exc:
            self._fail(exc, CLOSE_TOO_MANY)
            return
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # gone while its token was being checked
        self.principal = principal
        self._authenticated()
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        self.write_message(json.dumps({"type": "authenticated"}))
        self._start(self.since, self.holding)

    def _subscribe(self, body: dict[str, Any]) -> None:
        unknown = sorted(set(body) - {"action", "since", "holding", "celery_id", "task_type", "status"})
        if unknown:
            raise InvalidParam(
                unknown[0][:64], "unknown field; valid: celery_id, task_type, status, since, holding"
            )
        flt = FeedFilter.parse(body, self.task_types)
        since = parse_since(body["since"]) if body.get("since") is not None else None
        holding = parse_holding(body["holding"]) if body.get("holding") else frozenset()
        self.filter = flt
        if self.client is not None:
            self.client.filter = flt
        self.write_message(
            json.dumps(
                {"type": "subscribed", "filters": flt.as_dict(), "since": since}, separators=(",", ":")
            )
        )
        if since is not None or holding or self.client is None:
            self._start(since, holding)

    def on_close(self) -> None:
        self._authenticated()
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.pump is not None:
            self.pump.cancel()
        if self.client is not None and self.hub is not None:
            self.hub.unregister(self.client)
