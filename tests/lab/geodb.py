"""Small MaxMind-format (MMDB) databases written at test time, with planted networks.

Written with ``mmdb-writer`` (a test dependency) in MaxMind's record layout, so the readers see
what a GeoLite2-City or GeoLite2-ASN file would give them; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet


@dataclass(frozen=True)
class Place:
    """A planted location: what a City record for a network says."""

    country_code: str
    country: str
    region_code: str
    region: str
    city: str
    latitude: float
    longitude: float
    names_zh: Mapping[str, str] | None = None


def city_record(place: Place) -> dict[str, Any]:
    """A record laid out as GeoLite2-City's (names by locale, ISO codes, a location)."""
    zh = dict(place.names_zh or {})

    def names(en: str, key: str) -> dict[str, str]:
        return {"en": en, **({"zh-CN": zh[key]} if key in zh else {})}

    return {
        "city": {"geoname_id": MmdbU32(1), "names": names(place.city, "city")},
        "country": {
            "geoname_id": MmdbU32(2),
            "iso_code": place.country_code,
            "names": names(place.country, "country"),
        },
        "location": {"latitude": MmdbF64(place.latitude), "longitude": MmdbF64(place.longitude)},
        "subdivisions": [{"iso_code": place.region_code, "names": names(place.region, "region")}],
    }


def write_city_db(path: Path, networks: Mapping[str, Place], database_type: str = "GeoLite2-City") -> Path:
    """Write a City database mapping each CIDR of ``networks`` to its place (IPv4 and IPv6)."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"])
    for cidr, place in networks.items():
        writer.insert_network(IPSet([cidr]), city_record(place))
    writer.to_db_file(str(path))
    return path


def write_asn_db(
    path: Path, networks: Mapping[str, tuple[int, str]], database_type: str = "GeoLite2-ASN"
) -> Path:
    """Write an ASN database mapping each CIDR of ``networks`` to ``(number, organization)``."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"])
    for cidr, (number, organization) in networks.items():
        writer.insert_network(
            IPSet([cidr]),
            {"autonomous_system_number": MmdbU32(number), "autonomous_system_organization": organization},
        )
    writer.to_db_file(str(path))
    return path
