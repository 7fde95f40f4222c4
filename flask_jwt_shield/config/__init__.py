"""Configuration: every ``JWT_SHIELD_*`` key, read once from ``app.config`` and validated.

Nothing else in the package reads ``app.config``. A bad value raises
:class:`~flask_jwt_shield.errors.ConfigurationError` from ``init_app`` with a message that
names the key and says how to fix it, so a typo never becomes a 500 at request time.

:mod:`.keys` names the keys, :mod:`.read` reads and checks values, :mod:`.settings` holds
the sections (each reads its own keys) and :class:`ShieldConfig`, which gathers them.
"""

from __future__ import annotations

from .keys import ConfigKey
from .read import DURATION_KEYS
from .read import WHOLE_SECOND_KEYS
from .read import check_url
from .read import duration_seconds
from .read import flask_jwt_extended_warnings
from .settings import DEFAULT_ALERT_EVENTS
from .settings import PROFILES
from .settings import AlertSettings
from .settings import DPoPSettings
from .settings import EventSettings
from .settings import GeoSettings
from .settings import KeyMaterial
from .settings import KeySettings
from .settings import KeySpec
from .settings import RateSettings
from .settings import RemoteSettings
from .settings import RequestSettings
from .settings import SessionSettings
from .settings import ShieldConfig
from .settings import SSFSettings
from .settings import StepUpSettings
from .settings import StoreSettings

__all__ = [
    "DEFAULT_ALERT_EVENTS",
    "DURATION_KEYS",
    "PROFILES",
    "AlertSettings",
    "ConfigKey",
    "DPoPSettings",
    "EventSettings",
    "GeoSettings",
    "KeyMaterial",
    "KeySettings",
    "KeySpec",
    "RateSettings",
    "RemoteSettings",
    "RequestSettings",
    "SessionSettings",
    "SSFSettings",
    "StepUpSettings",
    "ShieldConfig",
    "StoreSettings",
    "WHOLE_SECOND_KEYS",
    "check_url",
    "duration_seconds",
    "flask_jwt_extended_warnings",
]
