"""The Tornado application: routes and the services handlers receive."""

from __future__ import annotations

from typing import Any

import tornado.web

from controlplane.config import Config
from controlplane.handlers.base import NotFoundHandler
from controlplane.handlers.tasks import (
    ActiveHandler,
    BatchRevokeHandler,
    CollectionHandler,
    ItemHandler,
    RevokeHandler,
    TypesHandler,
)

PREFIX = r"/api/celery_task"


def routes(services: dict[str, Any]) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """Every route, most specific first (the fixed paths before ``{celery_id}``)."""
    return [
        (rf"{PREFIX}/types/?", TypesHandler, services),
        (rf"{PREFIX}/active/?", ActiveHandler, services),
        (rf"{PREFIX}/revoke/?", RevokeHandler, services),
        (rf"{PREFIX}/batch_revoke/?", BatchRevokeHandler, services),
        (rf"{PREFIX}/?", CollectionHandler, services),
        (rf"{PREFIX}/([^/]+)/?", ItemHandler, services),
    ]


def make_app(config: Config, **services: Any) -> tornado.web.Application:
    """The application; ``services`` (manager, ...) are handed to every handler."""
    return tornado.web.Application(
        routes(services),  # type: ignore[arg-type]
        default_handler_class=NotFoundHandler,
        default_handler_args=services,
        cp_config=config,
        compress_response=True,
        xheaders=False,
    )
