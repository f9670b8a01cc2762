"""``controlplane up``: the whole stack on one machine, on embedded defaults.

Starts, as child processes: an embedded Redis and the embedded MongoDB-wire
server (data under ``data_dir``), one Celery worker, the event consumer and
the API.  Ctrl-C (or SIGTERM) stops them in reverse order; every child also
dies with this process if it is killed outright.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from controlplane.config import Config
from controlplane.runtime import embedded
from controlplane.service.auth import (
    OPERATOR_TOKEN_FILE,
    ensure_operator_token,
    token_file_path,
    warn_if_disabled,
)

log = logging.getLogger(__name__)


def _operator_token(config: Config, data: Path) -> str | None:
    """A new operator token on first start (stored in the data dir, owner-only); None afterwards."""
    if not config.auth.enabled:
        warn_if_disabled(config, log)
        return None
    if config.auth.token_file:
        token_file = token_file_path(config)
    else:
        token_file = data / "tokens.yaml"
    return ensure_operator_token(data, token_file)


def run_up(config: Config, config_path: str | None) -> int:
    """Run everything until interrupted; returns the exit code."""
    data = Path(config.data_dir).resolve()
    (data / "logs").mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = f"redis://127.0.0.1:{config.embedded.redis_port}/0"
    mongo = f"mongodb://127.0.0.1:{config.embedded.mongo_port}"
    env = embedded.environ(
        CP_BROKER_URL=broker, CP_RESULT_BACKEND=broker, CP_MONGO_URL=mongo, CP_DATA_DIR=str(data)
    )
    cfg = ["--config", config_path] if config_path else []
    first_token = _operator_token(config, data)
    try:
        print(f"starting embedded Redis on 127.0.0.1:{config.embedded.redis_port}", flush=True)
        children.append(("redis", embedded.start_redis(config.embedded.redis_port, data / "redis")))
        print(f"starting embedded MongoDB-wire server on 127.0.0.1:{config.embedded.mongo_port}", flush=True)
        children.append(("mongo", embedded.start_mongo(config.embedded.mongo_port, data / "mongo")))
        for part in ("ingest", "worker", "scheduler", "serve"):
            cmd = embedded.controlplane_command(*cfg, part)
            children.append((part, embedded.spawn(cmd, log_path=data / "logs" / f"{part}.log", env=env)))
        embedded.wait_port(config.api.port, 60, children[-1][1], host=config.api.host)
        print(f"control plane ready: http://{config.api.host}:{config.api.port}/api/celery_task/", flush=True)
        if first_token:
            print(
                f"operator API token (shown once; also in {data / OPERATOR_TOKEN_FILE}, mode 600):",
                flush=True,
            )
            print(f"    {first_token}", flush=True)
            print("    curl -H 'Authorization: Bearer <token>' ...", flush=True)
        print(f"logs in {data / 'logs'}; Ctrl-C stops everything", flush=True)
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    log.error("%s exited with %s; stopping the stack", name, proc.returncode)
                    stopping = True
            time.sleep(0.5)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        log.error("start-up failed: %s", exc)
        return 1
    finally:
        for name, proc in reversed(children):
            embedded.stop(proc, timeout=20 if name == "worker" else 10)
        print("stopped", flush=True)
