"""Reading ``app.config``: typed accessors that refuse a bad value with a message saying how
to fix it, the refusal of unknown ``JWT_SHIELD_*`` keys, and URL checks. The sections of
:mod:`.settings` read their keys through a :class:`Reader`.
"""

from __future__ import annotations

import datetime
import difflib
import math
import typing as t
import urllib.parse
from collections.abc import Mapping
from typing import Final

from ..actions import ACTIONS
from ..actions import Action
from ..errors import ConfigurationError
from ..jose import SIGNING_ALGORITHMS
from ..ratelimit.syntax import Sustain
from ..ratelimit.syntax import parse_limits
from .keys import ConfigKey

#: Keys that hold a duration: a number of seconds or a :class:`datetime.timedelta`, which
#: ``init_app`` converts to seconds. These become integer NumericDate arithmetic (``exp``),
#: so they take whole seconds only.
WHOLE_SECOND_KEYS: Final = frozenset(
    {
        ConfigKey.ACCESS_TOKEN_TTL,
        ConfigKey.REFRESH_TOKEN_TTL,
        ConfigKey.REFRESH_IDLE_TTL,
        ConfigKey.STEP_UP_MAX_AGE,
        ConfigKey.STATUS_LIST_TTL,
    }  # RFC 9470 §3: max_age is a whole number of seconds
)
DURATION_KEYS: Final = WHOLE_SECOND_KEYS | {
    ConfigKey.JWKS_CACHE_TTL,
    ConfigKey.JWKS_MIN_REFETCH,
    ConfigKey.JWKS_TIMEOUT,
    ConfigKey.STATUS_LIST_MIN_TTL,
    ConfigKey.STATUS_LIST_MAX_TTL,
    ConfigKey.STATUS_LIST_MAX_STALE,
    ConfigKey.LEEWAY,
    ConfigKey.REFRESH_REUSE_GRACE,
    ConfigKey.REDIS_CONNECT_TIMEOUT,
    ConfigKey.REDIS_TIMEOUT,
    ConfigKey.REVOCATION_MAX_DELAY,
    ConfigKey.DPOP_MAX_AGE,
    ConfigKey.DPOP_NONCE_TTL,
    ConfigKey.ALERT_TIMEOUT,
    ConfigKey.ALERT_RETRY_DELAY,
    ConfigKey.SSF_RETENTION,
    ConfigKey.SSF_PUSH_TIMEOUT,
    ConfigKey.SSF_PUSH_RETRY_DELAY,
    ConfigKey.SSF_POLL_WAIT,
    ConfigKey.SSF_RECEIVE_POLL_INTERVAL,
}

_SECOND: Final = datetime.timedelta(seconds=1)


def duration_seconds(value: datetime.timedelta, what: str, *, whole: bool) -> float:
    """``value`` in seconds (an ``int`` when ``whole``).

    :raises ValueError: for a negative duration, or a fraction of a second when ``whole``;
        the message starts with ``what`` and says how to fix it.
    """
    if value < datetime.timedelta(0):
        raise ValueError(
            f"{what} is {value!r}, a negative duration; give how long it lasts, e.g."
            f" timedelta(minutes=15) or {abs(value)!r}."
        )
    if not whole:
        return value.total_seconds()
    if value % _SECOND:
        rounded = max(1, round(value.total_seconds()))
        raise ValueError(
            f"{what} is {value!r}, which is not a whole number of seconds (token expiry times are"
            f" integers); round it, e.g. timedelta(seconds={rounded})."
        )
    return value // _SECOND


_UNSET: Final = object()

#: Flask-JWT-Extended settings with a shield equivalent: FJE key -> (the shield's key, or
#: None where the shield's behaviour is fixed; what to tell a migrating user; a value of the
#: FJE key that asks for what the shield does anyway, so it needs no warning).
FLASK_JWT_EXTENDED_KEYS: Final[dict[str, tuple[str | None, str, object]]] = {
    "JWT_SECRET_KEY": (ConfigKey.SECRET_KEY, "it falls back to SECRET_KEY", _UNSET),
    "JWT_PRIVATE_KEY": (ConfigKey.PRIVATE_KEY, "or JWT_SHIELD_KEYS for a key ring", _UNSET),
    "JWT_PUBLIC_KEY": (ConfigKey.PUBLIC_KEY, "or JWT_SHIELD_KEYS for a key ring", _UNSET),
    "JWT_ALGORITHM": (ConfigKey.ALGORITHM, "default 'HS256'", _UNSET),
    "JWT_DECODE_ALGORITHMS": (ConfigKey.ALLOWED_ALGORITHMS, "default: the key ring's algorithms", _UNSET),
    "JWT_ACCESS_TOKEN_EXPIRES": (ConfigKey.ACCESS_TOKEN_TTL, "seconds or a timedelta, default 15 minutes", _UNSET),
    "JWT_REFRESH_TOKEN_EXPIRES": (ConfigKey.REFRESH_TOKEN_TTL, "seconds or a timedelta, default 30 days", _UNSET),
    "JWT_TOKEN_LOCATION": (ConfigKey.TOKEN_LOCATIONS, "'headers' and/or 'cookies'", _UNSET),
    "JWT_ENCODE_ISSUER": (ConfigKey.ISSUER, "written on issue and required on verify", _UNSET),
    "JWT_DECODE_ISSUER": (ConfigKey.ISSUER, "written on issue and required on verify", _UNSET),
    "JWT_ENCODE_AUDIENCE": (ConfigKey.AUDIENCE, "written on issue and required on verify", _UNSET),
    "JWT_DECODE_AUDIENCE": (ConfigKey.AUDIENCE, "written on issue and required on verify", _UNSET),
    "JWT_DECODE_LEEWAY": (ConfigKey.LEEWAY, "seconds or a timedelta, default 0", _UNSET),
    "JWT_COOKIE_SAMESITE": (ConfigKey.COOKIE_SAMESITE, "'Lax' or 'Strict'", _UNSET),
    "JWT_COOKIE_SECURE": (None, "the shield's cookies are always Secure (__Host- prefix)", True),
    "JWT_COOKIE_CSRF_PROTECT": (None, "the shield always checks the X-CSRF-Token header on cookie requests", True),
    "JWT_IDENTITY_CLAIM": (None, "the shield always puts the identity in 'sub' (RFC 7519)", "sub"),
    "JWT_HEADER_NAME": (None, "the shield reads 'Authorization' (RFC 6750)", "Authorization"),
    "JWT_HEADER_TYPE": (None, "the shield reads the 'Bearer' and 'DPoP' schemes", "Bearer"),
}


def flask_jwt_extended_warnings(config: Mapping[str, t.Any]) -> list[str]:
    """One sentence per Flask-JWT-Extended setting in ``config`` that the shield does not
    read although it has an equivalent (and whose shield key is unset).

    These are not refused: an app may run Flask-JWT-Extended beside the shield while it
    migrates.
    """
    found = []
    for fje_key, (shield_key, note, harmless) in FLASK_JWT_EXTENDED_KEYS.items():
        if fje_key not in config:
            continue
        if shield_key is None:
            if config[fje_key] != harmless:
                found.append(f"{fje_key} is a Flask-JWT-Extended setting that the shield does not read; {note}.")
        elif shield_key not in config:
            found.append(f"{fje_key} is a Flask-JWT-Extended setting; the shield reads {shield_key} ({note}).")
    return found


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


_KEYS_OVER_HTTP = "keys fetched over plain HTTP can be replaced by anyone on the path"


def check_url(url: str, what: str, *, why: str = _KEYS_OVER_HTTP) -> str:
    """``url`` if it may be fetched (HTTPS, or HTTP to this host); raise ``ValueError``.

    ``why`` ends the message: what plain HTTP would put at risk.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"{what} {url!r} is not a URL ({exc}).") from None
    if not host:
        raise ValueError(f"{what} {url!r} has no host; give a full https:// URL.")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and host.lower() in _LOCAL_HOSTS:
        return url
    raise ValueError(f"{what} {url!r} must use https:// ({why}); http:// is accepted for 127.0.0.1 and localhost only.")


def refuse_unknown_keys(config: Mapping[str, t.Any]) -> None:
    # A misspelt key would otherwise be ignored silently, leaving a protection off.
    known = set(ConfigKey.all())
    for key in config:
        if isinstance(key, str) and key.startswith("JWT_SHIELD_") and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else " See the configuration page."
            raise ConfigurationError(f"{key} is not a Flask-JWT-Shield setting.{hint}")


def bad_algorithm(key: str, value: object) -> str:
    if isinstance(value, str) and value.lower() == "none":
        return f"{key} is 'none': unsigned tokens are never accepted. Use 'HS256', 'ES256' or 'EdDSA'."
    return f"{key} is {value!r}, which is not a supported algorithm; use one of {sorted(SIGNING_ALGORITHMS)}."


class Reader:
    """Typed accessors that raise a helpful :class:`ConfigurationError`."""

    def __init__(self, config: Mapping[str, t.Any]) -> None:
        self.config = config

    def raw(self, key: str) -> t.Any:
        return self.config.get(key)

    def _get(self, key: str, default: t.Any) -> t.Any:
        value = self.config.get(key, default)
        if isinstance(value, datetime.timedelta) and key in DURATION_KEYS:
            try:
                return duration_seconds(value, key, whole=key in WHOLE_SECOND_KEYS)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{key} must be True or False, not {value!r}.")
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{key} must be an integer (seconds or a count), not {value!r}.")
        if value < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, not {value!r}.")
        return value

    def number(self, key: str, default: float, *, minimum: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigurationError(f"{key} must be a finite number, not {value!r}.")
        if value < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, not {value!r}.")
        return float(value)

    def seconds(self, key: str, default: float, *, maximum: float, waits_on: str = "") -> float:
        """A timeout: above zero (a zero timeout would wait forever in redis-py) and short."""
        value = self.number(key, default, minimum=0)
        if not 0 < value <= maximum:
            what = f"how long the shield waits on {waits_on or 'the store'}"
            raise ConfigurationError(
                f"{key} must be a number of seconds above 0 and at most {maximum} (for example"
                f" {default}), not {value!r}: it is {what}."
            )
        return value

    def string(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{key} must be a non-empty string, not {value!r}.")
        return value

    def optional_string(self, key: str, default: str | None) -> str | None:
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{key} must be a non-empty string or None, not {value!r}.")
        return value

    def limit(self, key: str, default: str | None, *, nullable: bool = True) -> str | None:
        value = self._get(key, default)
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"{key} must be a rate limit string such as '300/minute' or '10/second;300/minute'"
                f"{' or None' if nullable else ''}, not {value!r}."
            )
        try:
            parse_limits(value)
        except ValueError as exc:
            raise ConfigurationError(
                f"{key} is {value!r}, which is not a usable rate limit string ({exc}); write it like"
                " '300/minute' or '10/second;300/minute'."
            ) from None
        return value

    def sustain(self, key: str, default: str) -> str | None:
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"{key} must be a string such as '3/10 minutes' (that many distinct minutes"
                f" within the span) or None, not {value!r}."
            )
        try:
            Sustain.parse(value)
        except ValueError as exc:
            raise ConfigurationError(f"{key}: {exc}.") from None
        return value

    def choice(self, key: str, default: str, choices: frozenset[str], *, hint: str) -> str:
        value = self._get(key, default)
        if value not in choices:
            if key == ConfigKey.ALGORITHM:
                raise ConfigurationError(bad_algorithm(key, value))
            raise ConfigurationError(f"{key} is {value!r}; it must be one of {sorted(choices)} (for example {hint}).")
        return t.cast(str, value)

    def action(self, key: str, default: Action, ladder: tuple[Action, ...] = ACTIONS) -> Action:
        value = self._get(key, default)
        if value not in ladder:
            raise ConfigurationError(f"{key} is {value!r}; it must be one of {list(ladder)}.")
        return t.cast(Action, value)

    def string_list(self, key: str, default: list[str] | None) -> list[str] | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise ConfigurationError(f"{key} must be a list of strings such as ['a', 'b'], not {value!r}.")
        if not all(isinstance(v, str) and v for v in value):
            raise ConfigurationError(f"{key} must contain only non-empty strings, not {value!r}.")
        return list(value)

    def countries(self, key: str) -> frozenset[str] | None:
        codes = self.string_list(key, None)
        if codes is None:
            return None
        bad = [c for c in codes if len(c) != 2 or not c.isalpha()]
        if bad:
            raise ConfigurationError(
                f"{key} must list ISO 3166-1 alpha-2 country codes such as ['DE', 'FR']; {bad} are not."
            )
        return frozenset(c.upper() for c in codes)
