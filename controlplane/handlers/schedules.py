"""Schedules (``/api/schedules/``): list and show for viewers; pause, resume, change, delete for operators.

Each handler is a few lines over :class:`~controlplane.service.schedules.ScheduleService`.
A schedule id that is not a UUID is a 400 before any database call; an unknown one is
code 107 ``ScheduleNotFound`` (HTTP 404). ``PATCH`` and ``DELETE`` get the base's audit
line (who, method, path, status) and one more naming what changed.
"""

from __future__ import annotations

import logging

from controlplane.core.errors import InvalidParam
from controlplane.core.validate import parse_int, parse_page, parse_schedule_patch, parse_uuid
from controlplane.handlers.base import APIHandler
from controlplane.service.schedules import STATES, ScheduleService

log = logging.getLogger(__name__)


def parse_state(value: str | None) -> str | None:
    """The list's ``state`` filter: active, paused, or absent (any)."""
    if value is None:
        return None
    if value not in STATES:
        raise InvalidParam("state", "must be one of " + ", ".join(STATES))
    return value


class SchedulesBase(APIHandler):
    """Base of the schedule endpoints: gives them the schedule service (over the manager's store)."""

    @property
    def schedules(self) -> ScheduleService:
        return ScheduleService(self.services["manager"].store)

    def audit(self, schedule_id: str, what: str) -> None:
        """One audit line naming the schedule and the change (the base logs the request's outcome)."""
        principal = self.principal
        who = f"{principal.name} ({principal.role})" if principal is not None else "anonymous"
        log.info("audit: %s schedule %s: %s", who, schedule_id, what)


class SchedulesHandler(SchedulesBase):
    """GET /api/schedules/?page=&size=&task_type=&state=active|paused"""

    async def get(self) -> None:
        task_type = self.query_arg("task_type")
        if task_type is not None and not task_type.strip():
            raise InvalidParam("task_type", "must not be empty")
        state = parse_state(self.query_arg("state"))
        size = parse_int(self.query_arg("size"), "size", 1, 100, 10)
        page = parse_page(self.query_arg("page"), size)
        self.reply(await self.schedules.list_schedules(task_type, state, page, size))


class ScheduleHandler(SchedulesBase):
    """GET, PATCH (operator: ``{"paused"}``, ``{"interval"}`` or ``{"cron"}``) and DELETE (operator)
    /api/schedules/{schedule_id}/"""

    async def get(self, schedule_id: str) -> None:
        self.reply(await self.schedules.get(parse_uuid(schedule_id, "schedule_id")))

    async def patch(self, schedule_id: str) -> None:
        sid = parse_uuid(schedule_id, "schedule_id")
        change = parse_schedule_patch(self.json_body())
        shown = await self.schedules.change(sid, change)
        asked = [f"paused={change['paused']}"] if "paused" in change else []
        asked += [f"{k}={v}" for k, v in change.get("schedule", {}).items()]
        self.audit(sid, f"{', '.join(asked)}; now {shown['state']}, next run {shown['next_run']}")
        self.reply(shown)

    async def delete(self, schedule_id: str) -> None:
        sid = parse_uuid(schedule_id, "schedule_id")
        reply = await self.schedules.delete(sid)
        self.audit(sid, f"deleted (claimed run: {reply['claimed_run']})")
        self.reply(reply)
