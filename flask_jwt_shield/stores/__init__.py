"""Stores hold the shield's server-side state; :func:`store_from_uri` picks one by URI."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Family
from .base import Rotation
from .base import Store
from .base import Use
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["Family", "MemoryStore", "Rotation", "SQLiteStore", "Store", "Use", "store_from_uri"]


def store_from_uri(uri: str, *, instance_path: str | None = None) -> Store:
    """Build the store that ``uri`` names.

    * ``memory://`` — this process only.
    * ``sqlite:///relative/path.db`` — relative to the app's instance folder (as in
      Flask-SQLAlchemy); ``sqlite:////absolute/path.db`` — an absolute path.

    Nothing is connected here: stores connect lazily, so a store that is down at start-up
    does not stop the app from starting.
    """
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        if not uri.lower().startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            raise ConfigurationError(
                f"JWT_SHIELD_STORE_URI {uri!r} has no path; write 'sqlite:///shield.db' (in the"
                " instance folder) or 'sqlite:////var/lib/app/shield.db' (absolute)."
            )
        path = uri[len("sqlite:///"):]
        if not os.path.isabs(path):
            path = os.path.join(instance_path or os.getcwd(), path)
        return SQLiteStore(path)
    if scheme in {"redis", "rediss", "unix", "redis+cluster"}:
        raise ConfigurationError(
            f"JWT_SHIELD_STORE_URI {uri!r}: the Redis store is not available in this version;"
            " use 'sqlite:///shield.db' (one host) or pass JWTShield(store=...)."
        )
    raise ConfigurationError(
        f"JWT_SHIELD_STORE_URI {uri!r} has an unknown scheme {scheme!r}; use 'memory://' or"
        " 'sqlite:///shield.db'."
    )
