"""``run_risk_cruising`` with nuclei-format templates against the loopback lab.

Planted pages for a sample of the bundled templates must all be found (and nothing else but what
rightly fires there); ordinary sites, including ones whose words look like product names, and a
soft-404 site must yield nothing; broken and unsupported templates are reported and never fail
the task; every request and redirect goes through the scope check; per-host budgets hold.
"""

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
from tests.lab.plantsite import Page, PlantSite
from tests.lab.pocs import ALSO, FALLBACKS, OUT_OF_SCOPE_IP, PLANTED, POC_LAB_IP, TCP_PLANTED, PocLab
from tests.lab.support import Worker, lab_config
from workers.context import TaskRevoked
from workers.recon.nuclei import Catalog, Selection, Skipped
from workers.tasks.risk_cruising import run_risk_cruising

SAMPLE = sorted({*PLANTED, *TCP_PLANTED, *FALLBACKS})
BUNDLED = Catalog().refs


@pytest.fixture(scope="module")
def poc_lab(server_tls: ssl.SSLContext) -> Iterator[PocLab]:
    running = PocLab(server_tls)
    yield running
    running.stop()


def _run(worker: Worker, targets: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """Run one task (its data built as the API would, options passed as given); its stats, docs, progress."""
    data = {"name": "poc", "target": ",".join(targets), "targets": targets, "options": options}
    ctx = worker.start("run_risk_cruising", data)
    stats = run_risk_cruising(data, ctx)
    found = list(worker.store.db["vuln"].find({"task_id": ctx.task_id}, {"_id": 0}))
    doc = worker.store.tasks.find_one({"celery_id": ctx.celery_id})
    return {"stats": stats, "found": found, "progress": worker.progress(ctx, "poc"), "doc": doc}


@pytest.fixture(scope="module")
def planted_run(poc_lab: PocLab, mongo_server: Any, lab: Any) -> dict[str, Any]:
    """The sampled templates (and those allowed to fire alongside) over every planted site."""
    store = TaskStore(lab_config(mongo_server, lab).mongo)
    worker = Worker(lab_config(mongo_server, lab), store)
    ids = sorted({*SAMPLE, *(i for also in ALSO.values() for i in also)})
    result = _run(worker, list(poc_lab.targets.values()), {"ids": ids, "concurrency": 30, "timeout": 2})
    store.close()
    return result


@pytest.fixture(scope="module")
def fp_run(poc_lab: PocLab, mongo_server: Any, lab: Any) -> dict[str, Any]:
    """Every bundled template over the false-positive corpus and the soft-404 site."""
    store = TaskStore(lab_config(mongo_server, lab).mongo)
    worker = Worker(lab_config(mongo_server, lab), store)
    result = _run(worker, poc_lab.fp_targets, {"concurrency": 30, "timeout": 2})
    store.close()
    return result


def test_bundled_set_is_large_varied_and_sampled_widely() -> None:
    assert len(BUNDLED) >= 150
    folders = {Path(ref.path).parent.name for ref in BUNDLED.values()}
    assert {"exposures", "panels", "misconfiguration", "default-logins"} <= folders
    assert len(SAMPLE) >= 30 and set(SAMPLE) <= set(BUNDLED)
    sampled = {Path(BUNDLED[i].path).parent.name for i in SAMPLE}
    assert sampled == folders
    for ref in BUNDLED.values():
        assert ref.severity in ("info", "low", "medium", "high", "critical") and ref.tags, ref.id


@pytest.mark.parametrize("template_id", SAMPLE)
def test_planted_page_is_found(template_id: str, planted_run: dict[str, Any], poc_lab: PocLab) -> None:
    target = poc_lab.targets[template_id]
    fired = {f["poc_id"] for f in planted_run["found"] if f["target"] == target}
    assert template_id in fired, f"{template_id} missed its planted site {target}"
    assert fired - {template_id} <= ALSO.get(template_id, set()), f"unexpected on {template_id}'s site"


def test_findings_carry_evidence(planted_run: dict[str, Any]) -> None:
    by_id = {f["poc_id"]: f for f in planted_run["found"]}
    git = by_id["git-config-exposure"]
    assert git["template_id"] == "git-config-exposure" and git["severity"] == "medium"
    assert "git" in git["tags"] and git["name"] and git["description"]
    assert git["request"]["method"] == "GET" and git["request"]["url"].endswith("/.git/config")
    assert any(k == "Host" for k, _ in git["request"]["headers"])
    assert git["response"]["status"] == 200 and "[core]" in git["response"]["body"]
    assert any(k == "Content-Type" for k, _ in git["response"]["headers"])
    hits = [h for m in git["matched"] for h in m["hits"]]
    assert any("[core]" in h.get("snippet", "") for h in hits) and "[core]" in git["verify_data"]
    assert by_id["wordpress-user-enumeration"]["extracted"] == {"users": ["siteadmin"]}
    assert by_id["nacos-panel"]["extracted"] == {"version": ["2.2.3"]}
    login = by_id["nacos-default-login"]
    assert login["request"]["method"] == "POST" and "password=nacos" in login["request"]["body"]
    redis = by_id["redis-unauth"]
    assert redis["url"].startswith("tcp://") and "redis_version:" in redis["response"]["data"]
    assert redis["extracted"] == {"version": ["7.2.4"]}
    tomcat = by_id["tomcat-manager-default-login"]
    assert ["Authorization", "Basic dG9tY2F0OnMzY3JldA=="] in tomcat["request"]["headers"]
    for finding in planted_run["found"]:
        assert not finding["partial"] and finding["matched"] and finding["verify_data"]
        assert finding["plg_name"] == finding["poc_id"] and finding["vul_name"] == finding["name"]


def test_run_reports_progress_and_statistic(planted_run: dict[str, Any]) -> None:
    stats = planted_run["stats"]
    assert stats["partial"] is False and stats["vuln"] == len(planted_run["found"]) >= len(SAMPLE)
    assert stats["templates_selected"] >= len(SAMPLE) and stats["requests"] > 0
    assert sum(stats["findings_by_severity"].values()) == stats["vuln"]
    assert stats["skipped_templates"]["total"] == 0 and stats["template_errors"] == []
    done, total = planted_run["progress"][-1]
    assert done == total > 0
    assert planted_run["doc"]["statistic"]["vuln"] == stats["vuln"]


def test_false_positive_corpus_and_soft_404_yield_nothing(fp_run: dict[str, Any], poc_lab: PocLab) -> None:
    assert fp_run["found"] == [], [(f["target"], f["poc_id"]) for f in fp_run["found"]]
    stats = fp_run["stats"]
    assert stats["templates_selected"] >= 150 and stats["requests"] > 1000 and stats["partial"] is False
    assert poc_lab.soft404 in poc_lab.fp_targets


BROKEN = {
    "headless.yaml": "id: shot\ninfo: {name: s, severity: info}\n"
    "headless:\n  - steps: [{action: navigate}]\n",
    "dns.yaml": "id: dns-probe\ninfo: {name: d, severity: info}\ndns:\n  - name: '{{FQDN}}'\n    type: A\n",
    "oob.yaml": "id: oob-ssrf\ninfo: {name: o, severity: high}\nhttp:\n  - method: GET\n"
    "    path: ['{{BaseURL}}/?u=http://{{interactsh-url}}']\n"
    "    matchers: [{type: word, part: interactsh_protocol, words: [http]}]\n",
    "flow.yaml": "id: flowy\ninfo: {name: f, severity: info}\nflow: http(1) && http(2)\nhttp:\n"
    "  - path: ['{{BaseURL}}']\n    matchers: [{type: status, status: [200]}]\n",
    "workflow.yaml": "id: wf\ninfo: {name: w, severity: info}\nworkflows:\n  - template: x.yaml\n",
    "syntax.yaml": "id: bad-yaml\ninfo: {name: b, severity: info}\nhttp:\n  - path: [\n",
    "badregex.yaml": "id: bad-regex\ninfo: {name: r, severity: info}\nhttp:\n  - path: ['{{BaseURL}}']\n"
    "    matchers: [{type: regex, regex: ['(']}]\n",
    "helper.yaml": "id: odd-helper\ninfo: {name: h, severity: info}\nhttp:\n  - path: ['{{BaseURL}}']\n"
    "    matchers: [{type: dsl, dsl: ['generate_java_gadget(\"x\") == 1']}]\n",
    "notemplate.yaml": "just: a config file\n",
}


def test_broken_and_unsupported_templates_are_skipped_and_the_task_runs(
    worker: Worker, poc_lab: PocLab, tmp_path: Path
) -> None:
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "custom.yaml").write_text(
        "id: custom-welcome\ninfo: {name: Welcome page, severity: info, tags: custom}\nhttp:\n"
        "  - method: GET\n    path: ['{{BaseURL}}/nacos/v1/console/server/state']\n"
        "    matchers: [{type: word, words: ['standalone_mode']}]\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    ids = [
        "shot",
        "dns-probe",
        "oob-ssrf",
        "flowy",
        "wf",
        "bad-yaml",
        "bad-regex",
        "odd-helper",
        "custom-welcome",
    ]
    result = _run(worker, [poc_lab.targets["nacos-panel"]], {"ids": ids})
    assert [f["poc_id"] for f in result["found"]] == ["custom-welcome"]
    skipped = result["stats"]["skipped_templates"]
    reasons = {item["id"] or Path(item["path"]).name: item["reason"] for item in skipped["items"]}
    assert reasons["shot"] == "headless protocol" and reasons["dns-probe"] == "dns protocol"
    assert reasons["oob-ssrf"] == "OOB interactsh-url" and reasons["flowy"] == "flow"
    assert reasons["wf"] == "workflow" and reasons["bad-yaml"].startswith("YAML")
    assert "does not compile" in reasons["bad-regex"] and "generate_java_gadget" in reasons["odd-helper"]
    assert reasons["notemplate.yaml"] == "no id: not a template"
    assert skipped["total"] == len(BROKEN) and not skipped["truncated"]
    assert result["doc"]["status"] != "FAILURE" and result["stats"]["vuln"] == 1


def test_selection_by_tags_severity_and_ids(worker: Worker, poc_lab: PocLab) -> None:
    tagged = Catalog().select(Selection(tags=("nacos",)), Skipped())
    assert {r.id for r in tagged} >= {"nacos-panel", "nacos-default-login", "nacos-unauth-users"}
    assert all("nacos" in r.tags for r in tagged)
    critical = Catalog().select(Selection(severities=("critical",)), Skipped())
    assert critical and all(r.severity == "critical" for r in critical)
    target = poc_lab.targets["nacos-default-login"]
    result = _run(worker, [target], {"tags": ["nacos"], "severity": ["high", "critical"], "ids": ["nope"]})
    assert {f["poc_id"] for f in result["found"]} == {"nacos-default-login"}
    assert result["stats"]["unknown_ids"] == ["nope"]
    legacy = validate_task_data(
        "run_risk_cruising", {"target": target, "options": {"poc": ["directory-listing"]}}
    )
    ctx = worker.start("run_risk_cruising", legacy)
    assert run_risk_cruising(legacy, ctx)["templates_selected"] == 1


def _redirecting_site(location: str) -> PlantSite:
    return PlantSite(POC_LAB_IP, {"/start": [Page("", 302, {"Location": location})]}).start()


def test_redirects_are_followed_in_scope_only(worker: Worker, tmp_path: Path) -> None:
    outside = PlantSite(OUT_OF_SCOPE_IP, {"/secret": [Page("planted-secret-word")]}).start()
    inside = PlantSite(POC_LAB_IP, {"/landing": [Page("planted-secret-word")]}).start()
    to_outside = _redirecting_site(f"http://{OUT_OF_SCOPE_IP}:{outside.port}/secret")
    to_inside = _redirecting_site(f"http://{POC_LAB_IP}:{inside.port}/landing")
    (tmp_path / "redir.yaml").write_text(
        "id: follow-me\ninfo: {name: r, severity: low, tags: test}\nhttp:\n  - method: GET\n"
        "    path: ['{{BaseURL}}/start']\n    redirects: true\n    max-redirects: 3\n"
        "    matchers: [{type: word, words: [planted-secret-word]}]\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    try:
        result = _run(worker, [to_outside.url, to_inside.url], {"ids": ["follow-me"]})
    finally:
        for site in (outside, inside, to_outside, to_inside):
            site.stop()
    assert outside.requests == [] and len(inside.requests) == 1
    assert [f["target"] for f in result["found"]] == [to_inside.url]
    assert result["found"][0]["response"]["redirects"] == [f"http://{POC_LAB_IP}:{inside.port}/landing"]
    blocked = result["stats"]["blocked_by_scope"]
    assert blocked == [
        {
            "where": "redirect",
            "url": f"http://{OUT_OF_SCOPE_IP}:{outside.port}/secret",
            "reason": blocked[0]["reason"],
        }
    ]


def test_requests_to_out_of_scope_hosts_are_never_sent(worker: Worker, tmp_path: Path) -> None:
    outside = PlantSite(OUT_OF_SCOPE_IP, {"/": [Page("planted-secret-word")]}).start()
    site = PlantSite(POC_LAB_IP, {"/": [Page("hello")]}).start()
    (tmp_path / "elsewhere.yaml").write_text(
        "id: other-host\ninfo: {name: o, severity: low, tags: test}\nhttp:\n  - method: GET\n"
        f"    path: ['http://{OUT_OF_SCOPE_IP}:{outside.port}/']\n"
        "    matchers: [{type: word, words: [planted-secret-word]}]\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    try:
        result = _run(worker, [site.url, f"http://{OUT_OF_SCOPE_IP}:{outside.port}"], {"ids": ["other-host"]})
    finally:
        outside.stop()
        site.stop()
    assert outside.requests == [] and result["found"] == []
    assert result["stats"]["blocked_by_scope"][0]["where"] == "request"
    assert result["stats"]["skipped_targets"][0]["target"].startswith(f"http://{OUT_OF_SCOPE_IP}")


def test_per_host_request_budget_is_honoured(worker: Worker) -> None:
    site = PlantSite(POC_LAB_IP, fallback=Page("<html>everything</html>")).start()
    try:
        result = _run(worker, [site.hostport], {"max_requests_per_host": 25, "concurrency": 20})
    finally:
        site.stop()
    assert len(site.requests) == 25 == result["stats"]["requests"]
    budget = result["stats"]["budget"]
    assert budget["exhausted_hosts"] == [site.hostport] and budget["skipped_jobs"] > 0
    assert result["stats"]["partial"] is False


def test_internal_extractor_feeds_the_next_request(worker: Worker, tmp_path: Path) -> None:
    site = PlantSite(
        POC_LAB_IP,
        {
            "/token": [Page('{"csrf": "tok-8271"}', headers={"Content-Type": "application/json"})],
            "/data": [Page("secret-data", header=("X-Token", "tok-8271")), Page("denied", 403)],
        },
    ).start()
    (tmp_path / "chain.yaml").write_text(
        "id: token-chain\ninfo: {name: c, severity: low, tags: test}\nhttp:\n"
        "  - raw:\n      - |\n        GET /token HTTP/1.1\n        Host: {{Hostname}}\n\n"
        "      - |\n        GET /data HTTP/1.1\n        Host: {{Hostname}}\n        X-Token: {{token}}\n\n"
        "    extractors:\n      - {type: json, name: token, internal: true, json: ['.csrf']}\n"
        "    matchers: [{type: word, words: [secret-data]}]\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    try:
        result = _run(worker, [site.url], {"ids": ["token-chain"]})
    finally:
        site.stop()
    assert [f["poc_id"] for f in result["found"]] == ["token-chain"]
    assert site.requests[-1][2].get("X-Token") == "tok-8271"


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


def test_login_flow_with_csrf_token_and_per_request_variables(worker: Worker, tmp_path: Path) -> None:
    """Raw steps, a hidden token extracted from step 1 into step 2, payloads, and ``status_code_2``-style
    variables without an explicit ``req-condition`` (nuclei turns it on when the DSL reads them)."""
    form = Page('<title>Sign In - Ops</title><input type="hidden" value="c5rf-77">')
    site = PlantSite(
        POC_LAB_IP,
        {
            "/signin/": [
                Page(
                    "",
                    302,
                    {"Location": "/", "Set-Cookie": "session=ok1; Path=/"},
                    method="POST",
                    body_has="user=ops&pass=ops123&csrf=c5rf-77",
                ),
                Page("bad login", 200, method="POST"),
                form,
            ]
        },
    ).start()
    (tmp_path / "flow-login.yaml").write_text(
        "id: ops-default-login\ninfo: {name: o, severity: high, tags: test}\nhttp:\n  - raw:\n"
        "      - |\n        GET /signin/ HTTP/1.1\n        Host: {{Hostname}}\n"
        "      - |\n        POST /signin/ HTTP/1.1\n        Host: {{Hostname}}\n"
        "        Content-Type: application/x-www-form-urlencoded\n\n"
        "        user={{user}}&pass={{pass}}&csrf={{token}}\n"
        "    attack: clusterbomb\n    payloads: {user: [admin, ops], pass: [admin, ops123]}\n"
        "    extractors:\n      - {type: regex, name: token, group: 1, internal: true,"
        ' regex: [\'type="hidden" value="(.*?)"\']}\n'
        "    matchers:\n      - type: dsl\n        condition: and\n        dsl:\n"
        "          - contains(body_1, 'Sign In - Ops')\n          - contains(header_2, 'session=ok1')\n"
        "          - status_code_2 == 302\n"
    )
    worker.config.recon.poc_dirs = [str(tmp_path)]
    try:
        result = _run(worker, [site.url], {"ids": ["ops-default-login"]})
    finally:
        site.stop()
    assert [f["poc_id"] for f in result["found"]] == ["ops-default-login"]
    assert "user=ops&pass=ops123&csrf=c5rf-77" in result["found"][0]["request"]["body"]
    posts = [r for r in site.requests if r[0] == "POST"]
    assert len(posts) == 4 and posts[-1][3] == "user=ops&pass=ops123&csrf=c5rf-77"
