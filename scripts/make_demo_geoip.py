"""Write the demo GeoIP database used by the example app.

    python scripts/make_demo_geoip.py [OUT]      (default: example_app/demo-geoip.mmdb)

The file is a small City database in GeoLite2-City's record layout (``continent``,
``country``, ``registered_country``, ``city``, ``location``) that places the address
ranges reserved for documentation (RFC 5737, RFC 3849) in far-apart cities, so that the
example app can show new-country, country-change and impossible-travel events without a
MaxMind download:

    192.0.2.0/25       Berlin, DE
    192.0.2.128/25     Munich, DE       (504 km from Berlin: travel inside one country)
    198.51.100.0/24    São Paulo, BR
    203.0.113.0/24     Tokyo, JP
    2001:db8::/32      New York, US

Each IPv4 range is also written under ``::ffff:0:0/96``, as MaxMind's own databases do,
so that other tools (``mmdblookup``) resolve IPv4-mapped addresses too. The output is
deterministic: the same mmdb-writer version always writes the same bytes.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from mmdb_writer import TreeWriter
from netaddr import IPSet  # type: ignore[import-untyped]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "example_app" / "demo-geoip.mmdb"

DATABASE_TYPE = "FlaskJWTShield-Demo-City"

# mmdb-writer stamps the current time into the metadata; a fixed epoch (2025-01-01)
# keeps the committed file reproducible.
BUILD_EPOCH = 1735689600

_CONTINENTS = {
    "EU": "Europe",
    "SA": "South America",
    "AS": "Asia",
    "NA": "North America",
}

# (network, continent, ISO code, country, city, latitude, longitude, accuracy radius km)
PLACES: tuple[tuple[str, str, str, str, str, float, float, int], ...] = (
    ("192.0.2.0/25", "EU", "DE", "Germany", "Berlin", 52.5200, 13.4050, 20),
    ("192.0.2.128/25", "EU", "DE", "Germany", "Munich", 48.1351, 11.5820, 20),
    ("198.51.100.0/24", "SA", "BR", "Brazil", "São Paulo", -23.5505, -46.6333, 50),
    ("203.0.113.0/24", "AS", "JP", "Japan", "Tokyo", 35.6762, 139.6503, 20),
    ("2001:db8::/32", "NA", "US", "United States", "New York", 40.7128, -74.0060, 50),
)


def city_record(
    continent: str,
    iso_code: str,
    country: str,
    city: str,
    latitude: float,
    longitude: float,
    accuracy_km: int,
) -> dict[str, Any]:
    """One GeoLite2-City record (floats are written as doubles, the radius as uint16)."""
    country_map = {"iso_code": iso_code, "names": {"en": country}}
    return {
        "continent": {"code": continent, "names": {"en": _CONTINENTS[continent]}},
        "country": country_map,
        "registered_country": country_map,
        "city": {"names": {"en": city}},
        "location": {
            "accuracy_radius": accuracy_km,
            "latitude": latitude,
            "longitude": longitude,
        },
    }


def build_database(out: Path, *, built_at: int = BUILD_EPOCH) -> None:
    """Write the demo database to ``out`` (atomically: a running app may be reading it).

    ``built_at`` is the build date in its metadata: the committed file keeps a fixed one
    (reproducible bytes); the example app writes its instance copy with today's.
    """
    writer = MMDBWriter(
        ip_version=6,
        # IPv4 networks go to ::/96, where readers look up IPv4 addresses.
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description="Flask-JWT-Shield demo: documentation address ranges only",
    )
    for network, continent, iso_code, country, city, latitude, longitude, accuracy in PLACES:
        record = city_record(continent, iso_code, country, city, latitude, longitude, accuracy)
        writer.insert_network(IPSet([network]), record)
        parsed = ipaddress.ip_network(network)
        if parsed.version == 4:
            mapped = f"::ffff:{parsed.network_address}/{96 + parsed.prefixlen}"
            writer.insert_network(IPSet([mapped]), record)
    meta = {
        "ip_version": writer.ip_version,
        "database_type": writer.database_type,
        "languages": writer.languages,
        "binary_format_major_version": writer.binary_format_major_version,
        "binary_format_minor_version": writer.binary_format_minor_version,
        "description": writer.description,
        "build_epoch": built_at,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    os.close(fd)
    try:
        # MMDBWriter.to_db_file would stamp time.time() as build_epoch; TreeWriter takes
        # the metadata as given.
        TreeWriter(writer.tree, meta, writer.int_type, writer.float_type).write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(argv) > 1:
        print("usage: python scripts/make_demo_geoip.py [OUT]", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else DEFAULT_OUT
    build_database(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
