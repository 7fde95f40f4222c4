"""Bounded in-process caches: a plain :class:`dict` that drops its oldest entry when full.

A leaf (imports nothing from the package). Reads stay ``cache.get(key)``, inlined on the hot
paths; only a miss pays the call to :func:`bounded_put`.
"""

from __future__ import annotations

import typing as t

__all__ = ["bounded_put"]

K = t.TypeVar("K")
V = t.TypeVar("V")


def bounded_put(cache: dict[K, V], key: K, value: V, limit: int) -> None:
    """``cache[key] = value``, first dropping the oldest entry (insertion order) when
    ``cache`` holds ``limit`` entries or more.

    Safe enough without a lock: under threads two puts may drop one entry each, or the
    same one, and the cache may briefly hold an entry or two over ``limit``; it never
    raises and never grows without bound.
    """
    if len(cache) >= limit:
        try:
            del cache[next(iter(cache))]
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass
    cache[key] = value
