"""GeoIP: the reader, its traps (records, addresses, reloads) and the travel arithmetic.

Every database here is a real .mmdb file written by mmdb-writer (tests/mmdb_util.py) and
read by maxminddb; time is frozen by replacing time.time, never slept through.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import Protocol

import maxminddb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_jwt_shield.geo import EARTH_RADIUS_KM
from flask_jwt_shield.geo import GeoIPDatabase
from flask_jwt_shield.geo import GeoIPError
from flask_jwt_shield.geo import Location
from flask_jwt_shield.geo import distance_km
from flask_jwt_shield.geo import travel_speed_kmh
from tests.mmdb_util import city_record
from tests.mmdb_util import corrupt_search_tree
from tests.mmdb_util import write_city_db
from tests.mmdb_util import write_corrupt_db
from tests.mmdb_util import write_country_db
from tests.mmdb_util import write_db

ROOT = Path(__file__).resolve().parent.parent
DEMO_DB = ROOT / "example_app" / "demo-geoip.mmdb"

PLACES: dict[str, dict[str, Any]] = {
    "192.0.2.0/24": dict(country="DE", city="Berlin", lat=52.52, lon=13.405, accuracy=20),
    "198.51.100.0/24": dict(country="BR", city="São Paulo", lat=-23.55, lon=-46.63, accuracy=50),
    "203.0.113.0/24": dict(country="JP", city="Tokyo", lat=35.68, lon=139.69, accuracy=5),
    "2001:db8::/32": dict(country="US", city="New York", lat=40.71, lon=-74.01, accuracy=50),
    "8.8.8.0/24": dict(country="US", city="Mountain View", lat=37.39, lon=-122.08, accuracy=1000),
}

BERLIN = Location("DE", "Berlin", 52.52, 13.405, 20.0)
MUNICH = Location("DE", "Munich", 48.1351, 11.582, 20.0)
TOKYO = Location("JP", "Tokyo", 35.6762, 139.6503, 20.0)
GERMANY = Location("DE")  # what a Country database knows


class Clock(Protocol):
    """The shared ``clock`` fixture (tests/conftest.py): it replaces ``time.time``."""

    def advance(self, seconds: float) -> None: ...


@pytest.fixture
def open_db(tmp_path: Path) -> Iterator[Callable[..., GeoIPDatabase]]:
    """Open databases that are closed again after the test."""
    opened: list[GeoIPDatabase] = []

    def open_db(path: Path, **kwargs: Any) -> GeoIPDatabase:
        db = GeoIPDatabase(str(path), **kwargs)
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.close()


@pytest.fixture
def city_db(tmp_path: Path, open_db: Callable[..., GeoIPDatabase]) -> GeoIPDatabase:
    return open_db(write_city_db(tmp_path / "city.mmdb", PLACES))


@pytest.fixture
def reader_gets(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every address that reaches maxminddb's Reader.get (the cache's misses)."""
    calls: list[object] = []
    original = maxminddb.Reader.get

    def get(self: maxminddb.Reader, ip_address: Any) -> Any:
        calls.append(ip_address)
        return original(self, ip_address)

    monkeypatch.setattr(maxminddb.Reader, "get", get)
    return calls


def raw_get(path: str | Path, ip: str) -> Any:
    """What maxminddb itself answers, without the module under test."""
    with maxminddb.open_database(str(path)) as reader:
        return reader.get(ip)


def country_at(db: GeoIPDatabase, ip: str) -> str | None:
    location = db.lookup(ip)
    return location.country if location is not None else None


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write a new file next to ``path`` and rename it over (what geoipupdate does)."""
    tmp = path.with_name(path.name + ".new")
    write(tmp)
    os.replace(tmp, path)


# --- records -------------------------------------------------------------------------


def test_city_record_fields(city_db: GeoIPDatabase) -> None:
    location = city_db.lookup("203.0.113.5")
    assert location == Location("JP", "Tokyo", 35.68, 139.69, 5.0)
    assert location is not None and location.has_coordinates
    assert isinstance(location.accuracy_km, float)
    assert location.as_dict() == {
        "country": "JP",
        "city": "Tokyo",
        "latitude": 35.68,
        "longitude": 139.69,
        "accuracy_km": 5.0,
    }
    assert city_db.lookup("198.51.100.200") == Location("BR", "São Paulo", -23.55, -46.63, 50.0)
    assert city_db.lookup("2001:db8:1234::1") == Location("US", "New York", 40.71, -74.01, 50.0)


def test_address_not_in_database(city_db: GeoIPDatabase) -> None:
    assert city_db.lookup("9.9.9.9") is None
    assert city_db.lookup("2606:4700::1111") is None


def test_database_type_and_coordinates(
    tmp_path: Path, city_db: GeoIPDatabase, open_db: Callable[..., GeoIPDatabase]
) -> None:
    assert city_db.database_type == "GeoLite2-City"
    assert city_db.has_coordinates
    country_db = open_db(write_country_db(tmp_path / "country.mmdb", {"192.0.2.0/24": "DE"}))
    assert country_db.database_type == "GeoLite2-Country"
    assert not country_db.has_coordinates
    location = country_db.lookup("192.0.2.1")
    assert location == GERMANY
    assert location is not None and not location.has_coordinates


def test_missing_country(tmp_path: Path, open_db: Callable[..., GeoIPDatabase]) -> None:
    db = open_db(
        write_city_db(
            tmp_path / "c.mmdb",
            {
                # coordinates but no country (satellite/anycast blocks look like this)
                "192.0.2.0/25": dict(lat=10.0, lon=20.0, accuracy=1000),
                # neither: nothing to go on
                "192.0.2.128/25": dict(city="Nowhere"),
            },
        )
    )
    assert db.lookup("192.0.2.1") == Location(None, None, 10.0, 20.0, 1000.0)
    assert db.lookup("192.0.2.200") is None


def test_registered_country_is_never_the_country(tmp_path: Path, open_db: Callable[..., GeoIPDatabase]) -> None:
    # registered_country is where the block is registered (e.g. a US cloud provider's
    # range used in Japan), not where the client is.
    db = open_db(
        write_city_db(
            tmp_path / "c.mmdb",
            {
                "192.0.2.0/26": dict(registered_country="US"),
                "192.0.2.64/26": dict(registered_country="US", lat=35.68, lon=139.69),
                "192.0.2.128/26": dict(country="JP", registered_country="US"),
            },
        )
    )
    raw = raw_get(db.path, "192.0.2.1")
    assert isinstance(raw, dict) and "country" not in raw and "registered_country" in raw
    assert db.lookup("192.0.2.1") is None
    located = db.lookup("192.0.2.65")
    assert located is not None and located.country is None and located.has_coordinates
    assert db.lookup("192.0.2.130") == Location("JP")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"country": "JP"}, None),  # flat string, not GeoLite2's map
        ({"country": {"iso_code": 81}}, None),
        ({"country": {"iso_code": "JPN"}}, None),
        ({"country": {"iso_code": ""}}, None),
        ({"country": {"iso_code": "jp"}}, Location("JP")),
        ({"country": ["JP"]}, None),
        ({"country": {"iso_code": "JP"}, "city": {"names": "Tokyo"}}, Location("JP")),
        ({"country": {"iso_code": "JP"}, "city": {"names": {"en": 5}}}, Location("JP")),
        ({"country": {"iso_code": "JP"}, "city": {"names": {"de": "Tokio"}}}, Location("JP")),
        ({"country": {"iso_code": "JP"}, "location": "Tokyo"}, Location("JP")),
        (
            {"country": {"iso_code": "JP"}, "location": {"latitude": "35.6", "longitude": 139.6}},
            Location("JP"),
        ),
        (
            {"country": {"iso_code": "JP"}, "location": {"latitude": 35.6}},
            Location("JP"),
        ),
        (
            {"country": {"iso_code": "JP"}, "location": {"latitude": 135.6, "longitude": 9.0}},
            Location("JP"),
        ),
        (
            {"country": {"iso_code": "JP"}, "location": {"latitude": True, "longitude": 9.0}},
            Location("JP"),
        ),
        (  # integer coordinates are still coordinates
            {"country": {"iso_code": "JP"}, "location": {"latitude": 35, "longitude": 139}},
            Location("JP", None, 35.0, 139.0, None),
        ),
        (
            {
                "country": {"iso_code": "JP"},
                "location": {"latitude": 35.6, "longitude": 139.6, "accuracy_radius": "5"},
            },
            Location("JP", None, 35.6, 139.6, None),
        ),
        (
            {
                "country": {"iso_code": "JP"},
                "location": {"latitude": 35.6, "longitude": 139.6, "accuracy_radius": -5},
            },
            Location("JP", None, 35.6, 139.6, None),
        ),
        ("Japan", None),
        (["JP"], None),
        (81, None),
        ({}, None),
    ],
)
def test_malformed_records_never_raise(
    tmp_path: Path,
    open_db: Callable[..., GeoIPDatabase],
    record: Any,
    expected: Location | None,
) -> None:
    db = open_db(write_db(tmp_path / "odd.mmdb", {"203.0.113.0/24": record}))
    assert db.lookup("203.0.113.9") == expected


# --- addresses -----------------------------------------------------------------------


@pytest.fixture
def everywhere_db(tmp_path: Path, open_db: Callable[..., GeoIPDatabase]) -> GeoIPDatabase:
    """A database with a record for every address, IPv4 (under ::/96) and IPv6 alike."""
    record = city_record("NL", "Amsterdam", 52.37, 4.9, 100)
    return open_db(write_db(tmp_path / "all.mmdb", {"::/1": record, "8000::/1": record}))


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "127.0.0.1",
        "127.8.8.8",
        "169.254.1.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",  # benchmarking
        "192.0.0.8",  # IETF protocol assignments
        "::",
        "::1",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.0.1",
    ],
)
def test_non_routable_addresses_have_no_location(everywhere_db: GeoIPDatabase, ip: str) -> None:
    # The database does have a record for the address: None comes from the filter.
    assert raw_get(everywhere_db.path, ip.split("%")[0]) is not None
    assert everywhere_db.lookup(ip) is None


@pytest.mark.parametrize(
    "ip",
    [
        "192.0.2.1",
        "198.51.100.254",
        "203.0.113.5",
        "2001:db8::1",
        "2001:db8:ffff::1",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:203.0.113.5",
        "::ffff:8.8.8.8",
    ],
)
def test_routable_and_documentation_addresses_resolve(everywhere_db: GeoIPDatabase, ip: str) -> None:
    location = everywhere_db.lookup(ip)
    assert location is not None and location.country == "NL"


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(city_db: GeoIPDatabase) -> None:
    # mmdb-writer does not alias ::ffff:0:0/96 to the IPv4 tree: the raw reader misses.
    assert raw_get(city_db.path, "::ffff:203.0.113.5") is None
    assert city_db.lookup("::ffff:203.0.113.5") == city_db.lookup("203.0.113.5")
    assert city_db.lookup("::FFFF:cb00:7105") == city_db.lookup("203.0.113.5")


@pytest.mark.parametrize(
    "ip",
    [
        None,
        "",
        " ",
        "not-an-ip",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "203.0.113.5 ",
        " 203.0.113.5",
        "203.0.113.5/24",
        "203.0.113.5:443",
        "[2001:db8::1]",
        "2001:db8::1::1",
        "0x7f.0.0.1",
        "२०३.0.113.5",
        "203.0.113.5\x00",
        "unknown",
        "x" * 10_000,
        3405803781,  # an int is an address to ipaddress, but not what lookup takes
        b"203.0.113.5",
    ],
)
def test_garbage_is_no_location(city_db: GeoIPDatabase, ip: Any) -> None:
    assert city_db.lookup(ip) is None


@given(st.text(max_size=60))
def test_lookup_never_raises(text: str) -> None:
    db = GeoIPDatabase(str(DEMO_DB))
    try:
        assert db.lookup(text) is None or isinstance(db.lookup(text), Location)
    finally:
        db.close()


def test_ipv6_in_ipv4_only_database(tmp_path: Path, open_db: Callable[..., GeoIPDatabase]) -> None:
    db = open_db(write_country_db(tmp_path / "v4.mmdb", {"192.0.2.0/24": "DE"}, ip_version=4))
    assert db.lookup("192.0.2.1") == GERMANY
    assert db.lookup("::ffff:192.0.2.1") == GERMANY
    assert db.lookup("2001:db8::1") is None  # maxminddb would raise ValueError


# --- cache ---------------------------------------------------------------------------


def test_cache_hits_skip_the_reader(city_db: GeoIPDatabase, reader_gets: list[object]) -> None:
    first = city_db.lookup("2001:db8::1")
    assert first is not None
    assert city_db.lookup("2001:DB8:0:0::1") is first  # same address, other spelling
    assert city_db.lookup("9.9.9.9") is None  # "no location" is cached too
    assert city_db.lookup("9.9.9.9") is None
    assert len(reader_gets) == 2


def test_cache_is_bounded_lru(tmp_path: Path, open_db: Callable[..., GeoIPDatabase], reader_gets: list[object]) -> None:
    db = open_db(write_city_db(tmp_path / "c.mmdb", PLACES), cache_size=2)
    db.lookup("192.0.2.1")
    db.lookup("203.0.113.1")
    db.lookup("192.0.2.1")  # hit; 203.0.113.1 is now the least recently used
    db.lookup("8.8.8.8")  # evicts 203.0.113.1
    assert len(reader_gets) == 3
    db.lookup("192.0.2.1")
    assert len(reader_gets) == 3
    db.lookup("203.0.113.1")
    assert len(reader_gets) == 4


def test_cache_size_zero_disables_the_cache(
    tmp_path: Path, open_db: Callable[..., GeoIPDatabase], reader_gets: list[object]
) -> None:
    db = open_db(write_city_db(tmp_path / "c.mmdb", PLACES), cache_size=0)
    db.lookup("192.0.2.1")
    db.lookup("192.0.2.1")
    assert len(reader_gets) == 2


def test_filtered_addresses_never_reach_the_reader(city_db: GeoIPDatabase, reader_gets: list[object]) -> None:
    for ip in ("10.0.0.1", "::1", "garbage", None):
        assert city_db.lookup(ip) is None
    assert reader_gets == []


# --- reloading -----------------------------------------------------------------------

TOKYO_PLACES = {"203.0.113.0/24": dict(country="JP", city="Tokyo", lat=35.68, lon=139.69)}
PARIS_PLACES = {
    "203.0.113.0/24": dict(country="FR", city="Paris", lat=48.86, lon=2.35),
    "9.9.9.0/24": dict(country="CH", city="Zurich", lat=47.37, lon=8.54),
}


def test_replaced_file_is_used_within_the_check_interval(
    tmp_path: Path, clock: Clock, open_db: Callable[..., GeoIPDatabase]
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path, check_interval=5.0)
    assert db.lookup("203.0.113.5") == Location("JP", "Tokyo", 35.68, 139.69)
    assert db.lookup("9.9.9.9") is None  # cached as "no location"

    replace_atomically(path, lambda p: write_city_db(p, PARIS_PLACES))
    clock.advance(4.9)
    assert country_at(db, "203.0.113.5") == "JP"
    clock.advance(0.1)
    assert db.lookup("203.0.113.5") == Location("FR", "Paris", 48.86, 2.35)
    assert db.lookup("9.9.9.9") == Location("CH", "Zurich", 47.37, 8.54)  # cache emptied


def test_file_overwritten_in_place_is_reloaded(
    tmp_path: Path, clock: Clock, open_db: Callable[..., GeoIPDatabase]
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path)
    inode = path.stat().st_ino
    assert country_at(db, "203.0.113.5") == "JP"
    write_city_db(path, PARIS_PLACES)  # same inode: only size/mtime tell
    assert path.stat().st_ino == inode
    clock.advance(5)
    assert country_at(db, "203.0.113.5") == "FR"


def test_database_type_follows_a_reload(tmp_path: Path, clock: Clock, open_db: Callable[..., GeoIPDatabase]) -> None:
    path = write_country_db(tmp_path / "geo.mmdb", {"203.0.113.0/24": "JP"})
    db = open_db(path)
    assert not db.has_coordinates
    replace_atomically(path, lambda p: write_city_db(p, TOKYO_PLACES))
    clock.advance(5)
    assert db.lookup("203.0.113.5") == Location("JP", "Tokyo", 35.68, 139.69)
    assert db.has_coordinates


def test_unchanged_file_is_not_reopened(
    tmp_path: Path,
    clock: Clock,
    open_db: Callable[..., GeoIPDatabase],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = open_db(write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES))
    opens: list[object] = []
    original = maxminddb.open_database

    def open_database(*args: Any) -> maxminddb.Reader:
        opens.append(args)
        return original(*args)

    monkeypatch.setattr(maxminddb, "open_database", open_database)
    for _ in range(3):
        clock.advance(10)
        db.lookup("203.0.113.5")
    assert opens == []


@pytest.mark.parametrize("how", ["atomic", "in-place"])
def test_corrupt_replacement_keeps_the_old_data(
    tmp_path: Path,
    clock: Clock,
    open_db: Callable[..., GeoIPDatabase],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path)
    assert country_at(db, "203.0.113.5") == "JP"

    if how == "atomic":
        replace_atomically(path, write_corrupt_db)
    else:
        write_corrupt_db(path)
    caplog.set_level(logging.WARNING, logger="flask_jwt_shield")
    clock.advance(5)
    assert country_at(db, "203.0.113.5") == "JP"
    assert country_at(db, "203.0.113.6") == "JP"  # uncached
    warnings = [r for r in caplog.records if r.name == "flask_jwt_shield"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(path) in warnings[0].getMessage()

    clock.advance(5)  # the same bad file is reported once, not every interval
    db.lookup("203.0.113.7")
    assert len([r for r in caplog.records if r.name == "flask_jwt_shield"]) == 1

    replace_atomically(path, lambda p: write_city_db(p, PARIS_PLACES))  # fixed
    clock.advance(5)
    assert country_at(db, "203.0.113.5") == "FR"


def test_deleted_file_keeps_the_old_data(
    tmp_path: Path,
    clock: Clock,
    open_db: Callable[..., GeoIPDatabase],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path)
    path.unlink()
    caplog.set_level(logging.WARNING, logger="flask_jwt_shield")
    clock.advance(5)
    assert country_at(db, "203.0.113.5") == "JP"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    write_city_db(path, PARIS_PLACES)
    clock.advance(5)
    assert country_at(db, "203.0.113.5") == "FR"


def test_clock_going_backwards_still_checks(
    tmp_path: Path, clock: Clock, open_db: Callable[..., GeoIPDatabase]
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path)
    replace_atomically(path, lambda p: write_city_db(p, PARIS_PLACES))
    clock.advance(-3600)
    assert country_at(db, "203.0.113.5") == "FR"


def test_lookups_from_many_threads_during_reloads(
    tmp_path: Path, clock: Clock, open_db: Callable[..., GeoIPDatabase]
) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", TOKYO_PLACES)
    db = open_db(path, cache_size=8)
    seen: set[str | None] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(offset: int) -> None:
        try:
            while not stop.is_set():
                for host in range(offset, 256, 4):
                    seen.add(country_at(db, f"203.0.113.{host}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(20):
            places = PARIS_PLACES if round_ % 2 else TOKYO_PLACES
            replace_atomically(path, functools.partial(write_city_db, places=places))
            clock.advance(5)
            country_at(db, "203.0.113.1")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert seen <= {"JP", "FR"}
    assert country_at(db, "203.0.113.200") == "FR"  # the last file written


def test_damaged_search_tree_answers_none_and_logs_once(
    tmp_path: Path, open_db: Callable[..., GeoIPDatabase], caplog: pytest.LogCaptureFixture
) -> None:
    db = open_db(corrupt_search_tree(write_city_db(tmp_path / "geo.mmdb", PLACES)))
    caplog.set_level(logging.WARNING, logger="flask_jwt_shield")
    assert db.lookup("203.0.113.5") is None
    assert db.lookup("192.0.2.1") is None
    assert db.lookup("2001:db8::1") is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_close(city_db: GeoIPDatabase) -> None:
    assert city_db.lookup("203.0.113.5") is not None
    city_db.close()
    city_db.close()
    assert city_db.lookup("203.0.113.5") is None
    assert city_db.database_type == ""


# --- opening -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "GeoLite2-City.mmdb"
    with pytest.raises(GeoIPError) as info:
        GeoIPDatabase(str(path))
    message = str(info.value)
    assert str(path) in message and "does not exist" in message
    assert "JWT_SHIELD_GEOIP_DATABASE" in message and "geoipupdate" in message
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "write",
    [
        write_corrupt_db,
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(write_city_db(p, PLACES).read_bytes()[:200]),  # truncated
    ],
    ids=["garbage", "empty", "truncated"],
)
def test_corrupt_file(tmp_path: Path, write: Callable[[Path], object]) -> None:
    path = tmp_path / "geo.mmdb"
    write(path)
    with pytest.raises(GeoIPError, match="not a valid MaxMind DB") as info:
        GeoIPDatabase(str(path))
    assert str(path) in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(GeoIPError, match="is a directory") as info:
        GeoIPDatabase(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    path = write_city_db(tmp_path / "geo.mmdb", PLACES)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(GeoIPError, match="cannot be read") as info:
            GeoIPDatabase(str(path))
        assert str(path) in str(info.value)
        return
    # root reads any file: try as an unprivileged user in a child process instead
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            GeoIPDatabase(str(path))
            code = 1
        except GeoIPError as exc:
            code = 0 if "cannot be read" in str(exc) and str(path) in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("kwargs", [{"check_interval": -1}, {"check_interval": math.nan}, {"cache_size": -1}])
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GeoIPDatabase(str(write_city_db(tmp_path / "geo.mmdb", PLACES)), **kwargs)


# --- distance and speed --------------------------------------------------------------


def test_distance_berlin_tokyo() -> None:
    distance = distance_km(BERLIN, TOKYO)
    assert distance is not None and 8900 < distance < 8950
    assert distance == pytest.approx(distance_km(TOKYO, BERLIN))


def test_distance_berlin_munich() -> None:
    assert distance_km(BERLIN, MUNICH) == pytest.approx(504, abs=2)


def test_distance_edge_cases() -> None:
    assert distance_km(BERLIN, BERLIN) == 0
    north, south = Location(latitude=90.0, longitude=0.0), Location(latitude=-90.0, longitude=0.0)
    assert distance_km(north, south) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert distance_km(BERLIN, GERMANY) is None
    assert distance_km(GERMANY, BERLIN) is None


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-90, 90),
    st.floats(-180, 180),
)
def test_distance_is_a_bounded_symmetric_metric(lat_a: float, lon_a: float, lat_b: float, lon_b: float) -> None:
    a = Location(latitude=lat_a, longitude=lon_a)
    b = Location(latitude=lat_b, longitude=lon_b)
    ab, ba = distance_km(a, b), distance_km(b, a)
    assert ab is not None and ba is not None
    assert 0 <= ab <= math.pi * EARTH_RADIUS_KM + 1e-6
    assert ab == pytest.approx(ba, abs=1e-6)


def test_travel_speed_subtracts_both_accuracy_radii() -> None:
    distance = distance_km(BERLIN, MUNICH)
    assert distance is not None
    # 504 km, less 20 km at either end, in one hour
    assert travel_speed_kmh(BERLIN, 0.0, MUNICH, 3600.0) == pytest.approx(distance - 40)
    assert travel_speed_kmh(BERLIN, 0.0, MUNICH, 1800.0) == pytest.approx((distance - 40) * 2)
    exact_berlin = Location("DE", "Berlin", 52.52, 13.405)
    exact_munich = Location("DE", "Munich", 48.1351, 11.582)
    assert travel_speed_kmh(exact_berlin, 0.0, exact_munich, 3600.0) == pytest.approx(distance)


def test_berlin_to_tokyo_in_an_hour_is_impossible() -> None:
    speed = travel_speed_kmh(BERLIN, 1000.0, TOKYO, 1000.0 + 3600)
    assert speed is not None and speed > 805  # JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH default


@pytest.mark.parametrize("seconds", [0.0, -60.0])
def test_travel_speed_with_no_time_between(seconds: float) -> None:
    assert travel_speed_kmh(BERLIN, 500.0, TOKYO, 500.0 + seconds) == math.inf


def test_travel_within_the_accuracy_radius_is_no_travel() -> None:
    here = Location("DE", "Berlin", 52.52, 13.405, 100.0)
    nearby = Location("DE", "Potsdam", 52.39, 13.06, 100.0)
    assert travel_speed_kmh(here, 0.0, nearby, 0.0) == 0.0
    assert travel_speed_kmh(here, 0.0, here, 0.0) == 0.0


def test_travel_speed_needs_coordinates() -> None:
    assert travel_speed_kmh(GERMANY, 0.0, BERLIN, 3600.0) is None
    assert travel_speed_kmh(BERLIN, 0.0, Location(), 3600.0) is None


# --- Location ------------------------------------------------------------------------


def test_location_round_trips_through_a_dict() -> None:
    for location in (BERLIN, GERMANY, Location(), Location(None, None, 1.5, -2.5, None)):
        assert Location.from_dict(location.as_dict()) == location


def test_location_from_bad_dict() -> None:
    data: dict[str, object] = {
        "country": "Germany",
        "city": 5,
        "latitude": "52",
        "longitude": 13.4,
        "accuracy_km": 20,
    }
    assert Location.from_dict(data) == Location()
    assert Location.from_dict({}) == Location()


def test_location_is_frozen() -> None:
    with pytest.raises(AttributeError):
        BERLIN.country = "FR"  # type: ignore[misc]


# --- the shipped demo database -------------------------------------------------------

DEMO_PLACES = [
    ("192.0.2.7", "DE", "Berlin"),
    ("192.0.2.200", "DE", "Munich"),
    ("198.51.100.1", "BR", "São Paulo"),
    ("203.0.113.5", "JP", "Tokyo"),
    ("2001:db8::1", "US", "New York"),
    ("::ffff:192.0.2.7", "DE", "Berlin"),
    ("::ffff:203.0.113.5", "JP", "Tokyo"),
]


@pytest.mark.parametrize(("ip", "country", "city"), DEMO_PLACES)
def test_demo_database(open_db: Callable[..., GeoIPDatabase], ip: str, country: str, city: str) -> None:
    db = open_db(DEMO_DB)
    assert db.has_coordinates
    location = db.lookup(ip)
    assert location is not None
    assert (location.country, location.city) == (country, city)
    assert location.has_coordinates and location.accuracy_km is not None
    # MaxMind's own databases alias ::ffff:0:0/96; the demo does too, for other tools.
    assert raw_get(DEMO_DB, ip) is not None


def test_demo_database_places_nothing_else(open_db: Callable[..., GeoIPDatabase]) -> None:
    db = open_db(DEMO_DB)
    for ip in ("192.0.3.1", "198.51.101.1", "203.0.114.1", "2001:db9::1", "8.8.8.8"):
        assert db.lookup(ip) is None


def test_demo_database_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "demo.mmdb"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_demo_geoip.py"), str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == DEMO_DB.read_bytes(), (
        "example_app/demo-geoip.mmdb is stale: run python scripts/make_demo_geoip.py"
    )
