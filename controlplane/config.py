"""The one typed configuration object.

Built once, from ``config.yaml`` (path given by ``--config`` or
``CONTROLPLANE_CONFIG``) and then the environment, and passed explicitly to
whatever needs it; nothing reads options at import time.

Every key can be overridden from the environment as ``CP_<SECTION>_<KEY>``
(for example ``CP_API_PORT=9000``); the most common ones also have short
aliases: ``CP_BROKER_URL``, ``CP_MONGO_URL``, ``CP_RESULT_BACKEND``,
``CP_DATA_DIR``.  Every key is documented in ``config.yaml`` and docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration file or environment value is unusable."""


@dataclass
class BrokerConfig:
    """Where Celery messages and events travel."""

    url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = ""
    connect_timeout: float = 3.0
    publish_timeout: float = 5.0


@dataclass
class MongoConfig:
    """The task store."""

    url: str = "mongodb://127.0.0.1:27017"
    database: str = "controlplane"
    timeout_ms: int = 3000


@dataclass
class ApiConfig:
    """The Tornado API server."""

    host: str = "127.0.0.1"
    port: int = 5013
    always_http_200: bool = False
    max_body_bytes: int = 1024 * 1024
    inspect_timeout: float = 1.0
    max_batch: int = 1000
    executor_threads: int = 8
    processes: int = 1
    cors_origins: list[str] = field(default_factory=list)
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections_per_address: int = 256
    max_json_depth: int = 32
    workers_cache_seconds: float = 3.0


@dataclass
class EventsConfig:
    """The event consumer (``controlplane ingest``)."""

    queue: str = "controlplane.events"
    durable: bool = True
    batch_size: int = 2000
    flush_interval: float = 0.3
    max_buffer: int = 100_000
    reconcile_interval: float = 30.0
    lost_after: float = 60.0
    worker_timeout: float = 15.0
    lease_seconds: float = 10.0
    backoff_max: float = 10.0
    cache_tasks: int = 5000
    coalesce_above: int = 200


@dataclass
class TaskTypeConfig:
    """Per task type execution settings; ``task`` names a callable for extra types."""

    queue: str = "recon"
    soft_time_limit: float = 3600.0
    time_limit: float = 3900.0
    acks_late: bool = False
    label: str = ""
    task: str = ""


@dataclass
class WorkerConfig:
    """Celery worker defaults."""

    concurrency: int = 2
    pool: str = "prefork"
    queues: list[str] = field(default_factory=lambda: ["recon"])
    foreign_queue: str = "celery"
    terminate_signal: str = "SIGTERM"


@dataclass
class SourceEntry:
    """One passive subdomain source (``recon.sources.plugins.<name>``): where it is and its account."""

    url: str = ""
    key: str = ""
    email: str = ""
    enabled: bool = True


@dataclass
class SourcesConfig:
    """The passive subdomain sources of ``dns_query_plugin``: bounds, and per-source settings by name."""

    budget: float = 60.0
    max_requests: int = 20
    max_wait: float = 30.0
    rate_retries: int = 2
    request_timeout: float = 30.0
    plugins: dict[str, SourceEntry] = field(default_factory=dict)


@dataclass
class ReconConfig:
    """Settings of the recon pipelines run by workers."""

    resolvers: list[str] = field(default_factory=list)
    dns_timeout: float = 2.0
    connect_timeout: float = 1.0
    http_timeout: float = 5.0
    concurrency: int = 200
    fofa_url: str = "https://fofa.info"
    fofa_email: str = ""
    fofa_key: str = ""
    github_url: str = "https://api.github.com"
    github_token: str = ""
    poc_dirs: list[str] = field(default_factory=list)
    file_leak_list: str = ""
    alt_dns_limit: int = 30000
    brute_max_attempts: int = 10
    brute_lists: str = ""
    dns_max_failed: float = 0.05
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    geoip_city_db: str = ""
    geoip_asn_db: str = ""
    geoip_locales: list[str] = field(default_factory=lambda: ["en"])
    cdn_data: str = ""
    cdn_extra_files: list[str] = field(default_factory=list)
    cdn_cname_keywords: list[str] = field(default_factory=list)
    search_engine_url: str = "https://www.bing.com/search"
    search_engine_max_pages: int = 5
    search_engine_time_budget: float = 60.0
    spider_max_depth: int = 3
    spider_max_pages: int = 60
    spider_time_budget: float = 120.0
    findvhost_max_names: int = 500
    findvhost_time_budget: float = 600.0
    poc_host_concurrency: int = 8
    poc_max_requests_per_host: int = 5000
    poc_max_host_errors: int = 30
    webhook_url: str = ""
    screenshot_chromium: str = "chromium"
    screenshot_width: int = 1280
    screenshot_height: int = 800
    screenshot_max_bytes: int = 2 * 1024 * 1024
    screenshot_timeout: float = 15.0
    screenshot_max_sites: int = 200
    screenshot_concurrency: int = 4


@dataclass
class EmbeddedConfig:
    """Servers that ``controlplane up`` starts as child processes."""

    redis_port: int = 6390
    mongo_port: int = 27117
    mongo_socket: bool = True
    restart_delay_max: float = 30.0
    restart_limit: int = 5
    restart_window: float = 60.0


@dataclass
class TokenEntry:
    """One API token: a name, a role, and the salted hash of the token (never the token itself)."""

    name: str = ""
    role: str = "viewer"
    hash: str = ""


@dataclass
class AuthConfig:
    """API authentication (see :mod:`controlplane.service.auth`); disabling it needs this explicit key."""

    enabled: bool = True
    tokens: list[TokenEntry] = field(default_factory=list)
    token_file: str = ""


@dataclass
class ScopeConfig:
    """What may be scanned (see :mod:`controlplane.core.scope`); metadata and link-local are always denied."""

    allow_private: bool = False
    allow_loopback: bool = False
    allow_ipv6: bool = True
    allowed_cidrs: list[str] = field(default_factory=list)
    denied_cidrs: list[str] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    denied_domains: list[str] = field(default_factory=list)


@dataclass
class RateLimitConfig:
    """Per-token limits on create and revoke (token buckets shared in Redis); 0 disables one."""

    create_per_minute: float = 600.0
    create_burst: int = 60
    revoke_per_minute: float = 600.0
    revoke_burst: int = 120


@dataclass
class LimitsConfig:
    """Size limits of task input; ``per_type`` overrides any of them for one task type."""

    max_targets: int = 1000
    max_cidr_addresses: int = 65536
    max_string: int = 4096
    max_name: int = 256
    max_depth: int = 6
    max_data_bytes: int = 256 * 1024
    max_keys: int = 200
    per_type: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class FeedConfig:
    """The live WebSocket task feed (``/api/celery_task/ws/``)."""

    url: str = ""
    client_queue: int = 1000
    heartbeat: float = 15.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    auth_timeout: float = 10.0
    max_unauthenticated: int = 1000
    max_message_bytes: int = 65536
    send_buffer_bytes: int = 262144
    publish_timeout: float = 5.0
    poll_interval: float = 2.0
    max_replay: int = 100_000
    lookup_cache: int = 10_000
    lookup_ttl: float = 2.0
    lookup_recent: int = 5_000
    leave_tracking: int = 100_000

    def redis_url(self, broker_url: str) -> str:
        """Where updates fan out: ``feed.url``, else the broker when it is Redis, else empty."""
        if self.url:
            return self.url
        if broker_url.startswith(("redis://", "rediss://", "unix://")):
            return broker_url
        return ""


@dataclass
class MetricsConfig:
    """Prometheus metrics: ``/metrics`` on the API, and the consumer's own port."""

    enabled: bool = True
    public: bool = False
    cache_seconds: float = 5.0
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 0


@dataclass
class Config:
    """All settings of one deployment; see ``config.yaml`` for each key."""

    data_dir: str = "./data"
    log_level: str = "INFO"
    log_format: str = "text"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    mongo: MongoConfig = field(default_factory=MongoConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    scope: ScopeConfig = field(default_factory=ScopeConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    task_defaults: TaskTypeConfig = field(default_factory=TaskTypeConfig)
    tasks: dict[str, TaskTypeConfig] = field(default_factory=dict)

    def task_config(self, task_type: str) -> TaskTypeConfig:
        """Settings for one task type: its own entry over ``task_defaults``."""
        base = dataclasses.asdict(self.task_defaults)
        own = self.tasks.get(task_type)
        if own is not None:
            for f in dataclasses.fields(TaskTypeConfig):
                value = getattr(own, f.name)
                if value != getattr(TaskTypeConfig(), f.name):
                    base[f.name] = value
        return TaskTypeConfig(**base)

    @property
    def result_backend(self) -> str:
        """The Celery result backend; defaults to the broker when it is Redis."""
        if self.broker.result_backend:
            return self.broker.result_backend
        if self.broker.url.startswith("redis"):
            return self.broker.url
        return ""


_ALIASES = {
    "CP_BROKER_URL": ("broker", "url"),
    "CP_RESULT_BACKEND": ("broker", "result_backend"),
    "CP_MONGO_URL": ("mongo", "url"),
    "CP_MONGO_DATABASE": ("mongo", "database"),
    "CP_DATA_DIR": ("data_dir",),
}


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return _build(kind, value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        _, vkind = typing.get_args(kind)
        return {str(k): _coerce(v, vkind, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (ikind,) = typing.get_args(kind)
        return [_coerce(v, ikind, where) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if kind is str:
        if value is None:
            return ""
        return str(value)
    if isinstance(kind, types.UnionType):
        return value
    return value


def _build(cls: Any, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}

    def put(path: tuple[str, ...], value: str) -> None:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    sections = {
        f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.type) or f.name != "tasks"
    }
    for key, value in env.items():
        if key in _ALIASES:
            put(_ALIASES[key], value)
            continue
        if not key.startswith("CP_"):
            continue
        rest = key[3:].lower()
        for section in sorted(sections, key=len, reverse=True):
            if rest == section:
                put((section,), value)
                break
            if rest.startswith(section + "_"):
                put((section, rest[len(section) + 1 :]), value)
                break
    return tree


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate."""
    env = os.environ if env is None else env
    path = path or env.get("CONTROLPLANE_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        raw = loaded
    raw = _deep_merge(raw, _env_overrides(env))
    config: Config = _build(Config, raw, "")
    _check(config)
    return config


def _check(config: Config) -> None:
    if not 1 <= config.api.port <= 65535:
        raise ConfigError("api.port: must be 1..65535")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format: must be text or json")
    if not 0 <= config.metrics.ingest_port <= 65535:
        raise ConfigError("metrics.ingest_port: must be 0 (off) or 1..65535")
    if config.events.batch_size < 1:
        raise ConfigError("events.batch_size: must be at least 1")
    if config.events.cache_tasks < 0:
        raise ConfigError("events.cache_tasks: must be 0 (off) or more")
    if config.feed.lookup_cache < 0:
        raise ConfigError("feed.lookup_cache: must be 0 (off) or more")
    if config.feed.lookup_recent < 0:
        raise ConfigError("feed.lookup_recent: must be 0 (off) or more")
    if config.feed.lookup_ttl <= 0:
        raise ConfigError("feed.lookup_ttl: must be more than 0 seconds")
    if config.feed.leave_tracking < 0:
        raise ConfigError("feed.leave_tracking: must be 0 (off) or more")
    if config.events.coalesce_above < 0:
        raise ConfigError("events.coalesce_above: must be 0 (off) or more")
    if config.api.max_batch < 1:
        raise ConfigError("api.max_batch: must be at least 1")
    if config.api.processes < 1:
        raise ConfigError("api.processes: must be at least 1")
    if config.api.header_timeout <= 0 or config.api.body_timeout <= 0:
        raise ConfigError("api.header_timeout and api.body_timeout: must be more than 0 seconds")
    if config.api.max_connections_per_address < 0:
        raise ConfigError("api.max_connections_per_address: must be 0 (off) or more")
    if config.feed.max_unauthenticated < 0:
        raise ConfigError("feed.max_unauthenticated: must be 0 (off) or more")
    if config.api.workers_cache_seconds < 0:
        raise ConfigError("api.workers_cache_seconds: must be 0 (no cache) or more")
    if not 1 <= config.api.max_json_depth <= 256:
        raise ConfigError("api.max_json_depth: must be 1..256")
    recon = config.recon
    if not (100 <= recon.screenshot_width <= 8192 and 100 <= recon.screenshot_height <= 8192):
        raise ConfigError("recon.screenshot_width and recon.screenshot_height: must be 100..8192 pixels")
    if recon.screenshot_max_bytes < 1024:
        raise ConfigError("recon.screenshot_max_bytes: must be at least 1024")
    if recon.screenshot_timeout <= 0:
        raise ConfigError("recon.screenshot_timeout: must be more than 0 seconds")
    if recon.screenshot_max_sites < 0 or recon.screenshot_concurrency < 1:
        raise ConfigError("recon.screenshot_max_sites: 0 or more; recon.screenshot_concurrency: at least 1")
    if config.embedded.restart_limit < 1:
        raise ConfigError("embedded.restart_limit: must be at least 1")
    if config.embedded.restart_window <= 0 or config.embedded.restart_delay_max <= 0:
        raise ConfigError("embedded.restart_window and embedded.restart_delay_max: must be more than 0")
    limit_keys = {f.name for f in dataclasses.fields(LimitsConfig)} - {"per_type"}
    for name, over in config.limits.per_type.items():
        for key, value in over.items():
            if key not in limit_keys:
                raise ConfigError(f"limits.per_type.{name}: unknown key {key}")
            if value < 1:
                raise ConfigError(f"limits.per_type.{name}.{key}: must be at least 1")
    for entry in config.auth.tokens:
        if entry.role not in ("viewer", "operator"):
            raise ConfigError(
                f"auth.tokens: {entry.name!r} has role {entry.role!r}; expected viewer or operator"
            )
        if not entry.hash.startswith("pbkdf2_sha256$"):
            raise ConfigError(f"auth.tokens: {entry.name!r} needs a hash from `controlplane token create`")
    for name, tc in config.tasks.items():
        if tc.time_limit and tc.soft_time_limit and tc.soft_time_limit > tc.time_limit:
            raise ConfigError(f"tasks.{name}: soft_time_limit must not exceed time_limit")
