"""The typed config: file, environment overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import ConfigError, load_config


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.api.port == 5013 and cfg.broker.url.startswith("redis://")
    assert cfg.task_config("domain_task").time_limit == 3900


def test_repository_config_yaml_matches_the_defaults() -> None:
    cfg = load_config(Path(__file__).parent.parent / "config.yaml", env={})
    assert cfg == load_config(None, env={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("api: {port: 7000}\ntasks:\n  domain_task: {time_limit: 50, soft_time_limit: 40}\n")
    env = {
        "CP_API_PORT": "7100",
        "CP_BROKER_URL": "amqp://x//",
        "CP_API_ALWAYS_HTTP_200": "true",
        "CP_WORKER_QUEUES": "a,b",
    }
    cfg = load_config(path, env=env)
    assert cfg.api.port == 7100 and cfg.api.always_http_200 is True
    assert cfg.broker.url == "amqp://x//"
    assert cfg.worker.queues == ["a", "b"]
    assert cfg.task_config("domain_task").time_limit == 50
    assert cfg.task_config("ip_task").time_limit == 3900


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("api: {port: 0}", "api.port"),
        ("api: {prot: 1}", "unknown key"),
        ("api: {always_http_200: maybe}", "true or false"),
        ("events: {batch_size: many}", "number"),
        ("- just a list", "mapping"),
        ("tasks: {x: {soft_time_limit: 10, time_limit: 5}}", "soft_time_limit"),
        ("{bad yaml", "YAML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, env={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_config_yaml_documents_every_key() -> None:
    import dataclasses

    import yaml

    from controlplane.config import Config

    text = (Path(__file__).parent.parent / "config.yaml").read_text()
    raw = yaml.safe_load(text)
    missing = []
    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(section.type) or isinstance(section.default_factory, type):
            kind = section.default_factory() if callable(section.default_factory) else None
            if dataclasses.is_dataclass(kind):
                for key in dataclasses.fields(kind):
                    if key.name not in (raw.get(section.name) or {}):
                        missing.append(f"{section.name}.{key.name}")
                continue
        if section.name not in raw:
            missing.append(section.name)
    assert missing == []
