"""GeoIP/ASN lookups in ARL's fields, from MMDB files written at test time with planted networks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.geodb import Place, write_asn_db, write_city_db
from workers.recon.geoip import NOT_CONFIGURED, GeoLookup, load_geo_lookup

TOKYO = Place("JP", "Japan", "13", "Tokyo", "Tokyo", 35.6895, 139.6917, {"city": "东京", "country": "日本"})
BERLIN = Place("DE", "Germany", "BE", "Land Berlin", "Berlin", 52.52, 13.405)
NESTED = Place("FR", "France", "IDF", "Île-de-France", "Paris", 48.8566, 2.3522)

CITY_NETWORKS = {"127.91.0.0/16": TOKYO, "127.91.7.0/24": NESTED, "2001:db8:91::/48": BERLIN}
ASN_NETWORKS = {
    "127.91.0.0/16": (64500, "Planted Tokyo Net"),
    "2001:db8:91::/48": (64501, "Planted Berlin Net"),
}
ARL_CITY_FIELDS = {
    "city",
    "latitude",
    "longitude",
    "country_name",
    "country_code",
    "region_name",
    "region_code",
}


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("geoip")
    return (
        write_city_db(folder / "GeoLite2-City.mmdb", CITY_NETWORKS),
        write_asn_db(folder / "GeoLite2-ASN.mmdb", ASN_NETWORKS),
    )


def test_planted_ipv4_range_gives_arl_city_and_asn_fields(dbs: tuple[Path, Path]) -> None:
    geo = GeoLookup(*dbs)
    assert geo.unavailable == {}
    assert geo.available == ("geo_city", "geo_asn")
    result = geo.lookup("127.91.3.4")
    assert result == {
        "geo_city": {
            "city": "Tokyo",
            "latitude": 35.6895,
            "longitude": 139.6917,
            "country_name": "Japan",
            "country_code": "JP",
            "region_name": "Tokyo",
            "region_code": "13",
        },
        "geo_asn": {"number": 64500, "organization": "Planted Tokyo Net"},
    }
    assert set(result["geo_city"]) == ARL_CITY_FIELDS


def test_planted_ipv6_range_and_nested_network(dbs: tuple[Path, Path]) -> None:
    geo = GeoLookup(*dbs)
    v6 = geo.lookup("2001:db8:91:5::1")
    assert v6["geo_city"]["city"] == "Berlin"
    assert v6["geo_city"]["region_name"] == "Land Berlin"
    assert v6["geo_asn"] == {"number": 64501, "organization": "Planted Berlin Net"}
    nested = geo.lookup("127.91.7.200")
    assert (nested["geo_city"]["city"], nested["geo_city"]["country_code"]) == ("Paris", "FR")
    assert nested["geo_asn"]["number"] == 64500, "the ASN database has only the /16"
    mapped = geo.lookup("::ffff:127.91.3.4")
    assert mapped["geo_city"]["city"] == "Tokyo", "IPv4-mapped addresses are looked up as IPv4"


def test_address_outside_planted_ranges_gives_empty_fields(dbs: tuple[Path, Path]) -> None:
    geo = GeoLookup(*dbs)
    assert geo.lookup("127.92.0.1") == {"geo_city": {}, "geo_asn": {}}
    assert geo.lookup("2001:db8:92::1") == {"geo_city": {}, "geo_asn": {}}
    with pytest.raises(ValueError):
        geo.lookup("not-an-address")


def test_locales_pick_names_and_fall_back_to_english(dbs: tuple[Path, Path]) -> None:
    geo = GeoLookup(dbs[0], None, locales=["zh-CN"])
    city = geo.lookup("127.91.3.4")["geo_city"]
    assert (city["city"], city["country_name"], city["region_name"]) == ("东京", "日本", "Tokyo")


def test_unconfigured_databases_are_named_not_configured(dbs: tuple[Path, Path]) -> None:
    nothing = GeoLookup(None, "")
    assert nothing.unavailable == {"geo_city": NOT_CONFIGURED, "geo_asn": NOT_CONFIGURED}
    assert nothing.lookup("127.91.3.4") == {}
    city_only = GeoLookup(dbs[0], None)
    assert city_only.unavailable == {"geo_asn": NOT_CONFIGURED}
    assert set(city_only.lookup("127.91.3.4")) == {"geo_city"}


def test_missing_and_corrupt_files_are_unreadable_with_the_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00not an mmdb file\xff" * 64)
    geo = GeoLookup(tmp_path / "absent.mmdb", corrupt)
    assert geo.unavailable["geo_city"] == f"unreadable: {tmp_path / 'absent.mmdb'} not found"
    assert geo.unavailable["geo_asn"].startswith(f"unreadable: {corrupt}: ")
    assert geo.lookup("127.91.3.4") == {}


def test_database_of_the_wrong_kind_is_reported(dbs: tuple[Path, Path]) -> None:
    city, asn = dbs
    swapped = GeoLookup(asn, city)
    assert swapped.unavailable == {
        "geo_city": f"unreadable: {asn} is GeoLite2-ASN, not a City or Country database",
        "geo_asn": f"unreadable: {city} is GeoLite2-City, not an ASN database",
    }


def test_country_database_fills_country_fields_only(tmp_path: Path) -> None:
    path = write_city_db(tmp_path / "GeoLite2-Country.mmdb", {"127.93.0.0/16": TOKYO}, "GeoLite2-Country")
    geo = GeoLookup(path)
    assert geo.database_types == {"geo_city": "GeoLite2-Country"}
    city = geo.lookup("127.93.1.1")["geo_city"]
    assert (city["country_code"], city["country_name"]) == ("JP", "Japan")


def test_closed_lookup_reports_closed_and_fills_nothing(dbs: tuple[Path, Path]) -> None:
    geo = GeoLookup(*dbs)
    geo.close()
    assert geo.unavailable == {"geo_city": "closed", "geo_asn": "closed"}
    assert geo.lookup("127.91.3.4") == {}


def test_load_geo_lookup_opens_once_per_process(dbs: tuple[Path, Path]) -> None:
    first = load_geo_lookup(str(dbs[0]), str(dbs[1]))
    assert first is load_geo_lookup(str(dbs[0]), str(dbs[1]))
    assert first.lookup("127.91.3.4")["geo_asn"]["number"] == 64500
    assert load_geo_lookup().unavailable == {"geo_city": NOT_CONFIGURED, "geo_asn": NOT_CONFIGURED}
