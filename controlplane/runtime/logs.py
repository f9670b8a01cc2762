"""Logging set-up: plain text, or one JSON object per line (``log_format: json``).

A JSON line carries ``time`` (ISO 8601 UTC, ms), ``level``, ``logger``,
``message``, ``process``, and ``celery_id`` when the record is about one task:
an explicit ``extra={"celery_id": ...}`` (or ``task_id`` from Celery's task
logger), the task a worker process is running, or a task URL in an access-log
line.  Other ``extra`` fields are included as they are; exceptions go in ``exc``.

Whatever the format, every record passes :class:`RedactFilter` (installed on the root
handler, on Tornado's loggers and on Celery's handlers): API tokens, ``token=`` values,
``"token": ...`` pairs and bearer credentials are replaced in the message, its arguments,
the exception and stack text and string ``extra`` fields.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from celery._state import get_current_task
from celery.signals import after_setup_logger, after_setup_task_logger

from controlplane.config import Config
from controlplane.service.auth import redact_tokens

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
_TASK_PATH = re.compile(r"/api/celery_task/([0-9a-fA-F-]{36})(?:/|\b)")
_TRACE_FORMATTER = logging.Formatter()
#: Loggers that get the filter themselves, beside the root handler (whatever handlers they gain).
REDACTED_LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "asyncio")


class RedactFilter(logging.Filter):
    """Takes API tokens out of a record before any handler formats it (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # arguments that do not fit the format
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact_tokens(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACE_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_tokens(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_tokens(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact_tokens(value))
        return True


def install_redaction(handlers: list[logging.Handler]) -> None:
    """Add :class:`RedactFilter` to ``handlers`` and to :data:`REDACTED_LOGGERS` (once each)."""
    loggers: list[logging.Filterer] = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for target in [*handlers, *loggers]:
        if not any(isinstance(f, RedactFilter) for f in target.filters):
            target.addFilter(RedactFilter())


def _current_task_id() -> str | None:
    """The id of the Celery task this process is executing, if any."""
    task = get_current_task()
    request = getattr(task, "request", None) if task is not None else None
    value = getattr(request, "id", None)
    return value if isinstance(value, str) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                value = repr(value)
            out[key] = value
        celery_id = out.get("celery_id") or out.get("task_id") or _current_task_id()
        if not celery_id:
            match = _TASK_PATH.search(message)
            celery_id = match.group(1) if match else None
        if celery_id:
            out["celery_id"] = str(celery_id)
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(config: Config) -> logging.Formatter:
    """The formatter ``config.log_format`` asks for."""
    return JsonFormatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(config: Config) -> None:
    """Configure the root logger, and Celery's worker and task loggers when a worker sets them up
    (their format with JSON; the redaction always)."""
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(config))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    install_redaction([handler])
    as_json = config.log_format == "json"

    def celery_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
        handlers = list(getattr(logger, "handlers", None) or [])
        if as_json:
            for h in handlers:
                h.setFormatter(JsonFormatter())
        install_redaction(handlers)

    after_setup_logger.connect(celery_handlers, weak=False)
    after_setup_task_logger.connect(celery_handlers, weak=False)
