"""The ``controlplane`` command itself: ``--version``, ``--config`` on either side of the
subcommand, and the documentation's CLI examples run as written against ``make demo``.

The examples are the fenced blocks of README.md's tour and of docs/api.md's "Command-line
client" section that hold a line starting with ``controlplane ``.  Every line of such a block
runs in bash, in order, from a directory holding the demo stack's ``data/`` (as the repository
does for ``make demo``), with two substitutions, both the ones the docs ask a reader to make:
``. .venv/bin/activate`` becomes this interpreter's ``bin`` first on ``PATH``, and the
``export CONTROLPLANE_URL=... CONTROLPLANE_TOKEN=...`` line runs before every command with
the stack's port in the URL (the token is read from ``data/operator.token``, as written).
A line must exit 0 unless its comment says ``exits N``; ``controlplane watch`` runs until it
prints a change and is then stopped with Ctrl-C (SIGINT), as the docs say.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controlplane import __version__
from controlplane.runtime import cli
from tests.stack import OPERATOR_TOKEN
from tests.upstack import UpStack

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config.demo.yaml"
DOC_URL = "http://127.0.0.1:5013"
#: (page, heading of the section whose CLI blocks run)
SECTIONS = [
    (ROOT / "README.md", "## A five-minute tour"),
    (ROOT / "docs" / "api.md", "## Command-line client"),
]


# -- the parser ---------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"controlplane {__version__}\n"


def write_config(path: Path, data_dir: Path) -> Path:
    path.write_text(yaml.safe_dump({"data_dir": str(data_dir)}), encoding="utf-8")
    return path


def test_config_after_the_subcommand_means_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTROLPLANE_CONFIG", raising=False)
    config = str(write_config(tmp_path / "x.yaml", tmp_path / "data"))
    tokens = tmp_path / "data" / "tokens.yaml"
    create = ["create", "--role", "operator", "--write"]
    assert cli.main(["token", *create, "--name", "after", "--config", config]) == 0
    assert tokens.exists()  # <data_dir>/tokens.yaml of the file named after `create`
    assert cli.main(["--config", config, "token", *create, "--name", "before"]) == 0
    assert cli.main(["--config", config, "token", *create, "--name", "both", "--config", config]) == 0
    names = [t["name"] for t in yaml.safe_load(tokens.read_text(encoding="utf-8"))["tokens"]]
    assert names == ["after", "before", "both"]
    capsys.readouterr()
    for command in (["up"], ["worker", "-c", "2"], ["serve"], ["ingest"], ["scheduler"], ["check"]):
        missing = tmp_path / f"{command[0]}-missing.yaml"
        code = cli.main([*command, "--config", str(missing)])
        said = capsys.readouterr()
        assert f"{missing} does not exist" in said.out + said.err, command
        assert code == (1 if command == ["check"] else 2), command  # check: its own FAIL line, exit 1


def test_config_given_twice_differently_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write_config(tmp_path / "one.yaml", tmp_path / "d1")
    two = write_config(tmp_path / "two.yaml", tmp_path / "d2")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", str(one), "worker", "--config", str(two)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"--config given twice with different values ({one} before worker, {two} after it)" in err
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_worker_options_parse_like_celery_worker() -> None:
    parser = cli._parser()
    args = parser.parse_args(["worker", "-c", "4", "-Q", "a, b,", "-n", "w1@%h", "-l", "debug"])
    assert (args.concurrency, args.queues, args.name, args.loglevel) == (4, ["a", "b"], "w1@%h", "DEBUG")
    long = ["worker", "--concurrency", "1", "--queues", "q", "--hostname", "h", "--loglevel", "INFO"]
    args = parser.parse_args(long)
    assert (args.concurrency, args.queues, args.name, args.loglevel) == (1, ["q"], "h", "INFO")
    assert parser.parse_args(["worker", "--name", "old@%h"]).name == "old@%h"
    for bad in (["-c", "0"], ["-Q", ","], ["--loglevel", "loud"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["worker", *bad])


# -- the documentation's examples ---------------------------------------------------


def section(page: Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above (outside code)."""
    level = len(heading.split()[0])
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(f"{heading}\n") + 1
    fenced = False
    for end in range(start, len(lines)):
        fenced ^= lines[end].startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", lines[end]):
            return "".join(lines[start:end])
    return "".join(lines[start:])


def cli_blocks(text: str) -> list[list[str]]:
    """The fenced blocks holding a ``controlplane `` line, as logical lines (``\\`` joined)."""
    blocks = []
    for body in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        lines = [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]
        if any(line.startswith("controlplane ") for line in lines):
            blocks.append(lines)
    return blocks


def expected_exit(line: str) -> int:
    match = re.search(r"#.*\bexits (\d+)", line)
    return int(match[1]) if match else 0


def doc_lines() -> list[str]:
    """Every line of the CLI blocks of :data:`SECTIONS`, in order."""
    return [
        line for page, heading in SECTIONS for block in cli_blocks(section(page, heading)) for line in block
    ]


def test_the_examples_use_only_the_demo_types_and_make_demo_runs_them() -> None:
    demo = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    assert set(demo) == {"tasks"}  # the shipped config.yaml is all defaults: nothing else differs
    assert set(demo["tasks"]) == {"sleep_task", "fail_task", "noop_task", "flaky_task"}
    used = {m[1] for line in doc_lines() for m in re.finditer(r"(?:submit|--task-type) (\w+)", line)}
    assert used and used <= set(demo["tasks"]), used - set(demo["tasks"])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: .*\n\t\$\(BIN\)/controlplane --config config\.demo\.yaml up$", makefile, re.M)
    assert sum(line.startswith("controlplane ") for line in doc_lines()) >= 15


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    """``make demo`` on a free port: config.demo.yaml with only the data dir and ports moved."""
    up = UpStack(tmp_path_factory.mktemp("demo"))
    moved = yaml.safe_load(up.config_path.read_text(encoding="utf-8"))
    config = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    config["data_dir"] = moved["data_dir"]
    config["api"] = {"port": up.port}
    config["embedded"] = {k: moved["embedded"][k] for k in ("redis_port", "mongo_port")}
    config["metrics"] = {"ingest_port": 0}
    up.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    try:
        yield up.start()
    finally:
        up.stop()


def shell_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CP_", "CONTROLPLANE_")) and k != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def as_in_a_terminal() -> None:
    """Take SIGINT as a terminal's shell leaves it: a pytest started in the background of a
    script inherits it ignored, and so would ``controlplane watch``, which Ctrl-C could not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_watch(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Start it, read until it printed a change, then Ctrl-C it."""
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )
    assert proc.stdout is not None
    first = b""
    deadline = time.monotonic() + 60
    while not first.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            first += os.read(proc.stdout.fileno(), 4096)
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    return proc.returncode, (first + rest).decode(), err.decode()


def test_the_docs_cli_examples_run_as_written(demo: UpStack) -> None:
    assert demo.token and demo.token != OPERATOR_TOKEN
    cwd = demo.data.parent  # `data/operator.token`, as in the repository
    env = shell_env()
    export = ""
    ran: list[tuple[str, str]] = []
    for line in doc_lines():
        if line.startswith((". .venv/bin/activate", "source .venv/bin/activate")):
            continue  # PATH already has this interpreter's bin first
        if line.startswith("export CONTROLPLANE_URL="):
            assert DOC_URL in line and "$(cat data/operator.token)" in line
            export = line.replace(DOC_URL, demo.base)
            continue
        assert export, f"{line!r} comes before the export line"
        script = f"{export}\n{line}"
        if line.startswith("controlplane watch "):
            code, out, err = run_watch(script, cwd, env)
            assert code == 130 and out.strip(), (line, out, err)
        else:
            proc = subprocess.run(
                ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
            assert code == expected_exit(line), (line, code, out, err)
        assert "Traceback (most recent call last)" not in err, (line, err)
        if "controlplane revoke" in line:
            assert re.search(r" 200 +success +revoked", out), (line, out, err)  # it did revoke something
        ran.append((line, out))
    outputs = dict(ran)
    assert any(line == "controlplane --version" for line, _ in ran)
    assert f"controlplane {__version__}" in outputs["controlplane --version"]
    waited = [out for line, out in ran if "sleep_task --name nap" in line]
    assert waited and all('"slept"' in out and "'slept'" not in out for out in waited)
    assert len(ran) >= 15, [line for line, _ in ran]
