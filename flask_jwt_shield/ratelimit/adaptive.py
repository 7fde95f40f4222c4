"""The adaptive per-subject baseline: its settings, and its one rule written twice.

:func:`step` is the rule in Python, for baselines kept in this process
(:class:`MemoryBaselines`); :data:`ADAPTIVE_LUA` is the same rule in Lua, for baselines kept
in Redis (:class:`RedisBaselines`) so that every worker learns one baseline per subject.
They sit together here because a change to one is a change to both.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Final

from limits.storage import RedisStorage
from limits.storage import Storage

from .storage import key_part
from .syntax import Sustain
from .syntax import parse_limits
from .syntax import validate_limit_string

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = [
    "ADAPTIVE_LUA",
    "AdaptiveSettings",
    "Baseline",
    "MemoryBaselines",
    "RedisBaselines",
    "memory_baselines",
    "step",
]


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """Settings of the adaptive per-subject baseline (``JWT_SHIELD_ADAPTIVE``).

    Each subject's requests are counted in fixed buckets of ``bucket_seconds`` (aligned on
    the epoch: ``floor(time.time() / bucket_seconds)``). When a bucket closes, its count
    updates the subject's baseline, an exponentially weighted moving average::

        baseline = alpha * count + (1 - alpha) * baseline   (the first bucket: baseline = count)

    With the defaults (60 s buckets, alpha 0.1) the baseline is the rate of roughly the last
    twenty active minutes. A request is flagged when the current bucket's count exceeds both
    ``factor`` x baseline and ``floor`` (a limit string, scaled to one bucket), once the
    subject has ``min_history`` learned buckets. Details that keep the baseline honest:

    - Buckets without any request are not learned: nights and weekends would pull every
      baseline towards zero and turn any burst into an anomaly.
    - A flagged bucket is not learned, so an attacker cannot teach the baseline his rate.
    - A subject idle for ``idle_ttl`` seconds starts learning afresh.

    An anomalous bucket is *sustained* once the subject had ``sustain`` anomalous buckets
    (a :class:`Sustain` string, ``"3/10 minutes"``) within its span; ``None`` makes every
    anomalous bucket sustained. Only sustained anomalies get the configured action.
    """

    factor: float = 10.0
    floor: str = "60/minute"
    sustain: str | None = "3/10 minutes"
    bucket_seconds: int = 60
    alpha: float = 0.1
    min_history: int = 3
    idle_ttl: int = 7 * 24 * 3600
    #: memory storage only: the least recently seen subjects are forgotten beyond this
    max_subjects: int = 100_000

    def __post_init__(self) -> None:
        if not self.factor >= 1.0:
            raise ValueError(f"adaptive factor must be at least 1.0, got {self.factor!r}")
        floor = parse_limits(validate_limit_string(self.floor, "floor"))
        if len(floor) != 1:
            raise ValueError(f"the adaptive floor is one limit such as '60/minute', got {self.floor!r}")
        if self.bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be at least 1, got {self.bucket_seconds!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")
        if self.min_history < 0 or self.idle_ttl < self.bucket_seconds or self.max_subjects < 1:
            raise ValueError("min_history >= 0, idle_ttl >= bucket_seconds and max_subjects >= 1")
        if self.sustain is not None:
            Sustain.parse(self.sustain)

    @property
    def floor_per_bucket(self) -> float:
        """The floor expressed in requests per bucket."""
        item = parse_limits(self.floor)[0]
        return item.amount * self.bucket_seconds / item.get_expiry()


@dataclass(slots=True)
class Baseline:
    """One subject's learning state; :func:`step` moves it on by one request."""

    bucket: int  # index of the bucket being counted
    count: int  # requests in that bucket so far
    ewma: float  # learned requests per bucket
    learned: int  # buckets learned so far
    flagged: int  # index of the last flagged bucket, -1 for none


def step(state: Baseline, bucket: int, settings: AdaptiveSettings, floor: float) -> bool:
    """Count one request in ``state``; True when this request flags the subject.

    The Lua script :data:`ADAPTIVE_LUA` below is the same algorithm, line for line;
    change both.
    """
    if bucket > state.bucket:
        if state.count > 0 and state.flagged != state.bucket:
            if state.learned == 0:
                state.ewma = float(state.count)
            else:
                state.ewma = settings.alpha * state.count + (1 - settings.alpha) * state.ewma
            state.learned += 1
        state.bucket, state.count = bucket, 0
    state.count += 1
    flagged = (
        state.learned >= settings.min_history
        and state.count > floor
        and state.count > settings.factor * state.ewma
        and state.flagged != state.bucket
    )
    if flagged:
        state.flagged = state.bucket
    return flagged


#: :func:`step` in Lua, for baselines kept in Redis: one script call per request.
ADAPTIVE_LUA: Final = """
local now = tonumber(ARGV[1])
local length = tonumber(ARGV[2])
local alpha = tonumber(ARGV[3])
local factor = tonumber(ARGV[4])
local floor_ = tonumber(ARGV[5])
local min_history = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local k = math.floor(now / length)
local s = redis.call('HMGET', KEYS[1], 'b', 'c', 'e', 'n', 'f')
local b, c, e, n, f = k, 0, 0, 0, -1
if s[1] then
  b = tonumber(s[1]); c = tonumber(s[2]); e = tonumber(s[3]); n = tonumber(s[4]); f = tonumber(s[5])
end
if k > b then
  if c > 0 and f ~= b then
    if n == 0 then e = c else e = alpha * c + (1 - alpha) * e end
    n = n + 1
  end
  b = k; c = 0
end
c = c + 1
local flagged = 0
if n >= min_history and c > floor_ and c > factor * e and f ~= b then
  flagged = 1; f = b
end
redis.call('HSET', KEYS[1], 'b', string.format('%d', b), 'c', c, 'e', tostring(e), 'n', n,
  'f', string.format('%d', f))
redis.call('EXPIRE', KEYS[1], ttl)
return {flagged, c, tostring(e), n}
"""


class MemoryBaselines:
    """Baselines of one process: a bounded LRU dict guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, Baseline] = OrderedDict()

    def observe(self, subject: str, now: float, settings: AdaptiveSettings, floor: float) -> tuple[bool, int, float]:
        """Count one request of ``subject`` at ``now``: (flagged, count in the bucket, baseline)."""
        bucket = math.floor(now / settings.bucket_seconds)
        with self._lock:
            state = self._states.get(subject)
            if state is None or (bucket - state.bucket) * settings.bucket_seconds > settings.idle_ttl:
                state = Baseline(bucket, 0, 0.0, 0, -1)
                self._states[subject] = state
            self._states.move_to_end(subject)
            flagged = step(state, bucket, settings, floor)
            while len(self._states) > settings.max_subjects:
                self._states.popitem(last=False)
            return flagged, state.count, state.ewma


# One baseline table per memory storage object, so two limiters sharing a MemoryStorage
# (say, an app's Flask-Limiter reused by two apps) share baselines as they share counters.
_MEMORY_BASELINES: weakref.WeakKeyDictionary[Storage, MemoryBaselines] = weakref.WeakKeyDictionary()
_MEMORY_BASELINES_LOCK = threading.Lock()


def memory_baselines(storage: Storage) -> MemoryBaselines:
    """The baselines kept in this process for ``storage`` (one table per storage object)."""
    with _MEMORY_BASELINES_LOCK:
        table = _MEMORY_BASELINES.get(storage)
        if table is None:
            table = _MEMORY_BASELINES[storage] = MemoryBaselines()
        return table


class RedisBaselines:
    """Baselines kept in one Redis (or cluster) for every worker: :data:`ADAPTIVE_LUA` per request."""

    def __init__(self, storage: RedisStorage, namespace: str) -> None:
        self._storage = storage
        self._namespace = namespace
        # register_script only hashes the script: no connection is made here.
        self._script: Script = storage.get_connection().register_script(ADAPTIVE_LUA.encode())

    def observe(self, subject: str, now: float, settings: AdaptiveSettings, floor: float) -> tuple[bool, int, float]:
        """:meth:`MemoryBaselines.observe` in one script call: the same rule, the same answer."""
        name = self._storage.prefixed_key(f"{self._namespace}/{key_part(subject)}")
        reply = self._script(
            keys=[name],
            args=[
                repr(now),
                settings.bucket_seconds,
                repr(settings.alpha),
                repr(settings.factor),
                repr(floor),
                settings.min_history,
                settings.idle_ttl,
            ],
        )
        return bool(reply[0]), int(reply[1]), float(reply[2])
