"""Where an address sits: behind a CDN or WAF (bundled CDN data) and where on the map (MaxMind-format
databases), as the fields ARL shows on ``ip`` and ``domain`` results.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controlplane.config import ReconConfig
from workers.recon.cdn import CdnData, CdnDataError, CdnMatch, load_cdn_data
from workers.recon.geoip import GeoLookup, load_geo_lookup


def cdn_label(match: CdnMatch | None) -> str:
    """ARL's ``cdn_name`` of a match (ARL's own name for the provider where it has one), else ""."""
    if match is None:
        return ""
    return match.provider.arl_name or match.provider.label


def ip_type(ip: str) -> str:
    """ARL's ``ip_type``: PUBLIC for a globally routable address, else PRIVATE."""
    return "PUBLIC" if ipaddress.ip_address(ip).is_global else "PRIVATE"


@dataclass
class Placement:
    """The CDN data and the GeoIP readers of a run (both built once per process)."""

    cdn: CdnData | None
    geo: GeoLookup

    @classmethod
    def from_config(cls, config: ReconConfig, fail: Callable[[str, str], None]) -> Placement:
        """Load what ``config`` names; a CDN file that cannot be read is reported through ``fail``."""
        try:
            cdn: CdnData | None = load_cdn_data(
                config.cdn_data or None, tuple(config.cdn_extra_files), tuple(config.cdn_cname_keywords)
            )
        except CdnDataError as exc:
            fail("cdn_data", str(exc))
            cdn = None
        geo = load_geo_lookup(config.geoip_city_db, config.geoip_asn_db, tuple(config.geoip_locales))
        return cls(cdn, geo)

    def domain_cdn(self, cnames: Iterable[str]) -> str:
        """``cdn_name`` of a domain by its CNAME chain ("" when none matches)."""
        return cdn_label(self.cdn.classify_cnames(cnames)) if self.cdn is not None else ""

    def ip_cdn(self, ip: str, cnames: Iterable[str] = ()) -> str:
        """``cdn_name`` of an address: its range first, then the CNAME chains of the names on it."""
        return cdn_label(self.cdn.classify(ip, cnames)) if self.cdn is not None else ""

    def ip_fields(self, ip: str, cnames: Iterable[str] = ()) -> dict[str, Any]:
        """The extra fields of an ``ip`` document: ``cdn_name``, ``ip_type``, ``geo_city``, ``geo_asn``."""
        fields: dict[str, Any] = {"cdn_name": self.ip_cdn(ip, cnames), "ip_type": ip_type(ip)}
        fields.update(self.geo.lookup(ip))
        return fields

    def unavailable(self) -> dict[str, str]:
        """The GeoIP databases that could not serve, and why (for the task's statistic)."""
        return dict(self.geo.unavailable)
