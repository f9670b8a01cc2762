"""``controlplane serve``: build the services and run the API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import tornado.httpserver

from controlplane.bus.control import ControlBus
from controlplane.config import Config
from controlplane.core.errors import StoreError
from controlplane.core.tasktypes import Registry
from controlplane.runtime.webapp import make_app
from controlplane.service.auth import Authenticator, warn_if_disabled
from controlplane.service.feedhub import FeedService
from controlplane.service.manager import TaskManager
from controlplane.store.asynctasks import AsyncTaskStore
from controlplane.store.tasks import TaskStore

log = logging.getLogger(__name__)


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

    async def close(self) -> None:
        """Release connections and pools."""
        self.manager.close()
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
    app = make_app(config, auth=auth, manager=services.manager, feed_hub=feed.hub)
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=config.api.max_body_bytes + 64 * 1024, xheaders=False
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
