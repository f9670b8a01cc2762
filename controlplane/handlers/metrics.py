"""``GET /metrics``: the API process's Prometheus metrics (:mod:`controlplane.service.metrics`)."""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from controlplane.core.errors import NotLogin, TooManyRequests
from controlplane.service.auth import token_from_request
from controlplane.service.metrics import ApiMetrics


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: Prometheus text format, counts only.

    Task counts by type and status still say something about the work a team
    runs, so a viewer token is needed (Prometheus sends it as a bearer token)
    unless ``metrics.public`` is true.
    """

    def initialize(self, **services: Any) -> None:
        self.services = services

    def set_default_headers(self) -> None:
        self.set_header("Server", "controlplane")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def _refuse(self, error: NotLogin | TooManyRequests) -> None:
        """The envelope of a refused scrape: 401, or 429 with Retry-After for a throttled address."""
        self.set_status(error.http_status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if isinstance(error, NotLogin):
            self.set_header("WWW-Authenticate", 'Bearer realm="controlplane"')
        else:
            self.set_header("Retry-After", str(max(1, int(error.retry_after + 0.999))))
        self.finish(json.dumps({"code": error.code, "message": error.message, "data": error.data}))

    async def get(self) -> None:
        metrics: ApiMetrics | None = self.settings.get("cp_metrics")
        if metrics is None:
            raise tornado.web.HTTPError(404)
        if not self.settings["cp_config"].metrics.public:
            token = token_from_request(self.request, allow_query=False)
            try:
                await self.settings["cp_auth"].authenticate_async(token, self.request.remote_ip)
            except (NotLogin, TooManyRequests) as exc:
                self._refuse(exc)
                return
        await metrics.refresh()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(metrics.exposition())
