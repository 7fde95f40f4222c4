"""The geo detectors: what a client's location says about a token's use.

:class:`GeoGuard` holds the detectors (allowed and denied countries, new country at login,
country change, impossible travel) over one app's :class:`~.database.GeoIPDatabase`. They
return :class:`~flask_jwt_shield.actions.Finding` objects and never act themselves: the
pipeline records each finding and applies its action.
"""

from __future__ import annotations

import math
from typing import Any
from typing import Final

from ..actions import Finding
from ..config import ConfigKey
from ..config import ShieldConfig
from ..errors import ConfigurationError
from .database import GeoIPDatabase
from .database import GeoIPError
from .database import Location
from .database import distance_km
from .database import travel_speed_kmh

__all__ = ["LOCATION_REFRESH", "GeoGuard"]

# A last-seen place younger than this is not rewritten for the same coordinates: the store
# sees one write per minute per active subject at most, yet the "last seen" time stays fresh
# enough that real travel is not diluted over hours of staying put.
LOCATION_REFRESH: Final = 60.0


class GeoGuard:
    """The geo detectors of one app, over its :class:`GeoIPDatabase`.

    Per-subject state (``profile``: the recent countries and the last place seen) is read and
    written by the caller; the methods here only compare.
    """

    def __init__(self, database: GeoIPDatabase, config: ShieldConfig) -> None:
        self.database = database
        self.allowed = config.geo.allowed_countries
        self.denied = config.geo.denied_countries
        self.history = config.geo.country_history
        self.new_country_action = config.geo.new_country_action
        self.change_action = config.geo.country_change_action
        self.travel_kmh = config.geo.impossible_travel_kmh
        self.travel_action = config.geo.impossible_travel_action

    @classmethod
    def from_config(cls, config: ShieldConfig) -> GeoGuard | None:
        """Open ``JWT_SHIELD_GEOIP_DATABASE``; ``None`` when geo is off."""
        if config.geo.geoip_database is None:
            return None
        try:
            return cls(GeoIPDatabase(config.geo.geoip_database), config)
        except GeoIPError as exc:
            raise ConfigurationError(f"{ConfigKey.GEOIP_DATABASE}: {exc}") from None

    def locate(self, ip: str | None) -> Location | None:
        """Where ``ip`` is, or ``None`` (unknown places are never flagged or denied)."""
        return self.database.lookup(ip)

    def allows(self, country: str) -> bool:
        if self.allowed is not None and country not in self.allowed:
            return False
        return not (self.denied is not None and country in self.denied)

    def on_request(self, location: Location, issued_in: object) -> list[Finding]:
        """Allowed/denied countries, and a token used outside the country it was issued in."""
        findings: list[Finding] = []
        country = location.country
        if country is None:
            return findings
        where = location.as_dict()
        if not self.allows(country):
            findings.append(
                Finding(
                    "country-denied", "deny", "Access from this country is not allowed.", country, {"location": where}
                )
            )
        if isinstance(issued_in, str) and country != issued_in:
            findings.append(
                Finding(
                    "country-changed",
                    self.change_action,
                    "This token was issued in another country.",
                    country,
                    {"issued_in": issued_in, "location": where},
                )
            )
        return findings

    def on_provider_token(self, location: Location, profile: dict[str, Any]) -> list[Finding]:
        """Resource-server mode: a token from the identity provider has no ``ctry`` (the
        shield saw no login), so a country change is judged against the subject's history.

        Records the country in ``profile`` like a login; the caller stores ``profile`` only
        if no finding stopped the request, so a refused country never enters the history.
        The first use (empty history) is never flagged.
        """
        country = location.country
        if country is None:
            return []
        history = [c for c in profile.get("countries", ()) if isinstance(c, str)]
        findings: list[Finding] = []
        if history and country not in history:
            findings.append(
                Finding(
                    "country-changed",
                    self.change_action,
                    "This token was used from a country new for this account.",
                    country,
                    {"history": history, "location": location.as_dict()},
                )
            )
        if not history or history[-1] != country:
            profile["countries"] = ([c for c in history if c != country] + [country])[-self.history :]
        return findings

    def on_login(self, location: Location, profile: dict[str, Any]) -> list[Finding]:
        """Allowed/denied countries and a new country; records the country in ``profile``.

        The first login (empty history) is never flagged. The caller stores ``profile``
        only if no finding stopped the login, so a refused country never enters the history.
        """
        country = location.country
        if country is None:
            return []
        where = location.as_dict()
        findings: list[Finding] = []
        if not self.allows(country):
            findings.append(
                Finding(
                    "country-denied",
                    "deny",
                    "Logins from this country are not allowed.",
                    country,
                    {"location": where, "login": True},
                )
            )
        history = [c for c in profile.get("countries", ()) if isinstance(c, str)]
        if history and country not in history:
            findings.append(
                Finding(
                    "new-country",
                    self.new_country_action,
                    "Login from a country new for this account.",
                    country,
                    {"history": history, "location": where, "login": True},
                )
            )
        if not history or history[-1] != country:
            profile["countries"] = ([c for c in history if c != country] + [country])[-self.history :]
        return findings

    def travel(
        self, location: Location, ip: str | None, now: float, profile: dict[str, Any], *, login: bool = False
    ) -> tuple[Finding | None, dict[str, Any] | None]:
        """Compare this use with the subject's last one (``profile["last"]``).

        Returns the impossible-travel finding, if any, and the new last place to store, or
        ``None`` when the stored one is still good (same coordinates, recently seen). ``ip``
        is stored as given: pass it masked as the audit configuration says.
        """
        if not location.has_coordinates:
            return None, None
        finding = None
        last = profile.get("last")
        if isinstance(last, dict):
            previous = Location.from_dict(last)
            previous_at = last.get("at")
            if isinstance(previous_at, (int, float)):
                speed = travel_speed_kmh(previous, float(previous_at), location, now)
                if speed is not None and speed > self.travel_kmh:
                    distance = distance_km(previous, location)
                    said = "This login came" if login else "This token was used"
                    finding = Finding(
                        "impossible-travel",
                        self.travel_action,
                        f"{said} too far away, too soon.",
                        location.country,
                        {
                            "from": {**previous.as_dict(), "at": previous_at, "ip": last.get("ip")},
                            "to": {**location.as_dict(), "at": now, "ip": ip},
                            "distance_km": round(distance, 1) if distance is not None else None,
                            "speed_kmh": round(speed, 1) if math.isfinite(speed) else None,
                            "limit_kmh": self.travel_kmh,
                        },
                    )
                elif (
                    previous.latitude == location.latitude
                    and previous.longitude == location.longitude
                    and now - previous_at < LOCATION_REFRESH
                ):
                    return None, None
        return finding, {**location.as_dict(), "at": now, "ip": ip}

    def close(self) -> None:
        self.database.close()
