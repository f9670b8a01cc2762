"""Rebuild ``cdn.json``, the CDN/WAF data of ``workers.recon.cdn``, from its maintained sources.

Run by hand on a machine with internet access (never by the workers or the tests)::

    python -m workers.data.cdn.refresh            # fetch, build, write workers/data/cdn/cdn.json

Sources, merged in this order (the first provider to claim a CNAME suffix keeps it):

- projectdiscovery/cdncheck's generated ``sources_data.json`` (MIT): its ``cdn`` and ``waf``
  ranges and its ``common`` CNAME suffixes. Its ``cloud`` ranges are left out (a cloud VM is a
  host, not a CDN edge), and so is its ``google`` CDN entry, which is Google's whole ``goog.json``
  (Google Cloud customer ranges included); Google is added instead as ``goog.json`` minus
  ``cloud.json``, from Google's own lists.
- The providers' own published lists: Cloudflare (``ips-v4``/``ips-v6``), Fastly
  (``public-ip-list``), Amazon CloudFront (the ``CLOUDFRONT`` service in ``ip-ranges.json``),
  Google (above). These bring the IPv6 ranges cdncheck lacks.
- ``arl_cdn_info.json`` beside this file: ARL's ``app/dicts/cdn_info.json`` (names, CNAME
  suffixes, ranges of the CDNs and WAFs common in China), kept in ARL's own format because ARL
  is no longer maintained upstream; edit that file to change them.

``amazonaws.com`` from cdncheck's ``common`` list is dropped: it names EC2 and S3 hosts, which
are not CDN edges (ARL's narrower ``elb.amazonaws.com`` stays).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "cdn.json"
ARL_FILE = HERE / "arl_cdn_info.json"

URLS = {
    "cdncheck": "https://raw.githubusercontent.com/projectdiscovery/cdncheck/main/sources_data.json",
    "cloudflare_v4": "https://www.cloudflare.com/ips-v4",
    "cloudflare_v6": "https://www.cloudflare.com/ips-v6",
    "fastly": "https://api.fastly.com/public-ip-list",
    "aws": "https://ip-ranges.amazonaws.com/ip-ranges.json",
    "google": "https://www.gstatic.com/ipranges/goog.json",
    "google_cloud": "https://www.gstatic.com/ipranges/cloud.json",
}

# cdncheck's provider keys -> (our name, label, kind); "common" uses "amazon" for CloudFront.
CDNCHECK_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "cloudfront": ("cloudfront", "Amazon CloudFront", "cdn"),
    "amazon": ("cloudfront", "Amazon CloudFront", "cdn"),
    "fastly": ("fastly", "Fastly", "cdn"),
    "leaseweb": ("leaseweb", "Leaseweb CDN", "cdn"),
    "edgecast": ("edgecast", "Edgecast", "cdn"),
    "akamai": ("akamai", "Akamai", "waf"),
    "cloudflare": ("cloudflare", "Cloudflare", "waf"),
    "incapsula": ("incapsula", "Imperva Incapsula", "waf"),
    "sucuri": ("sucuri", "Sucuri", "waf"),
    "google": ("google", "Google", "cdn"),
}
SKIPPED_CDNCHECK = {"google"}
DROPPED_SUFFIXES = {"amazonaws.com"}

# ARL's names -> (our name, kind). An ARL name not listed here gets a name derived from it.
ARL_PROVIDERS: dict[str, tuple[str, str]] = {
    "百度云加速CDN": ("baidu-yunjiasu", "cdn"),
    "阿里云CDN": ("aliyun", "cdn"),
    "腾讯云CDN": ("tencent-cloud", "cdn"),
    "网宿CDN": ("wangsu", "cdn"),
    "加速乐CDN": ("jiasule", "cdn"),
    "亚马逊云CDN": ("aws-elb", "cdn"),
    "AkamaiCDN": ("akamai", "waf"),
    "帝联CDN": ("dnion", "cdn"),
    "广东网堤CDN": ("wangdi", "cdn"),
    "美橙CDN": ("meicheng", "cdn"),
    "又拍云CDN": ("upyun", "cdn"),
    "CloudflareCDN": ("cloudflare", "waf"),
    "白山云科技CDN": ("baishan", "cdn"),
    "云盾CDN": ("yundun", "cdn"),
    "360云加速CDN": ("360-yunjiasu", "cdn"),
    "奇安信网站卫士": ("qianxin-wzws", "waf"),
    "安恒玄武盾": ("dbappsecurity-xuanwudun", "waf"),
    "深信服云盾": ("sangfor", "waf"),
    "绿盟云 WAF": ("nsfocus-waf", "waf"),
    "华为云WAF": ("huawei-waf", "waf"),
    "华为云CDN": ("huawei-cdn", "cdn"),
    "360云CDN": ("360-cdn", "cdn"),
    "七牛云": ("qiniu", "cdn"),
    "京东云CDN": ("jdcloud", "cdn"),
    "腾正安全加速": ("15cdn", "cdn"),
    "蓝盾云CDN": ("bluedon", "cdn"),
}


class _Builder:
    """Accumulates providers in order, deduplicating ranges and suffixes."""

    def __init__(self) -> None:
        self.providers: dict[str, dict[str, Any]] = {}
        self.suffix_owner: dict[str, str] = {}

    def provider(self, name: str, label: str, kind: str) -> dict[str, Any]:
        """The entry of ``name``, created with ``label`` and ``kind`` if new."""
        return self.providers.setdefault(
            name, {"name": name, "label": label, "kind": kind, "cidrs": [], "cnames": []}
        )

    def add_cidrs(self, entry: dict[str, Any], cidrs: Iterable[str]) -> None:
        """Add normalised CIDRs (host bits cleared) not yet listed for the provider."""
        for text in cidrs:
            cidr = str(ipaddress.ip_network(text.strip(), strict=False))
            if cidr not in entry["cidrs"]:
                entry["cidrs"].append(cidr)

    def add_cnames(self, entry: dict[str, Any], suffixes: Iterable[str]) -> None:
        """Add CNAME suffixes no earlier provider claimed."""
        for raw in suffixes:
            suffix = raw.strip().lower().strip(".")
            if suffix and suffix not in DROPPED_SUFFIXES and suffix not in self.suffix_owner:
                self.suffix_owner[suffix] = entry["name"]
                entry["cnames"].append(suffix)


def build(
    cdncheck: dict[str, Any],
    official: dict[str, list[str]],
    arl: list[dict[str, Any]],
    sources: list[dict[str, str]],
    generated: str,
) -> dict[str, Any]:
    """The ``cdn.json`` document from cdncheck's data, official lists (name -> CIDRs) and ARL's list."""
    out = _Builder()
    for category in ("cdn", "waf"):
        for key, cidrs in cdncheck.get(category, {}).items():
            if key in SKIPPED_CDNCHECK:
                continue
            name, label, kind = CDNCHECK_PROVIDERS.get(key, (key, key, category))
            out.add_cidrs(out.provider(name, label, kind), cidrs)
    for key, suffixes in cdncheck.get("common", {}).items():
        name, label, kind = CDNCHECK_PROVIDERS.get(key, (key, key, "cdn"))
        out.add_cnames(out.provider(name, label, kind), suffixes)
    for name, cidrs in official.items():
        _, label, kind = CDNCHECK_PROVIDERS.get(name, (name, name, "cdn"))
        out.add_cidrs(out.provider(name, label, kind), cidrs)
    for item in arl:
        arl_name = str(item["name"])
        name, kind = ARL_PROVIDERS.get(arl_name, (arl_name.lower().replace(" ", "-"), "cdn"))
        entry = out.provider(name, arl_name, kind)
        entry["arl_name"] = arl_name
        out.add_cidrs(entry, item.get("ip_cidr") or [])
        out.add_cnames(entry, item.get("cname_domain") or [])
    return {
        "format": 1,
        "generated": generated,
        "sources": sources,
        "providers": list(out.providers.values()),
    }


def _fetch(url: str) -> bytes:
    """GET ``url`` (the only network access of this module); http(s) only."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"refusing to fetch {url!r}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": "controlplane-cdn-refresh"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return bytes(response.read())


def _google_edge(goog: dict[str, Any], cloud: dict[str, Any]) -> list[str]:
    """Google's ranges that are not Google Cloud customer ranges (goog.json minus cloud.json)."""

    def spans(doc: dict[str, Any], version: int) -> list[tuple[int, int]]:
        nets = (
            ipaddress.ip_network(p.get("ipv4Prefix") or p.get("ipv6Prefix")) for p in doc.get("prefixes", [])
        )
        return sorted(
            (int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version
        )

    out: list[str] = []
    for version in (4, 6):

        def emit(first: int, last: int, version: int = version) -> None:
            if version == 4:
                nets = ipaddress.summarize_address_range(
                    ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
                )
                out.extend(str(n) for n in nets)
            else:
                wide = ipaddress.summarize_address_range(
                    ipaddress.IPv6Address(first), ipaddress.IPv6Address(last)
                )
                out.extend(str(n) for n in wide)

        holes = spans(cloud, version)
        for first, last in spans(goog, version):
            cursor = first
            for low, high in holes:
                if high < cursor or low > last:
                    continue
                if low > cursor:
                    emit(cursor, low - 1)
                cursor = max(cursor, high + 1)
            if cursor <= last:
                emit(cursor, last)
    return out


def fetch_official(urls: dict[str, str]) -> dict[str, list[str]]:
    """The providers' published ranges, by provider name."""
    fastly = json.loads(_fetch(urls["fastly"]))
    aws = json.loads(_fetch(urls["aws"]))
    return {
        "cloudflare": _fetch(urls["cloudflare_v4"]).decode().split()
        + _fetch(urls["cloudflare_v6"]).decode().split(),
        "fastly": list(fastly.get("addresses", [])) + list(fastly.get("ipv6_addresses", [])),
        "cloudfront": [p["ip_prefix"] for p in aws.get("prefixes", []) if p.get("service") == "CLOUDFRONT"]
        + [p["ipv6_prefix"] for p in aws.get("ipv6_prefixes", []) if p.get("service") == "CLOUDFRONT"],
        "google": _google_edge(json.loads(_fetch(urls["google"])), json.loads(_fetch(urls["google_cloud"]))),
    }


def main(urls: dict[str, str] | None = None, output: Path = OUTPUT) -> int:
    """Fetch every source, build the document and write it to ``output``."""
    urls = urls or URLS
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    sources = [{"name": key, "url": url, "retrieved": today} for key, url in urls.items()] + [
        {"name": "arl", "url": "arl_cdn_info.json (ARL app/dicts/cdn_info.json)", "retrieved": today}
    ]
    document = build(
        json.loads(_fetch(urls["cdncheck"])),
        fetch_official(urls),
        json.loads(ARL_FILE.read_text(encoding="utf-8")),
        sources,
        today,
    )
    output.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    count = sum(len(p["cidrs"]) for p in document["providers"])
    print(f"wrote {output}: {len(document['providers'])} providers, {count} ranges", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
