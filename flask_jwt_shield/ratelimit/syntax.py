"""Limit strings: the one parser of Flask-Limiter syntax (``"10/second;300/minute"``).

Configuration (``init_app``) and the limiter read limit strings through this module only,
so a string that passes ``init_app`` is one the limiter accepts. A leaf: it imports nothing
from the package.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from limits import RateLimitItem
from limits import parse_many

__all__ = [
    "MINUTE",
    "Sustain",
    "default_spike_threshold",
    "format_limit",
    "parse_limits",
    "scale_limit_string",
    "validate_limit_string",
]

#: Detector buckets are minutes: "sustained" counts distinct minutes, whatever the limits' windows.
MINUTE: Final = 60

_EXAMPLE: Final = "'300/minute' or '10/second;300/minute'"


def parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    """Parse a Flask-Limiter limit string (``"10/second;300/minute"``) into limit items.

    :raises ValueError: if the string is not valid limit syntax or names a zero amount.
    """
    items = tuple(parse_many(value))
    if any(item.amount < 1 for item in items):
        raise ValueError(f"{value!r} lets no request through: every amount must be at least 1, for example '1/minute'")
    return items


def validate_limit_string(value: object, key_name: str) -> str:
    """Check that ``value`` is a usable limit string and return it.

    Meant for ``init_app``: the message names the configuration key and shows the syntax.

    :raises ValueError: naming ``key_name`` when ``value`` is not a string in
        Flask-Limiter syntax, or allows zero requests.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key_name} must be a rate limit string such as {_EXAMPLE}, got {value!r}")
    try:
        parse_limits(value)
    except ValueError:
        raise ValueError(
            f"{key_name} = {value!r} is not a valid rate limit: use Flask-Limiter syntax"
            f" '<amount>/<period>' with period second, minute, hour, day, month or year,"
            f" several separated by ';' -- for example {_EXAMPLE}"
        ) from None
    return value


def format_limit(item: RateLimitItem, amount: int) -> str:
    """``item``'s window with ``amount`` requests, as a limit string (``"10/2 minutes"``)."""
    name = item.GRANULARITY.name
    if item.multiples == 1:
        return f"{amount}/{name}"
    return f"{amount}/{item.multiples} {name}s"


def scale_limit_string(value: str, factor: int) -> str:
    """Multiply every amount of a limit string by ``factor``, keeping the windows.

    ``scale_limit_string("10/second;300/minute", 10) == "100/second;3000/minute"``.

    :raises ValueError: if ``value`` is not a limit string or ``factor`` is below 1.
    """
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor!r}")
    return ";".join(format_limit(item, item.amount * factor) for item in parse_limits(value))


def default_spike_threshold(rate_limit: str | None) -> str | None:
    """The documented default of ``JWT_SHIELD_SPIKE_THRESHOLD``: 10x each rate limit.

    ``None`` (rate limiting off) gives ``None`` (no spike detection).
    """
    return None if rate_limit is None else scale_limit_string(rate_limit, 10)


@dataclasses.dataclass(frozen=True, slots=True)
class Sustain:
    """How long a detector's finding must last before its action applies.

    Written as a limit string, ``"3/10 minutes"``: the finding must be seen in ``count``
    distinct minutes within ``span`` seconds (the span opens at the first such minute).
    A single minute of unusual traffic -- an app starting up, tabs reloading together --
    is only flagged; a thief who keeps going is acted upon by the ``count``-th minute.
    """

    count: int
    span: int

    @classmethod
    def parse(cls, value: str) -> Sustain:
        """``"3/10 minutes"`` → ``Sustain(3, 600)``.

        :raises ValueError: for anything but one limit whose span holds ``count`` minutes.
        """
        try:
            items = parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a limit string such as '3/10 minutes'") from None
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(f"a sustain setting is one limit such as '3/10 minutes', got {value!r}")
        count, span = items[0].amount, items[0].get_expiry()
        if span < count * MINUTE:
            raise ValueError(
                f"{value!r} asks for {count} distinct minutes within {span} seconds, which can"
                f" never happen; give a span of at least {count} minutes, e.g. '{count}/10 minutes'"
            )
        return cls(count, span)
