"""GeoIP: :mod:`.database` reads the ``.mmdb`` file and places addresses; :mod:`.detectors`
judges what a place says about a token's use. The names below are the ones the rest of the
package (and its users) import from here."""

from __future__ import annotations

from .database import EARTH_RADIUS_KM
from .database import GeoIPDatabase
from .database import GeoIPError
from .database import Location
from .database import distance_km
from .database import is_routable
from .database import travel_speed_kmh
from .detectors import GeoGuard

__all__ = [
    "EARTH_RADIUS_KM",
    "GeoGuard",
    "GeoIPDatabase",
    "GeoIPError",
    "Location",
    "distance_km",
    "is_routable",
    "travel_speed_kmh",
]
