"""The one base handler: JSON envelope, error mapping, body parsing.

Every response, success or failure, is ``{"code", "message", "data"}``.  Domain
errors (:class:`controlplane.errors.ApiError`) become their code here and only
here; database and broker outages become 503; anything unexpected becomes a
500 "Error" without a stack trace (the trace goes to the log).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web
from pymongo.errors import ConnectionFailure, PyMongoError

from controlplane.config import Config
from controlplane.errors import ApiError, InvalidParam, NotFound, PayloadTooLarge, ServiceUnavailable

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


class MethodNotAllowed(ApiError):
    """The route exists but not for this HTTP method."""

    code, message, http_status = 405, "MethodNotAllowed", 405


class APIHandler(tornado.web.RequestHandler):
    """Base of every JSON endpoint."""

    config: Config

    def initialize(self, **services: Any) -> None:
        self.services = services
        self.config = self.settings["cp_config"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Server", "controlplane")
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def prepare(self) -> None:
        limit = self.config.api.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise PayloadTooLarge({"limit": limit})

    # -- success and failure -------------------------------------------------

    def reply(self, data: Any) -> None:
        """Finish with a success envelope."""
        self._send(200, 200, "success", data)

    def _send(self, http_status: int, code: int, message: str, data: Any) -> None:
        if self.config.api.always_http_200:
            http_status = 200
        self.set_status(http_status)
        body = json.dumps({"code": code, "message": message, "data": data}, ensure_ascii=False, default=str)
        self.finish(body)

    def send_api_error(self, error: ApiError) -> None:
        """Finish with the envelope of a domain error."""
        if isinstance(error, ServiceUnavailable):
            self.set_header("Retry-After", "5")
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            self.set_header("Retry-After", str(max(1, int(retry_after + 0.999))))
        self._send(error.http_status, error.code, error.message, error.data)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError | tornado.web.HTTPError | PyMongoError):
            log.info("%s %s -> %s", self.request.method, self.request.path, type(value).__name__)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.clear()
        self.set_default_headers()
        if isinstance(exc, ApiError):
            self.send_api_error(exc)
        elif isinstance(exc, ConnectionFailure):
            log.warning("database error on %s %s: %s", self.request.method, self.request.path, exc)
            self.send_api_error(ServiceUnavailable("database", type(exc).__name__))
        elif status_code == 405:
            self.send_api_error(MethodNotAllowed({"method": self.request.method}))
        elif status_code == 404:
            self.send_api_error(NotFound({"path": self.request.path}))
        elif 400 <= status_code < 500:
            self.send_api_error(InvalidParam("request", self._reason or "bad request"))
        else:
            if isinstance(exc, PyMongoError):
                log.error("database error on %s %s: %s", self.request.method, self.request.path, exc)
            self._send(500, 500, "Error", {})

    # -- input ---------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or InvalidParam naming ``body``."""
        raw = self.request.body or b""
        if not raw.strip():
            raise InvalidParam("body", "a JSON object is required")
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidParam("body", "is not valid JSON") from None
        if not isinstance(value, dict):
            raise InvalidParam("body", "must be a JSON object")
        return value

    def query_arg(self, name: str) -> str | None:
        """One query argument; repeated or overlong values are rejected."""
        values = self.get_query_arguments(name)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidParam(name, "must be given once")
        value = values[0]
        if len(value) > 256:
            raise InvalidParam(name, "is too long")
        return value


class NotFoundHandler(APIHandler):
    """Every unknown route: 404 with the envelope."""

    def prepare(self) -> None:
        raise NotFound({"path": self.request.path})
