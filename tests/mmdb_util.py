"""Write real MaxMind DB files for the tests, in GeoLite2's record layout.

The files are written with ``mmdb-writer`` and read back by ``maxminddb`` exactly like a
downloaded GeoLite2 database, so the tests exercise the real reader. Like every database
that MaxMind's own tools did not write, they do not alias ``::ffff:0:0/96`` to the IPv4
tree: an IPv4-mapped lookup only works if the code under test unwraps the address.

This module imports nothing from ``scripts/`` (not a package); ``make_demo_geoip.py``
carries its own copy of the record layout, and ``test_geo.py`` regenerates the shipped
demo database byte for byte so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

__all__ = [
    "city_record",
    "corrupt_search_tree",
    "country_record",
    "write_city_db",
    "write_corrupt_db",
    "write_country_db",
    "write_db",
]

# English names for the codes the tests use; others fall back to the code itself.
_COUNTRY_NAMES = {
    "AU": "Australia",
    "BR": "Brazil",
    "DE": "Germany",
    "FR": "France",
    "GB": "United Kingdom",
    "JP": "Japan",
    "NL": "Netherlands",
    "US": "United States",
}
_CONTINENT_NAMES = {
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
_CONTINENTS = {
    "AU": "OC",
    "BR": "SA",
    "DE": "EU",
    "FR": "EU",
    "GB": "EU",
    "JP": "AS",
    "NL": "EU",
    "US": "NA",
}


def _country(iso_code: str) -> dict[str, Any]:
    return {"iso_code": iso_code, "names": {"en": _COUNTRY_NAMES.get(iso_code, iso_code)}}


def country_record(country: str | None, *, registered_country: str | None = None) -> dict[str, Any]:
    """A GeoLite2-Country record.

    ``registered_country`` defaults to ``country``; pass ``country=None`` with a
    ``registered_country`` for a record that only says where the block is registered.
    """
    registered = registered_country if registered_country is not None else country
    record: dict[str, Any] = {}
    code = country or registered
    if code in _CONTINENTS:
        continent = _CONTINENTS[code]
        record["continent"] = {"code": continent, "names": {"en": _CONTINENT_NAMES[continent]}}
    if country is not None:
        record["country"] = _country(country)
    if registered is not None:
        record["registered_country"] = _country(registered)
    return record


def city_record(
    country: str | None = None,
    city: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    accuracy: int | None = None,
    *,
    registered_country: str | None = None,
) -> dict[str, Any]:
    """A GeoLite2-City record: the Country fields plus ``city`` and ``location``.

    Latitude and longitude are written as doubles and ``accuracy_radius`` as uint16, the
    types GeoLite2 uses.
    """
    record = country_record(country, registered_country=registered_country)
    if city is not None:
        record["city"] = {"names": {"en": city}}
    location: dict[str, Any] = {}
    if accuracy is not None:
        location["accuracy_radius"] = int(accuracy)
    if lat is not None:
        location["latitude"] = float(lat)
    if lon is not None:
        location["longitude"] = float(lon)
    if location:
        record["location"] = location
    return record


def write_db(
    path: str | Path,
    records: Mapping[str, Any],
    *,
    database_type: str = "GeoLite2-City",
    ip_version: int = 6,
) -> Path:
    """Write ``{network: record}`` as-is (any shape, for the malformed-record tests).

    IPv6 databases keep IPv4 networks in the ``::/96`` subtree, where readers look them up.
    """
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="Flask-JWT-Shield test database",
    )
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return Path(path)


def write_city_db(
    path: str | Path,
    places: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str = "GeoLite2-City",
) -> Path:
    """Write a City database from ``{network: dict(country=, city=, lat=, lon=, accuracy=)}``.

    Every key is optional and goes to :func:`city_record`, as does ``registered_country``.
    """
    records = {network: city_record(**fields) for network, fields in places.items()}
    return write_db(path, records, database_type=database_type)


def write_country_db(
    path: str | Path,
    countries: Mapping[str, str | None],
    *,
    database_type: str = "GeoLite2-Country",
    ip_version: int = 6,
) -> Path:
    """Write a Country database from ``{network: iso_code}``."""
    records = {network: country_record(code) for network, code in countries.items()}
    return write_db(path, records, database_type=database_type, ip_version=ip_version)


def write_corrupt_db(path: str | Path) -> Path:
    """Write a file that is not a MaxMind DB (no metadata marker)."""
    path = Path(path)
    path.write_bytes(b"this is not a MaxMind DB file\n" * 64)
    return path


def corrupt_search_tree(path: str | Path) -> Path:
    """Overwrite the search tree of a written database, keeping its metadata intact.

    The file still opens; lookups then fail inside the reader ("Invalid node in search
    tree"), which is what a damaged download looks like to the code reading it.
    """
    path = Path(path)
    with maxminddb.open_database(str(path), maxminddb.MODE_MEMORY) as reader:
        tree_size = reader.metadata().search_tree_size
    data = bytearray(path.read_bytes())
    data[:tree_size] = b"\xff" * tree_size
    path.write_bytes(bytes(data))
    return path
