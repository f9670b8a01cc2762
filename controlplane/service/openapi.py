"""The OpenAPI 3.1 description of the API, served at ``/api/openapi.json``.

Built from the application's routes: every route's path template must have an
entry in :data:`OPERATIONS` (``tests/test_security.py`` fails otherwise). The
document describes shapes only; it reveals nothing about tasks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from controlplane.core.merge import STATUSES
from controlplane.core.validate import LIST_SORTS
from controlplane.service.export import CONTENT_TYPES, FORMATS
from controlplane.service.export import MAX_ROWS as MAX_EXPORT_ROWS

_ENVELOPE = "#/components/schemas/Envelope"
_ERROR = "#/components/schemas/Error"


def _ok(data: dict[str, Any], description: str = "success") -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["code", "message", "data"],
                    "properties": {
                        "code": {"const": 200},
                        "message": {"type": "string"},
                        "data": data,
                    },
                }
            }
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _ERROR}}}}


def _errors(*statuses: int, public: bool = False) -> dict[str, Any]:
    text = {
        400: "InvalidParam: `data.field` and `data.reason` say what and why",
        401: "NotLogin: no token, or a wrong one",
        403: "Forbidden: the token's role does not allow this",
        404: "CeleryIdNotFound (102) or unknown route",
        405: "MethodNotAllowed",
        409: "TaskIsRunning (104) or TaskIsDone (105)",
        413: "PayloadTooLarge: the body exceeds api.max_body_bytes",
        429: "TooManyRequests: rate limit of this token; see Retry-After",
        503: "ServiceUnavailable: broker or database unreachable; see Retry-After",
    }
    wanted = set(statuses) | ({413} if not public else set()) | ({401, 403} if not public else set())
    out = {str(s): _error(text[s]) for s in sorted(wanted)}
    out["default"] = _error("any other error, in the same envelope")
    return out


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_UUID = {"type": "string", "format": "uuid"}
_TERMINATE = {"type": "boolean", "default": True, "description": "stop a running task (default true)"}
_CELERY_ID_PATH = {
    "name": "celery_id",
    "in": "path",
    "required": True,
    "description": "the task's celery_id (a UUID; anything else is 400)",
    "schema": {"type": "string"},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_STATUS_LIST = "^ *(" + "|".join(STATUSES) + ") *(, *(" + "|".join(STATUSES) + ") *)*$"
_TIME = {
    "type": "string",
    "description": "ISO 8601 (2024-05-01T12:00:00Z; no offset is UTC) or epoch seconds",
    "examples": ["2024-05-01T12:00:00Z", "1714564800"],
}


def _results_ok() -> dict[str, Any]:
    """A page in the envelope, or (with ``format``) the file."""
    page = _ok(
        {
            "type": "object",
            "required": ["total", "page", "size", "kind", "items"],
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "page": {"type": "integer"},
                "size": {"type": "integer"},
                "kind": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object"}},
            },
        },
        "a page (no format), or the file (format; Content-Disposition: attachment)",
    )
    envelope = page["content"]["application/json"]["schema"]
    page["content"]["application/json"]["schema"] = {
        "anyOf": [envelope, {"type": "array", "items": {"type": "object"}}]
    }
    page["content"]["text/csv"] = {"schema": {"type": "string"}}
    page["content"][CONTENT_TYPES["xlsx"]] = {"schema": {"type": "string", "format": "binary"}}
    page["headers"] = {
        "X-Result-Count": {
            "description": "with format: how many results the file holds",
            "schema": {"type": "integer"},
        }
    }
    return page


def _task_item() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["celery_id", "status"],
        "properties": {"celery_id": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)}},
    }


def operations(task_types: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Path template → path item, for every route the API has (or may have)."""
    task_type: dict[str, Any] = {"type": "string"}
    if task_types:
        task_type = {"type": "string", "enum": list(task_types)}
    revoke_result = {
        "type": "object",
        "required": ["celery_id", "status"],
        "properties": {"celery_id": {"type": "string"}, "status": {"const": "revoked"}},
    }
    return {
        "/api/celery_task/types/": {
            "get": {
                "operationId": "listTaskTypes",
                "summary": "Task types and their labels",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["task_types"],
                            "properties": {
                                "task_types": {"type": "object", "additionalProperties": {"type": "string"}}
                            },
                        }
                    ),
                    **_errors(),
                },
            }
        },
        "/api/celery_task/active/": {
            "get": {
                "operationId": "activeTasks",
                "summary": "Tasks workers hold now (active, reserved, scheduled)",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["active_tasks"],
                            "properties": {"active_tasks": {"type": "array", "items": {"type": "object"}}},
                        }
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/celery_task/revoke/": {
            "post": {
                "operationId": "revokeTask",
                "summary": "Revoke one task (operator)",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["celery_id"],
                        "properties": {"celery_id": _UUID, "terminate": _TERMINATE},
                    }
                ),
                "responses": {"200": _ok(revoke_result), **_errors(400, 404, 409, 429, 503)},
            }
        },
        "/api/celery_task/batch_revoke/": {
            "post": {
                "operationId": "batchRevoke",
                "summary": "Revoke many tasks in one broadcast (operator); one result per id",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["celery_ids"],
                        "properties": {
                            "celery_ids": {"type": "array", "items": _UUID, "minItems": 1, "maxItems": 1000},
                            "terminate": _TERMINATE,
                        },
                    }
                ),
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["results"],
                            "properties": {
                                "results": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["celery_id", "code", "message"],
                                        "properties": {
                                            "celery_id": {"type": "string"},
                                            "code": {"type": "integer"},
                                            "message": {"type": "string"},
                                        },
                                    },
                                }
                            },
                        }
                    ),
                    **_errors(400, 429, 503),
                },
            }
        },
        "/api/celery_task/": {
            "get": {
                "operationId": "listTasks",
                "summary": "Tasks, newest first (or sort), filtered, searched and paged",
                "parameters": [
                    _query("celery_id", _UUID, "only this task"),
                    _query(
                        "status",
                        {"type": "string", "pattern": _STATUS_LIST},
                        "only these statuses: one, or several separated by commas (SUCCESS,FAILURE)",
                    ),
                    _query("task_type", task_type, "only this task type"),
                    _query(
                        "q",
                        {"type": "string", "maxLength": 100},
                        "only tasks whose name or target starts with this text, in any case",
                    ),
                    _query(
                        "worker",
                        {"type": "string", "minLength": 1},
                        "only tasks of this worker (celery@host)",
                    ),
                    _query("created_after", _TIME, "only tasks created at or after this time"),
                    _query("created_before", _TIME, "only tasks created before this time"),
                    _query(
                        "sort",
                        {"type": "string", "enum": list(LIST_SORTS), "default": "-created"},
                        "order: created, started or runtime (a leading - is descending), or status "
                        "(A to Z, newest first within one); tasks without the value sort lowest",
                    ),
                    _query("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
                    _query(
                        "size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "page size"
                    ),
                ],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["total", "page", "size", "items"],
                            "properties": {
                                "total": {"type": "integer", "minimum": 0},
                                "page": {"type": "integer"},
                                "size": {"type": "integer"},
                                "items": {"type": "array", "items": _task_item()},
                            },
                        }
                    ),
                    **_errors(400, 503),
                },
            },
            "post": {
                "operationId": "createTask",
                "summary": "Create a task (operator); the targets must be inside the scan scope",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["task_type", "data"],
                        "properties": {
                            "task_type": task_type,
                            "data": {
                                "type": "object",
                                "description": "the fields of the task type (docs/task-types.md)",
                            },
                        },
                    }
                ),
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["celery_id", "status", "task_id"],
                            "properties": {
                                "celery_id": _UUID,
                                "status": {"const": "PENDING"},
                                "task_id": {"type": "string"},
                            },
                        }
                    ),
                    **_errors(400, 429, 503),
                },
            },
        },
        "/api/celery_task/{celery_id}/": {
            "parameters": [_CELERY_ID_PATH],
            "get": {
                "operationId": "getTask",
                "summary": "One task: status, times, worker, progress, result or error",
                "responses": {"200": _ok(_task_item()), **_errors(400, 404, 503)},
            },
            "delete": {
                "operationId": "stopTask",
                "summary": "Stop a task, terminating it if it runs (operator)",
                "responses": {"200": _ok(revoke_result), **_errors(400, 404, 409, 429, 503)},
            },
        },
        "/api/celery_task/{celery_id}/results/": {
            "parameters": [_CELERY_ID_PATH],
            "get": {
                "operationId": "taskResults",
                "summary": "A page of what the task found, of one kind (with format: all of it, a file)",
                "parameters": [
                    _query(
                        "kind", {"type": "string", "default": "site"}, "result kind (site, domain, ip, ...)"
                    ),
                    _query(
                        "format",
                        {"type": "string", "enum": list(FORMATS)},
                        "every result of the kind as a file (attachment) instead of a page: csv (UTF-8 "
                        f"with BOM), json (an array) or xlsx; at most {MAX_EXPORT_ROWS} results",
                    ),
                    _query("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
                    _query(
                        "size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "page size"
                    ),
                ],
                "responses": {
                    "200": _results_ok(),
                    **_errors(400, 404, 503),
                },
            },
        },
        "/api/celery_task/{celery_id}/results/site/{site_id}/screenshot.png": {
            "parameters": [
                _CELERY_ID_PATH,
                {
                    "name": "site_id",
                    "in": "path",
                    "required": True,
                    "description": "the _id of one of the task's site results (kind=site)",
                    "schema": {"type": "string"},
                },
            ],
            "get": {
                "operationId": "siteScreenshot",
                "summary": "The PNG screenshot of one site result (options.site_capture)",
                "responses": {
                    "200": {
                        "description": "the PNG; Cache-Control: private, max-age=86400, immutable; an ETag",
                        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "If-None-Match matched the ETag"},
                    **_errors(400, 404, 503),
                },
            },
        },
        "/api/celery_task/ws/": {
            "get": {
                "operationId": "taskFeed",
                "summary": "WebSocket feed of task changes (viewer); token in a header or ?token=",
                "description": (
                    "Server messages (JSON): replay, synced, change, leave (a task the client was "
                    "sent or holds no longer matches its filter), heartbeat, subscribed, resync, "
                    "pong, error. Client messages: auth, subscribe (filters, since, holding), ping."
                ),
                "x-websocket": True,
                "parameters": [
                    _query("celery_id", {"type": "string"}, "only these tasks (comma-separated)"),
                    _query("task_type", task_type, "only these task types (comma-separated)"),
                    _query("status", {"type": "string"}, "only tasks in these statuses (comma-separated)"),
                    _query(
                        "since",
                        {"type": "integer", "minimum": 0},
                        "replay every matching task changed after this revision first",
                    ),
                    _query(
                        "holding",
                        {"type": "string"},
                        "ids of tasks the client shows (comma-separated, up to 1000): those no "
                        "longer matching are sent as leave",
                    ),
                    _query("token", {"type": "string"}, "the API token, for browsers"),
                ],
                "responses": {"101": {"description": "switching to the WebSocket protocol"}, **_errors()},
            }
        },
        "/api/health/": {
            "get": {
                "operationId": "health",
                "summary": "Liveness of this API process; no authentication, reveals nothing about tasks",
                "security": [],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["status", "auth"],
                            "properties": {
                                "status": {"const": "ok"},
                                "auth": {
                                    "enum": ["token", "none"],
                                    "description": "whether requests need a token (none: auth is off)",
                                },
                            },
                        }
                    ),
                    **_errors(public=True),
                },
            }
        },
        "/api/whoami/": {
            "get": {
                "operationId": "whoami",
                "summary": "The calling token's name and role (viewer or operator)",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["name", "role"],
                            "properties": {
                                "name": {"type": "string"},
                                "role": {"type": "string", "enum": ["viewer", "operator"]},
                            },
                        }
                    ),
                    **_errors(),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document; no authentication",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(public=True),
                },
            }
        },
        **_worker_operations(),
        **_schedule_operations(),
    }


_WORKER_PATH = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the worker's node name (e.g. worker-1@host)",
    "schema": {"type": "string", "maxLength": 255},
}
_NULLABLE_INT = {"type": ["integer", "null"]}


def _worker() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "state": {"enum": ["online", "offline"]},
            "heartbeat_age": {"type": ["number", "null"], "description": "seconds since its last heartbeat"},
            "last_heartbeat": {"type": ["string", "null"], "format": "date-time"},
            "pool": {"type": ["string", "null"], "description": "prefork, threads, solo, ..."},
            "concurrency": _NULLABLE_INT,
            "processed": _NULLABLE_INT,
            "active": _NULLABLE_INT,
            "reserved": _NULLABLE_INT,
            "queues": {"type": ["array", "null"], "items": {"type": "string"}},
            "loadavg": {"type": ["array", "null"], "items": {"type": "number"}},
            "sw_ver": {"type": ["string", "null"]},
            "replied": {"type": "boolean", "description": "it answered the last survey"},
        },
    }


def _control(summary: str, operation_id: str, body: dict[str, Any] | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [_WORKER_PATH],
        "responses": {
            "200": _ok(
                {
                    "type": "object",
                    "required": ["worker", "command", "ok", "reply"],
                    "properties": {
                        "worker": {"type": "string"},
                        "command": {"type": "string"},
                        "ok": {"type": "boolean", "description": "false when the worker replied an error"},
                        "reply": {"type": ["object", "null"], "description": "what the worker replied"},
                    },
                }
            ),
            **_errors(400, 404, 503),
        },
    }
    if body is not None:
        op["requestBody"] = _json_body(body)
    return op


def _worker_operations() -> dict[str, dict[str, Any]]:
    """The workers and queues routes (controlplane.handlers.workers)."""
    step = {"type": "integer", "minimum": 1, "maximum": 64}
    queue = {"type": "string", "pattern": "^[A-Za-z0-9_.:@+-]{1,200}$"}
    return {
        "/api/workers/": {
            "get": {
                "operationId": "listWorkers",
                "summary": "Every worker seen: state, heartbeat age, pool, counts, queues (cached)",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["workers", "total", "online", "updated"],
                            "properties": {
                                "workers": {"type": "array", "items": _worker()},
                                "total": {"type": "integer"},
                                "online": {"type": "integer"},
                                "updated": {"type": "string", "format": "date-time"},
                            },
                        }
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/workers/{name}/": {
            "get": {
                "operationId": "getWorker",
                "summary": "One worker (WorkerNotFound, code 106, when never seen)",
                "parameters": [_WORKER_PATH],
                "responses": {"200": _ok(_worker()), **_errors(400, 404, 503)},
            }
        },
        "/api/workers/{name}/pool/": {
            "post": _control(
                "Grow or shrink the worker's pool (operator)",
                "workerPool",
                {"type": "object", "properties": {"grow": step, "shrink": step}, "minProperties": 1},
            )
        },
        "/api/workers/{name}/consumers/": {
            "post": _control(
                "Make the worker consume a queue, or stop (operator); answers its queues afterwards",
                "workerConsumers",
                {"type": "object", "properties": {"add": queue, "cancel": queue}, "minProperties": 1},
            )
        },
        "/api/workers/{name}/shutdown/": {
            "post": _control(
                "Shut the worker down warmly (operator); Celery's workers send no reply to it",
                "workerShutdown",
                None,
            )
        },
        "/api/queues/": {
            "get": {
                "operationId": "listQueues",
                "summary": "Depth and consumers of every queue (cached)",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["queues", "broker", "updated"],
                            "properties": {
                                "broker": {"type": "string", "description": "redis or amqp"},
                                "updated": {"type": "string", "format": "date-time"},
                                "queues": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "depth", "consumers"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "depth": _NULLABLE_INT,
                                            "consumers": {"type": "array", "items": {"type": "string"}},
                                            "consumer_count": {"type": "integer"},
                                            "broker_consumers": _NULLABLE_INT,
                                        },
                                    },
                                },
                            },
                        }
                    ),
                    **_errors(503),
                },
            }
        },
    }


_SCHEDULE_PATH = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "description": "the schedule's id (a UUID; anything else is 400)",
    "schema": {"type": "string"},
}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


def _schedule() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "task_type", "data", "state", "next_run", "last_celery_id", "runs"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "task_type": {"type": "string"},
            "data": {"type": "object", "description": "the submitted data, credentials redacted"},
            "interval": {"type": ["integer", "null"], "description": "seconds between runs"},
            "cron": {"type": ["string", "null"], "description": "5-field cron expression, UTC"},
            "state": {"enum": ["active", "paused"]},
            "next_run": {**_TIME_OR_NULL, "description": "null while paused"},
            "last_celery_id": {"type": ["string", "null"]},
            "last_run": _TIME_OR_NULL,
            "runs": {"type": ["integer", "null"], "description": "runs submitted, the first included"},
            "submitting": {"type": ["string", "null"], "description": "a run claimed and being submitted"},
            "last_error": {
                "type": ["object", "null"],
                "properties": {
                    "time": _TIME_OR_NULL,
                    "celery_id": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
            "created_time": _TIME_OR_NULL,
            "updated_time": _TIME_OR_NULL,
        },
    }


def _schedule_operations() -> dict[str, dict[str, Any]]:
    """The schedule routes (controlplane.handlers.schedules); 404 there is ScheduleNotFound (107)."""
    return {
        "/api/schedules/": {
            "get": {
                "operationId": "listSchedules",
                "summary": "Schedules, newest first, filtered by task type and state, paged",
                "parameters": [
                    _query("task_type", {"type": "string", "minLength": 1}, "only this task type"),
                    _query("state", {"type": "string", "enum": ["active", "paused"]}, "only this state"),
                    _query("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
                    _query(
                        "size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "page size"
                    ),
                ],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["total", "page", "size", "items"],
                            "properties": {
                                "total": {"type": "integer", "minimum": 0},
                                "page": {"type": "integer"},
                                "size": {"type": "integer"},
                                "items": {"type": "array", "items": _schedule()},
                            },
                        }
                    ),
                    **_errors(400, 503),
                },
            }
        },
        "/api/schedules/{schedule_id}/": {
            "get": {
                "operationId": "getSchedule",
                "summary": "One schedule (ScheduleNotFound, code 107, when there is none)",
                "parameters": [_SCHEDULE_PATH],
                "responses": {"200": _ok(_schedule()), **_errors(400, 404, 503)},
            },
            "patch": {
                "operationId": "changeSchedule",
                "summary": "Pause, resume, or change the interval or cron (operator); next run from now",
                "parameters": [_SCHEDULE_PATH],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": False,
                        "properties": {
                            "paused": {"type": "boolean"},
                            "interval": {"type": "integer", "minimum": 60, "maximum": 366 * 86400},
                            "cron": {"type": "string", "description": "5 fields, UTC"},
                        },
                        "not": {"required": ["interval", "cron"]},
                    }
                ),
                "responses": {"200": _ok(_schedule()), **_errors(400, 404, 503)},
            },
            "delete": {
                "operationId": "deleteSchedule",
                "summary": "Delete a schedule (operator); runs already submitted keep running",
                "parameters": [_SCHEDULE_PATH],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["id", "deleted", "last_celery_id", "claimed_run"],
                            "properties": {
                                "id": {"type": "string", "format": "uuid"},
                                "deleted": {"const": True},
                                "last_celery_id": {"type": ["string", "null"]},
                                "claimed_run": {
                                    "type": ["string", "null"],
                                    "description": "a run claimed just before the delete; it was submitted",
                                },
                            },
                        }
                    ),
                    **_errors(400, 404, 503),
                },
            },
        },
    }


def template_of(pattern: str) -> str:
    """The OpenAPI path template of a Tornado route pattern (``([^/]+)`` → ``{celery_id}``,
    ``(?P<name>[^/]+)`` → ``{name}``)."""
    path = pattern.rstrip("$")
    if path.endswith("/?"):
        path = path[:-1]
    path = path.replace("([^/]+)", "{celery_id}")
    path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", path)
    return re.sub(r"\\(.)", r"\1", path)


def undocumented(templates: Iterable[str]) -> list[str]:
    """Route templates without an entry in the document."""
    known = operations()
    return [t for t in templates if t not in known]


def build(templates: Iterable[str], task_types: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI document for the routes ``templates``."""
    known = operations(task_types)
    paths = {t: known[t] for t in templates if t in known}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "controlplane",
            "version": "1",
            "description": "Task control plane for reconnaissance work (ARL-compatible celery_task API). "
            'Every response is {"code", "message", "data"}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <token>",
                },
                "token": {"type": "apiKey", "in": "header", "name": "Token", "description": "ARL clients"},
            },
            "schemas": {
                "Envelope": {
                    "type": "object",
                    "required": ["code", "message", "data"],
                    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
                },
                "Error": {
                    "allOf": [{"$ref": _ENVELOPE}],
                    "properties": {"code": {"type": "integer", "not": {"const": 200}}},
                },
            },
        },
    }
