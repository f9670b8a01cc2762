"""Logging set-up: plain text, or one JSON object per line (``log_format: json``).

A JSON line carries ``time`` (ISO 8601 UTC, ms), ``level``, ``logger``,
``message``, ``process``, and ``celery_id`` when the record is about one task:
an explicit ``extra={"celery_id": ...}`` (or ``task_id`` from Celery's task
logger), the task a worker process is running, or a task URL in an access-log
line.  Other ``extra`` fields are included as they are; exceptions go in ``exc``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from controlplane.config import Config

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
_TASK_PATH = re.compile(r"/api/celery_task/([0-9a-fA-F-]{36})(?:/|\b)")


def _current_task_id() -> str | None:
    """The id of the Celery task this process is executing, if any."""
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None
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
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(config: Config) -> logging.Formatter:
    """The formatter ``config.log_format`` asks for."""
    return JsonFormatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(config: Config) -> None:
    """Configure the root logger; with JSON, Celery's worker and task loggers too."""
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(config))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if config.log_format == "json":
        from celery.signals import after_setup_logger, after_setup_task_logger

        def use_json(logger: logging.Logger | None = None, **_: Any) -> None:
            for h in getattr(logger, "handlers", None) or []:
                h.setFormatter(JsonFormatter())

        after_setup_logger.connect(use_json, weak=False)
        after_setup_task_logger.connect(use_json, weak=False)
