"""Register every task type of the registry as a Celery task.

A task receives ARL's message shape, ``kwargs={"options": {"celery_action":
<task_type>, "data": {...}}}``, and runs the type's pipeline with a
:class:`~workers.context.TaskContext`.  A type whose pipeline is not written yet
raises :class:`PipelineNotImplemented`, so the task ends FAILURE with a clear
message instead of pretending to succeed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import Ignore

from controlplane.celeryapp import task_options
from controlplane.config import Config
from controlplane.core.tasktypes import Registry, TaskType
from workers.context import ControlledTask, TaskContext, TaskRevoked
from workers.tasks import PIPELINES, Pipeline

log = logging.getLogger(__name__)


class PipelineNotImplemented(NotImplementedError):
    """The task type exists in the registry but its pipeline has not been written."""


def builtin_pipeline(task_type: str) -> Pipeline:
    """The pipeline function of a spec task type (:data:`workers.tasks.PIPELINES`)."""
    fn = PIPELINES.get(task_type)
    if fn is None:

        def missing(data: dict[str, Any], ctx: TaskContext) -> Any:
            raise PipelineNotImplemented(f"task type {task_type!r}: its pipeline is not implemented yet")

        return missing
    return fn


def load_callable(spec: str) -> Pipeline:
    """Import ``module:function`` named in config (only from config, never from clients)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"task callable {spec!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"{spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


class MalformedMessage(ValueError):
    """A task message not in ARL's shape, ``kwargs={"options": {"celery_action", "data": {...}}}``."""


def message_data(task_type: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a task message, or :class:`MalformedMessage` saying what is wrong with it."""
    shape = 'kwargs={"options": {"celery_action": "' + task_type + '", "data": {...}}}'
    if args:
        raise MalformedMessage(f"positional arguments are not accepted; send {shape}")
    unknown = sorted(set(kwargs) - {"options"})
    if unknown:
        raise MalformedMessage(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; send {shape}"
        )
    options = kwargs.get("options")
    if not isinstance(options, dict):
        raise MalformedMessage(f"'options' must be an object; send {shape}")
    action = options.get("celery_action", task_type)
    if action != task_type:
        raise MalformedMessage(f"options.celery_action is {action!r}, but this task is {task_type!r}")
    data = options.get("data", {})
    if not isinstance(data, dict):
        raise MalformedMessage(f"options.data must be an object, not {type(data).__name__}; send {shape}")
    return dict(data)


def _make_body(pipeline: Pipeline) -> Callable[..., Any]:
    def body(self: PipelineTask, *args: Any, **kwargs: Any) -> Any:
        data = message_data(self.cp_task_type, args, kwargs)
        if self.forward_if_misrouted(kwargs):
            raise Ignore()
        ctx = self.context(data)
        try:
            return pipeline(data, ctx)
        except TaskRevoked:
            self._announce_stopped(ctx)
            raise Ignore() from None

    return body


class PipelineTask(ControlledTask):
    """A registered task type; stops cleanly when its pipeline notices a revoke.

    A message that came through the foreign queue (``worker.foreign_queue``: where a Celery
    client that did not route it sends it) is passed on to its type's queue, same id.
    """

    abstract = True
    cp_task_type = ""
    cp_queue = ""
    cp_foreign_queue = ""

    def forward_if_misrouted(self, kwargs: dict[str, Any]) -> bool:
        """Send this message to its type's queue when it arrived on the foreign queue instead."""
        arrived = (self.request.delivery_info or {}).get("routing_key")
        if not self.cp_foreign_queue or arrived != self.cp_foreign_queue or arrived == self.cp_queue:
            return False
        self.app.send_task(self.name, kwargs=kwargs, task_id=self.request.id, queue=self.cp_queue)
        log.info("task %s came through queue %s; passed on to %s", self.request.id, arrived, self.cp_queue)
        return True

    def _announce_stopped(self, ctx: TaskContext) -> None:
        log.info("task %s stopped after a revoke; partial results kept", ctx.celery_id)
        self.send_event("task-revoked", terminated=False, expired=False, reason="stopped by revoke (partial)")
        try:
            self.update_state(state="REVOKED", meta={"reason": "stopped by revoke"})
        except Exception as exc:  # noqa: BLE001 - result backends are optional
            log.debug("result backend not updated for %s: %s", ctx.celery_id, exc)


def register_all(app: Celery, config: Config, registry: Registry) -> None:
    """Create one Celery task per task type on ``app``."""
    for task_type in registry:
        pipeline = _pipeline_for(config, task_type)
        app.task(
            _make_body(pipeline),
            name=task_type.celery_name,
            bind=True,
            base=PipelineTask,
            cp_task_type=task_type.value,
            cp_queue=config.task_config(task_type.value).queue,
            cp_foreign_queue=config.worker.foreign_queue,
            **task_options(config, task_type.value),
        )


def _pipeline_for(config: Config, task_type: TaskType) -> Pipeline:
    own = config.tasks.get(task_type.value)
    if own is not None and own.task:
        return load_callable(own.task)
    if task_type.builtin:
        return builtin_pipeline(task_type.value)
    raise ValueError(f"task type {task_type.value!r} has no callable")
