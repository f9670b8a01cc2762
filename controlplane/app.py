"""The Tornado application: routes and the services handlers receive."""

from __future__ import annotations

from typing import Any

import tornado.web

from controlplane.auth import Authenticator
from controlplane.config import Config
from controlplane.handlers.base import NotFoundHandler, log_request
from controlplane.handlers.meta import HealthHandler, OpenAPIHandler
from controlplane.handlers.tasks import (
    ActiveHandler,
    BatchRevokeHandler,
    CollectionHandler,
    ItemHandler,
    RevokeHandler,
    TypesHandler,
)
from controlplane.ratelimit import RateLimiter

PREFIX = r"/api/celery_task"


def routes(services: dict[str, Any]) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """Every route, most specific first (the fixed paths before ``{celery_id}``)."""
    return [
        (r"/api/openapi\.json", OpenAPIHandler, services),
        (r"/api/health/?", HealthHandler, services),
        (rf"{PREFIX}/types/?", TypesHandler, services),
        (rf"{PREFIX}/active/?", ActiveHandler, services),
        (rf"{PREFIX}/revoke/?", RevokeHandler, services),
        (rf"{PREFIX}/batch_revoke/?", BatchRevokeHandler, services),
        (rf"{PREFIX}/?", CollectionHandler, services),
        (rf"{PREFIX}/([^/]+)/?", ItemHandler, services),
    ]


def make_app(
    config: Config, *, auth: Authenticator | None = None, **services: Any
) -> tornado.web.Application:
    """The application; ``services`` (manager, ...) are handed to every handler.

    ``auth`` defaults to :meth:`Authenticator.from_config`; handlers find it in
    ``settings["cp_auth"]`` and the rate limiter in ``settings["cp_ratelimit"]``.
    """
    return tornado.web.Application(
        routes(services),  # type: ignore[arg-type]
        default_handler_class=NotFoundHandler,
        default_handler_args=services,
        cp_config=config,
        cp_auth=auth if auth is not None else Authenticator.from_config(config),
        cp_ratelimit=RateLimiter(config.rate_limit),
        log_function=log_request,
        compress_response=True,
        xheaders=False,
    )
