"""Reading ``app.config``: typed accessors that refuse a bad value with a message saying how
to fix it, the refusal of unknown ``JWT_SHIELD_*`` keys, and URL checks. The sections of
:mod:`.settings` read their keys through a :class:`Reader`.
"""

from __future__ import annotations

import difflib
import math
import typing as t
import urllib.parse
from collections.abc import Mapping

from ..actions import ACTIONS
from ..actions import Action
from ..errors import ConfigurationError
from ..jose import SIGNING_ALGORITHMS
from ..ratelimit.syntax import Sustain
from ..ratelimit.syntax import parse_limits
from .keys import ConfigKey

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
    raise ValueError(
        f"{what} {url!r} must use https:// ({why}); http:// is accepted for 127.0.0.1 and"
        " localhost only."
    )


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
        return self.config.get(key, default)

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
            raise ConfigurationError(
                f"{key} is {value!r}; it must be one of {sorted(choices)} (for example {hint})."
            )
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
