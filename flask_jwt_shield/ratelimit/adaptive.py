"""The adaptive baselines: per session, with the subject's as a second view; one rule written twice.

:func:`step` is the rule in Python, for baselines kept in this process
(:class:`MemoryBaselines`); :data:`ADAPTIVE_LUA` is the same rule in Lua, for baselines kept
in Redis (:class:`RedisBaselines`) so that every worker learns the same baselines.
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

from .storage import hash_tag
from .storage import key_part
from .syntax import Sustain
from .syntax import parse_limits
from .syntax import validate_limit_string

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = [
    "ADAPTIVE_LUA",
    "NORMAL",
    "SESSION",
    "SUBJECT",
    "AdaptiveSettings",
    "Baseline",
    "MemoryBaselines",
    "Observation",
    "RedisBaselines",
    "memory_baselines",
    "step",
]

#: What :func:`step` finds: nothing unusual,
NORMAL: Final = 0
#: the session's own traffic is anomalous (the one signal that acts),
SESSION: Final = 1
#: or only the subject's total is (the second signal: recorded, never acted upon).
SUBJECT: Final = 2


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """Settings of the adaptive baselines (``JWT_SHIELD_ADAPTIVE``).

    Requests are counted per *session* (the token's ``sid``; a token without a session is
    its own) and per *subject* in fixed buckets of ``bucket_seconds`` (aligned on the epoch:
    ``floor(time.time() / bucket_seconds)``). When a bucket closes, its count updates the
    baseline, an exponentially weighted moving average::

        baseline = alpha * count + (1 - alpha) * baseline   (the first bucket: baseline = count)

    With the defaults (60 s buckets, alpha 0.1) a baseline is the rate of roughly the last
    twenty active minutes. A request is anomalous when its *session's* count in the current
    bucket exceeds both ``factor`` x the session's baseline and ``floor`` (a limit string,
    scaled to one bucket), once the session has ``min_history`` learned buckets. So a thief
    using a copy of a quiet session's token stands out against that session's pace, however
    busy the account's other sessions are; and the finding names that session.

    **Warm-up.** A fresh session (a new login) has no pace of its own yet: for its first
    ``min_history`` learned buckets it is judged against its subject instead, and is anomalous
    above ``factor`` x the larger of ``floor`` and the subject's baseline. A new client may
    thus be much busier than the account was (a sync client, a dashboard) without being
    judged against the account's old pace, yet a fresh token hammered at once is still
    capped. On a new account (no subject baseline either) nothing is flagged until something
    is learned; the per-token limit and the spike threshold apply throughout.

    **Second signal.** The subject's total is compared with the subject's own baseline the
    same way: when it alone is anomalous (no session of the subject was in that bucket), it
    is reported as ``SUBJECT``, which the pipeline only records. The subject's view learns
    every active bucket but those in which one of its sessions was anomalous: a lasting
    change of the account's traffic (a second client added) stops being reported within a
    few buckets, while a thief hammering a fresh session cannot raise its warm-up cap.

    Details that keep the baselines honest:

    - Buckets without any request are not learned: nights and weekends would pull every
      baseline towards zero and turn any burst into an anomaly.
    - A session's flagged bucket is not learned, so a thief cannot teach a session his rate.
    - A session or subject idle for ``idle_ttl`` seconds starts learning afresh.

    An anomalous bucket is *sustained* once its session had ``sustain`` anomalous buckets
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
    #: memory storage only: the least recently seen sessions are forgotten beyond this many
    #: (a subject with them, once none of its sessions is left)
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


@dataclass(slots=True, weakref_slot=True)
class Baseline:
    """One session's (or subject's) learning state; :func:`step` moves it on by one request."""

    bucket: int  # index of the bucket being counted
    count: int  # requests in that bucket so far
    ewma: float  # learned requests per bucket
    learned: int  # buckets learned so far
    flagged: int  # index of the last flagged bucket (not learned), -1 for none
    #: a subject's only: index of the last bucket its own total was reported in
    reported: int = -1


#: What :meth:`MemoryBaselines.observe` and :meth:`RedisBaselines.observe` answer: the
#: finding (:data:`NORMAL`, :data:`SESSION` or :data:`SUBJECT`); the session's count in the
#: bucket, the baseline it was compared with (its own, or in warm-up its subject's cap) and
#: its learned buckets; the subject's count and baseline. ``None`` stands for :data:`NORMAL`.
Observation = tuple[int, int, float, int, int, float]


def _close_bucket(baseline: Baseline, bucket: int, alpha: float) -> None:
    """Learn the bucket that just ended (unless it was empty or flagged) and start ``bucket``.
    Runs once a bucket, off the per-request part of :func:`step`."""
    if baseline.count > 0 and baseline.flagged != baseline.bucket:
        if baseline.learned == 0:
            baseline.ewma = float(baseline.count)
        else:
            baseline.ewma = alpha * baseline.count + (1 - alpha) * baseline.ewma
        baseline.learned += 1
    baseline.bucket, baseline.count = bucket, 0


def step(session: Baseline, subject: Baseline, bucket: int, settings: AdaptiveSettings, floor: float) -> int:
    """Count one request in ``session`` and its ``subject``: :data:`NORMAL`, :data:`SESSION`
    (the session's traffic is anomalous) or :data:`SUBJECT` (only the subject's total is).

    The Lua script :data:`ADAPTIVE_LUA` below is the same algorithm, line for line;
    change both.
    """
    if bucket > session.bucket:
        _close_bucket(session, bucket, settings.alpha)
    if bucket > subject.bucket:
        # The subject's view learns every active bucket but those in which one of its
        # sessions was anomalous: a thief cannot raise the cap of the warm-up with his rate.
        _close_bucket(subject, bucket, settings.alpha)
    count = session.count = session.count + 1
    subject.count += 1
    if subject.learned < settings.min_history and session.learned < settings.min_history:
        return NORMAL  # nothing to compare with yet, for the session or its subject
    if count > floor and session.flagged != session.bucket:
        if session.learned >= settings.min_history:
            reference = session.ewma
        elif subject.learned >= settings.min_history:
            reference = max(floor, subject.ewma)  # warm-up: capped by the subject's view
        else:
            reference = -1.0  # nothing learned yet, here or for the subject
        if reference >= 0 and count > settings.factor * reference:
            session.flagged = session.bucket
            subject.flagged = subject.bucket  # the subject's bucket is explained
            return SESSION
    if (
        subject.count > floor
        and subject.flagged != subject.bucket
        and subject.reported != subject.bucket
        and subject.learned >= settings.min_history
        and subject.count > settings.factor * subject.ewma
    ):
        subject.reported = subject.bucket  # reported, and still learned
        return SUBJECT
    return NORMAL


def compared_with(session: Baseline, subject: Baseline, settings: AdaptiveSettings, floor: float) -> float:
    """The baseline a flagged session was compared with (for the report only)."""
    return session.ewma if session.learned >= settings.min_history else max(floor, subject.ewma)


#: :func:`step` in Lua, for baselines kept in Redis: one script call per request.
#: KEYS: the session's hash, the subject's hash (one hash slot on a cluster).
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
local u = redis.call('HMGET', KEYS[2], 'b', 'c', 'e', 'n', 'f', 'r')
local ub, uc, ue, un, uf, ur = k, 0, 0, 0, -1, -1
if u[1] then
  ub = tonumber(u[1]); uc = tonumber(u[2]); ue = tonumber(u[3]); un = tonumber(u[4]); uf = tonumber(u[5])
  ur = tonumber(u[6])
end
-- a new key, or the first request of a bucket: write the whole state, renew the idle TTL
local renew, renew_u = (not s[1]) or k > b, (not u[1]) or k > ub
if k > b then
  if c > 0 and f ~= b then
    if n == 0 then e = c else e = alpha * c + (1 - alpha) * e end
    n = n + 1
  end
  b = k; c = 0
end
if k > ub then
  if uc > 0 and uf ~= ub then
    if un == 0 then ue = uc else ue = alpha * uc + (1 - alpha) * ue end
    un = un + 1
  end
  ub = k; uc = 0
end
c = c + 1
uc = uc + 1
local found = 0
local reference = -1
if un >= min_history or n >= min_history then  -- else nothing to compare with yet
  if c > floor_ and f ~= b then
    if n >= min_history then
      reference = e
    elseif un >= min_history then
      reference = math.max(floor_, ue)
    end
    if reference >= 0 and c > factor * reference then
      found = 1; f = b; uf = ub
    end
  end
  if found == 0 and uc > floor_ and uf ~= ub and ur ~= ub and un >= min_history and uc > factor * ue then
    found = 2; ur = ub
  end
end
-- within a bucket and with nothing flagged, only the count changed
if renew or found ~= 0 then
  redis.call('HSET', KEYS[1], 'b', string.format('%d', b), 'c', c, 'e', tostring(e), 'n', n,
    'f', string.format('%d', f))
  redis.call('EXPIRE', KEYS[1], ttl)
else
  redis.call('HSET', KEYS[1], 'c', c)
end
if renew_u or found ~= 0 then
  redis.call('HSET', KEYS[2], 'b', string.format('%d', ub), 'c', uc, 'e', tostring(ue), 'n', un,
    'f', string.format('%d', uf), 'r', string.format('%d', ur))
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('HSET', KEYS[2], 'c', uc)
end
if found == 0 then return {0} end
if n < min_history then reference = math.max(floor_, ue) else reference = e end
return {found, c, tostring(reference), n, uc, tostring(ue)}
"""


# A session's entry in memory: its baseline, its subject's, and the subject's name.
_Entry = tuple[Baseline, Baseline, str]


def _fresh(bucket: int) -> Baseline:
    return Baseline(bucket, 0, 0.0, 0, -1)


class MemoryBaselines:
    """Baselines of one process: a bounded LRU dict of sessions guarded by a lock.

    Each session's entry holds its subject's baseline too, so the warm path makes one
    lookup; a subject's baseline lives as long as one of its sessions does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._subjects: weakref.WeakValueDictionary[str, Baseline] = weakref.WeakValueDictionary()

    def observe(
        self, session: str, subject: str, now: float, settings: AdaptiveSettings, floor: float
    ) -> Observation | None:
        """Count one request of ``session`` (of ``subject``) at ``now``: an :data:`Observation`,
        ``None`` when nothing is unusual."""
        bucket = math.floor(now / settings.bucket_seconds)
        with self._lock:
            entry = self._sessions.get(session)
            if entry is None:
                entry = self._enter(session, subject, bucket, settings)
            elif entry[0].bucket != bucket:
                # Idleness and recency are settled once per bucket: the warm path skips both.
                if entry[2] != subject or (bucket - entry[0].bucket) * settings.bucket_seconds > settings.idle_ttl:
                    entry = self._enter(session, subject, bucket, settings)
                else:
                    self._sessions.move_to_end(session)
            own, total, _ = entry
            found = step(own, total, bucket, settings, floor)
            if found == NORMAL:
                return None
            return found, own.count, compared_with(own, total, settings, floor), own.learned, total.count, total.ewma

    def _enter(self, session: str, subject: str, bucket: int, settings: AdaptiveSettings) -> _Entry:
        """A fresh (or idle) session: its new baseline beside its subject's."""
        total = self._subjects.get(subject)
        if total is None:
            total = self._subjects[subject] = _fresh(bucket)
        elif (bucket - total.bucket) * settings.bucket_seconds > settings.idle_ttl:
            # reset in place: the subject's other (idle) sessions still hold it
            total.bucket, total.count, total.ewma, total.learned, total.flagged, total.reported = (
                bucket,
                0,
                0.0,
                0,
                -1,
                -1,
            )
        entry = self._sessions[session] = (_fresh(bucket), total, subject)
        self._sessions.move_to_end(session)
        if len(self._sessions) > settings.max_subjects:
            self._sessions.popitem(last=False)
        return entry


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

    def keys(self, session: str, subject: str) -> tuple[str, str]:
        """The storage keys of ``session``'s and ``subject``'s hashes."""
        # Both keys in the subject's slot: one script touches both, on a cluster too.
        tagged = self._storage.prefixed_key(f"{self._namespace}/{hash_tag(subject)}")
        return f"{tagged}/{key_part(session)}", tagged

    def observe(
        self, session: str, subject: str, now: float, settings: AdaptiveSettings, floor: float
    ) -> Observation | None:
        """:meth:`MemoryBaselines.observe` in one script call: the same rule, the same answer."""
        reply = self._script(
            keys=list(self.keys(session, subject)),
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
        found = int(reply[0])
        if found == NORMAL:
            return None
        return found, int(reply[1]), float(reply[2]), int(reply[3]), int(reply[4]), float(reply[5])
