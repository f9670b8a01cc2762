"""Deployment files, JSON logs and ``controlplane check``."""

from __future__ import annotations

import configparser
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import Config, load_config
from controlplane.runtime import cli, embedded
from controlplane.runtime.logs import JsonFormatter
from tests.conftest import REDIS_URL

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PRODUCTION = DEPLOY / "config.production.yaml"


def dataclass_keys(cls: Any, prefix: str = "") -> set[str]:
    """Every key path of a config dataclass (dict-valued fields are leaves)."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        keys.add(path)
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= dataclass_keys(hints[f.name], path + ".")
    return keys


def yaml_keys(tree: dict[str, Any], cls: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.add(path)
        kind = hints.get(key)
        if kind is not None and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            keys |= yaml_keys(value, kind, path + ".")
    return keys


def test_production_config_names_every_key_and_loads() -> None:
    tree = yaml.safe_load(PRODUCTION.read_text())
    assert yaml_keys(tree, Config) == dataclass_keys(Config)
    config = load_config(PRODUCTION, env={})
    assert config.log_format == "json" and config.metrics.ingest_port and config.auth.enabled


def test_production_config_documents_every_key() -> None:
    undocumented = [
        line
        for line in PRODUCTION.read_text().splitlines()
        if re.match(r"^\s*[a-z_]+:", line) and "#" not in line
    ]
    assert not undocumented, undocumented


def test_compose_and_systemd_run_real_subcommands() -> None:
    choices = set(cli._parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "ingest", "scheduler", "worker", "redis", "mongo"} <= set(services)
    for name in ("api", "ingest", "scheduler", "worker", "check"):
        assert services[name]["command"][0] in choices, name
        assert services[name]["environment"]["CONTROLPLANE_CONFIG"] == "/etc/controlplane/config.yaml"
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {
        "controlplane-api.service",
        "controlplane-ingest.service",
        "controlplane-scheduler.service",
        "controlplane-worker@.service",
    }
    for unit in units:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read_string(unit.read_text())
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), unit
        command = parser["Service"]["ExecStart"].split()
        assert command[0].endswith("/controlplane") and command[1] in choices, unit


def test_units_and_compose_restart_crashes_with_backoff_and_a_limit() -> None:
    """The restart policy of ``up`` (backoff, give up after a burst) in systemd and compose."""
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert "controlplane-up.service" in {u.name for u in units}
    for unit in units:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read_string(unit.read_text())
        service, section = parser["Service"], parser["Unit"]
        assert service["Restart"] == "on-failure", unit
        assert service["RestartSec"] and service["RestartMaxDelaySec"] and int(service["RestartSteps"]) > 0
        assert int(section["StartLimitBurst"]) >= 3 and int(section["StartLimitIntervalSec"]) >= 60, unit
    up = configparser.ConfigParser(interpolation=None, strict=False)
    up.read_string((DEPLOY / "systemd" / "controlplane-up.service").read_text())
    # SIGTERM to `up` alone, which stops its children in order (not to the whole cgroup at once).
    assert up["Service"]["KillMode"] == "mixed" and up["Service"]["ExecStart"].endswith(" up")
    assert up["Service"]["UMask"] == "0077"
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if name != "check":
            assert service.get("restart") in ("on-failure", "unless-stopped", "always"), name
    for name in ("redis", "mongo", "api", "ingest", "worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("controlplane.test", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_formatter_includes_task_ids_and_extras() -> None:
    fmt = JsonFormatter()
    line = json.loads(fmt.format(record("task %s done", "x", celery_id="abc", count=3, obj=object())))
    assert line["message"] == "task x done" and line["celery_id"] == "abc" and line["count"] == 3
    assert line["level"] == "INFO" and line["logger"] == "controlplane.test"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["time"])
    assert isinstance(line["obj"], str)
    cid = "3f1e0c9a-5263-4d8c-ae38-f5c4f9ad7c32"
    access = json.loads(fmt.format(record("200 DELETE /api/celery_task/%s/ (127.0.0.1) 3.1ms", cid)))
    assert access["celery_id"] == cid
    assert "celery_id" not in json.loads(fmt.format(record("no task here")))
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(fmt.format(rec))["exc"]


def test_log_format_json_makes_every_line_json(tmp_path: Path) -> None:
    code = (
        "import logging; from controlplane.config import load_config;"
        "from controlplane.runtime.logs import setup_logging;"
        "setup_logging(load_config(None));"
        "logging.getLogger('x').warning('hello %s', 'world', extra={'celery_id': 'c-1'})"
    )
    env = {**os.environ, "CP_LOG_FORMAT": "json"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1]["message"] == "hello world" and lines[-1]["celery_id"] == "c-1"
    with pytest.raises(Exception, match="log_format"):
        load_config(None, env={"CP_LOG_FORMAT": "xml"})


def check(capsys: pytest.CaptureFixture[str], env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    try:
        for k in [k for k in os.environ if k.startswith("CP_") or k == "CONTROLPLANE_CONFIG"]:
            mp.delenv(k)
        for k, v in env.items():
            mp.setenv(k, v)
        capsys.readouterr()
        code = cli.main(["check", "--json", *args])
        return code, json.loads(capsys.readouterr().out)
    finally:
        mp.undo()


def test_check_reaches_broker_and_database(mongo_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(capsys, {"CP_BROKER_URL": f"{REDIS_URL}/0", "CP_MONGO_URL": mongo_server})
    assert code == 0 and out["ok"], out
    assert {c["name"] for c in out["checks"]} >= {"config", "broker", "database"}


def test_check_fails_fast_on_dead_servers_and_bad_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dead = embedded.free_port()
    start = time.monotonic()
    code, out = check(
        capsys,
        {"CP_BROKER_URL": f"redis://127.0.0.1:{dead}/0", "CP_MONGO_URL": f"mongodb://127.0.0.1:{dead}"},
        "--timeout",
        "1",
    )
    assert code == 1 and time.monotonic() - start < 15
    failed = {c["name"] for c in out["checks"] if not c["ok"]}
    assert failed == {"broker", "database"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("api: {prot: 1}\n")
    capsys.readouterr()
    assert cli.main(["--config", str(bad), "check"]) == 1
    assert "unknown key" in capsys.readouterr().out
