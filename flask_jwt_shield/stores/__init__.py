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
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = ["Family", "MemoryStore", "RedisStore", "Rotation", "SQLiteStore", "Store", "Use", "store_from_uri"]


def store_from_uri(
    uri: str,
    *,
    instance_path: str | None = None,
    connect_timeout: float = 0.5,
    timeout: float = 0.5,
    max_delay: float = 1.0,
) -> Store:
    """Build the store that ``uri`` names.

    * ``memory://`` — this process only.
    * ``sqlite:///relative/path.db`` — relative to the app's instance folder (as in
      Flask-SQLAlchemy); ``sqlite:////absolute/path.db`` — an absolute path.
    * ``redis://host:port/db``, ``rediss://…``, ``unix:///path.sock`` — one Redis server;
      ``redis+cluster://host:port`` — a Redis Cluster, through any of its nodes.

    ``connect_timeout`` and ``timeout`` (seconds) apply to Redis; ``max_delay`` bounds how
    late a revocation made by another process may take effect here (``0``: never late,
    the store is read on every check).

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
        path = uri[len("sqlite:///") :]
        if not os.path.isabs(path):
            path = os.path.join(instance_path or os.getcwd(), path)
        return SQLiteStore(path, local_view=max_delay > 0)
    if scheme in {"redis", "rediss", "unix", "redis+cluster"}:
        if scheme == "redis+cluster" and not urlsplit(uri).netloc:
            raise ConfigurationError(
                f"JWT_SHIELD_STORE_URI {uri!r} names no cluster node; write 'redis+cluster://host:6379'."
            )
        try:
            import redis  # noqa: F401 - the optional client, checked here for a clear start-up error
        except ImportError:
            raise ConfigurationError(
                f"JWT_SHIELD_STORE_URI {uri!r} needs the Redis client, which is not installed;"
                " install it with: pip install 'Flask-JWT-Shield[redis]'."
            ) from None
        return RedisStore(uri, connect_timeout=connect_timeout, timeout=timeout, max_delay=max_delay)
    raise ConfigurationError(
        f"JWT_SHIELD_STORE_URI {uri!r} has an unknown scheme {scheme!r}; use 'memory://',"
        " 'sqlite:///shield.db', 'redis://host:6379/0' or 'redis+cluster://host:6379'."
    )
