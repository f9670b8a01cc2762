"""Unit tests for the pure pieces of the recon library."""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

import mmh3
import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate

from workers.recon.certs import parse_certificate
from workers.recon.control import ProgressReporter, StopSignal
from workers.recon.datafiles import (
    TEST_PORTS,
    dedupe_labels,
    load_leak_paths,
    load_wordlist,
    parse_port_list,
    ports_for_preset,
)
from workers.recon.dns import DomainRecord, Wildcard, parse_resolver
from workers.recon.fileleak import PageSignature, is_leak, looks_like
from workers.recon.fingerprints import PageFacts, RuleError, load_rules, match_fingerprints, parse_rules
from workers.recon.http import HttpResponse, decode_body, extract_title, origin_url, split_url
from workers.recon.nmap import build_command, compress_ports, parse_nmap_xml
from workers.recon.services import classify_banner, printable_banner
from workers.recon.sites import favicon_hash, icon_link
from workers.recon.targets import TargetError, expand_ip_targets, is_subdomain, normalize_domain


def test_wordlists_load_clean_and_sized() -> None:
    small, big = load_wordlist("small"), load_wordlist("big")
    assert 1000 <= len(small) <= 2500 and len(big) >= 10000
    assert len(set(small)) == len(small) and set(small) <= set(big)
    assert {"www", "mail", "api", "dev", "test", "staging", "admin", "vpn"} <= set(small)
    assert all(label == label.lower() and " " not in label for label in big)
    with pytest.raises(ValueError):
        load_wordlist("huge")


def test_dedupe_labels_drops_invalid_and_duplicates() -> None:
    assert dedupe_labels(["WWW", "www", "-bad", "ok-1", "a.b", "x_y", "", "é"]) == ["www", "ok-1", "a.b"]


def test_port_presets() -> None:
    assert ports_for_preset("test") == sorted(TEST_PORTS)
    top100, top1000 = ports_for_preset("top100"), ports_for_preset("top1000")
    # ARL's own lists (app/config.py TOP_100 and TOP_1000): 257 and 1201 ports, and not nested.
    assert len(top100) == 257 and len(top1000) == 1201
    assert {22, 80, 443, 3306, 6379, 8080} <= set(top100)
    assert ports_for_preset("all") == list(range(0, 65536))
    assert ports_for_preset("custom", [443, "80", "8000-8002", 443]) == [80, 443, 8000, 8001, 8002]
    with pytest.raises(ValueError):
        ports_for_preset("custom", [])
    with pytest.raises(ValueError):
        ports_for_preset("top5")


@pytest.mark.parametrize("bad", ["0", "65536", "10-5", "http"])
def test_parse_port_list_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_port_list([bad])


def test_leak_paths_have_content_markers() -> None:
    paths = {p.path: p.marker for p in load_leak_paths()}
    assert paths["/.git/config"] == "[core]"
    assert "/.env" in paths and "/.svn/entries" in paths and "/backup.zip" in paths
    assert all(p.startswith("/") for p in paths)


def test_targets_expansion_and_limits() -> None:
    assert expand_ip_targets(["10.0.0.0/30"], 100) == ["10.0.0.1", "10.0.0.2"]
    assert expand_ip_targets(["10.0.0.1-10.0.0.3", "10.0.0.2"], 100) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert expand_ip_targets(["10.0.0.5-6"], 100) == ["10.0.0.5", "10.0.0.6"]
    assert expand_ip_targets(["10.0.0.8/31", "::1"], 10) == ["10.0.0.8", "10.0.0.9", "::1"]
    with pytest.raises(TargetError):
        expand_ip_targets(["10.0.0.0/24"], 255)
    with pytest.raises(TargetError):
        expand_ip_targets(["10.0.0.9-10.0.0.1"], 100)
    with pytest.raises(TargetError):
        expand_ip_targets(["example.com"], 100)


def test_domain_normalisation() -> None:
    assert normalize_domain("HTTPS://Www.Example.COM:8443/path") == "www.example.com"
    assert normalize_domain("example.com.") == "example.com"
    for bad in ("localhost", "exa mple.com", "-x.com"):
        with pytest.raises(TargetError):
            normalize_domain(bad)
    assert is_subdomain("a.b.example.com", "example.com") and not is_subdomain(
        "badexample.com", "example.com"
    )


def test_parse_resolver() -> None:
    assert parse_resolver("8.8.8.8") == ("8.8.8.8", 53)
    assert parse_resolver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_resolver("[::1]:5300") == ("::1", 5300)
    assert parse_resolver("::1") == ("::1", 53)
    with pytest.raises(ValueError):
        parse_resolver("resolver.example")


def test_wildcard_matching() -> None:
    wildcard = Wildcard(ips={"1.1.1.1", "1.1.1.2"})
    assert wildcard.matches(DomainRecord("a.x", a=["1.1.1.1"]))
    assert not wildcard.matches(DomainRecord("b.x", a=["1.1.1.1", "9.9.9.9"]))
    assert not Wildcard().matches(DomainRecord("c.x", a=["1.1.1.1"]))
    via_cname = Wildcard(cnames={"parking.example"})
    assert via_cname.matches(DomainRecord("d.x", cnames=["parking.example"]))


def test_favicon_hash_is_shodan_style() -> None:
    data = bytes(range(256)) * 2
    encoded = base64.b64encode(data).decode()
    wrapped = "".join(encoded[i : i + 76] + "\n" for i in range(0, len(encoded), 76))
    assert favicon_hash(data) == mmh3.hash(wrapped.encode())
    assert favicon_hash(b"") == mmh3.hash(b"")


def test_icon_link_extraction() -> None:
    body = (
        b"<head><link rel='stylesheet' href='/a.css'>"
        b'<link rel="shortcut icon" href="/static/f.png"></head>'
    )
    assert icon_link(body) == "/static/f.png"
    assert icon_link(b"<html></html>") is None


def test_title_extraction_and_decoding() -> None:
    assert extract_title(b"<html><TITLE lang=en>\n  Hello &amp;\n World </title>") == "Hello & World"
    gbk = "<title>管理后台</title>".encode("gbk")
    assert extract_title(gbk, "text/html; charset=gbk") == "管理后台"
    meta = b'<meta charset="gbk">' + gbk
    assert extract_title(meta) == "管理后台"
    assert extract_title(b"<html>no title</html>") == ""
    assert decode_body(b"caf\xc3\xa9", "text/plain; charset=bogus-charset") == "café"


def test_url_helpers() -> None:
    assert origin_url("https", "a.test", 443) == "https://a.test"
    assert origin_url("http", "::1", 8080) == "http://[::1]:8080"
    assert split_url("HTTPS://A.test/x?y=1") == ("https", "a.test", 443, "/x?y=1")
    with pytest.raises(ValueError):
        split_url("ftp://a.test/")


def test_bundled_fingerprint_rules_load_and_match() -> None:
    rules = load_rules()
    names = {r.name for r in rules}
    assert len(rules) >= 30
    assert {"nginx", "Apache HTTP Server", "Microsoft IIS", "Apache Tomcat", "Jenkins", "GitLab"} <= names
    assert {"Grafana", "Kibana", "Flower", "WordPress", "phpMyAdmin", "Spring Boot"} <= names
    page = PageFacts(
        headers={"server": "nginx/1.24", "x-jenkins": "2.4"},
        body="<div>Whitelabel Error Page</div>",
        title="Dashboard [Jenkins]",
    )
    assert match_fingerprints(rules, page) == ["nginx", "Jenkins", "Spring Boot"]
    assert match_fingerprints(rules, PageFacts(title="Welcome to nowhere")) == []


def test_custom_rules_favicon_regex_and_condition() -> None:
    rules = parse_rules(
        {
            "rules": [
                {"name": "IconApp", "matchers": [{"type": "favicon_hash", "hash": 116323821}]},
                {
                    "name": "Both",
                    "condition": "and",
                    "matchers": [
                        {"type": "header", "name": "X-A"},
                        {"type": "regex", "part": "body", "pattern": r"build-\d+"},
                    ],
                },
            ]
        }
    )
    assert match_fingerprints(rules, PageFacts(favicon_hash=116323821)) == ["IconApp"]
    assert match_fingerprints(rules, PageFacts(headers={"x-a": ""}, body="build-42")) == ["Both"]
    assert match_fingerprints(rules, PageFacts(headers={"x-a": ""}, body="build-x")) == []
    bad: dict[str, Any]
    for bad in (
        {"rules": [{"name": "x", "matchers": [{"type": "cookie"}]}]},
        {"rules": [{"name": "x", "matchers": []}]},
        {"rules": [{"name": "x", "matchers": [{"type": "regex", "pattern": "("}]}]},
        {"nope": []},
    ):
        with pytest.raises(RuleError):
            parse_rules(bad)


def _response(status: int, body: bytes, content_type: str = "text/plain") -> HttpResponse:
    return HttpResponse(status, "OK", [("Content-Type", content_type)], body)


def test_soft404_comparison() -> None:
    base = PageSignature.of(_response(200, b"status=missing\nThe page /abc123 is not here. " * 5))
    same_page_other_path = PageSignature.of(
        _response(200, b"status=missing\nThe page /.env is not here. " * 5)
    )
    assert looks_like(same_page_other_path, base)
    different = PageSignature.of(_response(200, b"DB_HOST=10.0.0.1\nDB_PASSWORD=x\n"))
    assert not looks_like(different, base)
    assert not looks_like(PageSignature.of(_response(404, base.sample.encode())), base)


def test_is_leak_rules() -> None:
    from workers.recon.datafiles import LeakPath

    git = LeakPath("/.git/config", "[core]")
    assert is_leak(git, _response(200, b"[core]\n\tbare = false\n"), [])
    assert not is_leak(git, _response(200, b"<html>hello</html>", "text/html"), [])
    assert not is_leak(git, _response(404, b"[core]"), [])
    svn = LeakPath("/.svn/entries")
    assert is_leak(svn, _response(200, b"12\n\ndir\n"), [])
    assert not is_leak(svn, _response(200, b"<!DOCTYPE html><html>", "application/octet-stream"), [])
    soft = _response(200, b"status=missing everything answers " * 10)
    assert not is_leak(LeakPath("/.env", "="), soft, [PageSignature.of(soft)])


def test_banner_classification() -> None:
    assert classify_banner(b"SSH-2.0-OpenSSH_9.6p1 Debian\r\n") == ("ssh", "OpenSSH", "9.6p1")
    assert classify_banner(b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\n\r\n") == ("http", "nginx", "1.25.3")
    assert classify_banner(b"-ERR unknown command 'GET'\r\n")[0] == "redis"
    assert classify_banner(b"-NOAUTH Authentication required.\r\n")[0] == "redis"
    mysql = b"\x4a\x00\x00\x00\x0a8.0.36\x00\x01\x02"
    assert classify_banner(mysql) == ("mysql", "MySQL", "8.0.36")
    assert classify_banner(b"220 smtp.example.com ESMTP Postfix\r\n")[0] == "smtp"
    assert classify_banner(b"220 (vsFTPd 3.0.3)\r\n")[0] == "ftp"
    assert classify_banner(b"\x16\x03\x01garbage") == ("", "", "")
    assert printable_banner(b"ab\x00c") == "ab\\x00c"


def test_nmap_xml_parsing_and_command() -> None:
    xml = """<?xml version="1.0"?><nmaprun><host><status state="up"/>
    <address addr="10.0.0.5" addrtype="ipv4"/><ports>
    <port protocol="tcp" portid="22"><state state="open"/>
      <service name="ssh" product="OpenSSH" version="9.6"/></port>
    <port protocol="tcp" portid="443"><state state="open"/><service name="http" tunnel="ssl"/></port>
    <port protocol="tcp" portid="25"><state state="filtered"/></port>
    </ports></host></nmaprun>"""
    found = parse_nmap_xml(xml)
    assert set(found["10.0.0.5"]) == {22, 443}
    assert found["10.0.0.5"][22].product == "OpenSSH"
    assert found["10.0.0.5"][443].service == "https" and found["10.0.0.5"][443].tls
    assert compress_ports([80, 1, 2, 3, 443, 444]) == "1-3,80,443-444"
    command = build_command("nmap", ["10.0.0.5"], [22, 80], True, 1.0)
    assert command[-1] == "10.0.0.5" and "-sV" in command and "22,80" in command


def test_certificate_parsing() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("a.example.test", "b.example.test", "10.1.2.3")
    der = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)
    info = parse_certificate(der)
    assert info.sans == ["a.example.test", "b.example.test"] and info.ip_sans == ["10.1.2.3"]
    assert "trustme" in info.issuer and not info.self_signed
    assert len(info.fingerprint_sha256) == 64 and info.serial
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert info.not_before <= now <= info.not_after


def test_progress_reporter_rate_limits_and_keeps_last_values() -> None:
    now = [0.0]
    sent: list[tuple[str, int, int]] = []
    reporter = ProgressReporter(lambda *a: sent.append(a), min_interval=0.2, clock=lambda: now[0])
    for i in range(100):
        reporter.report("port_scan", i, 100)
    assert sent == [("port_scan", 0, 100)]
    reporter.report("port_scan", 100, 100)
    reporter.report("site_identify", 1, 2)
    now[0] = 0.25
    reporter.flush_due()
    now[0] = 0.3
    reporter.flush_due()
    assert sent[-1] == ("port_scan", 100, 100)
    now[0] = 0.5
    reporter.flush_due()
    assert sent[-1] == ("site_identify", 1, 2) and len(sent) == 3


def test_stop_signal_cancels_a_step_and_keeps_collected_results() -> None:
    async def scenario() -> tuple[bool, list[int], float]:
        flag = {"stop": False}
        signal = StopSignal(lambda: flag["stop"], poll_interval=0.02)
        watcher = asyncio.ensure_future(signal.watch())
        collected: list[int] = []

        async def step() -> None:
            for i in range(1000):
                collected.append(i)
                await asyncio.sleep(0.01)

        loop = asyncio.get_running_loop()
        loop.call_later(0.1, flag.update, {"stop": True})
        started = loop.time()
        finished, _ = await signal.run(step())
        watcher.cancel()
        return finished, collected, loop.time() - started

    finished, collected, elapsed = asyncio.run(scenario())
    assert not finished and 0 < len(collected) < 1000 and elapsed < 0.5


def test_should_stop_errors_do_not_stop_or_crash() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async def scenario() -> bool:
        signal = StopSignal(broken)
        finished, result = await signal.run(asyncio.sleep(0, result=7))
        return finished and result == 7

    assert asyncio.run(scenario())
