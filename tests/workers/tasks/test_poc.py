"""The PoC engine and ``run_risk_cruising`` against lab services with vulnerable and safe variants."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.core.validate import validate_task_data
from controlplane.store.tasks import TaskStore
from tests.lab.pocs import POC_LAB_IP, POC_VARIANTS, PocLab
from tests.lab.support import Worker, lab_config
from workers.context import TaskRevoked
from workers.recon.poc import PocError, load_pocs, parse_poc, parse_target, select_pocs
from workers.tasks.risk_cruising import run_risk_cruising

BUNDLED = [p.id for p in load_pocs()]


@pytest.fixture(scope="module")
def poc_lab(server_tls: ssl.SSLContext) -> Iterator[PocLab]:
    running = PocLab(server_tls)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def poc_run(poc_lab: PocLab, mongo_server: Any, lab: Any) -> dict[str, Any]:
    """One run of every bundled PoC over every variant (and a catch-all SPA), shared by the checks."""

    config = lab_config(mongo_server, lab)
    store = TaskStore(config.mongo)
    worker = Worker(config, store)
    targets = [*poc_lab.targets.values(), poc_lab.soft404, "169.254.169.254:80", "127.88.9.9:80"]
    data = validate_task_data(
        "run_risk_cruising", {"target": "\n".join(targets), "options": {"concurrency": 30, "timeout": 2}}
    )
    ctx = worker.start("run_risk_cruising", data)
    started = time.monotonic()
    stats = run_risk_cruising(data, ctx)
    elapsed = time.monotonic() - started
    found = list(store.db["vuln"].find({"task_id": ctx.task_id}, {"_id": 0}))
    progress = worker.progress(ctx, "poc")
    doc = store.tasks.find_one({"celery_id": ctx.celery_id})
    store.close()
    return {"stats": stats, "found": found, "elapsed": elapsed, "progress": progress, "doc": doc}


def test_every_bundled_poc_has_lab_variants() -> None:
    assert set(BUNDLED) == set(POC_VARIANTS)
    assert len(BUNDLED) >= 15


@pytest.mark.parametrize("poc_id", BUNDLED)
def test_poc_fires_on_vulnerable_variant_only(poc_id: str, poc_run: dict[str, Any], poc_lab: PocLab) -> None:
    hits = {(f["target"], f["poc_id"]): f for f in poc_run["found"]}
    vulnerable = poc_lab.targets[(poc_id, "vulnerable")]
    safe = poc_lab.targets[(poc_id, "safe")]
    assert (vulnerable, poc_id) in hits, f"{poc_id} did not fire on {vulnerable}"
    assert (safe, poc_id) not in hits, f"{poc_id} fired on its safe variant {safe}"
    finding = hits[(vulnerable, poc_id)]
    assert (
        finding["matched"]
        and finding["request"]
        and finding["severity"] in ("info", "low", "medium", "high", "critical")
    )
    assert not finding["partial"] and finding["verify_data"]


def test_catch_all_site_and_out_of_scope_targets_give_nothing(
    poc_run: dict[str, Any], poc_lab: PocLab
) -> None:
    targets = {f["target"] for f in poc_run["found"]}
    assert poc_lab.soft404 not in targets
    skipped = {s["target"] for s in poc_run["stats"]["skipped_targets"]}
    assert skipped == {"169.254.169.254:80", "127.88.9.9:80"}


def test_run_reports_progress_statistic_and_evidence(poc_run: dict[str, Any]) -> None:
    stats = poc_run["stats"]
    assert stats["partial"] is False and stats["vuln"] == len(poc_run["found"]) >= len(BUNDLED)
    done, total = poc_run["progress"][-1]
    assert done == total > 0
    assert poc_run["doc"]["statistic"]["vuln"] == stats["vuln"]
    git = next(f for f in poc_run["found"] if f["poc_id"] == "git-config-exposure")
    assert git["url"].startswith("https://") and git["request"]["method"] == "GET"
    assert any("[core]" in hit.get("word", "") for m in git["matched"] for hit in m["hits"])
    redis = next(f for f in poc_run["found"] if f["poc_id"] == "redis-unauth")
    assert "redis_version:" in redis["response"]["data"] and redis["url"].startswith("tcp://")
    assert poc_run["elapsed"] < 15


def test_options_poc_selects_and_unknown_ids_fail(worker: Worker, poc_lab: PocLab) -> None:
    target = poc_lab.targets[("dotenv-exposure", "vulnerable")]
    data = validate_task_data(
        "run_risk_cruising", {"target": target, "options": {"poc": ["directory-listing"]}}
    )
    ctx = worker.start("run_risk_cruising", data)
    assert run_risk_cruising(data, ctx)["vuln"] == 0
    with pytest.raises(PocError, match="unknown PoC ids: nope"):
        select_pocs(load_pocs(), ["nope"])


def test_configured_poc_folder_adds_pocs(worker: Worker, poc_lab: PocLab, tmp_path: Path) -> None:
    (tmp_path / "custom.yaml").write_text(
        "id: custom-welcome\nname: Welcome page\nseverity: info\nrequests: [{path: /}]\n"
        "matchers: [{type: word, words: [Welcome]},\n"
        "           {type: header, name: content-type, regex: ['text/html']}]\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    target = poc_lab.targets[("directory-listing", "safe")]
    data = validate_task_data("run_risk_cruising", {"target": target, "options": {"poc": ["custom-welcome"]}})
    ctx = worker.start("run_risk_cruising", data)
    assert run_risk_cruising(data, ctx)["vuln"] == 1


def test_malformed_pocs_are_rejected_with_the_field() -> None:
    good = {"id": "x", "requests": [{"path": "/"}], "matchers": [{"type": "status", "status": [200]}]}
    assert parse_poc(good).severity == "info"
    for change, field in [
        ({"id": "Bad Id"}, "id"),
        ({"severity": "urgent"}, "severity"),
        ({"matchers": [{"type": "regex", "regex": ["("]}]}, "regex"),
        ({"matchers": [{"type": "word"}]}, "words"),
        ({"requests": [{"path": "no-slash"}]}, "path"),
        ({"protocol": "tcp"}, "port"),
    ]:
        with pytest.raises(PocError, match=field):
            parse_poc({**good, **change})


def test_target_forms() -> None:
    assert parse_target("https://a.example:8443/app/").base_path == "/app"
    assert parse_target("10.0.0.1:6379").port == 6379
    assert parse_target("[::1]:80").host == "::1"
    assert parse_target("a.example").port is None


def test_stop_is_honoured_within_a_second(worker: Worker) -> None:
    tarpit = socket.socket()
    tarpit.bind((POC_LAB_IP, 0))
    tarpit.listen(64)
    port = tarpit.getsockname()[1]
    data = validate_task_data(
        "run_risk_cruising",
        {"target": f"http://{POC_LAB_IP}:{port}", "options": {"timeout": 30, "poc": ["directory-listing"]}},
    )
    ctx = worker.start("run_risk_cruising", data)
    timer = threading.Timer(0.5, worker.revoke, args=(ctx,))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(TaskRevoked):
            run_risk_cruising(data, ctx)
    finally:
        tarpit.close()
    assert time.monotonic() - started < 2.0
    assert worker.store.tasks.find_one({"celery_id": ctx.celery_id})["partial"]
