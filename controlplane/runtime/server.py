"""``controlplane serve``: build the services and run the API until SIGTERM/SIGINT.

Slow and greedy clients are bounded at the connection level (:class:`APIServer`): a
request's headers must arrive within ``api.header_timeout`` seconds of the server starting
to wait for them (so a kept-alive connection idle that long is closed too), its body within
``api.body_timeout``, and one address holds at most ``api.max_connections_per_address``
open connections (WebSockets included) per API process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import weakref
from typing import Any

import tornado.httpserver
import tornado.iostream

from controlplane.bus.control import ControlBus
from controlplane.config import Config
from controlplane.core.errors import StoreError
from controlplane.core.tasktypes import Registry
from controlplane.runtime.webapp import make_app
from controlplane.service.auth import Authenticator, client_key, warn_if_disabled
from controlplane.service.feedhub import FeedService
from controlplane.service.manager import TaskManager
from controlplane.service.workers import WorkersService
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)

_SWEEP_EVERY = 1024
_LOG_EVERY = 10.0


class APIServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server, with at most ``max_per_address`` open connections per client
    address (0: no cap; an IPv6 address counts as its /64). A connection over the cap is
    closed at once, unanswered, before anything is read from it."""

    def initialize(self, *args: Any, max_per_address: int = 0, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_per_address = max_per_address
        self._open: dict[str, weakref.WeakSet[tornado.iostream.IOStream]] = {}
        self._admitted = 0
        self._refused = 0
        self._logged = 0.0

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        if self.max_per_address and isinstance(address, tuple) and address:
            if not self._admit(client_key(str(address[0])), stream):
                self._refuse(stream, str(address[0]))
                return
        super().handle_stream(stream, address)

    def _admit(self, key: str, stream: tornado.iostream.IOStream) -> bool:
        streams = self._open.setdefault(key, weakref.WeakSet())
        for old in list(streams):
            if old.closed():
                streams.discard(old)
        if len(streams) >= self.max_per_address:
            return False
        streams.add(stream)
        self._admitted += 1
        if self._admitted % _SWEEP_EVERY == 0:
            for gone in [k for k, v in self._open.items() if all(s.closed() for s in list(v))]:
                del self._open[gone]
        return True

    def _refuse(self, stream: tornado.iostream.IOStream, address: str) -> None:
        stream.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            log.warning(
                "closed %d connection(s) over api.max_connections_per_address (%d); the last from %s",
                self._refused,
                self.max_per_address,
                address,
            )
            self._logged, self._refused = now, 0


def ensure_indexes(store: TaskStore, stop: threading.Event) -> None:
    """Create indexes, retrying with capped backoff while the database is down.

    Runs beside the server: the API starts (and answers 503) even when the
    database is unreachable at start-up.
    """
    delay = 0.2
    while not stop.is_set():
        try:
            store.ensure_indexes()
            return
        except StoreError as exc:
            log.warning("database not ready (%s); retrying in %.1fs", exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 10.0)


class Services:
    """Everything the API process owns, built once and closed once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry.from_config(config)
        self.store = AsyncTaskStore(config.mongo)
        self.writer = TaskStore(config.mongo)
        self.bus = ControlBus(config)
        self.feed = FeedService(config, self.store, self.writer)
        self.manager = TaskManager(
            config,
            self.store,
            self.writer,
            self.bus,
            self.registry,
            feed=self.feed.publisher,
            cache=self.feed.cache,
        )
        task_queues = [config.task_config(t.value).queue for t in self.registry]
        self.workers = WorkersService(config, self.bus, self.writer, task_queues)

    async def close(self) -> None:
        """Release connections and pools."""
        self.manager.close()
        self.workers.close()
        self.bus.close()
        self.writer.close()
        await self.store.close()


async def serve(config: Config, ready: asyncio.Event | None = None, *, reuse_port: bool = False) -> None:
    """Run the API on ``api.host:api.port`` until a stop signal (``reuse_port``: one of several)."""
    services = Services(config)
    stopping = threading.Event()
    indexing = asyncio.get_running_loop().run_in_executor(None, ensure_indexes, services.writer, stopping)
    auth = Authenticator.from_config(config)
    warn_if_disabled(config, log)
    if auth.enabled and not len(auth):
        log.warning("no API tokens configured: every request gets 401; create one: controlplane token create")
    feed = services.feed
    feed.start()
    app = make_app(config, auth=auth, manager=services.manager, feed_hub=feed.hub, workers=services.workers)
    server = APIServer(
        app,
        max_body_size=config.api.max_body_bytes + 64 * 1024,
        xheaders=False,
        idle_connection_timeout=config.api.header_timeout,
        body_timeout=config.api.body_timeout,
        max_per_address=config.api.max_connections_per_address,
    )
    server.listen(config.api.port, config.api.host, reuse_port=reuse_port)
    log.info("API listening on http://%s:%d", config.api.host, config.api.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("API stopping")
    stopping.set()
    server.stop()
    await asyncio.wait_for(server.close_all_connections(), 5)
    await indexing
    await feed.close()
    await app.settings["cp_ratelimit"].close()
    await services.close()
