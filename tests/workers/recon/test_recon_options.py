"""ARL's options change what a domain or IP task does, on the loopback lab (one test per option).

Each test runs a small task (no brute force unless it is the point) and checks what the option
added, left out or reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from controlplane.config import ReconConfig, SourceEntry, SourcesConfig
from tests.lab import CERT_ONLY_NAME, H1, H2, LAB_NAMES, WILD_NAMES, Lab
from tests.lab.authservers import start_redis
from tests.lab.dnszone import LabDNSServer, Zone
from tests.lab.fakebing import BingState, FakeBing
from tests.lab.geodb import Place, write_asn_db, write_city_db
from tests.lab.passive import KEYS, Behaviour, PassiveServer, PassiveState
from tests.lab.spidersite import ADMIN as SPIDER_ADMIN
from tests.lab.spidersite import EXPECTED as SPIDER_EXPECTED
from tests.lab.spidersite import SPIDER_IP, start_spider_lab
from tests.lab.vhostlab import HTTP_VHOSTS, VHOST_IP, start_vhost_lab
from tests.lab.wih import AWS_KEY, EMAIL, GITHUB_TOKEN, wih_site
from workers.recon import ReconContext
from workers.recon.discovery import ResolutionFailed
from workers.recon.scan import run_domain_task, run_ip_task
from workers.recon.sources import REGISTRY

Ctx = Callable[..., ReconContext]


def docs(db: Any, collection: str, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's documents of ``collection`` by their key field."""
    key = {"domain": "domain", "ip": "ip", "site": "site", "vuln": "poc_id", "url": "url"}[collection]
    return {str(d[key]): d for d in db[collection].find({"task_id": task_id}, {"_id": 0})}


def quiet(lab: Lab, **options: Any) -> dict[str, Any]:
    """Options with everything off but what the test turns on (ports: the lab's own)."""
    base: dict[str, Any] = {
        "domain_brute": False,
        "port_scan": False,
        "port_scan_type": "custom",
        "port_custom": lab.scan_ports,
        "site_identify": False,
        "ssl_cert": False,
        "file_leak": False,
    }
    base.update(options)
    return base


@pytest.fixture(scope="module")
def passive() -> Iterator[PassiveServer]:
    """Every passive source's imitation, reporting three real lab names, a dead one and a stranger."""
    records = {"lab.test": ["api.lab.test", CERT_ONLY_NAME, "ghost.lab.test", "www.elsewhere.test"]}
    state = PassiveState(records=records, behaviour={"securitytrails": Behaviour(mode="bad_key")})
    server = PassiveServer(state).start()
    yield server
    server.stop()


def test_dns_query_plugin_adds_the_names_passive_sources_know(
    make_ctx: Ctx, recon_db: Any, passive: PassiveServer
) -> None:
    plugins = {name: SourceEntry(url=passive.url, key=KEYS.get(name, "")) for name in REGISTRY}
    config = ReconConfig(sources=SourcesConfig(plugins=plugins, budget=10.0))
    ctx = make_ctx(config=config)
    stats = run_domain_task(["lab.test"], {"domain_brute": False, "dns_query_plugin": True}, ctx)
    found = docs(recon_db, "domain", ctx.task_id)
    assert set(found) == {"lab.test", "api.lab.test", CERT_ONLY_NAME}
    assert found["api.lab.test"]["source"] in set(REGISTRY) - {"securitytrails"}
    assert "ghost.lab.test" not in found and "www.elsewhere.test" not in found
    assert stats["failures"]["source:securitytrails"]
    assert stats["dns_query_plugin"]["failed"].keys() == {"securitytrails"}


def test_without_dns_query_plugin_only_the_target_is_found(make_ctx: Ctx, recon_db: Any) -> None:
    ctx = make_ctx()
    run_domain_task(["lab.test"], {"domain_brute": False}, ctx)
    assert set(docs(recon_db, "domain", ctx.task_id)) == {"lab.test"}


def test_arl_search_re_resolves_names_other_tasks_found(make_ctx: Ctx, recon_db: Any) -> None:
    recon_db["domain"].insert_many(
        [
            {"task_id": "earlier-task", "domain": "dev.lab.test"},
            {"task_id": "earlier-task", "domain": "gone.lab.test"},
            {"task_id": "earlier-task", "domain": "dev.other.test"},
        ]
    )
    known = {d["domain"] for d in recon_db["domain"].find({"domain": {"$regex": r"\.lab\.test$"}})}
    ctx = make_ctx()
    stats = run_domain_task(["lab.test"], {"domain_brute": False, "arl_search": True}, ctx)
    found = docs(recon_db, "domain", ctx.task_id)
    assert "dev.lab.test" in found and "gone.lab.test" not in found and "dev.other.test" not in found
    assert set(found) == {"lab.test"} | (known & set(LAB_NAMES))
    assert {d["source"] for n, d in found.items() if n != "lab.test"} == {"arl"}
    assert stats["arl_search_found"] == len(found) - 1


def write_cdn_file(tmp_path: Path) -> str:
    """An ARL-format CDN file naming the lab's origin.lab.test as a CDN's CNAME target."""
    path = tmp_path / "cdn_info.json"
    path.write_text(json.dumps([{"name": "LabCDN", "cname_domain": ["origin.lab.test"]}]))
    return str(path)


def test_skip_scan_cdn_ip_leaves_cdn_addresses_out_of_the_port_scan(
    make_ctx: Ctx, recon_db: Any, lab: Lab, tmp_path: Path
) -> None:
    ctx = make_ctx(config=ReconConfig(cdn_extra_files=[write_cdn_file(tmp_path)]))
    options = quiet(lab, domain_brute=True, port_scan=True, skip_scan_cdn_ip=True)
    stats = run_domain_task(["lab.test"], options, ctx)
    ips = docs(recon_db, "ip", ctx.task_id)
    assert ips[H1]["cdn_name"] == "LabCDN" and ips[H1]["ports"] == []
    assert ips[H2]["cdn_name"] == "" and {p["port"] for p in ips[H2]["ports"]} == lab.open_ports[H2]
    assert stats["skipped_cdn_ip"] == 1
    assert docs(recon_db, "domain", ctx.task_id)["blog.lab.test"]["cdn_name"] == "LabCDN"


def test_cdn_addresses_are_scanned_without_skip_scan_cdn_ip(
    make_ctx: Ctx, recon_db: Any, lab: Lab, tmp_path: Path
) -> None:
    ctx = make_ctx(config=ReconConfig(cdn_extra_files=[write_cdn_file(tmp_path)]))
    run_domain_task(["lab.test"], quiet(lab, domain_brute=True, port_scan=True), ctx)
    ips = docs(recon_db, "ip", ctx.task_id)
    assert ips[H1]["cdn_name"] == "LabCDN"
    assert {p["port"] for p in ips[H1]["ports"]} == lab.open_ports[H1]


def test_ip_results_carry_geolocation_from_maxmind_databases(
    make_ctx: Ctx, recon_db: Any, lab: Lab, tmp_path: Path
) -> None:
    place = Place("CN", "China", "ZJ", "Zhejiang", "Hangzhou", 30.29, 120.16)
    city = write_city_db(tmp_path / "city.mmdb", {"127.0.0.0/8": place})
    asn = write_asn_db(tmp_path / "asn.mmdb", {"127.0.0.0/8": (64500, "Lab Networks")})
    ctx = make_ctx(config=ReconConfig(geoip_city_db=str(city), geoip_asn_db=str(asn)))
    stats = run_ip_task([H2], quiet(lab, port_scan=True), ctx)
    doc = docs(recon_db, "ip", ctx.task_id)[H2]
    assert doc["geo_city"]["city"] == "Hangzhou" and doc["geo_city"]["country_code"] == "CN"
    assert doc["geo_asn"] == {"number": 64500, "organization": "Lab Networks"}
    assert doc["ip_type"] == "PRIVATE"
    assert "geo" not in stats


def test_missing_geoip_databases_are_reported_by_name(make_ctx: Ctx, lab: Lab) -> None:
    stats = run_ip_task([H2], quiet(lab, port_scan=True), make_ctx())
    assert stats["geo"] == {"geo_city": "not configured", "geo_asn": "not configured"}


def test_exclude_ports_are_not_scanned(make_ctx: Ctx, recon_db: Any, lab: Lab) -> None:
    excluded = sorted(lab.open_ports[H2])[0]
    ctx = make_ctx()
    run_ip_task([H2], quiet(lab, port_scan=True, exclude_ports=[excluded]), ctx)
    ports = {p["port"] for p in docs(recon_db, "ip", ctx.task_id)[H2]["ports"]}
    assert ports == lab.open_ports[H2] - {excluded}


def test_poc_config_runs_the_named_templates_over_the_sites(make_ctx: Ctx, recon_db: Any, lab: Lab) -> None:
    main = lab.sites["main"]
    ctx = make_ctx()
    poc_config = [
        {"plugin_name": "git-config-exposure", "enable": True},
        {"plugin_name": "no-such-template", "enable": True},
    ]
    options = quiet(lab, port_scan=True, port_custom=[main.port], site_identify=True, poc_config=poc_config)
    stats = run_ip_task([main.ip], options, ctx)
    vulns = docs(recon_db, "vuln", ctx.task_id)
    assert set(vulns) == {"git-config-exposure"}
    assert stats["vuln"] == 1 and stats["templates_run"] == 1
    assert "no-such-template" in stats["skipped_options"]["poc_config"]


def test_disabled_poc_config_entries_do_not_run(make_ctx: Ctx, recon_db: Any, lab: Lab) -> None:
    main = lab.sites["main"]
    ctx = make_ctx()
    poc_config = [{"plugin_name": "git-config-exposure", "enable": False}]
    options = quiet(lab, port_scan=True, port_custom=[main.port], site_identify=True, poc_config=poc_config)
    stats = run_ip_task([main.ip], options, ctx)
    assert docs(recon_db, "vuln", ctx.task_id) == {} and "vuln" not in stats


def test_options_without_what_they_need_are_reported(make_ctx: Ctx, lab: Lab) -> None:
    options = quiet(lab, nuclei_scan=True, web_info_hunter=True, service_detection=True, host_timeout=30)
    stats = run_ip_task([H2], options, make_ctx())
    skipped = stats["skipped_options"]
    assert skipped["nuclei_scan"].startswith("needs site_identify")
    assert skipped["web_info_hunter"].startswith("needs site_identify")
    assert skipped["service_detection"] == "needs port_scan"


def test_site_spider_stores_the_same_site_urls(make_ctx: Ctx, recon_db: Any) -> None:
    spider = start_spider_lab()
    try:
        port = int(spider.site.origin.rsplit(":", 1)[1])
        ctx = make_ctx()
        options = {
            "port_scan": True,
            "port_scan_type": "custom",
            "port_custom": [port],
            "site_identify": True,
            "site_spider": True,
        }
        stats = run_ip_task([SPIDER_IP], options, ctx)
    finally:
        spider.stop()
    urls = {
        urlsplit(u).path + ("?" + urlsplit(u).query if urlsplit(u).query else "")
        for u in docs(recon_db, "url", ctx.task_id)
    }
    assert urls == SPIDER_EXPECTED | {SPIDER_ADMIN}
    assert stats["url"] == len(urls)


def test_search_engines_add_the_names_the_engine_returns(make_ctx: Ctx, recon_db: Any) -> None:
    results = {"lab.test": ["http://api.lab.test/", "http://dev.lab.test/docs", "http://www.elsewhere.test/"]}
    bing = FakeBing(BingState(results=results)).start()
    try:
        ctx = make_ctx(config=ReconConfig(search_engine_url=bing.base_url))
        run_domain_task(["lab.test"], {"domain_brute": False, "search_engines": True}, ctx)
    finally:
        bing.stop()
    found = docs(recon_db, "domain", ctx.task_id)
    assert set(found) == {"lab.test", "api.lab.test", "dev.lab.test"}
    assert found["api.lab.test"]["source"] == "search_engine"


def test_alt_dns_on_a_wildcard_zone_reports_only_real_names(make_ctx: Ctx, recon_db: Any) -> None:
    ctx = make_ctx()
    stats = run_domain_task(["wild.test"], {"domain_brute": True, "alt_dns": True, "port_scan": False}, ctx)
    assert set(docs(recon_db, "domain", ctx.task_id)) == set(WILD_NAMES)
    assert stats["alt_dns"]["candidates"] > 0
    assert stats["dns"]["ok"] is True


def test_unreachable_resolver_fails_the_task_naming_it(make_ctx: Ctx, recon_db: Any) -> None:
    ctx = make_ctx(resolvers=["127.0.0.9:5999"], dns_timeout=0.2)
    with pytest.raises(ResolutionFailed, match=r"127\.0\.0\.9:5999"):
        run_domain_task(["lab.test"], {"domain_brute": False}, ctx)
    assert docs(recon_db, "domain", ctx.task_id) == {}


def test_a_dead_resolver_beside_a_working_one_is_named(make_ctx: Ctx, recon_db: Any, lab: Lab) -> None:
    ctx = make_ctx(resolvers=[*lab.resolvers, "127.0.0.9:5999"], dns_timeout=0.2)
    stats = run_domain_task(["lab.test"], {"domain_brute": True, "port_scan": False}, ctx)
    assert "lab.test" in docs(recon_db, "domain", ctx.task_id)
    assert "127.0.0.9:5999" in stats["failures"]["resolver"]


def test_os_detection_without_nmap_is_reported_and_the_scan_still_runs(
    make_ctx: Ctx, recon_db: Any, lab: Lab
) -> None:
    ctx = make_ctx()
    stats = run_ip_task([H2], quiet(lab, port_scan=True, os_detection=True), ctx)
    assert "os_detection" in stats["skipped_options"]
    assert {p["port"] for p in docs(recon_db, "ip", ctx.task_id)[H2]["ports"]} == lab.open_ports[H2]


def test_host_timeout_without_custom_type_is_reported(make_ctx: Ctx, lab: Lab) -> None:
    stats = run_ip_task([H2], quiet(lab, port_scan=True, host_timeout=30), make_ctx())
    assert stats["skipped_options"]["host_timeout"].startswith("applies only with host_timeout_type")


def test_brute_config_finds_a_weak_redis_password_and_names_unknown_plugins(
    make_ctx: Ctx, recon_db: Any
) -> None:
    redis = start_redis("redis")
    try:
        ctx = make_ctx()
        brute_config = [
            {"plugin_name": "RedisBrute", "enable": True},
            {"plugin_name": "NoSuchBrute", "enable": True},
        ]
        options = {
            "port_scan": True,
            "port_scan_type": "custom",
            "port_custom": [redis.port],
            "service_detection": True,
            "site_identify": False,
            "brute_config": brute_config,
        }
        stats = run_ip_task(["127.0.0.1"], options, ctx)
    finally:
        redis.stop()
    vulns = list(recon_db["vuln"].find({"task_id": ctx.task_id}, {"_id": 0}))
    assert [(v["plg_name"], v["password"], v["service"]) for v in vulns] == [
        ("RedisBrute", "redis", f"127.0.0.1:{redis.port}")
    ]
    assert "NoSuchBrute" in stats["skipped_options"]["brute_config"]
    assert stats["service_brute"]["findings"] == 1


def test_brute_config_with_every_entry_disabled_checks_nothing(make_ctx: Ctx, recon_db: Any) -> None:
    redis = start_redis("redis")
    try:
        ctx = make_ctx()
        options = {
            "port_scan": True,
            "port_scan_type": "custom",
            "port_custom": [redis.port],
            "site_identify": False,
            "brute_config": [{"plugin_name": "RedisBrute", "enable": False}],
        }
        stats = run_ip_task(["127.0.0.1"], options, ctx)
    finally:
        redis.stop()
    assert "service_brute" not in stats and recon_db["vuln"].count_documents({"task_id": ctx.task_id}) == 0


def test_web_info_hunter_stores_what_the_site_scripts_leak(make_ctx: Ctx, recon_db: Any) -> None:
    site = wih_site("http://portal.wih.test").start()
    try:
        ctx = make_ctx()
        options = {
            "port_scan": True,
            "port_scan_type": "custom",
            "port_custom": [site.port],
            "site_identify": True,
            "web_info_hunter": True,
        }
        stats = run_ip_task([site.ip], options, ctx)
    finally:
        site.stop()
    values = {d["value"] for d in recon_db["wih"].find({"task_id": ctx.task_id})}
    assert {AWS_KEY, GITHUB_TOKEN, EMAIL} <= values
    assert stats["wih"] == len(values)


def test_nuclei_scan_runs_the_whole_catalogue_over_the_sites(make_ctx: Ctx, recon_db: Any, lab: Lab) -> None:
    main = lab.sites["main"]
    ctx = make_ctx()
    options = quiet(lab, port_scan=True, port_custom=[main.port], site_identify=True, nuclei_scan=True)
    stats = run_ip_task([main.ip], options, ctx)
    found = set(docs(recon_db, "vuln", ctx.task_id))
    assert "git-config-exposure" in found
    assert stats["templates_run"] > 100


def test_npoc_service_detection_names_services_but_leaves_web_ports_to_the_sites(
    make_ctx: Ctx, recon_db: Any, lab: Lab
) -> None:
    ctx = make_ctx()
    run_ip_task([H2], quiet(lab, port_scan=True, npoc_service_detection=True), ctx)
    ports = docs(recon_db, "ip", ctx.task_id)[H2]["ports"]
    assert ports and all(p["service"] for p in ports if p["port"] not in (80, 443, 843))


@pytest.fixture
def corp() -> Iterator[tuple[Any, LabDNSServer]]:
    """The virtual-host lab and a DNS zone for it: www on the web server, admin and intranet elsewhere."""
    vlab = start_vhost_lab()
    zone = Zone("corp.test")
    zone.add("www", "A", VHOST_IP)
    zone.add("admin", "A", "127.88.7.9")  # resolves to an address where nothing listens
    zone.add("intranet", "A", "127.88.7.9")
    dns = LabDNSServer([zone]).start()
    yield vlab, dns
    dns.stop()
    vlab.stop()


def corp_options(vlab: Any, **extra: Any) -> dict[str, Any]:
    """A domain task over corp.test scanning only the virtual-host server's HTTP port."""
    return {
        "domain_brute": True,
        "port_scan": True,
        "port_scan_type": "custom",
        "port_custom": [vlab.http.port],
        "site_identify": True,
        **extra,
    }


def test_findvhost_finds_names_served_where_they_do_not_resolve(
    make_ctx: Ctx, recon_db: Any, corp: tuple[Any, LabDNSServer]
) -> None:
    vlab, dns = corp
    ctx = make_ctx(resolvers=[dns.address])
    stats = run_domain_task(["corp.test"], corp_options(vlab, findvhost=True), ctx)
    vhosts = {d["host"]: d for d in recon_db["vhost"].find({"task_id": ctx.task_id}, {"_id": 0})}
    assert set(vhosts) == {"admin.corp.test", "intranet.corp.test"}
    assert vhosts["admin.corp.test"]["title"] == HTTP_VHOSTS["admin.corp.test"]
    assert vhosts["admin.corp.test"]["ip"] == VHOST_IP
    assert stats["vhost"] == 2


def test_without_findvhost_no_virtual_hosts_are_tried(
    make_ctx: Ctx, recon_db: Any, corp: tuple[Any, LabDNSServer]
) -> None:
    vlab, dns = corp
    ctx = make_ctx(resolvers=[dns.address])
    run_domain_task(["corp.test"], corp_options(vlab), ctx)
    with vlab.http.lock:
        asked = [host for host, _ in vlab.http.requests]
    assert "admin.corp.test" not in asked
    assert recon_db["vhost"].count_documents({"task_id": ctx.task_id}) == 0
