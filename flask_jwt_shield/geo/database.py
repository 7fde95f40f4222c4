"""GeoIP: where a client address is.

This module knows nothing about requests, tokens or configuration. It reads a
MaxMind-format database (GeoLite2/GeoIP2 Country or City, or anything with the same record
layout) with ``maxminddb`` and answers one question per address,
:meth:`GeoIPDatabase.lookup`; the pure functions :func:`distance_km` and
:func:`travel_speed_kmh` turn two locations into a distance and a speed. What those
answers mean for a token is :mod:`.detectors`' business.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from typing import TypeAlias

import maxminddb

__all__ = [
    "EARTH_RADIUS_KM",
    "GeoIPDatabase",
    "GeoIPError",
    "Location",
    "distance_km",
    "is_routable",
    "travel_speed_kmh",
]

logger = logging.getLogger("flask_jwt_shield")

#: Mean Earth radius (IUGG), the usual constant for great-circle distances.
EARTH_RADIUS_KM: Final = 6371.0088

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Signature: TypeAlias = tuple[int, int, int]

# The documentation ranges (RFC 5737, RFC 3849) are not globally reachable, so Python counts
# them as private; they are let through on purpose because example and demo databases map
# them (a real GeoIP database has no entry for them, so nothing changes in production).
_DOCUMENTATION_NETWORKS: Final = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

# Addresses that only exist inside some network, so a database cannot place them: RFC 1918,
# shared address space (RFC 6598, carrier-grade NAT), IETF protocol assignments (RFC 6890;
# Python 3.11 only knows parts of it), unique local and site-local IPv6 (RFC 4193, 3879).
_LOCAL_NETWORKS: Final = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("fc00::/7"),
    ipaddress.ip_network("fec0::/10"),
)

# MODE_MEMORY reads the whole file once and closes it. The C extension's mmap is faster,
# but a database overwritten in place (``cp new.mmdb db.mmdb`` truncates the file) kills
# the worker with SIGBUS, and a file read lazily would serve the half-written copy; with
# the file in memory a bad replacement can always be refused while the old data stays in
# use. The price is the file's size in RAM per process (Country ~10 MB, City ~60 MB) and
# ~10 µs per uncached lookup.
_OPEN_MODE: Final = maxminddb.MODE_MEMORY


class GeoIPError(ValueError):
    """The GeoIP database cannot be opened: missing, unreadable, or not a MaxMind DB.

    The message names the path and says how to fix it. Raised only when a
    :class:`GeoIPDatabase` is created; a bad file met later, on reload, is logged instead.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        #: The path that was given to :class:`GeoIPDatabase`.
        self.path = path


@dataclass(frozen=True, slots=True)
class Location:
    """Where an address is, as far as the database knows.

    ``country`` is an upper-case ISO 3166-1 alpha-2 code, ``city`` the English name.
    ``latitude``/``longitude`` are both set or both ``None`` (Country databases have none);
    ``accuracy_km`` is the database's accuracy radius around them, ``None`` when unknown.
    """

    country: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_km: float | None = None

    @property
    def has_coordinates(self) -> bool:
        """True when latitude and longitude are known (a City database)."""
        return self.latitude is not None and self.longitude is not None

    def as_dict(self) -> dict[str, str | float | None]:
        """The fields as a JSON-ready dict, for event details and the store."""
        return {
            "country": self.country,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "accuracy_km": self.accuracy_km,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Location:
        """Rebuild a location from :meth:`as_dict` output (e.g. read back from a store).

        Fields that are missing or of the wrong type become ``None`` rather than raising,
        since stored data may come from an older version.
        """
        latitude, longitude = _coordinates(data.get("latitude"), data.get("longitude"))
        return cls(
            country=_country_code(data.get("country")),
            city=_text(data.get("city")),
            latitude=latitude,
            longitude=longitude,
            accuracy_km=_accuracy(data.get("accuracy_km")) if latitude is not None else None,
        )


class GeoIPDatabase:
    """A MaxMind-format ``.mmdb`` file, looked up by IP address, reloaded when replaced.

    The file is opened once here; a missing, unreadable or corrupt file raises
    :class:`GeoIPError`. Afterwards nothing raises: lookups that fail answer ``None``,
    and a replacement file that cannot be read is logged (WARNING on the
    ``flask_jwt_shield`` logger) while the data loaded before stays in use.

    At most every ``check_interval`` seconds (measured with :func:`time.time`) a lookup
    compares the file's ``os.stat`` (mtime, inode, size) with the loaded copy's and
    reloads it when it changed, so a replaced database is in use within that interval.
    Replace the file atomically (write a new file, then rename it over the old one, as
    ``geoipupdate`` does); an in-place copy works too, since the old data is in memory.

    Up to ``cache_size`` answers, including "no location", are kept (least recently used
    first out); the cache is emptied on every reload. Safe to share between threads.
    """

    def __init__(self, path: str, *, check_interval: float = 5.0, cache_size: int = 4096) -> None:
        if not math.isfinite(check_interval) or check_interval < 0:
            raise ValueError(f"check_interval must be >= 0 seconds, not {check_interval!r}.")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size!r}.")
        #: The database file's path, as given.
        self.path = path
        self._check_interval = float(check_interval)
        self._cache_size = cache_size
        # Guards the reader swap and the cache; held only for dict operations, never
        # during file I/O.
        self._lock = threading.Lock()
        # One thread at a time checks the file; the others keep serving from the old copy.
        self._reload_lock = threading.Lock()
        self._cache: OrderedDict[_Address, Location | None] = OrderedDict()
        # Bumped on every reload so that an answer computed from the old reader is not
        # stored in the freshly emptied cache.
        self._generation = 0
        self._failed_lookup_logged = False
        # stat before open: if the file is replaced in between, the stored signature is the
        # older one and the next check simply loads the file again.
        try:
            self._signature: _Signature | None = _file_signature(path)
        except OSError as exc:
            raise _open_error(path, exc) from exc
        self._reader: maxminddb.Reader | None = _open_reader(path)
        self._last_check = time.time()

    @property
    def database_type(self) -> str:
        """The ``database_type`` from the file's metadata, e.g. ``"GeoLite2-City"``."""
        reader = self._reader
        if reader is None:
            return ""
        return str(reader.metadata().database_type)

    @property
    def built_at(self) -> float | None:
        """When the loaded file was built (its ``build_epoch`` metadata), epoch seconds.

        ``None`` when closed. GeoLite2 files are rebuilt twice a week; an old one places
        addresses that moved since by where they used to be.
        """
        reader = self._reader
        if reader is None:
            return None
        return float(reader.metadata().build_epoch)

    @property
    def has_coordinates(self) -> bool:
        """True for City-type databases, whose records carry latitude and longitude.

        Judged by ``database_type`` (MaxMind's City and Enterprise products, DB-IP's City
        databases); impossible-travel detection needs such a database.
        """
        kind = self.database_type.lower()
        return "city" in kind or "enterprise" in kind

    def lookup(self, ip: str | None) -> Location | None:
        """The location of ``ip``, or ``None`` when there is none to be had.

        ``None`` for ``None``, strings that are not an IP address, addresses that are not
        globally routable (private, shared/CGNAT, loopback, link-local, multicast,
        unspecified, reserved; the documentation ranges are the exception and resolve
        normally), addresses the database has no record for, and records with neither a
        country nor coordinates. An IPv4-mapped IPv6 address (``::ffff:203.0.113.5``)
        is looked up as the IPv4 address. Only ``country`` is read for the country:
        ``registered_country`` is where the block is registered, not where the client is.
        """
        address = _routable_address(ip)
        if address is None:
            return None
        self._maybe_reload()
        with self._lock:
            if address in self._cache:
                self._cache.move_to_end(address)
                return self._cache[address]
            reader, generation = self._reader, self._generation
        if reader is None:  # closed
            return None
        if address.version == 6 and reader.metadata().ip_version == 4:
            location = None
        else:
            try:
                record = reader.get(address)
            except Exception:  # a damaged data section must not turn into a 500
                if not self._failed_lookup_logged:
                    self._failed_lookup_logged = True
                    logger.warning(
                        "GeoIP lookup of %s in %r failed; treating it as unknown.",
                        address,
                        self.path,
                        exc_info=True,
                    )
                return None
            location = _location_from_record(record)
        with self._lock:
            if generation == self._generation and self._cache_size:
                self._cache[address] = location
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return location

    def close(self) -> None:
        """Release the database; later lookups answer ``None``. Safe to call twice."""
        with self._lock:
            reader, self._reader = self._reader, None
            self._cache.clear()
            self._generation += 1
        if reader is not None:
            reader.close()

    def _maybe_reload(self) -> None:
        now = time.time()
        # A clock that went backwards also triggers a check, rather than none for a while.
        if 0 <= now - self._last_check < self._check_interval:
            return
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            self._last_check = now
            if self._reader is None:
                return
            try:
                signature = _file_signature(self.path)
            except OSError as exc:
                if self._signature is not None:  # log the disappearance once
                    logger.warning(
                        "GeoIP database %r cannot be checked (%s); still using the copy loaded earlier.",
                        self.path,
                        exc.strerror or exc,
                    )
                self._signature = None
                return
            if signature == self._signature:
                return
            # Recorded before opening, so a bad file is reported once and retried only
            # after it changes again.
            self._signature = signature
            try:
                reader = _open_reader(self.path)
            except GeoIPError as exc:
                logger.warning("%s Still using the copy loaded earlier.", exc)
                return
            with self._lock:
                if self._reader is None:  # closed while we were reading the file
                    reader.close()
                    return
                old, self._reader = self._reader, reader
                self._generation += 1
                self._cache.clear()
                self._failed_lookup_logged = False
            # The old copy is plain memory (MODE_MEMORY); closing it cannot disturb a
            # lookup that still holds it.
            old.close()
            logger.info("GeoIP database %r reloaded (%s).", self.path, reader.metadata().database_type)
        finally:
            self._reload_lock.release()


def distance_km(a: Location, b: Location) -> float | None:
    """Great-circle distance between two locations in km (haversine).

    ``None`` when either has no coordinates.
    """
    if a.latitude is None or a.longitude is None or b.latitude is None or b.longitude is None:
        return None
    lat_a, lat_b = math.radians(a.latitude), math.radians(b.latitude)
    d_lat = lat_b - lat_a
    d_lon = math.radians(b.longitude - a.longitude)
    h = math.sin(d_lat / 2) ** 2 + math.cos(lat_a) * math.cos(lat_b) * math.sin(d_lon / 2) ** 2
    # min() guards asin against rounding just above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def travel_speed_kmh(a: Location, at_a: float, b: Location, at_b: float) -> float | None:
    """The speed needed to be at ``a`` at time ``at_a`` and at ``b`` at ``at_b`` (epoch s).

    Each location is only known to within its ``accuracy_km``, so both radii are taken
    off the distance first (never below zero): two nearby fixes with wide radii are not
    travel. A positive remaining distance in zero or negative time is ``float("inf")``.
    ``None`` when either location has no coordinates.
    """
    distance = distance_km(a, b)
    if distance is None:
        return None
    effective = max(0.0, distance - (a.accuracy_km or 0.0) - (b.accuracy_km or 0.0))
    if effective == 0:
        return 0.0
    seconds = at_b - at_a
    if seconds <= 0:
        return math.inf
    return effective / (seconds / 3600.0)


def is_routable(ip: str) -> bool:
    """Whether a database could place ``ip``: a globally routable address (the documentation
    ranges count as routable, see :meth:`GeoIPDatabase.lookup`)."""
    return _routable_address(ip) is not None


def _routable_address(ip: str | None) -> _Address | None:
    """The parsed address if it can have a location, else ``None``."""
    if not isinstance(ip, str):
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # fe80::1%eth0 and the like: local by definition
            return None
        # Databases written by tools other than MaxMind's do not alias ::ffff:0:0/96 to
        # the IPv4 tree, so unwrap it here.
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    if any(address in network for network in _DOCUMENTATION_NETWORKS):
        return address
    if (
        any(address in network for network in _LOCAL_NETWORKS)
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        # The rest of the IANA special-purpose registries (benchmarking, IETF protocol
        # assignments, discard-only, ...), as far as this Python version knows them.
        or not address.is_global
    ):
        return None
    return address


def _location_from_record(record: object) -> Location | None:
    """Read a GeoLite2-shaped record defensively: anything odd becomes ``None``."""
    if not isinstance(record, Mapping):
        return None
    country = _country_code(_path(record, "country", "iso_code"))
    location = record.get("location")
    if not isinstance(location, Mapping):
        location = {}
    latitude, longitude = _coordinates(location.get("latitude"), location.get("longitude"))
    if country is None and latitude is None:
        return None
    return Location(
        country=country,
        city=_text(_path(record, "city", "names", "en")),
        latitude=latitude,
        longitude=longitude,
        accuracy_km=_accuracy(location.get("accuracy_radius")) if latitude is not None else None,
    )


def _path(record: Mapping[str, object], *keys: str) -> object:
    value: object = record
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _country_code(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def _number(value: object) -> float | None:
    # bool is an int subclass; a True latitude is a broken record, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _coordinates(latitude: object, longitude: object) -> tuple[float | None, float | None]:
    lat, lon = _number(latitude), _number(longitude)
    if lat is None or lon is None or not -90 <= lat <= 90 or not -180 <= lon <= 180:
        return None, None
    return lat, lon


def _accuracy(value: object) -> float | None:
    radius = _number(value)
    return radius if radius is not None and radius >= 0 else None


def _file_signature(path: str) -> _Signature:
    stat = os.stat(path)
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


def _open_reader(path: str) -> maxminddb.Reader:
    try:
        return maxminddb.open_database(path, _OPEN_MODE)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    except Exception as exc:  # the decoder raises several types on a damaged file
        raise GeoIPError(
            f"GeoIP database {path!r} is not a valid MaxMind DB file ({exc}). Replace it"
            " with a GeoLite2/GeoIP2 Country or City .mmdb file (e.g. from geoipupdate).",
            path,
        ) from exc


def _open_error(path: str, exc: OSError) -> GeoIPError:
    if isinstance(exc, FileNotFoundError):
        message = (
            f"GeoIP database {path!r} does not exist. Download a GeoLite2/GeoIP2 Country or"
            " City .mmdb file (e.g. with geoipupdate) and point JWT_SHIELD_GEOIP_DATABASE at"
            " it, or set JWT_SHIELD_GEOIP_DATABASE to None to turn the geo checks off."
        )
    elif isinstance(exc, IsADirectoryError):
        message = f"GeoIP database {path!r} is a directory. Point JWT_SHIELD_GEOIP_DATABASE at the .mmdb file itself."
    else:
        message = (
            f"GeoIP database {path!r} cannot be read ({exc.strerror or exc}). Check that"
            " the file exists and that the application's user may read it."
        )
    return GeoIPError(message, path)
