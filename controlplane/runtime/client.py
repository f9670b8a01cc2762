"""The command-line client: ``controlplane submit|list|show|results|revoke|active|types``.

Talks to a running API over HTTP (the REST contract, envelope-aware).  Where
the server and the token come from, first found wins:

1. ``--url`` / ``--token``;
2. ``CONTROLPLANE_URL`` / ``CONTROLPLANE_TOKEN`` (``CP_TOKEN`` too, for the token);
3. the client config file: ``--client-config``, else ``$CONTROLPLANE_CLIENT_CONFIG``,
   else ``$XDG_CONFIG_HOME/controlplane/client.yaml`` (``~/.config/controlplane/client.yaml``),
   a YAML mapping with ``url``, ``token`` and ``timeout``;
4. ``http://127.0.0.1:5013`` and no token.

Exit codes scripts can rely on:

====  ============================================================================
0     success
1     the API answered an error (envelope ``code`` != 200; for ``revoke``, any id)
2     usage or configuration error (bad arguments, unreadable client config)
3     the API is unreachable, timed out, or answered 503 (broker/database down)
4     ``submit --wait``: the task ended FAILURE or REVOKED
5     ``submit --wait``: still not finished after ``--wait-timeout``
====  ============================================================================

``--json`` prints the envelope's ``data`` (errors: the whole envelope) as JSON
on stdout, for every command.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml

from controlplane.core.validate import LIST_SORTS
from controlplane.service import export

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TASK_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
DEFAULT_URL = "http://127.0.0.1:5013"
PREFIX = "/api/celery_task"
COMMANDS = ("submit", "list", "show", "results", "revoke", "active", "types")
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
STATUSES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
BATCH = 1000


class ClientError(Exception):
    """A failure with its exit code; ``envelope`` is what ``--json`` prints."""

    def __init__(self, message: str, exit_code: int, envelope: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.envelope = envelope or {"code": 0, "message": message, "data": {}}


class ApiFailure(ClientError):
    """The API answered with an envelope whose code is not 200."""

    def __init__(self, code: int, message: str, data: Any, http_status: int) -> None:
        self.code = code
        self.data = data
        self.http_status = http_status
        unreachable = code == 503 or http_status == 503
        detail = f" {json.dumps(data, ensure_ascii=False)}" if data else ""
        super().__init__(
            f"{code} {message}{detail}",
            EXIT_UNREACHABLE if unreachable else EXIT_API,
            {"code": code, "message": message, "data": data},
        )


# -- settings ----------------------------------------------------------------------


@dataclass
class Settings:
    """Where the API is and how to authenticate."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 30.0


def client_config_path(explicit: str | None, env: dict[str, str] | os._Environ[str]) -> Path:
    """The client config file to read (it may not exist)."""
    if explicit:
        return Path(explicit).expanduser()
    if env.get("CONTROLPLANE_CLIENT_CONFIG"):
        return Path(env["CONTROLPLANE_CLIENT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "controlplane" / "client.yaml"


def read_client_config(path: Path, required: bool) -> dict[str, Any]:
    """``{url, token, timeout}`` from the YAML file; ClientError (usage) if it is unusable."""
    if not path.is_file():
        if required:
            raise ClientError(f"client config {path} does not exist", EXIT_USAGE)
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"client config {path}: {exc}", EXIT_USAGE) from None
    if not isinstance(raw, dict):
        raise ClientError(f"client config {path}: must be a mapping", EXIT_USAGE)
    unknown = set(raw) - {"url", "token", "timeout"}
    if unknown:
        raise ClientError(f"client config {path}: unknown key(s) {', '.join(sorted(unknown))}", EXIT_USAGE)
    if raw.get("token"):
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                print(f"controlplane: warning: {path} holds a token; chmod 600 it", file=sys.stderr)
        except OSError:
            pass
    return raw


def resolve_settings(
    args: argparse.Namespace,
    env: dict[str, str] | os._Environ[str] | None = None,
    default_url: str = DEFAULT_URL,
) -> Settings:
    """Flags over environment over the client config file over defaults."""
    env = os.environ if env is None else env
    explicit = getattr(args, "client_config", None)
    path = client_config_path(explicit, env)
    file = read_client_config(path, required=bool(explicit))
    url = getattr(args, "url", None) or env.get("CONTROLPLANE_URL") or file.get("url") or default_url
    token = (
        getattr(args, "token", None)
        or env.get("CONTROLPLANE_TOKEN")
        or env.get("CP_TOKEN")
        or file.get("token")
        or None
    )
    timeout = getattr(args, "timeout", None) or file.get("timeout") or 30.0
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise ClientError(f"timeout must be a number, got {timeout!r}", EXIT_USAGE) from None
    url = str(url).rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ClientError(f"url must be http:// or https://, got {url!r}", EXIT_USAGE)
    return Settings(url=url, token=str(token) if token else None, timeout=timeout)


# -- HTTP --------------------------------------------------------------------------


class Client:
    """The REST API, one method per endpoint; returns the envelope's ``data`` or raises."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> urllib.request.Request:
        url = self.settings.url + path
        if query:
            pairs = [(k, str(v)) for k, v in query.items() if v is not None and v != ""]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
        req.add_header("Accept", "application/json")
        req.add_header("User-Agent", "controlplane-cli")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.settings.token:
            req.add_header("Authorization", f"Bearer {self.settings.token}")
        return req

    def _unreachable(self, exc: BaseException) -> ClientError:
        reason = getattr(exc, "reason", exc)
        return ClientError(f"cannot reach {self.settings.url}: {reason}", EXIT_UNREACHABLE)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        """One call; ApiFailure on a non-200 envelope, ClientError (exit 3) when unreachable."""
        req = self._request(method, path, body, query)
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        return self._envelope(status, raw)

    def download(self, path: str, query: dict[str, Any], sink: BinaryIO) -> int:
        """A file answer written to ``sink`` as it arrives; returns the ``X-Result-Count`` it announced.

        An error answer is an envelope, raised as for :meth:`request`.
        """
        req = self._request("GET", path, query=query)
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout) as resp:  # noqa: S310
                count = int(resp.headers.get("X-Result-Count") or 0)
                while piece := resp.read(64 * 1024):
                    sink.write(piece)
                return count
        except urllib.error.HTTPError as err:
            self._envelope(err.code, err.read())
            raise ApiFailure(err.code, f"HTTP {err.code}", {}, err.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None

    def _envelope(self, status: int, raw: bytes) -> Any:
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "code" not in envelope:
            raise ApiFailure(status, f"HTTP {status} without a JSON envelope", {}, status)
        if envelope["code"] != 200:
            raise ApiFailure(
                int(envelope["code"]), str(envelope.get("message", "")), envelope.get("data"), status
            )
        return envelope.get("data")

    def types(self) -> dict[str, str]:
        return dict(self.request("GET", f"{PREFIX}/types/")["task_types"])

    def list_tasks(self, page: int = 1, size: int = 10, **filters: str | None) -> dict[str, Any]:
        return dict(self.request("GET", f"{PREFIX}/", query={**filters, "page": page, "size": size}))

    def get(self, celery_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{PREFIX}/{urllib.parse.quote(celery_id, safe='')}/"))

    def create(self, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", f"{PREFIX}/", {"task_type": task_type, "data": data}))

    def revoke(self, celery_id: str, terminate: bool = True) -> dict[str, Any]:
        return dict(
            self.request("POST", f"{PREFIX}/revoke/", {"celery_id": celery_id, "terminate": terminate})
        )

    def batch_revoke(self, celery_ids: list[str], terminate: bool = True) -> list[dict[str, Any]]:
        body = {"celery_ids": celery_ids, "terminate": terminate}
        return list(self.request("POST", f"{PREFIX}/batch_revoke/", body)["results"])

    def active(self) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{PREFIX}/active/")["active_tasks"])

    def results(self, celery_id: str, kind: str, page: int = 1, size: int = 10) -> dict[str, Any]:
        path = f"{PREFIX}/{urllib.parse.quote(celery_id, safe='')}/results/"
        return dict(self.request("GET", path, query={"kind": kind, "page": page, "size": size}))

    def export_results(self, celery_id: str, kind: str, fmt: str, sink: BinaryIO) -> int:
        path = f"{PREFIX}/{urllib.parse.quote(celery_id, safe='')}/results/"
        return self.download(path, {"kind": kind, "format": fmt}, sink)


# -- output ------------------------------------------------------------------------


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def table(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], out: TextIO, widths: Sequence[int] = ()
) -> None:
    """A plain aligned table (columns capped by ``widths``, 60 by default)."""
    caps = list(widths) + [60] * (len(headers) - len(widths))
    cells = [[_cell(v, caps[i]) for i, v in enumerate(row)] for row in rows]
    sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(sizes[i]) for i, c in enumerate(row)).rstrip(), file=out)


def progress_bar(progress: Any, width: int = 30) -> str:
    """``[#####.....]  42% port_scan 420/1000`` from a task's ``progress``, or ""."""
    if not isinstance(progress, dict):
        return ""
    done, total = progress.get("done"), progress.get("total")
    stage = progress.get("stage") or ""
    if not isinstance(done, int | float) or not isinstance(total, int | float) or total <= 0:
        return f"{stage}".strip()
    frac = max(0.0, min(1.0, float(done) / float(total)))
    filled = round(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}% {stage} {done}/{total}".rstrip()


def _dump(value: Any, out: TextIO) -> None:
    print(pretty(value), file=out)


def result_value(raw: Any) -> Any:
    """A task's ``result`` as a value: Celery reports it as the return value's Python repr
    (``"{'slept': 0.2}"``), read back here without evaluating anything; text that is neither
    a Python literal nor JSON (a clipped or exotic repr) stays text."""
    if not isinstance(raw, str):
        return raw
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(raw)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return raw


def pretty(value: Any) -> str:
    """``value`` as indented JSON, non-ASCII characters as themselves."""
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def traceback_tail(trace: Any, frames: int = 2) -> list[str]:
    """The end of a traceback: its last ``frames`` frames and the exception, without the
    ``^^^^`` marker lines."""
    if not isinstance(trace, str):
        return []
    kept = [line for line in trace.rstrip().splitlines() if line.strip().strip("^~")]
    starts = [i for i, line in enumerate(kept) if line.lstrip().startswith('File "')]
    first = starts[-frames] if len(starts) >= frames else (starts[0] if starts else 0)
    return kept[first:][-12:]


def _when(value: Any) -> str:
    return str(value) if value else "-"


def runtime_of(task: dict[str, Any]) -> str:
    """Seconds the task ran (``1.25s``), or ``-`` when it has not run to its end."""
    runtime = task.get("runtime")
    if not isinstance(runtime, int | float) or isinstance(runtime, bool):
        runtime = None
        start, end = task.get("start_time"), task.get("end_time")
        if isinstance(start, str) and isinstance(end, str):
            try:
                runtime = (parse_time(end) - parse_time(start)).total_seconds()
            except ValueError:
                runtime = None
    return "-" if runtime is None else f"{runtime:.2f}s"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time of the API (``2026-01-02T03:04:05.678Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- commands ----------------------------------------------------------------------


def _parse_data(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    raw = args.data
    if raw is not None:
        try:
            if raw == "-":
                text = sys.stdin.read()
            elif raw.startswith("@"):
                text = Path(raw[1:]).expanduser().read_text(encoding="utf-8")
            else:
                text = raw
            loaded = json.loads(text)
        except OSError as exc:
            raise ClientError(f"--data: {exc}", EXIT_USAGE) from None
        except ValueError as exc:
            raise ClientError(f"--data: not valid JSON: {exc}", EXIT_USAGE) from None
        if not isinstance(loaded, dict):
            raise ClientError("--data: must be a JSON object", EXIT_USAGE)
        data.update(loaded)
    for name in ("name", "target", "type", "task_tag"):
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None:
            data[name] = value
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"--option {item!r}: expected key=value", EXIT_USAGE)
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        data.setdefault("options", {})
        if not isinstance(data["options"], dict):
            raise ClientError("--option: data.options is not an object", EXIT_USAGE)
        data["options"][key] = parsed
    options = data.get("options")
    if isinstance(options, dict) and "port_custom" in options:
        options["port_custom"] = port_list(options["port_custom"])
        options.setdefault("port_scan_type", "custom")
    return data


def port_list(value: Any) -> Any:
    """``port_custom`` as the API takes it, a string like ``"80,443,8000-8100"``: a number
    (``--option port_custom=8080``) or a list of numbers and ranges is joined; anything else
    is sent as given, for the API to judge."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(
        isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in value
    ):
        return ",".join(str(v).strip() for v in value)
    return value


def cmd_submit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    reply = client.create(args.task_type, _parse_data(args))
    if not args.wait:
        if args.json:
            _dump(reply, out)
        elif args.quiet:
            print(reply["celery_id"], file=out)
        else:
            print(
                f"{reply['celery_id']}  {reply.get('status', '')}  task_id={reply.get('task_id', '')}",
                file=out,
            )
        return EXIT_OK
    if not args.json and not args.quiet:
        print(f"submitted {reply['celery_id']}", file=sys.stderr)
    task = wait_task(client, reply["celery_id"], args.wait_timeout, show=not args.json and not args.quiet)
    status = task.get("status")
    if args.json:
        _dump(task, out)
    else:
        print(f"{task['celery_id']}  {status}", file=out)
        if status == "SUCCESS" and not args.quiet and task.get("result") is not None:
            print(pretty(result_value(task["result"])), file=out)
        if status in ("FAILURE", "REVOKED"):
            _why(task, sys.stderr)
    if status not in TERMINAL:
        return EXIT_TIMEOUT
    return EXIT_OK if status == "SUCCESS" else EXIT_TASK_FAILED


def _why(task: dict[str, Any], err: TextIO) -> None:
    """Why a task ended FAILURE or REVOKED: the exception and its traceback's tail, or the revoke."""
    cid = task.get("celery_id")
    if task.get("status") == "REVOKED":
        revoke = task.get("revoke")
        reason = (revoke.get("reason") if isinstance(revoke, dict) else None) or "revoked"
        print(f"controlplane submit: {cid} REVOKED ({reason})", file=err)
        return
    print(f"controlplane submit: {cid} FAILURE: {task.get('exception') or 'no exception reported'}", file=err)
    tail = traceback_tail(task.get("traceback"))
    for line in tail:
        print(f"  {line}", file=err)
    if tail:
        print(f"  (the whole traceback: controlplane show {cid} --traceback)", file=err)


def wait_task(
    client: Client, celery_id: str, timeout: float, show: bool, interval: float = 0.5
) -> dict[str, Any]:
    """Poll the task until it is terminal or ``timeout`` passes; a progress bar on a terminal's stderr."""
    deadline = time.monotonic() + timeout
    tty = show and sys.stderr.isatty()
    last = ""
    task = client.get(celery_id)
    while task.get("status") not in TERMINAL and time.monotonic() < deadline:
        line = f"{task.get('status', ''):<8} {progress_bar(task.get('progress'))}".rstrip()
        if show and line != last:
            print(("\r\033[K" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        time.sleep(interval)
        task = client.get(celery_id)
    if tty and last:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    return task


LIST_HEADERS = ("CELERY_ID", "STATUS", "TASK_TYPE", "NAME", "TARGET", "START", "RUNTIME", "PROGRESS")


def cmd_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    filters = {
        "status": ",".join(args.status) if args.status else None,
        "task_type": args.task_type,
        "celery_id": args.celery_id,
        "q": args.search,
        "worker": args.worker,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "sort": args.sort,
    }
    if args.all:
        items: list[dict[str, Any]] = []
        page, total = 1, 0
        while True:
            chunk = client.list_tasks(page, 100, **filters)
            total = int(chunk["total"])
            items.extend(chunk["items"])
            if len(items) >= total or not chunk["items"] or (args.limit and len(items) >= args.limit):
                break
            page += 1
        if args.limit:
            items = items[: args.limit]
        data: dict[str, Any] = {"total": total, "page": 1, "size": len(items), "items": items}
    else:
        data = client.list_tasks(args.page, args.size, **filters)
    if args.json:
        _dump(data, out)
        return EXIT_OK
    if args.quiet:
        for item in data["items"]:
            print(item["celery_id"], file=out)
        return EXIT_OK
    rows = [
        (
            t.get("celery_id"),
            t.get("status"),
            t.get("task_type"),
            t.get("name"),
            t.get("target"),
            _when(t.get("start_time")),
            runtime_of(t),
            progress_bar(t.get("progress"), 10) if t.get("status") not in TERMINAL else "",
        )
        for t in data["items"]
    ]
    table(rows, LIST_HEADERS, out, widths=(36, 8, 24, 24, 32, 24, 12, 40))
    total, size = int(data["total"]), max(1, int(data["size"]))
    pages = max(1, -(-total // size))
    where = "all" if args.all else f"page {data['page']} of {pages}"
    print(f"-- {where}, {total} task(s)", file=out)
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    task = client.get(args.celery_id)
    if args.json:
        _dump(task, out)
        return EXIT_OK
    order = (
        "celery_id",
        "status",
        "task_type",
        "task_id",
        "name",
        "target",
        "type",
        "task_tag",
        "worker",
        "created_time",
        "received_time",
        "start_time",
        "end_time",
        "runtime",
        "retries",
        "retry_reason",
    )
    for key in order:
        if task.get(key) not in (None, "", {}):
            print(f"{key + ':':<15} {task[key]}", file=out)
    if task.get("progress"):
        print(f"{'progress:':<15} {progress_bar(task['progress'])}", file=out)
    if task.get("statistic"):
        stats = ", ".join(f"{k}={v}" for k, v in sorted(task["statistic"].items()))
        print(f"{'statistic:':<15} {stats}", file=out)
    if task.get("revoke"):
        print(f"{'revoke:':<15} {json.dumps(task['revoke'], ensure_ascii=False)}", file=out)
    if task.get("result") is not None:
        text = pretty(result_value(task["result"]))
        print(f"{'result:':<15} {text.replace(chr(10), chr(10) + ' ' * 16)}", file=out)
    if task.get("exception"):
        print(f"{'exception:':<15} {task['exception']}", file=out)
    if task.get("traceback") and args.traceback:
        print(task["traceback"], file=out)
    return EXIT_OK


def cmd_results(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.format is None:
        data = client.results(args.celery_id, args.kind, args.page, args.size)
        if args.json:
            _dump(data, out)
            return EXIT_OK
        names = export.COLUMNS.get(args.kind) or tuple(
            k for k in (data["items"] or [{}])[0] if k != "task_id"
        )
        table([export.row(names, item) for item in data["items"]], [n.upper() for n in names], out)
        pages = max(1, -(-int(data["total"]) // max(1, int(data["size"]))))
        print(f"-- {args.kind}: page {data['page']} of {pages}, {data['total']} result(s)", file=out)
        return EXIT_OK
    if args.format == "xlsx" and not args.output:
        raise ClientError("--format xlsx needs -o FILE", EXIT_USAGE)
    if args.output:
        target = Path(args.output)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as sink:
                count = client.export_results(args.celery_id, args.kind, args.format, sink)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        print(f"controlplane results: wrote {count} result(s) to {target}", file=sys.stderr)
    else:
        out.flush()
        count = client.export_results(args.celery_id, args.kind, args.format, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        print(f"controlplane results: {count} result(s)", file=sys.stderr)
    return EXIT_OK


def _ids(values: list[str]) -> list[str]:
    """The ids given, ``-`` replaced by standard input's lines (none there: nothing to revoke)."""
    ids: list[str] = []
    for value in values:
        if value == "-":
            ids.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            ids.append(value)
    return list(dict.fromkeys(ids))


def cmd_revoke(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    ids = _ids(args.celery_ids)
    terminate = not args.no_terminate
    results: list[dict[str, Any]] = []
    if not ids:  # `controlplane list -q ... | controlplane revoke -` that listed nothing
        print("controlplane revoke: nothing to revoke (no celery_id on standard input)", file=sys.stderr)
    elif len(ids) == 1:
        try:
            reply = client.revoke(ids[0], terminate)
            results.append({**reply, "code": 200, "message": "success"})
        except ApiFailure as exc:
            if exc.exit_code == EXIT_UNREACHABLE or exc.code in (400, 401, 403, 413, 429):
                raise
            results.append({"celery_id": ids[0], "code": exc.code, "message": exc.envelope["message"]})
            if isinstance(exc.data, dict):
                results[-1].update({k: v for k, v in exc.data.items() if k != "celery_id"})
    else:
        for start in range(0, len(ids), BATCH):
            results.extend(client.batch_revoke(ids[start : start + BATCH], terminate))
    if args.json:
        _dump({"results": results}, out)
    elif results:
        rows = [(r.get("celery_id"), r.get("code"), r.get("message"), r.get("status", "")) for r in results]
        table(rows, ("CELERY_ID", "CODE", "MESSAGE", "STATUS"), out)
    return EXIT_OK if all(r.get("code") == 200 for r in results) else EXIT_API


def cmd_active(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    tasks = client.active()
    if args.json:
        _dump(tasks, out)
        return EXIT_OK
    rows = []
    for t in tasks:
        started = t.get("time_start")
        when = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
            if isinstance(started, int | float)
            else ""
        )
        kwargs = t.get("kwargs") if isinstance(t.get("kwargs"), dict) else {}
        action = (kwargs.get("options") or {}).get("celery_action") if isinstance(kwargs, dict) else None
        rows.append((t.get("id"), t.get("state"), action or t.get("name"), t.get("worker"), when))
    table(rows, ("CELERY_ID", "STATE", "TASK", "WORKER", "STARTED"), out)
    print(f"-- {len(tasks)} task(s) on workers", file=out)
    return EXIT_OK


def cmd_types(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    types = client.types()
    if args.json:
        _dump(types, out)
        return EXIT_OK
    table(sorted(types.items()), ("TASK_TYPE", "LABEL"), out)
    return EXIT_OK


HANDLERS = {
    "results": cmd_results,
    "submit": cmd_submit,
    "list": cmd_list,
    "show": cmd_show,
    "revoke": cmd_revoke,
    "active": cmd_active,
    "types": cmd_types,
}


# -- argparse ----------------------------------------------------------------------


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def common_options() -> argparse.ArgumentParser:
    """Flags every client subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument("--url", help=f"API base URL (env CONTROLPLANE_URL; default {DEFAULT_URL})")
    group.add_argument("--token", help="API token (env CONTROLPLANE_TOKEN)")
    group.add_argument("--client-config", help="client config file (url, token, timeout)")
    group.add_argument("--timeout", type=float, help="seconds per HTTP request (default 30)")
    common.add_argument(
        "--json", action="store_true", help="print JSON (the envelope's data; errors: the envelope)"
    )
    return common


def add_subcommands(sub: Any) -> None:
    """Add the client subcommands to the ``controlplane`` parser's subparsers."""
    common = common_options()
    submit = sub.add_parser("submit", parents=[common], help="create a task")
    submit.add_argument("task_type", help="a task type (see `controlplane types`)")
    submit.add_argument("--data", help="the task's data: a JSON object, @file, or - for stdin")
    submit.add_argument("--name", help="data.name")
    submit.add_argument("--target", help="data.target")
    submit.add_argument("--type", help="data.type (domain, ip, ...)")
    submit.add_argument("--task-tag", help="data.task_tag")
    submit.add_argument(
        "--option",
        action="append",
        help="data.options.KEY=VALUE (VALUE parsed as JSON if it can be); port_custom=8080 or "
        "port_custom=80,443,8000-8100 is sent as the API's port string and implies port_scan_type=custom",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait until the task ends: print its result as JSON; on FAILURE the exception and the "
        "traceback's tail (stderr) and exit 4, also for REVOKED",
    )
    submit.add_argument(
        "--wait-timeout", type=float, default=3600.0, help="seconds --wait waits (exit 5 past it)"
    )
    submit.add_argument("-q", "--quiet", action="store_true", help="print only the celery_id")

    lst = sub.add_parser("list", parents=[common], help="list tasks, newest first (or --sort)")
    lst.add_argument("--status", choices=STATUSES, action="append", help="only this status (repeatable)")
    lst.add_argument("--search", "-s", help="name or target starts with this (any case)")
    lst.add_argument("--worker", help="only tasks of this worker (celery@host)")
    lst.add_argument("--created-after", help="created at or after (ISO 8601 or epoch seconds)")
    lst.add_argument("--created-before", help="created before (ISO 8601 or epoch seconds)")
    lst.add_argument("--sort", choices=LIST_SORTS, help="order (default -created: newest first)")
    lst.add_argument("--task-type", help="only this task type")
    lst.add_argument("--celery-id", help="only this task")
    lst.add_argument("--page", type=positive, default=1)
    lst.add_argument("--size", type=positive, default=10, help="1..100 (default 10)")
    lst.add_argument("--all", action="store_true", help="every page")
    lst.add_argument("--limit", type=positive, help="with --all: at most this many tasks")
    lst.add_argument("-q", "--quiet", action="store_true", help="print only celery_ids (one a line)")

    show = sub.add_parser("show", parents=[common], help="one task: status, times, progress, result")
    show.add_argument("celery_id")
    show.add_argument("--traceback", action="store_true", help="print the traceback of a failed task")

    res = sub.add_parser(
        "results", parents=[common], help="a task's results of one kind: a page, or every one as a file"
    )
    res.add_argument("celery_id")
    res.add_argument("--kind", default="site", help="result kind (site, domain, ip, cert, ...; default site)")
    res.add_argument("--format", choices=export.FORMATS, help="export every result as csv, json or xlsx")
    res.add_argument("-o", "--output", help="with --format: the file to write (default: standard output)")
    res.add_argument("--page", type=positive, default=1)
    res.add_argument("--size", type=positive, default=10, help="1..100 (default 10)")

    revoke = sub.add_parser(
        "revoke", parents=[common], help="revoke one or many tasks (- reads ids from stdin)"
    )
    revoke.add_argument("celery_ids", nargs="+", metavar="celery_id")
    revoke.add_argument(
        "--no-terminate", action="store_true", help="do not stop a running task (it answers 104)"
    )

    sub.add_parser("active", parents=[common], help="tasks on workers now (active, reserved, scheduled)")
    sub.add_parser("types", parents=[common], help="the task types")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one client subcommand; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    as_json = bool(getattr(args, "json", False))
    try:
        client = Client(resolve_settings(args))
        return HANDLERS[args.command](client, args, out)
    except ClientError as exc:
        if as_json:
            _dump(exc.envelope, out)
        print(f"controlplane {args.command}: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
