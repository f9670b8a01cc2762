"""Domain errors, each carrying its envelope code; turned into responses in one place.

Handlers and managers raise these; :mod:`controlplane.handlers.base` is the only
code that turns them into ``{"code", "message", "data"}`` responses.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base of every error that reaches a client; ``code`` is the envelope code."""

    code = 500
    message = "Error"
    http_status = 500

    def __init__(self, data: Any = None, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.data = {} if data is None else data
        if message is not None:
            self.message = message


class CeleryIdNotFound(ApiError):
    """No task with that celery_id is known."""

    code, message, http_status = 102, "CeleryIdNotFound", 404


class NotFoundTask(ApiError):
    """The task document the request names does not exist."""

    code, message, http_status = 103, "NotFoundTask", 404


class TaskIsRunning(ApiError):
    """The task is running and the request would need to terminate it."""

    code, message, http_status = 104, "TaskIsRunning", 409


class TaskIsDone(ApiError):
    """The task has already reached a terminal status."""

    code, message, http_status = 105, "TaskIsDone", 409


class WorkerNotFound(ApiError):
    """No worker of that name is known (it never sent a heartbeat or answered a survey)."""

    code, message, http_status = 106, "WorkerNotFound", 404


class InvalidParam(ApiError):
    """Bad input: the message names the field and the reason."""

    code, http_status = 400, 400

    def __init__(self, field: str, reason: str, **extra: Any) -> None:
        super().__init__({"field": field, "reason": reason, **extra}, f"InvalidParam: {field}: {reason}")
        self.field = field
        self.reason = reason


class NotLogin(ApiError):
    """No credentials, or wrong ones."""

    code, message, http_status = 401, "NotLogin", 401


class Forbidden(ApiError):
    """Credentials are valid but the role does not allow the action."""

    code, message, http_status = 403, "Forbidden", 403


class NotFound(ApiError):
    """Unknown route."""

    code, message, http_status = 404, "NotFound", 404


class PayloadTooLarge(ApiError):
    """The request body exceeds ``api.max_body_bytes``."""

    code, message, http_status = 413, "PayloadTooLarge", 413


class TooManyRequests(ApiError):
    """Rate limit exceeded; ``retry_after`` seconds until the next allowed call."""

    code, message, http_status = 429, "TooManyRequests", 429

    def __init__(self, retry_after: float) -> None:
        super().__init__({"retry_after": retry_after})
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    """The broker or the database cannot be reached."""

    code, message, http_status = 503, "ServiceUnavailable", 503

    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__({"service": what, "detail": detail}, f"ServiceUnavailable: {what} unreachable")


class StoreError(Exception):
    """The database failed an operation (not the client's fault).

    The store raises it for every database failure (:mod:`controlplane.store.errors`); the
    unreachable kind is also a :class:`ServiceUnavailable`, so a handler answers it with 503.
    """


class ScheduleNotFound(ApiError):
    """No schedule with that id exists (never created, or deleted)."""

    code, message, http_status = 107, "ScheduleNotFound", 404
