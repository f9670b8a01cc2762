"""What a task message says about its task, read from the arguments Celery reports in events.

A task sent by another Celery client reaches the store only through its events; their
``kwargs`` is the producer's text of the arguments (JSON from this project's API, Python's
repr from a plain ``send_task``, possibly cut short).  :func:`fields_of_message` reads the
ARL shape out of it, so such a task keeps its name, target and options.  Pure; it never
evaluates anything but literals.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

#: Document fields copied from ``options.data`` (as the API does at create).
SHOWN_FIELDS = ("name", "target", "type", "task_tag")
MAX_TEXT = 256 * 1024


def parse_arguments(text: Any) -> Any:
    """The value a ``kwargs`` text stands for (JSON or a Python literal), or None."""
    if isinstance(text, Mapping):
        return text
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def fields_of_message(kwargs: Any) -> dict[str, Any]:
    """``name``/``target``/``type``/``task_tag``/``options``/``data`` of an ARL-shaped message.

    Empty when the text is not ``{"options": {"celery_action": ..., "data": {...}}}``.
    """
    value = parse_arguments(kwargs)
    options = value.get("options") if isinstance(value, Mapping) else None
    data = options.get("data") if isinstance(options, Mapping) else None
    if not isinstance(data, Mapping):
        return {}
    out: dict[str, Any] = {key: data[key] for key in SHOWN_FIELDS if data.get(key) is not None}
    if isinstance(data.get("options"), Mapping):
        out["options"] = dict(data["options"])
    out["data"] = dict(data)
    return out
