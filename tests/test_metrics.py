"""Prometheus metrics: ``/metrics`` on the API and the consumer's own port, on a real stack."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from controlplane.bus.metrics import IngestMetrics
from controlplane.runtime import embedded
from controlplane.service.metrics import outcome_name
from tests.conftest import make_stack
from tests.stack import VIEWER_TOKEN, Stack, wait_for


@pytest.fixture(scope="module")
def mstack(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[Stack]:
    port = embedded.free_port()
    s = make_stack(
        tmp_path_factory.mktemp("metrics"),
        mongo_server,
        extra_config={"metrics": {"cache_seconds": 0, "ingest_port": port}},
    )
    s.ingest_metrics_port = port  # type: ignore[attr-defined]
    try:
        s.start()
        yield s
    finally:
        s.close()


def scrape(url: str, token: str | None = VIEWER_TOKEN) -> tuple[str, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (labels in any order, a subset), summed over the rest."""
    total = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(m.group(3))
    return total


def test_metrics_need_a_token_unless_public(mstack: Stack) -> None:
    resp = mstack.request("GET", "/metrics", token=None)
    assert resp.status == 401 and resp.json["message"] == "NotLogin"
    assert "controlplane_tasks" not in resp.raw.decode()
    assert mstack.request("GET", "/metrics", token="cp_0000000000000000_wrong").status == 401


def test_public_metrics_need_no_token(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> None:
    public = make_stack(
        tmp_path_factory.mktemp("public"), mongo_server, extra_config={"metrics": {"public": True}}
    )
    try:
        public.start_api()
        resp = public.request("GET", "/metrics", token=None)
        assert resp.status == 200 and "controlplane_api_requests" in resp.raw.decode()
    finally:
        public.close()


def test_metrics_are_prometheus_text_without_task_contents(mstack: Stack) -> None:
    cid = mstack.create("sleep_task", {"name": "metrics-secret-name", "seconds": 0})
    mstack.wait_status(cid, "SUCCESS")
    resp = mstack.request("GET", "/metrics", token=VIEWER_TOKEN)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = resp.raw.decode()
    assert "controlplane_tasks" in text
    assert cid not in text and "metrics-secret-name" not in text


def test_counts_submissions_revokes_tasks_workers_and_latency(mstack: Stack) -> None:
    cid = mstack.create("sleep_task", {"name": "m1", "seconds": 0})
    bad = mstack.request("POST", "/api/celery_task/", {"task_type": "no_such_type", "data": {}})
    assert bad.code == 400
    unknown = mstack.request("POST", "/api/celery_task/revoke/", {"celery_id": str(uuid.uuid4())})
    assert unknown.code == 102
    mstack.wait_status(cid, "SUCCESS")
    url = f"http://127.0.0.1:{mstack.port}/metrics"

    def ready() -> str | None:
        text = scrape(url)[1]
        ok = (value(text, "controlplane_tasks", task_type="sleep_task", status="SUCCESS") or 0) >= 1
        return text if ok and (value(text, "controlplane_workers", state="online") or 0) >= 1 else None

    text = wait_for(ready, timeout=20, what="task and worker counts")
    assert value(text, "controlplane_tasks", task_type="domain_task", status="PENDING") == 0
    assert (
        value(text, "controlplane_task_submissions_total", task_type="sleep_task", outcome="accepted") or 0
    ) >= 1
    assert (
        value(text, "controlplane_task_submissions_total", task_type="unknown", outcome="invalid_param") or 0
    ) >= 1
    assert (value(text, "controlplane_task_revokes_total", outcome="celery_id_not_found") or 0) >= 1
    assert value(text, "controlplane_feed_clients") == 0
    assert value(text, "controlplane_metrics_database_up") == 1
    count = value(
        text, "controlplane_api_request_duration_seconds_count", handler="CollectionHandler", method="POST"
    )
    assert count is not None and count >= 2
    assert (
        value(text, "controlplane_api_requests_total", handler="CollectionHandler", status="400") or 0
    ) >= 1


def test_consumer_exposes_ingestion_rate_lag_and_batches(mstack: Stack) -> None:
    cid = mstack.create("sleep_task", {"name": "m2", "seconds": 0})
    mstack.wait_status(cid, "SUCCESS")
    url = f"http://127.0.0.1:{mstack.ingest_metrics_port}/metrics"  # type: ignore[attr-defined]
    text = wait_for(
        lambda: (lambda t: t if (value(t, "controlplane_events_applied_total") or 0) > 0 else None)(
            scrape(url)[1]
        ),
        what="applied events",
    )
    assert (value(text, "controlplane_events_received_total") or 0) >= (
        value(text, "controlplane_events_applied_total") or 0
    )
    assert (value(text, "controlplane_event_batch_size_count") or 0) >= 1
    assert (value(text, "controlplane_event_lag_seconds_count") or 0) >= 1
    assert value(text, "controlplane_ingest_lease_held") == 1


def test_ingest_metrics_unit() -> None:
    m = IngestMetrics()
    m.on_received(3, 3)
    m.on_batch([{"timestamp": 100.0}, {"timestamp": 98.0}, {}], now=101.0)
    text = m.exposition().decode()
    assert value(text, "controlplane_events_applied_total") == 3
    assert value(text, "controlplane_event_lag_last_seconds") == 3.0
    assert value(text, "controlplane_event_batch_size_sum") == 3
    assert value(text, "controlplane_event_buffer") == 0
    assert outcome_name(ValueError()) == "value_error"


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    import json
    from pathlib import Path

    from controlplane.config import Config
    from controlplane.service.metrics import ApiMetrics

    names: set[str] = set()
    for registry in (ApiMetrics(Config()).registry, IngestMetrics().registry):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
            names.add(family.name + ("_total" if family.type == "counter" else ""))
            if family.type == "histogram":  # a labelled one has no samples before its first observation
                names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"controlplane_\w+", target["expr"])
    }
    assert used and used <= names | {n + "_bucket" for n in names}, used - names
    assert {
        "controlplane_workers",
        "controlplane_queue_depth",
        "controlplane_task_runtime_seconds_bucket",
        "controlplane_task_queue_wait_seconds_bucket",
    } <= used


def test_consumer_observes_task_runtime_and_queue_waits(mstack: Stack) -> None:
    ok = mstack.create("sleep_task", {"name": "timed", "seconds": 0.3})
    bad = mstack.create("fail_task", {"name": "timed-failure"})
    mstack.wait_status(ok, "SUCCESS")
    mstack.wait_status(bad, "FAILURE")
    url = f"http://127.0.0.1:{mstack.ingest_metrics_port}/metrics"  # type: ignore[attr-defined]

    def observed() -> str | None:
        text = scrape(url)[1]
        runs, waits = "controlplane_task_runtime_seconds_count", "controlplane_task_queue_wait_seconds_count"
        counts = [
            value(text, runs, task_type="sleep_task", outcome="succeeded"),
            value(text, runs, task_type="fail_task", outcome="failed"),
            value(text, waits, task_type="sleep_task", stage="broker"),
            value(text, waits, task_type="sleep_task", stage="worker"),
        ]
        return text if all((c or 0) >= 1 for c in counts) else None

    text = wait_for(observed, timeout=20, what="runtime and queue-wait observations")
    sleeps = {"task_type": "sleep_task", "outcome": "succeeded"}
    runtime = value(text, "controlplane_task_runtime_seconds_sum", **sleeps)
    assert runtime is not None and runtime >= 0.3
    fast = value(text, "controlplane_task_runtime_seconds_bucket", **sleeps, le="0.1")
    total = value(text, "controlplane_task_runtime_seconds_count", **sleeps)
    assert fast is not None and total is not None and fast < total  # the 0.3 s sleep is above 0.1 s


def test_ingest_runtime_and_wait_histograms_unit() -> None:
    m = IngestMetrics()
    doc = {
        "celery_id": "a",
        "task_type": "sleep_task",
        "created_time": 100.0,
        "received_time": 101.0,
        "start_time": 103.0,
        "end_time": 107.0,
    }
    events = [
        {"type": "task-received", "uuid": "a", "timestamp": 101.0},
        {"type": "task-started", "uuid": "a", "timestamp": 103.0},
        {"type": "task-succeeded", "uuid": "a", "timestamp": 107.0, "runtime": 3.5},
    ]
    m.on_written(events, [doc])
    # A repeated start (a redelivery, later) leaves the document's start time as it was: not counted again.
    m.on_written([{"type": "task-started", "uuid": "a", "timestamp": 110.0}], [doc])
    failed = {**doc, "celery_id": "b", "task_type": "fail_task", "end_time": 105.0}
    m.on_written([{"type": "task-failed", "uuid": "b", "timestamp": 105.0}], [failed])
    text = m.exposition().decode()
    assert value(text, "controlplane_task_queue_wait_seconds_sum", stage="broker") == 1.0
    assert value(text, "controlplane_task_queue_wait_seconds_sum", stage="worker") == 2.0
    assert value(text, "controlplane_task_queue_wait_seconds_count") == 2
    assert value(text, "controlplane_task_runtime_seconds_sum", outcome="succeeded") == 3.5
    failures = {"task_type": "fail_task", "outcome": "failed"}
    assert value(text, "controlplane_task_runtime_seconds_sum", **failures) == 2.0


def test_queue_depth_and_consumers_are_exported(mstack: Stack) -> None:
    queue = f"recon-{mstack.database}"
    url = f"http://127.0.0.1:{mstack.port}/metrics"

    def exported() -> str | None:
        text = scrape(url)[1]
        consumed = (value(text, "controlplane_queue_consumers", queue=queue) or 0) >= 1
        return text if consumed and value(text, "controlplane_queue_depth", queue=queue) is not None else None

    text = wait_for(exported, timeout=20, what="queue depth and consumers of the stack's queue")
    assert (value(text, "controlplane_queue_depth", queue=queue) or 0) >= 0
    assert value(text, "controlplane_queue_depth", queue="celery") is not None
