"""CDN and WAF detection, for ARL's ``skip_scan_cdn_ip`` and the ``cdn_name`` of results.

An address belongs to a CDN when it lies in one of a provider's published ranges; a domain is
behind one when a name of its CNAME chain ends in one of a provider's CNAME suffixes (on a label
boundary: ``x.fastly.net`` matches ``fastly.net``, ``xfastly.net`` does not). The data is
``workers/data/cdn/cdn.json``, built by ``workers/data/cdn/refresh.py`` from projectdiscovery's
cdncheck data, the providers' own lists and ARL's CDN list (its ``sources`` say which revisions);
extra files in ARL's ``cdn_info.json`` format can be layered on top.

Address lookups are one binary search over disjoint sorted ranges per IP version, the most
specific range winning where ranges nest; CNAME lookups are one dictionary probe per label.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "cdn" / "cdn.json"

ARL_CNAME_KEYWORDS: tuple[str, ...] = ("gslb", "dns", "cache")
"""The words ARL's ``get_cdn_name_by_cname`` looks for in a CNAME no listed suffix matched.

Off by default (``cname_keywords=()``): "dns" alone matches many names that are no CDN."""

KEYWORD_PROVIDER = "CDN"
"""The provider name a keyword match reports, as ARL does."""

IpText = str | ipaddress.IPv4Address | ipaddress.IPv6Address


class CdnDataError(ValueError):
    """A CDN data file is missing, unreadable or malformed (the message names the file)."""


@dataclass(frozen=True)
class CdnProvider:
    """One provider: ``name`` (stable id, e.g. ``cloudflare``), display ``label``, ``kind`` cdn|waf."""

    name: str
    label: str
    kind: str
    arl_name: str = ""


@dataclass(frozen=True)
class CdnMatch:
    """Why something was judged to be behind a CDN.

    ``via`` is ``ip`` (``evidence`` is the range), ``cname`` (the suffix) or ``cname_keyword``
    (the keyword); ``subject`` is the address or CNAME that matched.
    """

    provider: CdnProvider
    via: str
    evidence: str
    subject: str

    @property
    def name(self) -> str:
        """The provider's name."""
        return self.provider.name


class _RangeTable:
    """Disjoint sorted ``[start, end]`` integer ranges of one IP version, each owned by a listed block."""

    def __init__(self, blocks: list[tuple[int, int, int]]) -> None:
        """Flatten nested CIDR blocks ``(first, last, owner)``: a nested block overrides its parent.

        CIDR blocks never overlap partially, so a stack of the enclosing blocks suffices. Among
        identical blocks the first listed wins.
        """
        flat: list[tuple[int, int, int]] = []
        stack: list[list[int]] = []  # [first, last, owner, next uncovered address]

        def close(block: list[int]) -> None:
            if block[3] <= block[1]:
                flat.append((block[3], block[1], block[2]))

        order = sorted(range(len(blocks)), key=lambda i: (blocks[i][0], -blocks[i][1], i))
        for index in order:
            first, last, owner = blocks[index]
            while stack and stack[-1][1] < first:
                close(stack.pop())
            if stack:
                parent = stack[-1]
                if parent[0] == first and parent[1] == last:
                    continue
                if parent[3] < first:
                    flat.append((parent[3], first - 1, parent[2]))
                parent[3] = last + 1
            stack.append([first, last, owner, first])
        while stack:
            close(stack.pop())
        flat.sort()
        merged: list[tuple[int, int, int]] = []
        for first, last, owner in flat:
            if merged and merged[-1][2] == owner and merged[-1][1] + 1 == first:
                merged[-1] = (merged[-1][0], last, owner)
            else:
                merged.append((first, last, owner))
        self.starts = [r[0] for r in merged]
        self.ranges = merged

    def find(self, value: int) -> tuple[int, int, int] | None:
        """The range holding ``value``, or None."""
        index = bisect.bisect_right(self.starts, value) - 1
        if index >= 0 and value <= self.ranges[index][1]:
            return self.ranges[index]
        return None

    def __len__(self) -> int:
        return len(self.ranges)


def normalize_name(name: str) -> str:
    """Lower-case a DNS name and drop its trailing dot."""
    return name.strip().lower().rstrip(".")


def parse_ip(ip: IpText) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of ``ip``; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) becomes IPv4."""
    address = ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class CdnData:
    """Providers with their ranges and CNAME suffixes; build once per process (:func:`load_cdn_data`).

    ``providers`` is a sequence of mappings with ``name``, ``label``, ``kind``, ``cidrs`` and
    ``cnames`` (the ``providers`` of ``cdn.json``). Earlier providers win ties. ``cname_keywords``
    turns on ARL's keyword fallback (see :data:`ARL_CNAME_KEYWORDS`).
    """

    def __init__(
        self,
        providers: Sequence[dict[str, Any]],
        cname_keywords: Iterable[str] = (),
        sources: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.providers: list[CdnProvider] = []
        self.sources = list(sources)
        self.cname_keywords = tuple(k.lower() for k in cname_keywords if k)
        self._suffixes: dict[str, int] = {}
        blocks: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        self._blocks: list[tuple[int, str]] = []  # (provider index, CIDR as listed)
        by_name: dict[str, int] = {}
        for raw in providers:
            name = str(raw["name"])
            if name not in by_name:
                by_name[name] = len(self.providers)
                self.providers.append(
                    CdnProvider(
                        name,
                        str(raw.get("label") or name),
                        str(raw.get("kind") or "cdn"),
                        str(raw.get("arl_name") or ""),
                    )
                )
            owner = by_name[name]
            for text in raw.get("cidrs") or ():
                net = ipaddress.ip_network(str(text).strip(), strict=False)
                first, last = int(net.network_address), int(net.broadcast_address)
                blocks[net.version].append((first, last, len(self._blocks)))
                self._blocks.append((owner, str(net)))
            for suffix in raw.get("cnames") or ():
                self._suffixes.setdefault(normalize_name(str(suffix)), owner)
        self._tables = {version: _RangeTable(found) for version, found in blocks.items()}
        self._keyword_provider = CdnProvider(KEYWORD_PROVIDER, KEYWORD_PROVIDER, "cdn", KEYWORD_PROVIDER)

    @property
    def range_count(self) -> int:
        """How many disjoint address ranges the lookups search (both IP versions)."""
        return sum(len(t) for t in self._tables.values())

    @property
    def suffix_count(self) -> int:
        """How many CNAME suffixes are known."""
        return len(self._suffixes)

    def classify_ip(self, ip: IpText) -> CdnMatch | None:
        """The provider whose range holds ``ip`` (IPv4 or IPv6), or None; ValueError if not an IP."""
        address = parse_ip(ip)
        found = self._tables[address.version].find(int(address))
        if found is None:
            return None
        owner, cidr = self._blocks[found[2]]
        return CdnMatch(self.providers[owner], "ip", cidr, str(address))

    def classify_cnames(self, cnames: Iterable[str]) -> CdnMatch | None:
        """The provider of the first name in ``cnames`` (a CNAME chain, in order) that matches, or None.

        Each name is matched on its longest listed suffix; with ``cname_keywords`` set, a chain no
        suffix matched is then searched for a keyword (the provider is then ``"CDN"``).
        """
        names = [normalize_name(c) for c in cnames if c and normalize_name(c)]
        for name in names:
            labels = name.split(".")
            for i in range(len(labels)):
                owner = self._suffixes.get(".".join(labels[i:]))
                if owner is not None:
                    return CdnMatch(self.providers[owner], "cname", ".".join(labels[i:]), name)
        for name in names:
            for keyword in self.cname_keywords:
                if keyword in name:
                    return CdnMatch(self._keyword_provider, "cname_keyword", keyword, name)
        return None

    def classify(self, ip: IpText | None = None, cnames: Iterable[str] = ()) -> CdnMatch | None:
        """ARL's rule for an address found through a domain: its range first, then the domain's chain."""
        if ip is not None:
            found = self.classify_ip(ip)
            if found is not None:
                return found
        return self.classify_cnames(cnames)

    def match_ip(self, ip: IpText) -> str | None:
        """The name of the provider whose range holds ``ip``, or None."""
        found = self.classify_ip(ip)
        return found.name if found else None

    def match_cnames(self, cnames: Iterable[str]) -> str | None:
        """The name of the provider a CNAME chain points to, or None."""
        found = self.classify_cnames(cnames)
        return found.name if found else None


def read_cdn_file(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Providers and sources of a data file: ``cdn.json``'s format, or ARL's ``cdn_info.json`` list."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CdnDataError(f"CDN data file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CdnDataError(f"CDN data file {path} unreadable: {exc}") from None
    if isinstance(document, list):
        providers = [
            {
                "name": str(item["name"]),
                "label": str(item["name"]),
                "arl_name": str(item["name"]),
                "kind": "cdn",
                "cidrs": item.get("ip_cidr") or [],
                "cnames": item.get("cname_domain") or [],
            }
            for item in document
            if isinstance(item, dict) and item.get("name")
        ]
        return providers, [{"name": "arl", "url": str(path)}]
    if isinstance(document, dict) and isinstance(document.get("providers"), list):
        return list(document["providers"]), list(document.get("sources") or [])
    raise CdnDataError(f"CDN data file {path} has neither a providers list nor ARL's list format")


def build_cdn_data(
    path: str | Path | None = None, extra: Iterable[str | Path] = (), cname_keywords: Iterable[str] = ()
) -> CdnData:
    """A new :class:`CdnData` from ``path`` (the bundled file by default) and ``extra`` files after it.

    Raises :class:`CdnDataError` when a file is missing or malformed, or a range is not a network.
    """
    providers: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    for item in [path or DATA_FILE, *extra]:
        found, described = read_cdn_file(item)
        providers.extend(found)
        sources.extend(described)
    try:
        return CdnData(providers, cname_keywords=cname_keywords, sources=sources)
    except (KeyError, TypeError, ValueError) as exc:
        raise CdnDataError(f"CDN data malformed: {exc}") from None


@functools.lru_cache(maxsize=8)
def load_cdn_data(
    path: str | None = None, extra: tuple[str, ...] = (), cname_keywords: tuple[str, ...] = ()
) -> CdnData:
    """The process-wide :class:`CdnData` for these arguments, built on first use (hashable arguments)."""
    return build_cdn_data(path, extra, cname_keywords)
