"""The recommended production settings of docs/production.rst (included there verbatim).

The test suite runs its theft and honest-user stories (tests/test_stories.py) on exactly
these settings, replacing only where state lives and the keys.
"""

from __future__ import annotations

import json
import os
import typing as t
from collections.abc import Mapping


def shield_settings(environ: Mapping[str, str] = os.environ) -> dict[str, t.Any]:
    """``app.config.update(shield_settings())`` before ``shield.init_app(app)``."""
    return {
        # State: persistent, shared by the workers of this host.
        "JWT_SHIELD_STORE_URI": "sqlite:////var/lib/myapp/shield.db",
        "JWT_SHIELD_FAIL_MODE": "closed",
        # Keys: an ES256 ring from `flask jwt-shield keys generate`, first entry signs.
        "JWT_SHIELD_ALGORITHM": "ES256",
        "JWT_SHIELD_KEYS": json.loads(environ["JWT_SHIELD_KEYS"]),
        "JWT_SHIELD_ISSUER": "https://api.example.com",
        "JWT_SHIELD_AUDIENCE": "https://api.example.com",
        # Lifetimes and sessions.
        "JWT_SHIELD_ACCESS_TOKEN_TTL": 900,  # 15 minutes
        "JWT_SHIELD_REFRESH_TOKEN_TTL": 30 * 86400,  # log in again after 30 days
        "JWT_SHIELD_REFRESH_IDLE_TTL": 14 * 86400,  # or after 14 days unused
        "JWT_SHIELD_REFRESH_REUSE_GRACE": 10,  # several tabs refreshing at once
        "JWT_SHIELD_MAX_SESSIONS": 20,
        # Rate limits: per token, one budget for all workers.
        "JWT_SHIELD_RATE_LIMIT": "30/second;300/minute",
        "JWT_SHIELD_RATE_LIMIT_KEY": "jti",
        "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
        # A hammered token: ten times the limit in one window, or refused in 3 minutes of 10.
        "JWT_SHIELD_SPIKE_THRESHOLD": "300/second;3000/minute",
        "JWT_SHIELD_SPIKE_SUSTAIN": "3/10 minutes",
        "JWT_SHIELD_SPIKE_ACTION": "revoke",
        # A session used far above its own rate (a fresh login: loosely, its account's),
        # for 3 minutes of 10: end that session.
        "JWT_SHIELD_ADAPTIVE": True,
        "JWT_SHIELD_ADAPTIVE_FACTOR": 5.0,
        "JWT_SHIELD_ADAPTIVE_FLOOR": "60/minute",
        "JWT_SHIELD_ADAPTIVE_SUSTAIN": "3/10 minutes",
        "JWT_SHIELD_ADAPTIVE_ACTION": "revoke_family",
        # GeoIP (City database, updated weekly by geoipupdate).
        "JWT_SHIELD_GEOIP_DATABASE": "/var/lib/GeoIP/GeoLite2-City.mmdb",
        "JWT_SHIELD_NEW_COUNTRY_ACTION": "flag",
        "JWT_SHIELD_COUNTRY_CHANGE_ACTION": "flag",
        "JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION": "revoke_family",
        # Events.
        "JWT_SHIELD_EVENT_IP": "truncated",
        "JWT_SHIELD_EVENT_RETENTION": 100_000,
        # Enforced. For the first week of a roll-out, set True: the detectors only flag,
        # and each event records what would have been done.
        "JWT_SHIELD_MONITOR_ONLY": False,
    }
