"""Routing: a JSON endpoint is served plain to bodiless requests and streamed to the others."""

from __future__ import annotations

import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from controlplane.handlers.meta import HealthHandler
from controlplane.handlers.metrics import MetricsHandler
from controlplane.handlers.tasks import CollectionHandler
from controlplane.runtime.webapp import rules


def handler_for(app: tornado.web.Application, method: str, uri: str, **headers: str) -> type:
    start = RequestStartLine(method, uri, "HTTP/1.1")
    request = HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "x", **headers}))
    return app.find_handler(request).handler_class  # type: ignore[attr-defined, no-any-return]


def test_bodiless_requests_get_the_plain_handler_and_bodies_a_streamed_one() -> None:
    table: list[tuple[str, type[tornado.web.RequestHandler], dict[str, object]]] = [
        ("/tasks/?", CollectionHandler, {}),
        ("/health/?", HealthHandler, {}),
        ("/m", MetricsHandler, {}),
    ]
    app = tornado.web.Application(rules(table))
    assert handler_for(app, "GET", "/tasks/?celery_id=x") is CollectionHandler
    assert handler_for(app, "GET", "/tasks/", **{"Content-Length": "0"}) is CollectionHandler
    assert handler_for(app, "DELETE", "/health") is HealthHandler
    for headers in ({"Content-Length": "12"}, {"Transfer-Encoding": "chunked"}, {"Content-Length": "x"}):
        streamed = handler_for(app, "POST", "/tasks/", **headers)
        assert streamed is not CollectionHandler and issubclass(streamed, CollectionHandler)
        assert streamed.__name__ == "CollectionHandler"  # the same label in metrics and logs
    assert handler_for(app, "GET", "/m") is MetricsHandler  # not a JSON endpoint: one rule
    assert handler_for(app, "GET", "/m", **{"Content-Length": "3"}) is MetricsHandler
