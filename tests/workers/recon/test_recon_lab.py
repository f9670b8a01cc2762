"""End-to-end recon runs against the loopback lab, compared with its ground truth."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from controlplane.config import ReconConfig
from controlplane.store.results import RECON_KINDS
from tests.lab import (
    CERT_ONLY_NAME,
    ENV_FILE,
    EXPECTED_FINGERPRINTS,
    EXPECTED_LEAKS,
    GIT_CONFIG,
    H1,
    H2,
    H3,
    LAB_LEAK_LIST,
    LAB_NAMES,
    WILD_NAMES,
    Lab,
)
from tests.lab.scenarios import all_options, in_lab_scope
from workers.recon import ReconContext, run_domain_task, run_ip_task
from workers.recon.datafiles import load_leak_paths, parse_leak_groups, read_yaml
from workers.recon.nmap import nmap_path
from workers.recon.scan import STAGES


def docs(db: Any, collection: str, task_id: str) -> list[dict[str, Any]]:
    """Every stored document of ``collection`` for ``task_id``."""
    return list(db[collection].find({"task_id": task_id}, {"_id": 0}))


def expected_sites(lab: Lab, names: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """URL -> lab site name for every (in-scope host name, web port) pair of the lab."""
    out = {}
    for name, records in names.items():
        for ip in records.get("a", []):
            for site_name, site in lab.sites.items():
                if site.ip == ip:
                    out[f"{site.scheme}://{name}:{site.port}"] = site_name
    return out


@pytest.fixture(scope="module")
def domain_run(lab: Lab, recon_db: Any) -> dict[str, Any]:
    """One full domain task over lab.test (probing the lab's leak list), shared by the assertions below."""
    calls: list[tuple[float, str, int, int]] = []
    ctx = ReconContext(
        task_id="lab-domain-full",
        db=recon_db,
        resolvers=lab.resolvers,
        progress=lambda stage, done, total: calls.append((time.monotonic(), stage, done, total)),
        should_stop=lambda: False,
        scope_check=in_lab_scope,
        connect_timeout=0.5,
        http_timeout=3.0,
        config=ReconConfig(file_leak_list=str(LAB_LEAK_LIST)),
    )
    stats = run_domain_task(["lab.test"], all_options(lab), ctx)
    return {"stats": stats, "task_id": ctx.task_id, "calls": calls, "ctx": ctx}


def test_domain_task_finds_exactly_the_planted_names(domain_run: dict[str, Any], recon_db: Any) -> None:
    found = {d["domain"]: d for d in docs(recon_db, "domain", domain_run["task_id"])}
    assert set(found) == set(LAB_NAMES)
    for name, truth in LAB_NAMES.items():
        assert found[name]["a"] == truth.get("a", []), name
        assert found[name]["aaaa"] == truth.get("aaaa", []), name
        assert found[name]["cnames"] == truth.get("cnames", []), name
    assert found["blog.lab.test"]["type"] == "CNAME"
    assert found["lab.test"]["source"] == "target"
    assert found[CERT_ONLY_NAME]["source"] == "cert"


def test_domain_task_ports_and_services(domain_run: dict[str, Any], recon_db: Any, lab: Lab) -> None:
    found = {d["ip"]: d for d in docs(recon_db, "ip", domain_run["task_id"])}
    assert set(found) == {H1, H2, H3}
    for ip, ports in lab.open_ports.items():
        assert {p["port"] for p in found[ip]["ports"]} == ports, ip
    services = {(ip, p["port"]): p["service"] for ip, d in found.items() for p in d["ports"]}
    for kind, listener in lab.listeners.items():
        assert services[(listener.ip, listener.port)] == kind
    for site in lab.sites.values():
        assert services[(site.ip, site.port)] == site.scheme
    ssh = next(p for p in found[H2]["ports"] if p["service"] == "ssh")
    assert (ssh["product"], ssh["version"]) == ("OpenSSH", "8.9p1")
    assert set(found[H1]["domains"]) == {n for n, r in LAB_NAMES.items() if H1 in r.get("a", [])}


def test_domain_task_sites(domain_run: dict[str, Any], recon_db: Any, lab: Lab) -> None:
    found = {d["site"]: d for d in docs(recon_db, "site", domain_run["task_id"])}
    truth = expected_sites(lab, LAB_NAMES)
    assert set(found) == set(truth)
    for url, site_name in truth.items():
        site = found[url]
        assert EXPECTED_FINGERPRINTS[site_name] <= set(site["fingerprints"]), url
        assert site["status"] == 200
    main = next(d for u, d in found.items() if truth[u] == "main")
    assert main["title"] == "Lab Main Page"
    assert main["server"] == "nginx/1.18.0"
    assert main["favicon"]["hash"] is not None and main["favicon"]["size"] > 0
    secure = next(d for u, d in found.items() if truth[u] == "secure")
    assert secure["title"] == "Sign in [Jenkins]"
    assert secure["redirects"] and secure["final_url"].endswith("/login")
    portal = next(d for u, d in found.items() if truth[u] == "portal")
    assert portal["favicon"] is None, "a catch-all text page is not a favicon"


def test_domain_task_certs_and_san_feedback(domain_run: dict[str, Any], recon_db: Any, lab: Lab) -> None:
    certs = docs(recon_db, "cert", domain_run["task_id"])
    secure = lab.sites["secure"]
    hosts = {n for n, r in LAB_NAMES.items() if secure.ip in r.get("a", [])}
    assert {(c["host"], c["port"]) for c in certs} == {(h, secure.port) for h in hosts}
    cert = certs[0]
    assert CERT_ONLY_NAME in cert["sans"] and len(cert["fingerprint_sha256"]) == 64
    assert cert["not_before"] < cert["not_after"]
    sites = {d["site"] for d in docs(recon_db, "site", domain_run["task_id"])}
    assert f"http://{CERT_ONLY_NAME}:{lab.sites['portal'].port}" in sites


def test_domain_task_file_leaks_only_on_the_leaky_site(
    domain_run: dict[str, Any], recon_db: Any, lab: Lab
) -> None:
    leaks = docs(recon_db, "fileleak", domain_run["task_id"])
    truth = expected_sites(lab, LAB_NAMES)
    main = lab.sites["main"]
    main_hosts = sorted({str(urlsplit(u).hostname) for u, name in truth.items() if name == "main"})
    assert sorted(d["path"] for d in leaks) == sorted(EXPECTED_LEAKS["main"])
    for leak in leaks:
        # One record per leak of the service, with every host name it was reached under.
        assert (leak["ip"], leak["port"]) == (main.ip, main.port)
        assert leak["hostnames"] == main_hosts


def test_the_lab_leak_list_is_part_of_the_bundled_list_and_holds_the_planted_leaks() -> None:
    bundled = {p.path: p for p in load_leak_paths()}
    short = parse_leak_groups(read_yaml(LAB_LEAK_LIST), str(LAB_LEAK_LIST))
    assert len(short) >= 10
    for probe in short:
        assert probe.path in bundled, probe.path
        truth = bundled[probe.path]
        assert (probe.check, probe.risk, probe.group) == (truth.check, truth.risk, truth.group), probe.path
    planted = {"/.git/config": GIT_CONFIG, "/.env": ENV_FILE}
    assert set(planted) == set().union(*EXPECTED_LEAKS.values())
    for path, body in planted.items():
        check = bundled[path].check
        assert check is not None and check.matches(body, "text/plain"), path


def test_domain_task_stats_progress_and_partial_flag(domain_run: dict[str, Any], recon_db: Any) -> None:
    stats = domain_run["stats"]
    assert stats["partial"] is False
    for collection in RECON_KINDS:
        stored = docs(recon_db, collection, domain_run["task_id"])
        assert stats[collection] == len(stored)
        assert all(not d["partial"] for d in stored)
    calls = domain_run["calls"]
    assert {c[1] for c in calls} == set(STAGES)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.19, "progress must be rate-limited to <= 5 per second"
    last = {}
    for _, stage, done, total in calls:
        last[stage] = (done, total)
    assert all(done == total for done, total in last.values())


def test_rerun_of_the_same_task_adds_no_duplicates(
    domain_run: dict[str, Any], recon_db: Any, lab: Lab, make_ctx: Callable[..., ReconContext]
) -> None:
    before = domain_run["stats"]
    ctx = make_ctx(task_id=domain_run["task_id"])
    options = all_options(lab, domain_brute=False, file_leak=False)
    again = run_domain_task(["lab.test", "www.lab.test"], options, ctx)
    assert {k: again[k] for k in RECON_KINDS} == {k: before[k] for k in RECON_KINDS}


def test_wildcard_answers_are_filtered(
    make_ctx: Callable[..., ReconContext], recon_db: Any, lab: Lab
) -> None:
    ctx = make_ctx()
    options = all_options(lab, port_scan=False, site_identify=False, ssl_cert=False, file_leak=False)
    stats = run_domain_task(["wild.test"], options, ctx)
    found = {d["domain"]: d for d in docs(recon_db, "domain", ctx.task_id)}
    assert set(found) == set(WILD_NAMES)
    for name, truth in WILD_NAMES.items():
        assert found[name]["a"] == truth["a"]
    assert stats["domain"] == 3 and stats["site"] == 0


def test_ip_task_over_a_cidr_respects_scope(
    make_ctx: Callable[..., ReconContext], recon_db: Any, lab: Lab
) -> None:
    checked: list[str] = []

    def scope(host: str) -> bool:
        checked.append(host)
        return host != H3

    ctx = make_ctx(scope_check=scope)
    stats = run_ip_task(["127.88.0.0/29"], all_options(lab), ctx)
    assert H3 in checked and stats["partial"] is False
    ips = {d["ip"]: d for d in docs(recon_db, "ip", ctx.task_id)}
    assert set(ips) == {H1, H2}
    for ip in (H1, H2):
        assert {p["port"] for p in ips[ip]["ports"]} == lab.open_ports[ip]
    sites = {d["site"] for d in docs(recon_db, "site", ctx.task_id)}
    assert sites == {f"{s.scheme}://{s.ip}:{s.port}" for s in lab.sites.values() if s.ip != H3}
    certs = docs(recon_db, "cert", ctx.task_id)
    assert [(c["host"], c["port"]) for c in certs] == [(H1, lab.sites["secure"].port)]
    leaks = {d["url"] for d in docs(recon_db, "fileleak", ctx.task_id)}
    main = lab.sites["main"]
    assert leaks == {f"http://{H1}:{main.port}{p}" for p in EXPECTED_LEAKS["main"]}


def test_ip_task_refuses_oversized_cidr(make_ctx: Callable[..., ReconContext], lab: Lab) -> None:
    ctx = make_ctx(max_cidr_addresses=256)
    with pytest.raises(ValueError, match="more than 256"):
        run_ip_task(["10.0.0.0/16"], all_options(lab), ctx)


def test_stop_cancels_a_long_scan_within_a_second(
    make_ctx: Callable[..., ReconContext], recon_db: Any, lab: Lab
) -> None:
    stop_at: list[float] = []

    def should_stop() -> bool:
        if time.monotonic() - started > 0.8:
            stop_at.append(time.monotonic())
            return True
        return False

    ctx = make_ctx(should_stop=should_stop)
    options = all_options(lab, domain_brute=False, port_scan_type="all")
    started = time.monotonic()
    stats = run_domain_task(["lab.test"], options, ctx)
    ended = time.monotonic()
    assert stop_at, "the scan finished before the stop request"
    assert ended - stop_at[0] < 1.0
    assert stats["partial"] is True
    stored = docs(recon_db, "domain", ctx.task_id)
    assert stored and all(d["partial"] for d in stored)
    assert stats["site"] == 0


def test_scan_deadline_marks_the_run_partial(
    make_ctx: Callable[..., ReconContext], recon_db: Any, lab: Lab
) -> None:
    ctx = make_ctx()
    options = all_options(
        lab, domain_brute=False, port_scan_type="all", port_scan_timeout=0.3, site_identify=False
    )
    started = time.monotonic()
    stats = run_ip_task([H2], options, ctx)
    assert time.monotonic() - started < 3
    assert stats["partial"] is True


def test_nmap_backend_finds_the_lab_ports(
    make_ctx: Callable[..., ReconContext], recon_db: Any, lab: Lab
) -> None:
    if nmap_path() is None:
        if os.environ.get("CI"):
            pytest.fail("nmap is missing in CI (.ci/run installs Debian's nmap)")
        pytest.skip("nmap is not installed (apt-get install nmap)")
    ctx = make_ctx()
    # A port scan only: nmap's -sV waits out its every probe on the lab's TCP fakes; nmap's service
    # detection has its own test (test_nmap_options.py).
    options = all_options(
        lab, use_nmap=True, site_identify=False, ssl_cert=False, file_leak=False, service_detection=False
    )
    run_ip_task([H1, H2, H3], options, ctx)
    ips = {d["ip"]: {p["port"] for p in d["ports"]} for d in docs(recon_db, "ip", ctx.task_id)}
    assert ips == lab.open_ports
