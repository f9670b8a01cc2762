"""The ``controlplane`` command: run the parts of the stack."""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from collections.abc import Sequence

from controlplane import __version__
from controlplane.config import Config, ConfigError, load_config
from controlplane.runtime import client, embedded, schedules_cli

CONFIG_HELP = "path of config.yaml (default: $CONTROLPLANE_CONFIG)"
#: Default consecutive failed connection attempts of ``watch`` before it exits 3 (about 30 s).
WATCH_RETRIES = 8


def _config_option() -> argparse.ArgumentParser:
    """``--config`` after a subcommand (``controlplane up --config x.yaml``), kept apart from the
    one before it so that :func:`_config_path` can tell when both are given."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config", dest="config_after", metavar="CONFIG", default=argparse.SUPPRESS, help=CONFIG_HELP
    )
    return parent


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _queues(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("needs at least one queue name")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__)
    parser.add_argument("--version", action="version", version=f"controlplane {__version__}")
    parser.add_argument("--config", help=CONFIG_HELP)
    config = [_config_option()]
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", parents=config, help="run the whole stack with embedded Redis and MongoDB-wire server"
    )
    sub.add_parser("serve", parents=config, help="run the REST API and WebSocket feed")
    sub.add_parser("ingest", parents=config, help="run the event consumer (one active per deployment)")
    sub.add_parser(
        "scheduler", parents=config, help="submit the runs of stored schedules (monitors, asset updates)"
    )
    client.add_subcommands(sub)
    schedules_cli.add_subcommand(sub)
    check = sub.add_parser(
        "check", parents=config, help="validate the config and reach the broker and database (exit 0/1)"
    )
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per network check (default 3)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument(
        "--up",
        action="store_true",
        help="check the embedded servers of `controlplane up` (the default while an `up` holds data_dir)",
    )
    worker = sub.add_parser(
        "worker", parents=config, help="run a Celery worker with every task type (options as `celery worker`)"
    )
    worker.add_argument(
        "-n",
        "--hostname",
        "--name",
        dest="name",
        metavar="HOSTNAME",
        help="node name (default worker-<host>@%%h)",
    )
    worker.add_argument(
        "-c", "--concurrency", type=client.positive, help="pool processes (default worker.concurrency)"
    )
    worker.add_argument(
        "-Q",
        "--queues",
        type=_queues,
        help="comma-separated queues to consume, instead of worker.queues (worker.foreign_queue is "
        "still consumed)",
    )
    worker.add_argument(
        "-l",
        "--loglevel",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL, for this worker (default log_level)",
    )
    watch = sub.add_parser(
        "watch",
        parents=config,
        help="print live task changes (resumes by revision after a dropped connection)",
    )
    watch.add_argument("--url", help="API base URL (default http://<api.host>:<api.port>)")
    watch.add_argument("--token", help="API token (env CONTROLPLANE_TOKEN or CP_TOKEN)")
    watch.add_argument("--client-config", help="client config file (url, token); see `controlplane list -h`")
    watch.add_argument("--task-type", action="append", help="only this task type (repeatable)")
    watch.add_argument("--status", action="append", help="only this status (repeatable)")
    watch.add_argument("--celery-id", action="append", help="only this task (repeatable)")
    watch.add_argument("--since", type=int, help="first replay every change after this revision (0: all)")
    watch.add_argument("--json", action="store_true", help="print each change as a JSON line")
    watch.add_argument(
        "--retries",
        type=_non_negative,
        default=WATCH_RETRIES,
        help=f"failed connection attempts in a row before exiting 3 (default {WATCH_RETRIES}, "
        "about 30 s; a connection that opens starts the count again)",
    )
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser(
        "create", parents=config, help="print a new API token once, and its config entry"
    )
    create.add_argument("--role", choices=["viewer", "operator"], default="viewer")
    create.add_argument("--name", required=True, help="who or what uses the token (shown in the audit log)")
    create.add_argument(
        "--write", action="store_true", help="also add the entry to the token file (<data_dir>/tokens.yaml)"
    )
    return parser


def _logging(config: Config) -> None:
    from controlplane.runtime.logs import setup_logging

    setup_logging(config)  # text, or JSON lines with celery_id (log_format)


def _watch(config: Config, args: argparse.Namespace) -> int:
    from controlplane.runtime.feedclient import FeedError, FeedUnreachable, TaskFeed, watch

    try:
        settings = client.resolve_settings(args, default_url=f"http://{config.api.host}:{config.api.port}")
    except client.ClientError as exc:
        print(f"controlplane watch: {exc}", file=sys.stderr)
        return exc.exit_code
    feed = TaskFeed(
        settings.url,
        token=settings.token,
        celery_id=args.celery_id,
        task_type=args.task_type,
        status=args.status,
        since=args.since,
        retries=args.retries,
    )
    try:
        asyncio.run(watch(feed, as_json=args.json))
    except FeedUnreachable as exc:
        print(f"controlplane watch: {exc}", file=sys.stderr)
        return client.EXIT_UNREACHABLE
    except FeedError as exc:
        print(f"controlplane watch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _busy(config: Config) -> str | None:
    """One line when the API's port is taken (or cannot be bound), else None."""
    host, port = config.api.host, config.api.port
    try:
        if not embedded.port_in_use(host or "0.0.0.0", port):
            return None
    except OSError as exc:
        return f"controlplane serve: cannot listen on {host}:{port} (api.port): {exc.strerror}"
    return f"controlplane serve: port {port} (api.port) on {host} is already in use"


def _serve(config: Config) -> int:
    busy = _busy(config)
    if busy:
        print(busy, file=sys.stderr)
        return 1
    if config.api.processes > 1:
        from controlplane.runtime.processes import supervise

        return supervise(config)
    from controlplane.runtime.server import serve

    try:
        asyncio.run(serve(config))
    except OSError as exc:  # taken between the check and the listen
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"controlplane serve: port {config.api.port} (api.port) is already in use", file=sys.stderr)
        return 1
    return 0


def _config_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One ``args.config`` from ``--config`` before and after the subcommand (exit 2 if they differ)."""
    after = getattr(args, "config_after", None)
    if after is None:
        return
    if args.config is not None and args.config != after:
        parser.error(
            f"--config given twice with different values ({args.config} before {args.command}, "
            f"{after} after it); give it once"
        )
    args.config = after


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    _config_path(parser, args)
    if args.command in client.COMMANDS:
        return client.run(args)  # the client needs no server config
    if args.command == schedules_cli.COMMAND:
        return schedules_cli.run(args)
    if args.command == "check":
        from controlplane.runtime.check import check

        return check(args.config, timeout=args.timeout, as_json=args.json, up=args.up)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker" and args.loglevel:
        config.log_level = args.loglevel  # this process's logging and the worker's, alike
    _logging(config)
    try:
        return _run(config, args)
    except ConfigError as exc:  # found after loading (a token file edited by hand)
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2


def _run(config: Config, args: argparse.Namespace) -> int:
    if args.command in ("serve", "up"):
        from controlplane.service.auth import Authenticator

        Authenticator.from_config(config)  # a broken token file stops here, before any process starts
    if args.command == "token":
        from controlplane.runtime.tokens import create_token

        return create_token(config, args.name, args.role, write=args.write)
    if args.command == "watch":
        return _watch(config, args)
    if args.command == "up":
        from controlplane.runtime.up import run_up

        return run_up(config, args.config)
    if args.command == "serve":
        return _serve(config)
    if args.command == "ingest":
        from controlplane.runtime.ingest import run_ingest

        run_ingest(config)
        return 0
    if args.command == "scheduler":
        from controlplane.runtime.scheduler import run_scheduler

        asyncio.run(run_scheduler(config))
        return 0
    if args.command == "worker":
        from workers.worker import run_worker

        run_worker(config, args.name, concurrency=args.concurrency, queues=args.queues)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
