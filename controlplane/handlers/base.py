"""The one base handler: JSON envelope, error mapping, body parsing.

Every response, success or failure, is ``{"code", "message", "data"}``.  Domain
errors (:class:`controlplane.core.errors.ApiError`) become their code here and only
here; database and broker outages become 503; anything unexpected becomes a
500 "Error" without a stack trace (the trace goes to the log, with the request
named by method, path and address, tokens redacted: never Tornado's request repr).

JSON from clients (request bodies here, feed messages in :mod:`controlplane.handlers.feed`)
is parsed by :func:`parse_json`, which refuses nesting deeper than ``api.max_json_depth``
before the parser sees it.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import tornado.web

from controlplane.config import Config
from controlplane.core.errors import (
    ApiError,
    Forbidden,
    InvalidParam,
    NotFound,
    NotLogin,
    PayloadTooLarge,
    ServiceUnavailable,
    StoreError,
)
from controlplane.service.auth import (
    OPERATOR,
    VIEWER,
    Authenticator,
    Principal,
    redact_tokens,
    token_from_request,
)
from controlplane.service.ratelimit import RateLimiter

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
}
#: Every JSON response's fixed headers (constants: set without Tornado's per-value checks).
FIXED_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Server": "controlplane",
    **SECURITY_HEADERS,
}
CORS_ALLOW_HEADERS = "Authorization, Token, Content-Type"
CORS_ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
#: The role each HTTP method needs unless a handler says otherwise (``required_roles`` or ``@requires``).
DEFAULT_ROLES = {"GET": VIEWER, "HEAD": VIEWER}
_LIFTED_BODY_LIMIT = 1 << 40

F = TypeVar("F", bound=Callable[..., Any])
access_log = logging.getLogger("tornado.access")

_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKET = bytes(b for b in range(256) if b not in _DEPTH_STEP)


def redact(uri: str) -> str:
    """``uri`` (or any text about a request) without tokens or ``token=`` values, for logs."""
    return redact_tokens(uri)


def json_depth_exceeds(raw: bytes | str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than ``limit`` deep (brackets inside
    strings do not count). Linear, in C loops, without recursion: safe on any input.

    Strings are cut out by dropping escaped backslashes and quotes and then every other
    piece between quotes; for valid JSON (and any valid prefix of invalid JSON, which is all
    a parser reads) that leaves exactly the text outside strings.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    outside = b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKET)
    if re.search(rb"[\[{]{%d}" % (limit + 1), brackets):
        return True  # a run of opening brackets alone is too deep (what attacks send)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def parse_json(raw: bytes | str, field: str, max_depth: int) -> Any:
    """Client JSON, or InvalidParam naming ``field``: not JSON, or nested deeper than ``max_depth``."""
    if json_depth_exceeds(raw, max_depth):
        raise InvalidParam(field, f"is nested deeper than {max_depth} levels", limit=max_depth)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidParam(field, "is not valid JSON") from None
    except RecursionError:
        raise InvalidParam(field, f"is nested deeper than {max_depth} levels", limit=max_depth) from None


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log line (Tornado's format) without credentials from the query string."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    req = handler.request
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        req.method,
        redact(req.uri or ""),
        req.remote_ip,
        1000 * req.request_time(),
    )


def request_summary(request: Any) -> str:
    """``METHOD uri (address)`` for logs, tokens redacted."""
    return f"{request.method} {redact(request.uri or '')} ({request.remote_ip})"


def log_uncaught(request: Any, typ: Any, value: Any, tb: Any) -> None:
    """Log an exception no handler expected: the request by method, redacted URI and address,
    and the trace (which the logging filter redacts too); never the request's repr."""
    log.error("uncaught exception in %s", request_summary(request), exc_info=(typ, value, tb))


def requires(role: str) -> Callable[[F], F]:
    """Declare the role a handler method needs (``@requires("operator")``)."""

    def mark(method: F) -> F:
        method._cp_role = role  # type: ignore[attr-defined]
        return method

    return mark


class MethodNotAllowed(ApiError):
    """The route exists but not for this HTTP method."""

    code, message, http_status = 405, "MethodNotAllowed", 405


def status_error(handler: tornado.web.RequestHandler, status_code: int) -> ApiError:
    """The envelope's error for an HTTP status Tornado raised itself (no domain error behind it)."""
    if status_code == 405:
        return MethodNotAllowed({"method": handler.request.method})
    if status_code == 404:
        return NotFound({"path": handler.request.path})
    if 400 <= status_code < 500:
        return InvalidParam("request", handler._reason or "bad request")
    return ApiError({}, "Error")


class APIHandler(tornado.web.RequestHandler):
    """Base of every JSON endpoint: authenticates, authorizes, rate-limits and bounds the body.

    A request with a body reaches the :func:`streamed` variant of its handler
    (see :mod:`controlplane.runtime.webapp`), so that a body larger than
    ``api.max_body_bytes`` gets a 413 envelope as soon as its ``Content-Length``
    (or, chunked, its running size) shows it, without being read into memory.
    A request without one reaches the plain class, which Tornado runs without
    the streaming hand-off (a turn of the event loop per request).
    """

    config: Config
    #: Who is calling (set by :meth:`prepare`); None only on public endpoints.
    principal: Principal | None = None
    #: Role per HTTP method, over :data:`DEFAULT_ROLES`; unlisted methods need ``operator``.
    required_roles: ClassVar[dict[str, str]] = {}
    #: Rate-limit bucket (``create`` or ``revoke``) per HTTP method.
    rate_limited: ClassVar[dict[str, str]] = {}
    #: No authentication at all (health, the OpenAPI document); must reveal nothing about tasks.
    public: ClassVar[bool] = False

    def initialize(self, **services: Any) -> None:
        self.services = services
        self.config = self.settings["cp_config"]
        self._received = 0
        self._too_large = False

    def set_default_headers(self) -> None:
        headers = self._headers  # Tornado's own response headers (cleared before this is called)
        for name, value in FIXED_HEADERS.items():
            headers[name] = value
        origin = self.request.headers.get("Origin")
        config: Config = self.settings["cp_config"]
        if origin and origin in config.api.cors_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", "Retry-After")
            self.add_header("Vary", "Origin")

    def compute_etag(self) -> None:
        """No ETag: every answer is ``Cache-Control: no-store``, so none would be revalidated."""
        return None

    # -- access control and body size ------------------------------------------

    async def prepare(self) -> None:
        # This handler enforces its own, smaller limit below and in data_received.
        self.request.connection.set_max_body_size(_LIFTED_BODY_LIMIT)  # type: ignore[union-attr]
        if self.request.method == "OPTIONS":
            return
        self._check_method()
        if not self.public:
            self.principal = await self.authenticate()
            self.authorize(self.principal)
        self._check_length()
        action = self.rate_limited.get(self.request.method or "")
        if action is not None and self.principal is not None:
            limiter: RateLimiter = self.settings["cp_ratelimit"]
            await limiter.check(action, self.principal.name)

    def _check_method(self) -> None:
        """405 for a method this route does not have, before authentication (whatever the role)."""
        name = (self.request.method or "").lower()
        if getattr(type(self), name, None) is getattr(tornado.web.RequestHandler, name, None):
            raise MethodNotAllowed({"method": self.request.method})

    async def authenticate(self) -> Principal:
        """The caller, from ``Authorization: Bearer <t>`` or ``Token: <t>``; NotLogin otherwise
        (TooManyRequests while this address is throttled for wrong secrets)."""
        auth: Authenticator = self.settings["cp_auth"]
        req = self.request
        try:
            return await auth.authenticate_async(token_from_request(req, allow_query=False), req.remote_ip)
        except NotLogin:
            log.info("unauthenticated %s %s from %s", req.method, redact(req.path), req.remote_ip)
            raise

    def required_role(self, method: str) -> str:
        """The role ``method`` needs on this handler."""
        marked = getattr(getattr(self, method.lower(), None), "_cp_role", None)
        if isinstance(marked, str):
            return marked
        return self.required_roles.get(method) or DEFAULT_ROLES.get(method) or OPERATOR

    def authorize(self, principal: Principal) -> None:
        """Forbidden unless ``principal`` has the role the request's method needs."""
        role = self.required_role(self.request.method or "")
        if not principal.allows(role):
            req = self.request
            log.warning("forbidden: %s (%s) %s %s", principal.name, principal.role, req.method, req.path)
            raise Forbidden({"reason": f"requires the {role} role", "role": principal.role})

    def _check_length(self) -> None:
        limit = self.config.api.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is None:
            return
        if not length.strip().isdigit():
            raise InvalidParam("Content-Length", "must be a number")
        if int(length) > limit:
            raise PayloadTooLarge({"limit": limit})

    def data_received(self, chunk: bytes) -> None:
        """Collect the body; past the limit, answer 413 at once and drop the rest."""
        if self._too_large or self._finished:
            return
        self._received += len(chunk)
        limit = self.config.api.max_body_bytes
        if self._received > limit:
            self._too_large = True
            self.request.body = b""
            self.send_api_error(PayloadTooLarge({"limit": limit}))
            return
        self.request.body += chunk

    def options(self, *args: Any) -> None:
        """CORS preflight: allowed only for the configured ``api.cors_origins``."""
        origin = self.request.headers.get("Origin")
        if origin is not None and origin not in self.config.api.cors_origins:
            raise Forbidden({"reason": "origin not allowed"})
        if origin is not None:
            self.set_header("Access-Control-Allow-Methods", CORS_ALLOW_METHODS)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def on_finish(self) -> None:
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and self.principal is not None:
            log.info(
                "audit: %s (%s) %s %s -> %d",
                self.principal.name,
                self.principal.role,
                self.request.method,
                self.request.path,
                self.get_status(),
            )

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
        if isinstance(error, NotLogin):
            self.set_header("WWW-Authenticate", 'Bearer realm="controlplane"')
        self._send(error.http_status, error.code, error.message, error.data)

    def _request_summary(self) -> str:
        return request_summary(self.request)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError | tornado.web.HTTPError | StoreError):
            log.info("%s %s -> %s", self.request.method, redact(self.request.path), type(value).__name__)
            return
        log_uncaught(self.request, typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.clear()
        self.set_default_headers()
        if isinstance(exc, ApiError):
            if isinstance(exc, StoreError):
                log.warning("database error on %s %s: %s", self.request.method, self.request.path, exc)
            self.send_api_error(exc)
        elif status_code < 500:
            self.send_api_error(status_error(self, status_code))
        else:
            if isinstance(exc, StoreError):
                log.error("database error on %s %s: %s", self.request.method, self.request.path, exc)
            self._send(500, 500, "Error", {})

    # -- input ---------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or InvalidParam naming ``body``."""
        raw = self.request.body or b""
        if not raw.strip():
            raise InvalidParam("body", "a JSON object is required")
        value = parse_json(raw, "body", self.config.api.max_json_depth)
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


def streamed(handler: type[APIHandler]) -> type[APIHandler]:
    """``handler`` receiving its body as it arrives (:meth:`APIHandler.data_received`)."""
    namespace = {"__doc__": handler.__doc__, "__module__": handler.__module__}
    return tornado.web.stream_request_body(type(handler.__name__, (handler,), namespace))


@tornado.web.stream_request_body
class NotFoundHandler(APIHandler):
    """Every unknown route: 404 with the envelope (streamed: a body is never read)."""

    async def prepare(self) -> None:
        self.request.connection.set_max_body_size(_LIFTED_BODY_LIMIT)  # type: ignore[union-attr]
        raise NotFound({"path": self.request.path})
