"""Shared pieces of the benchmarks: stacks (ours and Flower), HTTP clients, statistics, output.

Our side is a real deployment started like ``tests/stack.py`` does (``controlplane serve``,
``ingest`` and ``worker`` processes on the embedded MongoDB-wire server and the machine's Redis);
Flower runs from ``bench/.flower-venv`` (created by ``bench/flower_env.sh``, pinned version) with
its own Celery app module (``bench/flower_app.py``).  Redis database indexes 12–15 are the
benchmarks' own and are flushed before use.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
FLOWER_VENV = BENCH / ".flower-venv"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402

from controlplane.config import EventsConfig  # noqa: E402
from controlplane.runtime import embedded  # noqa: E402
from tests.stack import Stack  # noqa: E402

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
FLOWER_VERSION = "2.2.0"

# The benchmark deployments run with the product's defaults, minus what would measure
# something else: no auth (tokens are checked per request in microseconds, but the bench
# must not depend on another change), no per-token rate limit (it would cap submission).
BENCH_CONFIG: dict[str, Any] = {
    "log_level": "WARNING",
    "auth": {"enabled": False, "tokens": []},
    "rate_limit": {"create_per_minute": 0, "revoke_per_minute": 0},
    # The product's flush interval (the test stack this builds on flushes every 0.1 s).
    "events": {
        "worker_timeout": 15.0,
        "lease_seconds": 10.0,
        "flush_interval": EventsConfig().flush_interval,
    },
}


def redis_url(db: int) -> str:
    return f"{REDIS}/{db}"


def flush_redis(db: int) -> None:
    """Empty one of the benchmark's Redis databases (12–15)."""
    if not 12 <= db <= 15:
        raise ValueError("benchmarks use Redis databases 12-15 only")
    client = redis.Redis.from_url(redis_url(db))
    client.flushdb()
    client.close()


# -- statistics and output ---------------------------------------------------------------


def pct(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    data = sorted(values)
    if not data:
        return None
    k = max(0, min(len(data) - 1, round(q / 100.0 * len(data) + 0.5) - 1))
    return data[k]


def pct_ms(values: Iterable[float], q: float) -> float:
    """:func:`pct` of latencies in seconds, in milliseconds to 0.01; an empty sample is an error."""
    value = pct(values, q)
    if value is None:
        raise ValueError("no latencies measured")
    return round(value * 1000, 2)


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.1f}"


def ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> float | None:
    """How many times better ours is (>1 = ours ahead)."""
    if not ours or not theirs:
        return None
    return ours / theirs if higher_is_better else theirs / ours


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table (readable in a terminal too)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were taken on (and how loaded it was)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "bench": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process (and its children), MiB."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        if children:
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
        return round(total / 2**20, 1)
    except psutil.Error:
        return 0.0


# -- processes -----------------------------------------------------------------------------


class Mongo:
    """The embedded MongoDB-wire server (nx-27017), on a free port, in a temporary directory."""

    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mongo-", dir=base))
        self.port = embedded.free_port()
        self.proc = embedded.start_mongo(self.port, self.dir)
        self.url = f"mongodb://127.0.0.1:{self.port}"

    def close(self) -> None:
        embedded.stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class TornadoFloor:
    """:mod:`bench.floor_app` in its own process: a Tornado handler that returns a constant."""

    def __init__(self) -> None:
        self.port = embedded.free_port()
        root = str(Path(__file__).resolve().parents[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor_app", str(self.port)], cwd=root)
        embedded.wait_port(self.port, 15, self.proc)

    def close(self) -> None:
        embedded.stop(self.proc)


def workdir() -> Path:
    base = Path(os.environ.get("BENCH_TMP", tempfile.gettempdir())) / "cp-bench"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=base))


def our_stack(
    base: Path,
    mongo_url: str,
    db: int,
    *,
    workers: int = 0,
    extra: dict[str, Any] | None = None,
    name: str = "ours",
) -> Stack:
    """A deployment of ours on Redis database ``db`` (flushed); not started."""
    flush_redis(db)
    config = json.loads(json.dumps(BENCH_CONFIG))
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return Stack(base / name, redis_url(db), mongo_url, workers=workers, extra_config=config)


def start_ours(stack: Stack, *, ingest: bool = True, serve: bool = True) -> Stack:
    if ingest:
        stack.start_part("ingest", "ingest")
    for i in range(stack.n_workers):
        stack.start_worker(i)
    if serve:
        stack.start_part("serve", "serve")
        embedded.wait_port(stack.port, 30, stack.procs["serve"])
    if stack.n_workers:
        stack.wait_workers(stack.n_workers)
    if ingest:
        wait_ingest_ready(stack)
    return stack


def wait_ingest_ready(stack: Stack, timeout: float = 30.0) -> None:
    """Until the consumer holds its lease and is subscribed to the event exchange."""
    client = redis.Redis.from_url(stack.broker_url)
    db = int(stack.broker_url.rsplit("/", 1)[1])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.pubsub_numpat() or client.pubsub_channels(f"/{db}.celeryev*"):
                time.sleep(0.3)
                return
            proc = stack.procs.get("ingest")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"ingest exited: {stack.log('ingest')[-2000:]}")
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError("the consumer did not subscribe to celeryev")


class Flower:
    """Flower (pinned, from its own venv) on Redis database ``db`` (flushed)."""

    def __init__(self, base: Path, db: int, *, max_tasks: int = 100_000, name: str = "flower") -> None:
        ensure_flower_env()
        flush_redis(db)
        self.db = db
        self.broker = redis_url(db)
        self.port = embedded.free_port()
        self.log_path = base / f"{name}.log"
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith(("CP_", "CELERY_", "FLOWER_"))}
        env.update(FLOWER_UNAUTHENTICATED_API="true", PYTHONPATH=str(BENCH), PYTHONUNBUFFERED="1")
        args = [
            str(FLOWER_VENV / "bin" / "celery"),
            "-A",
            "flower_app",
            f"--broker={self.broker}",
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            "--persistent=False",
            f"--max_tasks={max_tasks}",
            "--logging=warning",
        ]
        self.proc = embedded.spawn(args, log_path=self.log_path, env=env)
        embedded.wait_port(self.port, 60, self.proc)
        self.http = Http(self.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until its event receiver is subscribed
            r = redis.Redis.from_url(self.broker)
            subscribed = r.pubsub_numpat() or r.pubsub_channels(f"/{db}.celeryev*")
            r.close()
            if subscribed:
                break
            time.sleep(0.1)
        time.sleep(0.5)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events_total(self, types: Iterable[str] = ("task-succeeded", "task-failed")) -> int:
        """Task events Flower has processed, from its Prometheus counter."""
        wanted = set(types)
        _status, body = self.http.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("flower_events_total{"):
                labels, value = line.rsplit(" ", 1)
                kind = labels.split('type="', 1)[1].split('"', 1)[0]
                if kind in wanted:
                    total += float(value)
        return int(total)

    def close(self) -> None:
        self.http.close()
        embedded.stop(self.proc)


def ensure_flower_env() -> None:
    """Create bench/.flower-venv with the pinned Flower unless it is there."""
    if (FLOWER_VENV / "bin" / "celery").exists():
        return
    subprocess.run(["sh", str(BENCH / "flower_env.sh")], check=True)


# -- HTTP ----------------------------------------------------------------------------------


class Http:
    """A keep-alive HTTP/1.1 client for sequential latency measurements."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def json(self, method: str, path: str, body: Any = None) -> Any:
        _status, raw = self.request(method, path, body)
        return json.loads(raw) if raw else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def timed_gets(
    http_: Http, path: str, count: int, check: Callable[[int, bytes], None] | None = None
) -> list[float]:
    """Latencies (s) of ``count`` sequential GETs of ``path`` (after one warm-up request)."""
    status, body = http_.get(path)
    if check:
        check(status, body)
    return timed_paths(http_, [path] * count)


def timed_paths(http_: Http, paths: list[str]) -> list[float]:
    """Latencies (s) of one sequential GET of each path; any answer but 200 raises."""
    out = []
    for path in paths:
        t0 = time.perf_counter()
        status, body = http_.get(path)
        out.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"GET {path} → {status} {body[:300]!r}")
    return out


async def _async_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", %(path)s, {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "status": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def load_post_wrk(
    port: int,
    path: str,
    make_body: Callable[[int], Any],
    *,
    clients: int,
    duration: float,
    distinct: int = 4096,
) -> dict[str, Any]:
    """Like :func:`load_post` but the load comes from ``wrk`` (C, one thread per core's worth).

    The Python client costs about as much CPU per request as the server under test, on a
    2-core machine that is CPU the server never gets; wrk costs a few microseconds.  Bodies
    cycle through ``distinct`` prepared ones (every POST still creates a task of its own).
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk')")
    bodies = ",".join(_lua_string(json.dumps(make_body(i))) for i in range(distinct))
    script = _WRK_SCRIPT % {"bodies": bodies, "path": _lua_string(path)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        proc = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{clients}",
                f"-d{duration:g}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(f.name)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    out = json.loads(line[-1])
    accepted = out["requests"] - out["status"]
    seconds = out["duration_us"] / 1e6
    errors = {k: out[k] for k in ("status", "connect", "read", "write", "timeout") if out[k]}
    return {
        "generator": "wrk",
        "accepted": accepted,
        "seconds": round(seconds, 2),
        "per_second": round(accepted / seconds, 1),
        "p50_ms": round(out["p50_us"] / 1000, 1),
        "p99_ms": round(out["p99_us"] / 1000, 1),
        "errors": errors,
        "sample_error": None,
    }


def load_post(
    port: int, path: str, make_body: Callable[[int], Any], *, clients: int, duration: float
) -> dict[str, Any]:
    """``clients`` concurrent keep-alive connections POSTing for ``duration`` s; counts and latencies."""
    ok: list[float] = []
    errors: dict[str, int] = {}
    sample_error: list[bytes] = []
    counter = iter(range(10**9))
    deadline = 0.0

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                body = json.dumps(make_body(next(counter))).encode()
                req = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                t0 = time.perf_counter()
                status, raw = await _async_request(reader, writer, req)
                if status == 200:
                    ok.append(time.perf_counter() - t0)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    if not sample_error:
                        sample_error.append(raw[:300])
        finally:
            writer.close()

    async def main() -> float:
        nonlocal deadline
        deadline = time.monotonic() + duration
        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    return {
        "generator": "python",
        "accepted": len(ok),
        "seconds": round(elapsed, 2),
        "per_second": round(len(ok) / elapsed, 1),
        "p50_ms": round((pct(ok, 50) or 0) * 1000, 1),
        "p99_ms": round((pct(ok, 99) or 0) * 1000, 1),
        "errors": errors,
        "sample_error": sample_error[0].decode(errors="replace") if sample_error else None,
    }


def query(params: dict[str, Any]) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


class Heartbeat(threading.Thread):
    """Prints a dot every few seconds so long phases show they are alive."""

    def __init__(self, label: str, every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.label = label
        self.every = every
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.every):
            print(f"  … {self.label}: {time.monotonic() - start:.0f}s", flush=True)

    def stop(self) -> None:
        self.done.set()
