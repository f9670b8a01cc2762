"""The command-line client (``controlplane submit|list|show|revoke|active|types``) and the
``controlplane worker`` options, against a real stack."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery

from controlplane.runtime import cli, embedded
from controlplane.runtime.client import port_list, pretty, progress_bar, result_value, traceback_tail
from tests.stack import OPERATOR_TOKEN, VIEWER_TOKEN, Stack, wait_for


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CONTROLPLANE_URL", "CONTROLPLANE_TOKEN", "CP_TOKEN", "CONTROLPLANE_CLIENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def op(stack: Stack) -> list[str]:
    return ["--url", f"http://127.0.0.1:{stack.port}", "--token", OPERATOR_TOKEN]


def test_types_table_and_json(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "types", *op(stack))
    assert code == 0 and out.splitlines()[0].split() == ["TASK_TYPE", "LABEL"] and "domain_task" in out
    code, out, _ = run(capsys, "types", *op(stack), "--json")
    assert code == 0 and "sleep_task" in json.loads(out)


def test_submit_wait_show_and_list(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "submit",
        "sleep_task",
        *op(stack),
        "--data",
        '{"seconds": 0.2}',
        "--name",
        "cli-1",
        "--wait",
        "--json",
    )
    assert code == 0, out
    task = json.loads(out)
    assert task["status"] == "SUCCESS" and task["name"] == "cli-1"
    cid = task["celery_id"]

    code, out, _ = run(capsys, "show", cid, *op(stack))
    assert code == 0 and f"celery_id:      {cid}" in out and "SUCCESS" in out
    assert "[##############################] 100% sleep" in out

    code, out, _ = run(
        capsys, "list", *op(stack), "--task-type", "sleep_task", "--status", "SUCCESS", "--size", "1"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["CELERY_ID", "STATUS", "TASK_TYPE"]
    assert len(lines) == 3 and lines[-1].startswith("-- page 1 of ")
    code, out, _ = run(capsys, "list", *op(stack), "--celery-id", cid, "--json")
    data = json.loads(out)
    assert data["total"] == 1 and data["items"][0]["celery_id"] == cid
    code, out, _ = run(capsys, "list", *op(stack), "--task-type", "sleep_task", "--all", "-q")
    assert code == 0 and cid in out.split()


def test_submit_wait_exit_codes_for_failure_and_timeout(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "submit", "fail_task", *op(stack), "--data", '{"message": "boom"}', "--wait")
    assert code == 4 and "FAILURE" in out
    code, out, _ = run(
        capsys,
        "submit",
        "sleep_task",
        *op(stack),
        "--data",
        '{"seconds": 5}',
        "--wait",
        "--wait-timeout",
        "0.5",
        "-q",
    )
    assert code == 5
    assert run(capsys, "revoke", out.split()[0], *op(stack))[0] == 0  # not left to end in a later test


def test_revoke_one_and_many(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    ids = []
    for i in range(2):
        code, out, _ = run(
            capsys, "submit", "sleep_task", *op(stack), "--data", '{"seconds": 30}', "--name", f"r{i}", "-q"
        )
        assert code == 0
        ids.append(out.strip())
    unknown = str(uuid.uuid4())
    code, out, _ = run(capsys, "revoke", *ids, unknown, *op(stack), "--json")
    results = {r["celery_id"]: r for r in json.loads(out)["results"]}
    assert code == 1  # one id failed
    assert results[ids[0]]["code"] == 200 and results[ids[1]]["code"] == 200
    assert results[unknown]["code"] == 102
    for cid in ids:
        stack.wait_status(cid, "REVOKED")
    code, out, _ = run(capsys, "revoke", ids[0], *op(stack))
    assert code == 1 and "105" in out and "TaskIsDone" in out
    code, out, _ = run(capsys, "submit", "sleep_task", *op(stack), "--data", '{"seconds": 30}', "-q")
    code, out, _ = run(capsys, "revoke", out.strip(), *op(stack))
    assert code == 0 and "revoked" in out


def test_active(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "active", *op(stack), "--json")
    assert code == 0 and isinstance(json.loads(out), list)
    code, out, _ = run(capsys, "active", *op(stack))
    assert code == 0 and out.splitlines()[0].split()[:2] == ["CELERY_ID", "STATE"]


def test_credentials_from_env_and_config_file(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stack.port}"
    code, out, err = run(capsys, "types", "--url", url, "--json")
    assert code == 1 and json.loads(out)["code"] == 401 and "NotLogin" in err
    monkeypatch.setenv("CONTROLPLANE_URL", url)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", VIEWER_TOKEN)
    assert run(capsys, "types")[0] == 0
    code, out, _ = run(capsys, "revoke", str(uuid.uuid4()), "--json")
    assert code == 1 and json.loads(out)["code"] == 403  # a viewer may not revoke
    assert run(capsys, "revoke", str(uuid.uuid4()), "--token", OPERATOR_TOKEN)[0] == 1  # 102, as operator
    monkeypatch.delenv("CONTROLPLANE_URL")
    monkeypatch.delenv("CONTROLPLANE_TOKEN")
    conf = tmp_path / "xdg" / "controlplane" / "client.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"url: {url}\ntoken: {OPERATOR_TOKEN}\ntimeout: 10\n")
    conf.chmod(0o600)
    assert run(capsys, "list", "--size", "1")[0] == 0
    other = tmp_path / "other.yaml"
    other.write_text("url: http://127.0.0.1:1\n")
    assert run(capsys, "list", "--client-config", str(other))[0] == 3


def test_usage_and_connection_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{embedded.free_port()}"
    code, _, err = run(capsys, "list", "--url", dead)
    assert code == 3 and "cannot reach" in err
    assert run(capsys, "submit", "sleep_task", "--url", dead, "--data", "{not json")[0] == 2
    assert run(capsys, "submit", "sleep_task", "--url", dead, "--data", "[1]")[0] == 2
    assert run(capsys, "list", "--url", "ftp://x")[0] == 2
    assert run(capsys, "list", "--client-config", str(tmp_path / "missing.yaml"))[0] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("url: x\nsecret: y\n")
    assert run(capsys, "list", "--client-config", str(bad))[0] == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["list", "--size", "0"])
    assert exc.value.code == 2


def test_console_script_and_progress_bar(stack: Stack) -> None:
    env = {
        **os.environ,
        "CONTROLPLANE_URL": f"http://127.0.0.1:{stack.port}",
        "CONTROLPLANE_TOKEN": OPERATOR_TOKEN,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane.runtime.cli", "types", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "domain_task" in json.loads(proc.stdout)
    assert progress_bar({"stage": "port_scan", "done": 1, "total": 4}, 8) == "[##......]  25% port_scan 1/4"
    assert progress_bar(None) == ""


def test_list_finds_tasks_and_results_shows_and_exports(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [stack.create("sleep_task", {"name": f"Find-{tag} {i}", "seconds": 0}) for i in range(3)]
    for cid in ids:
        stack.wait_status(cid, "SUCCESS")
    code, out, _ = run(capsys, "list", *op(stack), "--search", f"find-{tag}", "--sort", "created", "--json")
    assert code == 0 and [i["celery_id"] for i in json.loads(out)["items"]] == ids
    code, out, _ = run(capsys, "list", *op(stack), "--search", f"FIND-{tag}", "-q")
    assert code == 0 and out.split() == ids[::-1]
    code, out, _ = run(capsys, "list", *op(stack), "--status", "SUCCESS", "--status", "FAILURE", "--json")
    both = stack.request("GET", "/api/celery_task/?status=SUCCESS,FAILURE&size=1").data["total"]
    assert code == 0 and json.loads(out)["total"] == both
    code, _, err = run(capsys, "list", *op(stack), "--created-after", "yesterday")
    assert code == 1 and "created_after" in err

    task_id = stack.detail(ids[0])["task_id"]
    stack.db["site"].insert_many(
        [{"task_id": task_id, "site": f"http://10.8.0.{i}/", "title": f"t{i}", "status": 200} for i in (1, 2)]
    )
    code, out, _ = run(capsys, "results", ids[0], *op(stack), "--kind", "site")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["SITE", "HOSTNAME"] and "http://10.8.0.2/" in out
    assert lines[-1] == "-- site: page 1 of 1, 2 result(s)"
    code, out, err = run(capsys, "results", ids[0], *op(stack), "--kind", "site", "--format", "json")
    assert code == 0 and [d["site"] for d in json.loads(out)] == ["http://10.8.0.1/", "http://10.8.0.2/"]
    assert "2 result(s)" in err
    code, _, err = run(capsys, "results", ids[0], *op(stack), "--format", "xlsx")
    assert code == 2 and "-o FILE" in err
    missing = str(uuid.uuid4())
    target = tmp_path / "none.csv"
    code, _, err = run(capsys, "results", missing, *op(stack), "--format", "csv", "-o", str(target))
    assert code == 1 and "102" in err and not target.exists() and not list(tmp_path.iterdir())


def test_submit_wait_failure_prints_the_exception_and_the_traceback_tail(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "submit", "fail_task", *op(stack), "--data", '{"message": "boom ü"}', "--wait"
    )
    cid = out.split()[0]
    assert code == 4 and out.splitlines() == [f"{cid}  FAILURE"]
    lines = err.splitlines()
    why = lines.index(f"controlplane submit: {cid} FAILURE: ValueError('boom ü')")
    tail = lines[why + 1 :]
    assert tail[-1] == f"  (the whole traceback: controlplane show {cid} --traceback)"
    assert tail[-2] == "  ValueError: boom ü" and tail[-3].strip().startswith("raise ValueError(")
    assert tail[0].strip().startswith('File "') and tail[-4].strip().startswith(
        'File "workers/tasks/testing.py"'
    )
    assert len(tail) == 6  # two frames, the exception, the hint: no caret lines
    code, out, err = run(capsys, "submit", "fail_task", *op(stack), "--wait", "-q")
    assert code == 4 and "FAILURE: ValueError('planned failure')" in err


def test_submit_wait_says_when_the_task_was_revoked(stack: Stack) -> None:
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    env = {
        **stack.env(),
        "CONTROLPLANE_URL": f"http://127.0.0.1:{stack.port}",
        "CONTROLPLANE_TOKEN": OPERATOR_TOKEN,
    }
    proc = subprocess.Popen(
        embedded.controlplane_command(
            "submit", "sleep_task", "--name", name, "--data", '{"seconds": 60}', "--wait"
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = wait_for(
            lambda: stack.request("GET", f"/api/celery_task/?q={name}").data["items"], what="the task"
        )
        cid = found[0]["celery_id"]
        stack.wait_status(cid, "STARTED")
        assert stack.request("POST", "/api/celery_task/revoke/", {"celery_id": cid}).code == 200
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 4 and out.splitlines() == [f"{cid}  REVOKED"]
    assert f"controlplane submit: {cid} REVOKED (terminated)" in err.splitlines()


def test_submit_wait_and_show_print_the_result_as_json(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "submit", "sleep_task", *op(stack), "--data", '{"seconds": 0.1}', "--wait")
    first, *rest = out.splitlines()
    cid = first.split()[0]
    assert code == 0 and first == f"{cid}  SUCCESS"
    assert json.loads("\n".join(rest)) == {"slept": 0.1} and rest[0] == "{"  # pretty, not "{'slept': 0.1}"
    assert stack.detail(cid)["result"] == "{'slept': 0.1}"  # what the API holds: Celery's repr
    code, out, _ = run(capsys, "show", cid, *op(stack))
    lines = out.splitlines()
    at = lines.index("result:         {")
    assert code == 0 and lines[at + 1 : at + 3] == ['                  "slept": 0.1', "                }"]
    code, out, _ = run(capsys, "show", cid, *op(stack), "--json")
    assert json.loads(out)["result"] == "{'slept': 0.1}"  # --json is the API's data, untouched


def test_result_value_and_helpers() -> None:
    assert result_value("{'name': 'héllo 世界', 'ok': True, 'n': None}") == {
        "name": "héllo 世界",
        "ok": True,
        "n": None,
    }
    assert pretty(result_value("{'name': 'héllo 世界'}")) == '{\n  "name": "héllo 世界"\n}'
    assert result_value('{"a": [1, 2]}') == {"a": [1, 2]}
    assert result_value("'text'") == "text" and result_value("None") is None
    assert result_value("__import__('os').system('true')") == "__import__('os').system('true')"
    assert result_value("{'clipped': 'abc…") == "{'clipped': 'abc…"
    assert result_value({"already": "data"}) == {"already": "data"}
    trace = (
        'Traceback:\n  File "a.py", line 1, in a\n    b()\n  File "b.py", line 2, in b\n    c()\n    ^^^\n'
    )
    trace += '  File "c.py", line 3, in c\n    raise ValueError("x")\nValueError: x\n'
    assert traceback_tail(trace) == [
        '  File "b.py", line 2, in b',
        "    c()",
        '  File "c.py", line 3, in c',
        '    raise ValueError("x")',
        "ValueError: x",
    ]
    assert traceback_tail("no frames\nValueError: x") == ["no frames", "ValueError: x"]
    assert port_list(8080) == "8080" and port_list([80, "8000-8100"]) == "80,8000-8100"
    assert port_list("80,443") == "80,443" and port_list(True) is True


def test_port_custom_as_a_number_or_a_list_reaches_the_api(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # what the API stores for each (it parses the port string into a list)
    given = {"8080": [8080], "80,443": [80, 443], "[80, 443]": [80, 443], '"8000-8002"': [8000, 8001, 8002]}
    ids = []
    for value, stored in given.items():
        code, out, err = run(
            capsys,
            "submit",
            "ip_task",
            *op(stack),
            "--name",
            "ports",
            "--target",
            "127.0.0.1",
            "--option",
            f"port_custom={value}",
            "--option",
            "site_identify=false",
            "-q",
        )
        assert code == 0, err
        cid = out.strip()
        ids.append(cid)
        options = stack.detail(cid)["options"]
        assert options["port_custom"] == stored and options["port_scan_type"] == "custom"
    code, _, err = run(
        capsys, "submit", "ip_task", *op(stack), "--target", "127.0.0.1", "--option", "port_custom=0"
    )
    assert code == 1 and "data.options.port_custom" in err  # the API's verdict, not a client crash
    run(capsys, "revoke", *ids, *op(stack))
    for cid in ids:
        stack.wait_status(cid, "SUCCESS", "FAILURE", "REVOKED")


def table_rows(out: str) -> list[dict[str, str]]:
    """The rows of a table the client printed, by column name (cells may be empty)."""
    header, *lines = [line for line in out.splitlines() if not line.startswith("-- ")]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines
    ]


def test_list_shows_a_dash_for_a_task_not_started(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    tag = uuid.uuid4().hex[:8]
    busy = [stack.create("sleep_task", {"name": f"busy-{tag}", "seconds": 60}) for _ in range(2)]
    for cid in busy:
        stack.wait_status(cid, "STARTED")  # both pool processes taken
    waiting = stack.create("sleep_task", {"name": f"wait-{tag}", "seconds": 0})
    try:
        code, out, _ = run(capsys, "list", *op(stack), "--search", f"wait-{tag}")
        [row] = table_rows(out)
        assert code == 0 and row["CELERY_ID"] == waiting and row["STATUS"] == "PENDING"
        assert row["START"] == "-" and row["RUNTIME"] == "-"
        code, out, _ = run(capsys, "list", *op(stack), "--search", f"busy-{tag}")
        for row in table_rows(out):
            assert row["STATUS"] == "STARTED" and row["START"].endswith("Z") and row["RUNTIME"] == "-"
    finally:
        run(capsys, "revoke", *busy, waiting, *op(stack))
    for cid in busy:
        stack.wait_status(cid, "REVOKED")
    done = stack.create("sleep_task", {"name": f"done-{tag}", "seconds": 0})
    task = stack.wait_status(done, "SUCCESS")
    code, out, _ = run(capsys, "list", *op(stack), "--celery-id", done)
    [row] = table_rows(out)
    assert row["START"] == task["start_time"] and re.fullmatch(r"\d+\.\d\ds", row["RUNTIME"])


def test_revoke_from_an_empty_stdin_is_nothing_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{embedded.free_port()}"  # never asked: there is nothing to send
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    code, out, err = run(capsys, "revoke", "-", "--url", dead, "--json")
    assert code == 0 and json.loads(out) == {"results": []} and "nothing to revoke" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(capsys, "revoke", "-", "--url", dead)
    assert code == 0 and out == "" and "nothing to revoke" in err


def test_worker_takes_celery_worker_options(stack: Stack, tmp_path: Path) -> None:
    queue = f"recon-{stack.database}"
    name = f"opts-{stack.database}@%h"
    proc = embedded.spawn(
        embedded.controlplane_command(
            "worker",
            "--config",
            str(stack.config_path),
            "-c",
            "3",
            "-Q",
            f"{queue}, extra-{stack.database}",
            "-n",
            name,
            "--loglevel",
            "debug",
        ),
        log_path=tmp_path / "worker.log",
        env=stack.env(),
    )
    app = Celery(broker=stack.broker_url, set_as_current=False)
    try:
        node = name.replace("%h", socket.gethostname())
        inspect = app.control.inspect(destination=[node], timeout=1.0)
        stats = wait_for(lambda: (inspect.stats() or {}).get(node), timeout=40, what="the worker's stats")
        assert stats["pool"]["max-concurrency"] == 3
        queues = {q["name"] for q in (inspect.active_queues() or {})[node]}
        assert queues == {queue, f"extra-{stack.database}", "celery"}  # -Q, and the foreign queue
        assert "DEBUG" in (tmp_path / "worker.log").read_text(errors="replace")
    finally:
        app.close()
        embedded.stop(proc, timeout=15, sig=signal.SIGQUIT)
