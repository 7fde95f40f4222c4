"""Where the limiter counts: choosing a :mod:`limits` storage, and its errors.

A storage comes from a URI, a storage object or an app's Flask-Limiter ``Limiter``. Every
failure of any backend is raised as :class:`LimiterStorageError`, a
:class:`~flask_jwt_shield.errors.StoreError`, so the pipeline can apply
``JWT_SHIELD_FAIL_MODE``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Final

from limits.errors import ConcurrentUpdateError
from limits.errors import ConfigurationError
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.storage import Storage
from limits.storage import storage_from_string

from ..errors import StoreError

if TYPE_CHECKING:
    from flask_limiter import Limiter

__all__ = ["LeanMemoryStorage", "LimiterStorageError", "hash_tag", "key_part", "resolve_storage", "storage_exceptions"]

# A hung Redis must not hang the request: without a socket timeout redis-py waits forever
# on a server that accepts connections but never answers. Applied only to storages built
# from a URI here, and only where the caller passed no value of its own.
_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "redis+unix", "redis+cluster"})
_REDIS_DEFAULT_OPTIONS: Final[Mapping[str, float]] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
}


class LimiterStorageError(StoreError):
    """The rate limit storage could not be read or written (down, refused, timed out).

    Every storage failure of :class:`~flask_jwt_shield.ratelimit.TokenRateLimiter` is raised
    as this one type, whatever the backend; the original exception is ``__cause__`` and
    :attr:`original`. A :class:`~flask_jwt_shield.errors.StoreError`, as every store failure.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"rate limit storage unavailable: {type(original).__name__}: {original}")
        #: the exception raised by the storage backend
        self.original = original


def key_part(part: str) -> str:
    """``part`` escaped for a storage key: limits joins key parts with ``/``, and escaping
    keeps ``("a/b", "c")`` and ``("a", "b/c")`` apart."""
    return part.replace("%", "%25").replace("/", "%2F")


def hash_tag(part: str) -> str:
    """``part`` escaped (:func:`key_part`, and its braces) between braces: a Redis Cluster
    hashes only that part of a key, so every key built from it sits in one slot. A script
    may then touch them together, and the leased mode settles them with one node."""
    return "{" + key_part(part).replace("{", "%7B").replace("}", "%7D") + "}"


class LeanMemoryStorage(MemoryStorage):
    """``memory://`` with a cheaper counter: the same fixed-window semantics, less machinery.

    ``limits``' :class:`MemoryStorage` takes a per-key lock, checks its expiry timer thread and
    reads the key twice on every ``incr``; on the request path that cost more than the rest
    of the pipeline together (benchmarks/RESULTS.md). Here one lock guards a lookup and an
    increment, and expired counters are swept once a minute instead of by a timer. Used only
    for storages the shield builds itself from ``memory://``; moving windows and everything
    else stay :class:`MemoryStorage`'s.
    """

    _SWEEP_EVERY = 60.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self._counter_lock = threading.Lock()
        self._swept = time.time()

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        with self._counter_lock:
            if self.expirations.get(key, 0.0) <= now:
                self.storage[key] = amount  # a new window opens at its first hit
                self.expirations[key] = now + expiry
                value = amount
            else:
                value = self.storage[key] = self.storage[key] + amount
            if now - self._swept > self._SWEEP_EVERY:
                self._swept = now
                for stale in [k for k, until in self.expirations.items() if until <= now]:
                    self.storage.pop(stale, None)
                    self.expirations.pop(stale, None)
        return value


def resolve_storage(
    storage_uri: str | None,
    storage: Storage | None,
    limiter: Limiter | None,
    options: Mapping[str, float | str | bool] | None,
) -> Storage:
    """The storage named by exactly one of a URI, a storage object or an app's Limiter.

    :raises ValueError: for two of them at once, a bad or asynchronous URI, or a Limiter
        whose storage is not built yet.
    """
    choices = (("storage_uri", storage_uri), ("storage", storage), ("limiter", limiter))
    given = [name for name, value in choices if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of storage_uri, storage or limiter, not {' and '.join(given)}")
    if limiter is not None:
        # Flask-Limiter 4 builds its storage in init_app and exposes it as Limiter.storage,
        # a property that asserts it exists; it is absent before init_app or when disabled.
        try:
            found: Storage | None = limiter.storage
        except AssertionError:
            found = None
        if found is None:
            raise ValueError(
                "the Flask-Limiter Limiter has no storage yet: call limiter.init_app(app)"
                " first (and keep RATELIMIT_ENABLED true)"
            )
        storage = found
    elif storage is None:
        uri = storage_uri or "memory://"
        scheme = uri.partition("://")[0]
        kwargs: dict[str, float | str | bool] = {}
        if scheme in _REDIS_SCHEMES:
            kwargs.update(_REDIS_DEFAULT_OPTIONS)
        kwargs.update(options or {})
        try:
            built = (
                LeanMemoryStorage(uri, wrap_exceptions=True)
                if scheme == "memory" and not options
                else storage_from_string(uri, wrap_exceptions=True, **kwargs)
            )
        except ConfigurationError as exc:
            raise ValueError(f"rate limit storage {uri!r}: {exc}") from None
        if not isinstance(built, Storage):
            raise ValueError(f"rate limit storage {uri!r} is asynchronous; use a synchronous URI")
        storage = built
    if not isinstance(storage, Storage):
        raise TypeError(f"not a limits storage: {storage!r}")
    return storage


def storage_exceptions(storage: Storage) -> tuple[type[BaseException], ...]:
    """What ``storage`` may raise when it fails: each becomes a :class:`LimiterStorageError`."""
    errors: list[type[BaseException]] = [StorageError, ConcurrentUpdateError]
    if not isinstance(storage, MemoryStorage):
        # The backend's own errors (redis.RedisError ...) escape unwrapped from storages
        # built with wrap_exceptions=False -- e.g. an app's Limiter -- and from the
        # adaptive script; OSError covers socket failures a client library lets through.
        base = storage.base_exceptions
        errors.extend(base if isinstance(base, tuple) else (base,))
        errors.append(OSError)
    return tuple(errors)
