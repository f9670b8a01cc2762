"""CDN/WAF detection: bundled data, planted ranges and suffixes, CNAME chains through lab DNS, refresh."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.dnszone import LabDNSServer, Zone
from tests.lab.httpfiles import FileServer
from workers.data.cdn import refresh
from workers.recon.cdn import (
    ARL_CNAME_KEYWORDS,
    CdnData,
    CdnDataError,
    build_cdn_data,
    load_cdn_data,
)
from workers.recon.dns import DnsClient, DomainRecord, resolve_names

PLANTED = [
    {
        "name": "outer",
        "label": "Outer CDN",
        "kind": "cdn",
        "cidrs": ["198.51.100.0/24"],
        "cnames": ["edge.test"],
    },
    {
        "name": "inner",
        "label": "Inner WAF",
        "kind": "waf",
        "cidrs": ["198.51.100.128/25"],
        "cnames": ["cdn.edge.test"],
    },
    {
        "name": "six",
        "label": "Six",
        "kind": "cdn",
        "cidrs": ["2001:db8:cd::/48", "192.0.2.64/26"],
        "cnames": [],
    },
    {"name": "late", "label": "Late", "kind": "cdn", "cidrs": ["192.0.2.64/26"], "cnames": ["edge.test"]},
]


def test_bundled_data_names_published_cdn_ranges_ipv4_and_ipv6() -> None:
    data = load_cdn_data()
    assert data.match_ip("104.16.1.1") == "cloudflare"
    assert data.match_ip("2606:4700:10::6814:1") == "cloudflare"
    assert data.match_ip("151.101.65.140") == "fastly"
    assert data.match_ip("2a04:4e42::1") == "fastly"
    assert data.match_ip("13.32.10.10") == "cloudfront"
    assert data.match_ip("61.241.118.9") == "baidu-yunjiasu"
    for outside in ("8.8.8.8", "127.0.0.1", "192.0.2.1", "2001:db8::1", "10.0.0.1"):
        assert data.match_ip(outside) is None, outside
    found = data.classify_ip("::ffff:104.16.1.1")
    assert found is not None
    assert (found.name, found.via, found.evidence, found.provider.kind) == (
        "cloudflare",
        "ip",
        "104.16.0.0/13",
        "waf",
    )
    assert found.provider.arl_name == "CloudflareCDN"
    assert any(s.get("revision") for s in data.sources), "the bundled file says which revision it came from"


def test_bundled_data_names_cname_suffixes_of_cdncheck_and_arl() -> None:
    data = load_cdn_data()
    assert data.match_cnames(["www.example.com.edgekey.net", "e1.a.akamaiedge.net"]) == "akamai"
    assert data.match_cnames(["img.example.com.w.kunlunca.com."]) == "aliyun"
    assert data.match_cnames(["d111.CloudFront.net"]) == "cloudfront"
    assert data.match_cnames(["ec2-1-2-3-4.compute-1.amazonaws.com"]) is None, "EC2 names are no CDN"
    assert data.match_cnames(["my-lb-1.us-east-1.elb.amazonaws.com"]) == "aws-elb"
    assert data.match_cnames(["www.example.com"]) is None


def test_load_cdn_data_is_built_once_per_process() -> None:
    assert load_cdn_data() is load_cdn_data()


def test_planted_ranges_most_specific_wins_at_the_boundaries() -> None:
    data = CdnData(PLANTED)
    assert data.match_ip("198.51.100.0") == "outer"
    assert data.match_ip("198.51.100.127") == "outer"
    assert data.match_ip("198.51.100.128") == "inner"
    assert data.match_ip("198.51.100.255") == "inner"
    assert data.match_ip("198.51.101.0") is None
    assert data.match_ip("198.51.99.255") is None
    assert data.match_ip("192.0.2.100") == "six", "identical ranges: the first provider listed keeps it"
    assert data.match_ip("2001:db8:cd:ffff::1") == "six"
    assert data.match_ip("2001:db8:ce::") is None
    outer = data.classify_ip("198.51.100.5")
    assert outer is not None and outer.evidence == "198.51.100.0/24"
    with pytest.raises(ValueError):
        data.match_ip("not-an-ip")


def test_flattening_keeps_parent_ranges_on_both_sides_of_nested_blocks() -> None:
    data = CdnData(
        [
            {"name": "p", "cidrs": ["203.0.113.0/24"]},
            {"name": "c", "cidrs": ["203.0.113.64/27", "203.0.113.128/26"]},
            {"name": "g", "cidrs": ["203.0.113.72/30"]},
        ]
    )
    expected = {
        "203.0.113.63": "p",
        "203.0.113.64": "c",
        "203.0.113.71": "c",
        "203.0.113.72": "g",
        "203.0.113.75": "g",
        "203.0.113.76": "c",
        "203.0.113.96": "p",
        "203.0.113.128": "c",
        "203.0.113.192": "p",
        "203.0.113.255": "p",
    }
    assert {ip: data.match_ip(ip) for ip in expected} == expected


def test_cname_suffixes_match_on_label_boundaries_longest_first() -> None:
    data = CdnData(PLANTED)
    assert data.match_cnames(["x.edge.test"]) == "outer"
    assert data.match_cnames(["x.cdn.edge.test"]) == "inner"
    assert data.match_cnames(["EDGE.TEST."]) == "outer"
    assert data.match_cnames(["xedge.test", "edge.test.example"]) is None
    assert data.match_cnames(["plain.example", "a.cdn.edge.test", "b.edge.test"]) == "inner"
    found = data.classify_cnames(["plain.example", "a.cdn.edge.test"])
    assert found is not None and (found.via, found.evidence, found.subject) == (
        "cname",
        "cdn.edge.test",
        "a.cdn.edge.test",
    )


def test_arl_keyword_fallback_only_when_turned_on() -> None:
    assert CdnData(PLANTED).match_cnames(["www.gslb.example.net"]) is None
    data = CdnData(PLANTED, cname_keywords=ARL_CNAME_KEYWORDS)
    found = data.classify_cnames(["www.gslb.example.net"])
    assert found is not None and (found.name, found.via, found.evidence) == ("CDN", "cname_keyword", "gslb")
    assert data.match_cnames(["x.edge.test", "www.gslb.example.net"]) == "outer", "suffixes before keywords"


def test_classify_prefers_the_address_range_then_the_chain() -> None:
    data = CdnData(PLANTED)
    by_ip = data.classify("198.51.100.200", ["x.edge.test"])
    assert by_ip is not None and (by_ip.name, by_ip.via) == ("inner", "ip")
    by_chain = data.classify("127.0.0.1", ["x.edge.test"])
    assert by_chain is not None and (by_chain.name, by_chain.via) == ("outer", "cname")
    assert data.classify("127.0.0.1", []) is None


def test_arl_format_extra_file_is_layered_after_the_bundled_data(tmp_path: Path) -> None:
    extra = tmp_path / "cdn_info.json"
    extra.write_text(
        json.dumps([{"name": "实验CDN", "cname_domain": ["lab-cdn.test"], "ip_cidr": ["192.0.2.0/28"]}]),
        encoding="utf-8",
    )
    data = build_cdn_data(extra=[extra])
    assert data.match_cnames(["a.lab-cdn.test"]) == "实验CDN"
    assert data.match_ip("192.0.2.15") == "实验CDN"
    assert data.match_ip("192.0.2.16") is None
    assert data.match_ip("104.16.1.1") == "cloudflare", "the bundled data is still there"


def test_missing_or_malformed_data_file_raises_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(CdnDataError, match="not found"):
        build_cdn_data(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(CdnDataError, match="unreadable"):
        build_cdn_data(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"providers": [{"name": "x", "cidrs": ["300.1.1.0/24"]}]}), encoding="utf-8")
    with pytest.raises(CdnDataError, match="malformed"):
        build_cdn_data(wrong)


@pytest.fixture
def cdn_dns() -> Iterator[LabDNSServer]:
    """A lab DNS server where www.shop.test is behind an Akamai-style CNAME chain."""
    shop = Zone("shop.test")
    shop.add("www", "CNAME", "www.shop.test.edgekey.net")
    shop.add("plain", "A", "127.77.0.11")
    edgekey = Zone("edgekey.net")
    edgekey.add("www.shop.test", "CNAME", "e7.a.akamaiedge.net")
    akamaiedge = Zone("akamaiedge.net")
    akamaiedge.add("e7.a", "A", "127.77.0.10")
    server = LabDNSServer([shop, edgekey, akamaiedge]).start()
    yield server
    server.stop()


def test_domain_behind_a_cdn_is_found_by_its_resolved_cname_chain(cdn_dns: LabDNSServer) -> None:
    async def resolve() -> dict[str, DomainRecord]:
        client = DnsClient([cdn_dns.address], timeout=1.0)
        found: dict[str, DomainRecord] = {}
        await resolve_names(client, ["www.shop.test", "plain.shop.test"], found, source="test", concurrency=4)
        client.close()
        return found

    found = asyncio.run(resolve())
    data = load_cdn_data()
    www = found["www.shop.test"]
    assert www.cnames == ["www.shop.test.edgekey.net", "e7.a.akamaiedge.net"]
    match = data.classify(www.ips[0], www.cnames)
    assert match is not None and (match.name, match.via, match.evidence) == ("akamai", "cname", "edgekey.net")
    plain = found["plain.shop.test"]
    assert data.classify(plain.ips[0], plain.cnames) is None


def test_refresh_builds_the_data_file_from_the_sources_formats(tmp_path: Path) -> None:
    cdncheck = {
        "cdn": {"fastly": ["151.101.0.0/16"], "google": ["8.8.8.0/24"]},
        "waf": {"cloudflare": ["104.16.0.0/13"]},
        "cloud": {"aws": ["3.0.0.0/9"]},
        "common": {"amazon": ["cloudfront.net", "amazonaws.com"], "akamai": ["edgekey.net", "edgesuite.net"]},
    }
    files = {
        "/cdncheck.json": json.dumps(cdncheck),
        "/ips-v4": "104.16.0.0/13\n173.245.48.0/20\n",
        "/ips-v6": "2606:4700::/32\n",
        "/fastly.json": json.dumps({"addresses": ["151.101.0.0/16"], "ipv6_addresses": ["2a04:4e42::/32"]}),
        "/aws.json": json.dumps(
            {
                "prefixes": [
                    {"ip_prefix": "13.32.0.0/15", "service": "CLOUDFRONT"},
                    {"ip_prefix": "3.5.0.0/16", "service": "EC2"},
                ],
                "ipv6_prefixes": [{"ipv6_prefix": "2600:9000::/28", "service": "CLOUDFRONT"}],
            }
        ),
        "/goog.json": json.dumps(
            {"prefixes": [{"ipv4Prefix": "34.0.0.0/15"}, {"ipv4Prefix": "142.250.0.0/15"}]}
        ),
        "/cloud.json": json.dumps(
            {"prefixes": [{"ipv4Prefix": "34.0.0.0/16"}, {"ipv4Prefix": "34.1.0.0/16"}]}
        ),
    }
    with FileServer(files) as server:
        urls = {
            "cdncheck": server.url("/cdncheck.json"),
            "cloudflare_v4": server.url("/ips-v4"),
            "cloudflare_v6": server.url("/ips-v6"),
            "fastly": server.url("/fastly.json"),
            "aws": server.url("/aws.json"),
            "google": server.url("/goog.json"),
            "google_cloud": server.url("/cloud.json"),
        }
        output = tmp_path / "cdn.json"
        assert refresh.main(urls, output) == 0
    data = build_cdn_data(output)
    assert data.match_ip("173.245.48.1") == "cloudflare"
    assert data.match_ip("2606:4700::1") == "cloudflare"
    assert data.match_ip("2a04:4e42::1") == "fastly"
    assert data.match_ip("2600:9000::1") == "cloudfront"
    assert data.match_ip("3.5.0.1") is None, "EC2 is no CDN"
    assert data.match_ip("3.1.0.1") is None, "cdncheck's cloud ranges are left out"
    assert data.match_ip("142.250.1.1") == "google"
    assert data.match_ip("34.0.0.1") is None, "Google Cloud customer ranges are left out"
    assert data.match_ip("8.8.8.8") is None, "cdncheck's whole-of-Google entry is replaced"
    assert data.match_cnames(["x.edgesuite.net"]) == "akamai"
    assert data.match_cnames(["x.compute.amazonaws.com"]) is None
    assert data.match_cnames(["lb.elb.amazonaws.com"]) == "aws-elb", "ARL's list is merged"
    assert data.match_cnames(["x.kunlunca.com"]) == "aliyun"
    assert {s["name"] for s in data.sources} >= {"cdncheck", "aws", "arl"}
