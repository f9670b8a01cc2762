"""IP geolocation and AS numbers from MaxMind-format (MMDB) databases, in ARL's result fields.

Two databases, each optional: a City (or Country) database such as GeoLite2-City, and an ASN
database such as GeoLite2-ASN (any MMDB with MaxMind's record layout works: DB-IP's lite files
do). The fields are ARL's (``app/utils/ip.py``): ``geo_city`` holds ``city``, ``latitude``,
``longitude``, ``country_name``, ``country_code``, ``region_name`` and ``region_code``;
``geo_asn`` holds ``number`` and ``organization``. A database that is not configured, missing or
unreadable is never skipped silently: :attr:`GeoLookup.unavailable` names it with the reason.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import maxminddb

CITY = "geo_city"
ASN = "geo_asn"
NOT_CONFIGURED = "not configured"

IpText = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def _name(names: Any, locales: tuple[str, ...]) -> str | None:
    """The first of ``locales`` present in a MaxMind ``names`` map (then English), or None."""
    if not isinstance(names, Mapping):
        return None
    for locale in (*locales, "en"):
        value = names.get(locale)
        if isinstance(value, str) and value:
            return value
    return None


def city_fields(record: Mapping[str, Any] | None, locales: tuple[str, ...] = ("en",)) -> dict[str, Any]:
    """ARL's ``geo_city`` fields from a City/Country record ({} when there is no record)."""
    if not record:
        return {}
    country = record.get("country") or record.get("registered_country") or {}
    location = record.get("location") or {}
    subdivisions = record.get("subdivisions") or []
    region = subdivisions[-1] if subdivisions else {}
    return {
        "city": _name((record.get("city") or {}).get("names"), locales),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
        "country_name": _name(country.get("names"), locales),
        "country_code": country.get("iso_code"),
        "region_name": _name(region.get("names"), locales),
        "region_code": region.get("iso_code"),
    }


def asn_fields(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """ARL's ``geo_asn`` fields from an ASN (or ISP) record ({} when there is no record)."""
    if not record or record.get("autonomous_system_number") is None:
        return {}
    return {
        "number": record.get("autonomous_system_number"),
        "organization": record.get("autonomous_system_organization"),
    }


def _accepts(kind: str, database_type: str) -> bool:
    """Whether a database of ``database_type`` can serve ``kind`` (ASN data vs. locations)."""
    has_asn = "asn" in database_type.lower() or "isp" in database_type.lower()
    return has_asn if kind == ASN else not has_asn


class GeoLookup:
    """Readers of the configured databases; build once per process (:func:`load_geo_lookup`).

    ``city_path``/``asn_path`` may be None or "" (not configured). Opening never raises: a
    database that cannot serve is left out of :meth:`lookup` and listed in :attr:`unavailable`.
    ``locales`` picks the language of names (MaxMind's codes, e.g. ``zh-CN``), English otherwise.
    """

    def __init__(
        self,
        city_path: str | Path | None = None,
        asn_path: str | Path | None = None,
        locales: Iterable[str] = ("en",),
    ) -> None:
        self.locales = tuple(locales) or ("en",)
        self.unavailable: dict[str, str] = {}
        self.database_types: dict[str, str] = {}
        self._readers: dict[str, maxminddb.Reader] = {}
        for kind, path in ((CITY, city_path), (ASN, asn_path)):
            self._open(kind, path)

    def _open(self, kind: str, path: str | Path | None) -> None:
        """Open one database, or record why it cannot serve ``kind``."""
        if not path:
            self.unavailable[kind] = NOT_CONFIGURED
            return
        try:
            reader = maxminddb.open_database(str(path))
        except FileNotFoundError:
            self.unavailable[kind] = f"unreadable: {path} not found"
            return
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            self.unavailable[kind] = f"unreadable: {path}: {exc}"
            return
        database_type = str(reader.metadata().database_type)
        if not _accepts(kind, database_type):
            reader.close()
            wanted = "an ASN" if kind == ASN else "a City or Country"
            self.unavailable[kind] = f"unreadable: {path} is {database_type}, not {wanted} database"
            return
        self._readers[kind] = reader
        self.database_types[kind] = database_type

    @property
    def available(self) -> tuple[str, ...]:
        """The fields :meth:`lookup` fills (``geo_city``, ``geo_asn``)."""
        return tuple(self._readers)

    def _get(self, kind: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
        reader = self._readers[kind]
        try:
            return reader.get(address)
        except ValueError:
            return None  # an IPv6 address asked of an IPv4-only database

    def lookup(self, ip: IpText) -> dict[str, dict[str, Any]]:
        """``{"geo_city": {...}, "geo_asn": {...}}`` for the available databases.

        A field is ``{}`` when its database has no record for ``ip``; an unavailable database's
        field is absent (see :attr:`unavailable`). An IPv4-mapped IPv6 address is looked up as IPv4.
        Raises ValueError when ``ip`` is not an address.
        """
        address = ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        out: dict[str, dict[str, Any]] = {}
        if CITY in self._readers:
            out[CITY] = city_fields(self._get(CITY, address), self.locales)
        if ASN in self._readers:
            out[ASN] = asn_fields(self._get(ASN, address))
        return out

    def close(self) -> None:
        """Close the readers (lookups afterwards find nothing available)."""
        for kind, reader in self._readers.items():
            reader.close()
            self.unavailable[kind] = "closed"
        self._readers.clear()


@functools.lru_cache(maxsize=4)
def load_geo_lookup(city_path: str = "", asn_path: str = "", locales: tuple[str, ...] = ("en",)) -> GeoLookup:
    """The process-wide :class:`GeoLookup` for these settings, opened on first use."""
    return GeoLookup(city_path or None, asn_path or None, locales)
