"""A plain fixed-window limit per key, for an endpoint of the shield's own (the token
endpoint: per session and per client address), on the per-token limiter's storage."""

from __future__ import annotations

import math
import time

from limits.storage import Storage

from .storage import LimiterStorageError
from .storage import key_part
from .storage import storage_exceptions
from .syntax import parse_limits


class KeyedLimit:
    """``limits`` (a limit string) for each key of ``namespace``."""

    def __init__(self, storage: Storage, limits: str, namespace: str) -> None:
        self.text = limits
        self._items = parse_limits(limits)
        self._namespace = namespace
        self._storage = storage
        self._errors = storage_exceptions(storage)

    def hit(self, key: str) -> int | None:
        """Count one call for ``key``: ``None`` when allowed, else the seconds until it may
        retry. Raises :class:`LimiterStorageError` when the storage fails.

        Exactly ``FixedWindowRateLimiter.hit`` (increment, then compare) without its layers:
        a refresh counts two of these.
        """
        part = key_part(key)
        storage = self._storage
        try:
            for item in self._items:
                storage_key = item.key_for(self._namespace, part)
                if storage.incr(storage_key, item.get_expiry()) > item.amount:
                    return max(1, math.ceil(storage.get_expiry(storage_key) - time.time()))
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc
        return None
