"""The Tornado application: routes and the services handlers receive."""

from __future__ import annotations

from typing import Any

import tornado.httputil
import tornado.web
from tornado.routing import PathMatches, Rule

from controlplane.bus.feed import feed_url
from controlplane.config import Config
from controlplane.handlers.base import APIHandler, NotFoundHandler, log_request, streamed
from controlplane.handlers.feed import FeedHandler, PendingSockets
from controlplane.handlers.meta import HealthHandler, OpenAPIHandler, WhoAmIHandler
from controlplane.handlers.metrics import MetricsHandler
from controlplane.handlers.pages import static_routes
from controlplane.handlers.schedules import ScheduleHandler, SchedulesHandler
from controlplane.handlers.tasks import (
    ActiveHandler,
    BatchRevokeHandler,
    CollectionHandler,
    ItemHandler,
    ResultsHandler,
    RevokeHandler,
    ScreenshotHandler,
    TypesHandler,
)
from controlplane.handlers.workers import (
    ConsumersHandler,
    PoolHandler,
    QueuesHandler,
    ShutdownHandler,
    WorkerHandler,
    WorkersHandler,
)
from controlplane.service.auth import Authenticator
from controlplane.service.metrics import ApiMetrics
from controlplane.service.ratelimit import RateLimiter, key_prefix

PREFIX = r"/api/celery_task"
WORKER = r"/api/workers/(?P<name>[^/]+)"
SCHEDULE = r"/api/schedules/(?P<schedule_id>[^/]+)"


def routes(services: dict[str, Any]) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """Every route, most specific first (the fixed paths before ``{celery_id}``)."""
    return [
        (r"/api/openapi\.json", OpenAPIHandler, services),
        (r"/api/health/?", HealthHandler, services),
        (r"/api/whoami/?", WhoAmIHandler, services),
        (rf"{PREFIX}/types/?", TypesHandler, services),
        (rf"{PREFIX}/active/?", ActiveHandler, services),
        (rf"{PREFIX}/revoke/?", RevokeHandler, services),
        (rf"{PREFIX}/batch_revoke/?", BatchRevokeHandler, services),
        (rf"{PREFIX}/ws/?", FeedHandler, services),
        (rf"{PREFIX}/?", CollectionHandler, services),
        (rf"{PREFIX}/([^/]+)/results/?", ResultsHandler, services),
        (
            rf"{PREFIX}/(?P<celery_id>[^/]+)/results/site/(?P<site_id>[^/]+)/screenshot\.png",
            ScreenshotHandler,
            services,
        ),
        (rf"{PREFIX}/([^/]+)/?", ItemHandler, services),
        (r"/api/workers/?", WorkersHandler, services),
        (rf"{WORKER}/pool/?", PoolHandler, services),
        (rf"{WORKER}/consumers/?", ConsumersHandler, services),
        (rf"{WORKER}/shutdown/?", ShutdownHandler, services),
        (rf"{WORKER}/?", WorkerHandler, services),
        (r"/api/queues/?", QueuesHandler, services),
        (r"/api/schedules/?", SchedulesHandler, services),
        (rf"{SCHEDULE}/?", ScheduleHandler, services),
    ]


def extra_routes(
    services: dict[str, Any],
) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """Routes outside the JSON API (not in the OpenAPI document): metrics, dashboard, API reference."""
    return [(r"/metrics", MetricsHandler, services), *static_routes()]


class BodilessMatches(PathMatches):
    """A path, for requests that carry no body (no ``Transfer-Encoding``, no ``Content-Length`` above 0)."""

    def match(self, request: tornado.httputil.HTTPServerRequest) -> dict[str, Any] | None:
        headers = request.headers
        if "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() not in ("", "0"):
            return None
        return super().match(request)


def rules(table: list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]) -> list[Rule]:
    """Tornado rules for ``table``: a JSON endpoint twice, plain for bodiless requests, else streamed."""
    out = []
    for pattern, handler, kwargs in table:
        if issubclass(handler, APIHandler):
            out.append(Rule(BodilessMatches(pattern), handler, kwargs))
            out.append(Rule(PathMatches(pattern), streamed(handler), kwargs))
        else:
            out.append(Rule(PathMatches(pattern), handler, kwargs))
    return out


def make_app(
    config: Config, *, auth: Authenticator | None = None, **services: Any
) -> tornado.web.Application:
    """The application; ``services`` (manager, ...) are handed to every handler.

    ``auth`` defaults to :meth:`Authenticator.from_config`; handlers find it in
    ``settings["cp_auth"]``, the rate limiter in ``settings["cp_ratelimit"]`` and the count
    of feed sockets still waiting to authenticate in ``settings["cp_feed_pending"]``.
    """
    metrics = ApiMetrics(config) if config.metrics.enabled else None
    if metrics is not None:
        metrics.feed_hub = services.get("feed_hub")
        metrics.workers_view = services.get("workers")
        if services.get("manager") is not None:
            metrics.instrument(services["manager"])
    return tornado.web.Application(
        rules([*extra_routes(services), *routes(services)]),
        default_handler_class=NotFoundHandler,
        default_handler_args=services,
        cp_config=config,
        cp_auth=auth if auth is not None else Authenticator.from_config(config),
        cp_ratelimit=RateLimiter(
            config.rate_limit, redis_url=feed_url(config), prefix=key_prefix(config.mongo.database)
        ),
        log_function=metrics.log_function(log_request) if metrics is not None else log_request,
        cp_metrics=metrics,
        cp_feed_pending=PendingSockets(config.feed.max_unauthenticated),
        compress_response=True,
        xheaders=False,
    )
