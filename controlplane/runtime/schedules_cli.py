"""``controlplane schedules list|show|pause|resume|delete|set``: stored schedules, from the command line.

A client of a running API (``/api/schedules/``), with the same server and token
resolution, ``--json`` and exit codes as the other client subcommands
(:mod:`controlplane.runtime.client`): 0 success, 1 the API answered an error (an unknown
schedule is code 107), 2 usage, 3 unreachable or 503.

::

    controlplane schedules list [--task-type T] [--state active|paused] [--page N] [--size N] [--all] [-q]
    controlplane schedules show <schedule_id>
    controlplane schedules pause <schedule_id>
    controlplane schedules resume <schedule_id>
    controlplane schedules set <schedule_id> (--interval SECONDS | --cron "M H DoM Mon DoW")
    controlplane schedules delete <schedule_id>
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any, TextIO

from controlplane.runtime.client import (
    EXIT_OK,
    EXIT_USAGE,
    Client,
    ClientError,
    common_options,
    positive,
    resolve_settings,
    table,
)

COMMAND = "schedules"
PATH = "/api/schedules"
STATES = ("active", "paused")
LIST_HEADERS = ("SCHEDULE_ID", "STATE", "TASK_TYPE", "EVERY", "NEXT_RUN", "LAST_RUN", "RUNS", "NAME")


class Schedules:
    """The schedule endpoints over the CLI's HTTP client; each returns the envelope's ``data``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @staticmethod
    def _item(schedule_id: str) -> str:
        return f"{PATH}/{urllib.parse.quote(schedule_id, safe='')}/"

    def list(self, page: int, size: int, task_type: str | None, state: str | None) -> dict[str, Any]:
        query = {"page": page, "size": size, "task_type": task_type, "state": state}
        return dict(self.client.request("GET", f"{PATH}/", query=query))

    def get(self, schedule_id: str) -> dict[str, Any]:
        return dict(self.client.request("GET", self._item(schedule_id)))

    def change(self, schedule_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.request("PATCH", self._item(schedule_id), body))

    def delete(self, schedule_id: str) -> dict[str, Any]:
        return dict(self.client.request("DELETE", self._item(schedule_id)))


def every(schedule: dict[str, Any]) -> str:
    """``3600s`` or the cron expression."""
    if schedule.get("interval") is not None:
        return f"{schedule['interval']}s"
    return str(schedule.get("cron") or "")


def _dump(value: Any, out: TextIO) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str), file=out)


def _line(schedule: dict[str, Any]) -> str:
    nxt = schedule.get("next_run") or "-"
    return f"{schedule['id']}  {schedule['state']}  every {every(schedule)}  next run {nxt}"


def cmd_list(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    if args.all:
        items: list[dict[str, Any]] = []
        page, total = 1, 0
        while True:
            chunk = api.list(page, 100, args.task_type, args.state)
            total = int(chunk["total"])
            items.extend(chunk["items"])
            if len(items) >= total or not chunk["items"]:
                break
            page += 1
        data: dict[str, Any] = {"total": total, "page": 1, "size": len(items), "items": items}
    else:
        data = api.list(args.page, args.size, args.task_type, args.state)
    if args.json:
        _dump(data, out)
        return EXIT_OK
    if args.quiet:
        for item in data["items"]:
            print(item["id"], file=out)
        return EXIT_OK
    rows = [
        (
            s.get("id"),
            s.get("state"),
            s.get("task_type"),
            every(s),
            s.get("next_run") or "-",
            s.get("last_run") or "-",
            s.get("runs"),
            (s.get("data") or {}).get("name") if isinstance(s.get("data"), dict) else None,
        )
        for s in data["items"]
    ]
    table(rows, LIST_HEADERS, out, widths=(36, 6, 24, 20, 24, 24, 6, 32))
    total, size = int(data["total"]), max(1, int(data["size"]))
    where = "all" if args.all else f"page {data['page']} of {max(1, -(-total // size))}"
    print(f"-- {where}, {total} schedule(s)", file=out)
    return EXIT_OK


def cmd_show(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    schedule = api.get(args.schedule_id)
    if args.json:
        _dump(schedule, out)
        return EXIT_OK
    for key in ("id", "state", "task_type", "interval", "cron", "next_run", "last_celery_id", "last_run"):
        if schedule.get(key) is not None:
            print(f"{key + ':':<16} {schedule[key]}", file=out)
    for key in ("runs", "created_time", "updated_time", "submitting", "last_error"):
        if schedule.get(key) is not None:
            value = schedule[key]
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
            print(f"{key + ':':<16} {text}", file=out)
    print(f"{'data:':<16} {json.dumps(schedule.get('data'), ensure_ascii=False, default=str)}", file=out)
    return EXIT_OK


def _changed(api: Schedules, args: argparse.Namespace, out: TextIO, body: dict[str, Any]) -> int:
    schedule = api.change(args.schedule_id, body)
    if args.json:
        _dump(schedule, out)
    else:
        print(_line(schedule), file=out)
    return EXIT_OK


def cmd_pause(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    return _changed(api, args, out, {"paused": True})


def cmd_resume(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    return _changed(api, args, out, {"paused": False})


def cmd_set(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"interval": args.interval} if args.interval is not None else {"cron": args.cron}
    return _changed(api, args, out, body)


def cmd_delete(api: Schedules, args: argparse.Namespace, out: TextIO) -> int:
    reply = api.delete(args.schedule_id)
    if args.json:
        _dump(reply, out)
        return EXIT_OK
    claimed = (
        f" (its run {reply['claimed_run']} was already claimed and stays)" if reply.get("claimed_run") else ""
    )
    print(f"{reply['id']}  deleted{claimed}", file=out)
    return EXIT_OK


HANDLERS = {
    "list": cmd_list,
    "show": cmd_show,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "set": cmd_set,
    "delete": cmd_delete,
}


def add_subcommand(sub: Any) -> None:
    """Add ``schedules`` and its subcommands to the ``controlplane`` parser's subparsers."""
    common = common_options()
    parser = sub.add_parser(COMMAND, help="stored schedules: list, show, pause, resume, set, delete")
    actions = parser.add_subparsers(dest="schedules_command", required=True)
    lst = actions.add_parser("list", parents=[common], help="schedules, newest first")
    lst.add_argument("--task-type", help="only this task type")
    lst.add_argument("--state", choices=STATES, help="only active or only paused schedules")
    lst.add_argument("--page", type=positive, default=1)
    lst.add_argument("--size", type=positive, default=10, help="1..100 (default 10)")
    lst.add_argument("--all", action="store_true", help="every page")
    lst.add_argument("-q", "--quiet", action="store_true", help="print only schedule ids (one a line)")
    for name, text in (
        ("show", "one schedule: rule, state, next and last run, runs, data (credentials redacted)"),
        ("pause", "pause: no run is submitted after the answer (operator)"),
        ("resume", "resume: the next run is computed from now, missed runs are not made up (operator)"),
        ("delete", "delete: no more runs; runs already submitted keep running (operator)"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("schedule_id")
    change = actions.add_parser("set", parents=[common], help="change the interval or cron (operator)")
    change.add_argument("schedule_id")
    rule = change.add_mutually_exclusive_group(required=True)
    rule.add_argument("--interval", type=int, help="seconds between runs (at least 60)")
    rule.add_argument("--cron", help='a 5-field cron expression, UTC (e.g. "0 3 * * mon-fri")')


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one ``schedules`` subcommand; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    name = f"controlplane {COMMAND} {args.schedules_command}"
    try:
        handler = HANDLERS.get(args.schedules_command)
        if handler is None:
            raise ClientError(f"unknown subcommand {args.schedules_command!r}", EXIT_USAGE)
        return handler(Schedules(Client(resolve_settings(args))), args, out)
    except ClientError as exc:
        if getattr(args, "json", False):
            _dump(exc.envelope, out)
        print(f"{name}: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
