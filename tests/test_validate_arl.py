"""The ARL option set: every key an ARL client sends for a domain or IP task is accepted and checked."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.core.errors import InvalidParam
from controlplane.core.validate import validate_task_data

# What ARL's task form (``POST /api/task/``) and a policy's domain/ip/site config send.
ARL_DOMAIN_OPTIONS: dict[str, Any] = {
    "domain_brute": True,
    "domain_brute_type": "test",
    "alt_dns": True,
    "arl_search": True,
    "dns_query_plugin": True,
    "port_scan": True,
    "port_scan_type": "top100",
    "service_detection": True,
    "service_brute": False,
    "os_detection": True,
    "ssl_cert": True,
    "skip_scan_cdn_ip": True,
    "host_timeout_type": "custom",
    "host_timeout": 900,
    "port_parallelism": 32,
    "port_min_rate": 64,
    "exclude_ports": "22,3306",
    "site_identify": True,
    "site_capture": False,
    "search_engines": True,
    "site_spider": True,
    "file_leak": True,
    "findvhost": True,
    "nuclei_scan": True,
    "web_info_hunter": True,
    "npoc_service_detection": True,
    "poc_config": [{"plugin_name": "tech-detect", "enable": True, "vul_name": "Tech"}],
    "brute_config": [{"plugin_name": "RedisBrute", "enable": False}],
    "scope_id": "5f1e0a6b9c1d2e3f4a5b6c7d",
}


def reason(task_type: str, data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidParam) as info:
        validate_task_data(task_type, data)
    return info.value.field, info.value.reason


def test_every_arl_domain_option_is_accepted_and_kept() -> None:
    out = validate_task_data("domain_task", {"target": "example.com", "options": ARL_DOMAIN_OPTIONS})
    options = out["options"]
    assert set(ARL_DOMAIN_OPTIONS) <= set(options)
    assert options["exclude_ports"] == [22, 3306]
    assert options["poc_config"] == [{"plugin_name": "tech-detect", "enable": True}]
    assert options["brute_config"] == [{"plugin_name": "RedisBrute", "enable": False}]
    assert options["host_timeout"] == 900 and options["port_parallelism"] == 32


def test_ip_task_takes_the_ip_and_site_options_but_not_the_domain_ones() -> None:
    ip_keys = {
        k: v
        for k, v in ARL_DOMAIN_OPTIONS.items()
        if k not in {"domain_brute", "domain_brute_type", "alt_dns", "arl_search", "dns_query_plugin"}
        and k not in {"search_engines", "findvhost"}
    }
    out = validate_task_data("ip_task", {"target": "10.0.0.1", "options": ip_keys})
    assert set(ip_keys) <= set(out["options"])
    for domain_only in ("alt_dns", "arl_search", "dns_query_plugin", "search_engines", "findvhost"):
        field, why = reason("ip_task", {"target": "10.0.0.1", "options": {domain_only: True}})
        assert field == f"data.options.{domain_only}" and why.startswith("unknown option")


def test_unknown_option_is_still_a_400_naming_it() -> None:
    field, why = reason("domain_task", {"target": "a.com", "options": {"subdomain_magic": True}})
    assert field == "data.options.subdomain_magic" and "unknown option" in why


@pytest.mark.parametrize(
    ("options", "field", "why"),
    [
        ({"poc_config": {"plugin_name": "x"}}, "data.options.poc_config", "must be a list"),
        ({"poc_config": ["x"]}, "data.options.poc_config[0]", "must be an object"),
        ({"poc_config": [{"enable": True}]}, "data.options.poc_config[0].plugin_name", "is required"),
        ({"brute_config": [{"plugin_name": "a", "on": 1}]}, "data.options.brute_config[0].on", "unknown"),
        (
            {"brute_config": [{"plugin_name": "a", "enable": "yes"}]},
            "data.options.brute_config[0].enable",
            "boolean",
        ),
        ({"host_timeout_type": "custom"}, "data.options.host_timeout", "is required"),
        ({"host_timeout_type": "forever"}, "data.options.host_timeout_type", "must be one of"),
        ({"host_timeout": 0}, "data.options.host_timeout", "between 1 and 86400"),
        ({"port_parallelism": -1}, "data.options.port_parallelism", "between"),
        ({"port_min_rate": "fast"}, "data.options.port_min_rate", "integer"),
        ({"exclude_ports": "70000"}, "data.options.exclude_ports", ""),
        ({"os_detection": "yes"}, "data.options.os_detection", "boolean"),
    ],
)
def test_bad_arl_values_name_the_field(options: dict[str, Any], field: str, why: str) -> None:
    got_field, got_why = reason("domain_task", {"target": "a.com", "options": options})
    assert got_field == field and why in got_why


def test_plugin_config_keeps_first_entry_per_plugin() -> None:
    options = {"poc_config": [{"plugin_name": "a"}, {"plugin_name": "a", "enable": False}]}
    out = validate_task_data("ip_task", {"target": "10.0.0.1", "options": options})
    assert out["options"]["poc_config"] == [{"plugin_name": "a", "enable": True}]


def test_github_monitor_accepts_scope_id() -> None:
    data = {"keyword": "secret", "options": {"scope_id": "s1"}}
    assert validate_task_data("github_task_monitor", data)["options"]["scope_id"] == "s1"
