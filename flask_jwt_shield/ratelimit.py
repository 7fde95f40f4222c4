"""Per-token rate limits, spike detection and adaptive per-subject baselines.

This module is the rate step of the request pipeline (DESIGN.md, step 6). It uses the
:mod:`limits` strategies and storages directly -- the library Flask-Limiter is built on --
rather than Flask-Limiter's per-request machinery, which would add its own before/after
request hooks, key functions and header injection to every request; one
:meth:`TokenRateLimiter.check` costs a few microseconds on memory storage.

One call per request does everything, in this order:

1. **spike** -- every attempt presenting the token is counted against the spike threshold,
   rejected attempts included (a thief hammering a limited token is still hammering);
2. **adaptive** (optional) -- the subject's request rate is compared with its own learned
   baseline; an anomaly that lasts (``sustain``) is reported as sustained;
3. **limit** -- the per-token limits (or the endpoint's own limits) are hit in order of
   increasing window, stopping at the first one exceeded. A token refused in several
   distinct minutes within a span (``spike_sustain``) is reported as a sustained spike:
   a thief who keeps pressing just above the limit, pausing and coming back, is hammering
   too, even though no single window reaches the spike threshold.

Storage failures of any backend surface as :class:`LimiterStorageError` only, so the
pipeline can apply ``JWT_SHIELD_FAIL_MODE``.
"""

from __future__ import annotations

import math
import threading
import time
import typing as t
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Final

from limits import RateLimitItem
from limits import parse_many
from limits.errors import ConcurrentUpdateError
from limits.errors import ConfigurationError
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.storage import RedisStorage
from limits.storage import Storage
from limits.storage import storage_from_string
from limits.strategies import STRATEGIES
from limits.strategies import RateLimiter

from .config import MINUTE
from .config import Sustain

if TYPE_CHECKING:
    from flask_limiter import Limiter
    from redis.commands.core import Script

__all__ = [
    "AdaptiveSettings",
    "AnomalyReport",
    "LimiterStorageError",
    "RateDecision",
    "SpikeReport",
    "TokenRateLimiter",
    "default_spike_threshold",
    "parse_limits",
    "scale_limit_string",
    "validate_limit_string",
]

#: Strategy names accepted by :class:`TokenRateLimiter` (the same as Flask-Limiter's).
STRATEGY_NAMES: Final = frozenset(STRATEGIES)

_EXAMPLE: Final = "'300/minute' or '10/second;300/minute'"

# A hung Redis must not hang the request: without a socket timeout redis-py waits forever
# on a server that accepts connections but never answers. Applied only to storages built
# from a URI here, and only where the caller passed no value of its own.
_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "redis+unix", "redis+cluster"})
_REDIS_DEFAULT_OPTIONS: Final[Mapping[str, float]] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
}


class LimiterStorageError(Exception):
    """The rate limit storage could not be read or written (down, refused, timed out).

    Every storage failure of :class:`TokenRateLimiter` is raised as this one type, whatever
    the backend; the original exception is ``__cause__`` and :attr:`original`.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"rate limit storage unavailable: {type(original).__name__}: {original}")
        #: the exception raised by the storage backend
        self.original = original


# --------------------------------------------------------------------------- limit strings


def parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    """Parse a Flask-Limiter limit string (``"10/second;300/minute"``) into limit items.

    :raises ValueError: if the string is not valid limit syntax or names a zero amount.
    """
    items = tuple(parse_many(value))
    if any(item.amount < 1 for item in items):
        raise ValueError(f"a rate limit must allow at least one request: {value!r}")
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


def _format_item(item: RateLimitItem, amount: int) -> str:
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
    return ";".join(_format_item(item, item.amount * factor) for item in parse_limits(value))


def default_spike_threshold(rate_limit: str | None) -> str | None:
    """The documented default of ``JWT_SHIELD_SPIKE_THRESHOLD``: 10x each rate limit.

    ``None`` (rate limiting off) gives ``None`` (no spike detection).
    """
    return None if rate_limit is None else scale_limit_string(rate_limit, 10)


def _escape(part: str) -> str:
    # limits joins key parts with "/"; escaping keeps ("a/b", "c") and ("a", "b/c") apart.
    return part.replace("%", "%25").replace("/", "%2F")


def _with_namespace(items: tuple[RateLimitItem, ...], namespace: str) -> tuple[RateLimitItem, ...]:
    # parse_many puts every item in the "LIMITER" namespace, which is where Flask-Limiter
    # keeps its own counters; our namespace is the first part of every key we write.
    return tuple(type(item)(item.amount, item.multiples, namespace=namespace) for item in items)


def _by_window(items: tuple[RateLimitItem, ...]) -> tuple[RateLimitItem, ...]:
    # Shortest window first (Flask-Limiter's order): a burst is refused by "10/second"
    # before it eats into the "300/minute" budget.
    return tuple(sorted(items, key=lambda item: item.get_expiry()))


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class SpikeReport:
    """The spike threshold was crossed; reported once per window of the crossed limit.

    ``count`` attempts (rejected ones included) arrived within ``window`` seconds; the window
    opened ``elapsed`` seconds before the crossing attempt, so ``count / elapsed`` is the
    observed rate. ``threshold`` is the crossed limit.
    """

    identity: str
    threshold: RateLimitItem
    count: int
    window: int
    elapsed: float
    #: True for the sustained form: ``count`` distinct minutes with refused attempts
    #: within ``window`` seconds, ``threshold`` being the ``spike_sustain`` setting.
    sustained: bool = False

    def as_detail(self) -> dict[str, object]:
        """The observed rate as a JSON-ready dict for a ``traffic-spike`` event's detail."""
        if self.sustained:
            return {
                "pattern": "sustained",
                "sustain": f"{self.threshold.amount}/{self.window} seconds",
                "refused_minutes": self.count,
                "window_seconds": self.window,
            }
        return {
            "threshold": _format_item(self.threshold, self.threshold.amount),
            "count": self.count,
            "window_seconds": self.window,
            "elapsed_seconds": round(self.elapsed, 3),
        }


@dataclass(frozen=True, slots=True)
class AnomalyReport:
    """A subject's rate is above ``factor`` x its own baseline and above the floor.

    Reported at most once per bucket. ``count`` requests arrived in the current bucket of
    ``bucket_seconds``; ``baseline`` is the learned requests per bucket; ``floor`` is the
    floor scaled to one bucket.
    """

    subject: str
    count: int
    bucket_seconds: int
    baseline: float
    factor: float
    floor: float
    #: anomalous buckets of this subject within the sustain span, this one included
    anomalous_buckets: int = 1
    #: True once ``anomalous_buckets`` reached the ``sustain`` count: apply the action
    sustained: bool = True

    def as_detail(self) -> dict[str, object]:
        """The observed and normal rate as a JSON-ready dict for a ``traffic-anomaly`` event."""
        return {
            "count": self.count,
            "bucket_seconds": self.bucket_seconds,
            "baseline": round(self.baseline, 3),
            "factor": self.factor,
            "floor": self.floor,
            "anomalous_buckets": self.anomalous_buckets,
            "sustained": self.sustained,
        }


class RateDecision:
    """The outcome of one :meth:`TokenRateLimiter.check`.

    ``allowed`` is False when a limit is exceeded. ``spike`` and ``anomaly`` are set on the
    one attempt that crossed a detector's threshold in its window or bucket, whether or not
    the request is allowed.

    The window statistics (:attr:`limit`, :attr:`remaining`, :attr:`reset_at`) of a refused
    request are read during the check. Those of an allowed request are read from the storage
    on first access only (one more storage read per limit), so a pipeline that sends no
    headers on success pays nothing for them; that first access may raise
    :class:`LimiterStorageError`.
    """

    __slots__ = ("_limiter", "_stats", "_targets", "allowed", "anomaly", "exempt", "spike")

    def __init__(
        self,
        *,
        allowed: bool,
        exempt: bool = False,
        spike: SpikeReport | None = None,
        anomaly: AnomalyReport | None = None,
        stats: tuple[RateLimitItem, int, float] | None = None,
        limiter: TokenRateLimiter | None = None,
        targets: tuple[tuple[RateLimitItem, tuple[str, ...]], ...] = (),
    ) -> None:
        #: False when a limit is exceeded: answer 429
        self.allowed = allowed
        #: True when the endpoint is exempt from per-token limits (or none are configured)
        self.exempt = exempt
        #: set on the attempt that crossed the spike threshold
        self.spike = spike
        #: set on the attempt that crossed the adaptive baseline
        self.anomaly = anomaly
        self._stats = stats
        self._limiter = limiter
        self._targets = targets

    def _window(self) -> tuple[RateLimitItem, int, float] | None:
        if self._stats is None and self._limiter is not None and self._targets:
            self._stats = self._limiter._tightest(self._targets)
        return self._stats

    @property
    def limit(self) -> RateLimitItem | None:
        """The binding limit: the exceeded one, else the one with the fewest requests left."""
        window = self._window()
        return None if window is None else window[0]

    @property
    def remaining(self) -> int | None:
        """Requests left in the binding limit's window (0 when refused)."""
        window = self._window()
        return None if window is None else window[1]

    @property
    def reset_at(self) -> float | None:
        """Epoch seconds at which the binding limit's window resets."""
        window = self._window()
        return None if window is None else window[2]

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before retrying: at least 1 when refused, 0 when allowed."""
        if self.allowed:
            return 0
        reset_at = self.reset_at
        assert reset_at is not None  # a refusal always carries its window
        return max(1, math.ceil(reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (+ ``Retry-After``).

        ``RateLimit-Reset`` is in seconds from now, as in the IETF draft that defines these
        three fields (draft-ietf-httpapi-ratelimit-headers-07); ``Retry-After`` is only
        present when the request is refused. Empty for an exempt request.
        """
        window = self._window()
        if window is None:
            return {}
        item, remaining, reset_at = window
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(max(0, math.ceil(reset_at - time.time()))),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def __repr__(self) -> str:
        return (
            f"RateDecision(allowed={self.allowed}, exempt={self.exempt},"
            f" spike={self.spike!r}, anomaly={self.anomaly!r})"
        )


# --------------------------------------------------------------------------- adaptive


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
class _Baseline:
    bucket: int  # index of the bucket being counted
    count: int  # requests in that bucket so far
    ewma: float  # learned requests per bucket
    learned: int  # buckets learned so far
    flagged: int  # index of the last flagged bucket, -1 for none


def _step(state: _Baseline, bucket: int, settings: AdaptiveSettings, floor: float) -> bool:
    """Count one request in ``state``; True when this request flags the subject.

    The Lua script _ADAPTIVE_LUA is the same algorithm, line for line; change both.
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


_ADAPTIVE_LUA: Final = """
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


# The fixed-window hits of one request (FixedWindowRateLimiter.hit: incr, expire a new
# key, compare) for several keys at once. KEYS: spike keys, then limit keys (shortest window
# first). ARGV: the number of spike keys, then expiry and amount per key. Returns count and
# PTTL per key hit; limit keys stop at the first one exceeded, as in the sequential path.
_HIT_ALL_LUA = """
local spikes = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i + 1])
  local count = redis.call('INCRBY', KEYS[i], 1)
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  out[#out + 1] = count
  if (i <= spikes and count == amount + 1) or (i > spikes and count > amount) then
    out[#out + 1] = redis.call('PTTL', KEYS[i])
  else
    out[#out + 1] = -1
  end
  if i > spikes and count > amount then return out end
end
return out
"""


def _one_trip_caller(storage: RedisStorage) -> t.Callable[[list[str], list[int]], list[int]]:
    """``call(keys, args)`` runs :data:`_HIT_ALL_LUA` by its hash (EVALSHA), loading it once
    when the server does not know it. Calling the client directly rather than through
    redis-py's ``Script`` object saves a third of the round trip's cost on the hot path."""
    import hashlib

    from redis.exceptions import NoScriptError

    source = _HIT_ALL_LUA.encode()
    sha = hashlib.sha1(source).hexdigest()  # noqa: S324 - the script's name in Redis, not a secret

    def call(keys: list[str], args: list[int]) -> list[int]:
        client: t.Any = storage.get_connection()
        try:
            return t.cast(list[int], client.evalsha(sha, len(keys), *keys, *args))
        except NoScriptError:  # a new or flushed server: EVAL runs it and caches it there
            return t.cast(list[int], client.eval(source, len(keys), *keys, *args))

    return call


class _MemoryBaselines:
    """Baselines of one process: a bounded LRU dict guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _Baseline] = OrderedDict()

    def observe(self, subject: str, now: float, settings: AdaptiveSettings, floor: float) -> tuple[bool, int, float]:
        bucket = math.floor(now / settings.bucket_seconds)
        with self._lock:
            state = self._states.get(subject)
            if state is None or (bucket - state.bucket) * settings.bucket_seconds > settings.idle_ttl:
                state = _Baseline(bucket, 0, 0.0, 0, -1)
                self._states[subject] = state
            self._states.move_to_end(subject)
            flagged = _step(state, bucket, settings, floor)
            while len(self._states) > settings.max_subjects:
                self._states.popitem(last=False)
            return flagged, state.count, state.ewma


# One baseline table per memory storage object, so two limiters sharing a MemoryStorage
# (say, an app's Flask-Limiter reused by two apps) share baselines as they share counters.
_MEMORY_BASELINES: weakref.WeakKeyDictionary[Storage, _MemoryBaselines] = weakref.WeakKeyDictionary()
_MEMORY_BASELINES_LOCK = threading.Lock()


def _memory_baselines(storage: Storage) -> _MemoryBaselines:
    with _MEMORY_BASELINES_LOCK:
        table = _MEMORY_BASELINES.get(storage)
        if table is None:
            table = _MEMORY_BASELINES[storage] = _MemoryBaselines()
        return table


# --------------------------------------------------------------------------- the limiter


_EXEMPT: Final = ()


# Per token (and endpoint): the spike items with their storage keys, the limit items, the
# key parts, the limit items' storage keys, and the (item, parts) pairs for window stats.
_Plan = tuple[
    tuple[tuple[RateLimitItem, str], ...],
    tuple[RateLimitItem, ...],
    tuple[str, ...],
    tuple[str, ...],
    tuple[tuple[RateLimitItem, tuple[str, ...]], ...],
]
_MAX_PLANS: Final = 100_000


class TokenRateLimiter:
    """Per-token rate limits with spike detection and an optional adaptive baseline.

    Storage comes from exactly one of ``storage_uri`` (a :mod:`limits` URI: ``memory://``,
    ``redis://host:port/0``, ``redis+cluster://host:port`` ...), ``storage`` (a
    :class:`limits.storage.Storage`) or ``limiter`` (an initialised
    :class:`flask_limiter.Limiter`, whose storage is shared). Every key starts with
    ``key_prefix`` (``jwt_shield/rate/...``, ``jwt_shield/spike/...``,
    ``jwt_shield/adaptive/...``), while Flask-Limiter's keys start with ``LIMITER/``, so the
    two never collide in one storage. Nothing connects to the storage until the first check.

    :param limits: the per-token limit string (``"10/second;300/minute"``); ``None`` for no
        default limit (endpoint limits still apply).
    :param strategy: ``fixed-window``, ``moving-window`` or ``sliding-window-counter``.
    :param spike_threshold: a limit string; ``None`` turns spike detection off. See
        :func:`default_spike_threshold`. Spikes are counted in fixed windows whatever the
        strategy, as the count itself is needed and "once per window" needs a window.
    :param spike_sustain: a :class:`Sustain` string (``"3/10 minutes"``): a token refused by
        its limits in that many distinct minutes within the span is reported as a sustained
        spike; ``None`` turns this off.
    :param adaptive: settings of the adaptive baseline, ``None`` (the default) for off;
        needs memory or Redis storage.
    :param storage_options: keyword arguments for the storage built from ``storage_uri``.
        Redis storages get 0.5 s socket timeouts unless given here.
    :raises ValueError: for a bad limit string, strategy, URI, or storage combination.
    """

    def __init__(
        self,
        limits: str | None = "300/minute",
        *,
        strategy: str = "fixed-window",
        storage_uri: str | None = None,
        storage: Storage | None = None,
        limiter: Limiter | None = None,
        storage_options: Mapping[str, float | str | bool] | None = None,
        key_prefix: str = "jwt_shield",
        spike_threshold: str | None = None,
        spike_sustain: str | None = None,
        adaptive: AdaptiveSettings | None = None,
    ) -> None:
        self._storage = _resolve_storage(storage_uri, storage, limiter, storage_options)
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown rate limit strategy {strategy!r}: use one of {sorted(STRATEGIES)}")
        try:
            self._strategy: RateLimiter = STRATEGIES[strategy](self._storage)
        except NotImplementedError:
            raise ValueError(f"the {type(self._storage).__name__} does not support the {strategy!r} strategy") from None
        self.strategy = strategy
        self._fixed = strategy == "fixed-window"
        self._plans: dict[tuple[str, str | None], _Plan] = {}
        prefix = key_prefix.strip("/")
        if not prefix or prefix == "LIMITER":
            raise ValueError("key_prefix must be non-empty and differ from Flask-Limiter's 'LIMITER'")
        self._rate_ns = f"{prefix}/rate"
        self._spike_ns = f"{prefix}/spike"
        self._adaptive_ns = f"{prefix}/adaptive"
        self._sustain_ns = f"{prefix}/sustain"
        self._limits = self._parse(limits) if limits is not None else _EXEMPT
        self._spike = self._parse(spike_threshold, self._spike_ns) if spike_threshold else ()
        self._endpoints: dict[str, tuple[RateLimitItem, ...]] = {}
        self._errors = _storage_exceptions(self._storage)
        # One Redis server and fixed windows: the spike counters and the limits of a request
        # are hit in one script, one round trip (on a cluster their keys sit in different
        # slots, so each is its own call there).
        self._one_trip: t.Callable[[list[str], list[int]], list[int]] | None = None
        if self._fixed and type(self._storage) is RedisStorage:
            self._one_trip = _one_trip_caller(self._storage)

        self.adaptive = adaptive
        self._floor = adaptive.floor_per_bucket if adaptive is not None else 0.0
        self._spike_sustain = self._sustain_item(spike_sustain)
        self._adaptive_sustain = self._sustain_item(adaptive.sustain if adaptive is not None else None)
        self._memory_baselines: _MemoryBaselines | None = None
        self._lua: Script | None = None
        if adaptive is not None:
            if isinstance(self._storage, MemoryStorage):
                self._memory_baselines = _memory_baselines(self._storage)
            elif isinstance(self._storage, RedisStorage):
                # register_script only hashes the script: no connection is made here.
                self._lua = self._storage.get_connection().register_script(_ADAPTIVE_LUA.encode())
            else:
                raise ValueError(
                    "the adaptive baseline needs memory or Redis rate limit storage,"
                    f" not {type(self._storage).__name__}"
                )
        self._update_active()

    @property
    def local(self) -> bool:
        """True when the counters live in this process only (``memory://`` storage), so that
        each worker of a multi-process server counts its own budget per token."""
        return isinstance(self._storage, MemoryStorage)

    @property
    def active(self) -> bool:
        """Whether :meth:`check` has anything to count: a limit (default or an endpoint's),
        a spike threshold or the adaptive baseline. The pipeline skips the step otherwise."""
        return self._active

    def _update_active(self) -> None:
        self._active = bool(
            self._limits or self._spike or self.adaptive is not None or any(self._endpoints.values())
        )

    def _sustain_item(self, value: str | None) -> RateLimitItem | None:
        if value is None:
            return None
        sustain = Sustain.parse(value)
        return _with_namespace(parse_limits(f"{sustain.count}/{sustain.span} seconds"), self._sustain_ns)[0]

    def _parse(self, value: str, namespace: str | None = None) -> tuple[RateLimitItem, ...]:
        return _by_window(_with_namespace(parse_limits(value), namespace or self._rate_ns))

    @property
    def storage(self) -> Storage:
        """The :mod:`limits` storage in use (shared with the app's Limiter when reused)."""
        return self._storage

    # -- configuration ---------------------------------------------------------------------

    def set_endpoint_limit(self, endpoint: str, limits: str) -> None:
        """Give ``endpoint`` its own per-token limits, replacing the default ones there.

        Counted per token *and* endpoint, so that endpoint's budget is its own (as with a
        Flask-Limiter route decorator). Safe to call after requests started.
        """
        self._endpoints[endpoint] = self._parse(limits)
        self._update_active()
        self._plans.clear()

    def exempt_endpoint(self, endpoint: str) -> None:
        """Serve ``endpoint`` without per-token limits (spikes and anomalies still count)."""
        self._endpoints[endpoint] = _EXEMPT
        self._update_active()
        self._plans.clear()

    # -- the per-request call --------------------------------------------------------------

    def check(self, identity: str, endpoint: str | None = None, *, subject: str | None = None) -> RateDecision:
        """Count one request presenting a token and decide whether it may proceed.

        :param identity: the rate limit key: the token's ``jti``, or its ``sub``.
        :param endpoint: the request's endpoint, for per-endpoint limits and exemptions.
        :param subject: the token's ``sub`` for the adaptive baseline (default: identity).
        :raises LimiterStorageError: when the storage fails.
        :raises ValueError: for an empty identity (every token would share one budget).
        """
        if not identity:
            raise ValueError("an empty rate limit identity would merge every token's budget")
        override = None if endpoint is None else self._endpoints.get(endpoint)
        plan = self._plans.get((identity, endpoint if override is not None else None))
        if plan is None:
            plan = self._plan(identity, endpoint, override)
        spike_keys, items, parts, rate_keys, targets = plan
        storage = self._storage
        if self._one_trip is not None:
            return self._check_in_one_trip(identity, subject, plan)
        try:
            spike = self._count_spike(identity, spike_keys) if spike_keys else None
            anomaly = self._observe(subject or identity) if self.adaptive is not None else None
            if not items:
                return RateDecision(allowed=True, exempt=True, spike=spike, anomaly=anomaly)
            if self._fixed:
                # Exactly FixedWindowRateLimiter.hit (incr, then compare), with the keys
                # built once per token instead of on every request.
                for item, storage_key in zip(items, rate_keys, strict=True):
                    if storage.incr(storage_key, item.get_expiry()) > item.amount:
                        reset_at = storage.get_expiry(storage_key)
                        sustained = self._count_refusal(identity, parts[0])  # counted even when a burst reports
                        spike = spike or sustained
                        return RateDecision(allowed=False, spike=spike, anomaly=anomaly, stats=(item, 0, reset_at))
            else:
                hit = self._strategy.hit
                for item in items:
                    if not hit(item, *parts):
                        reset_at = self._strategy.get_window_stats(item, *parts).reset_time
                        sustained = self._count_refusal(identity, parts[0])  # counted even when a burst reports
                        spike = spike or sustained
                        return RateDecision(allowed=False, spike=spike, anomaly=anomaly, stats=(item, 0, reset_at))
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc
        return RateDecision(
            allowed=True,
            spike=spike,
            anomaly=anomaly,
            limiter=self,
            targets=targets,
        )

    def _check_in_one_trip(self, identity: str, subject: str | None, plan: _Plan) -> RateDecision:
        """:meth:`check` on one Redis server: the same counters, hit by one script."""
        spike_keys, items, parts, rate_keys, targets = plan
        storage = self._storage
        assert self._one_trip is not None and isinstance(storage, RedisStorage)
        keys = [storage.prefixed_key(k) for _, k in spike_keys]
        keys += [storage.prefixed_key(k) for k in rate_keys]
        args: list[int] = [len(spike_keys)]
        for item in (*(i for i, _ in spike_keys), *items):
            args += (item.get_expiry(), item.amount)
        try:
            anomaly = self._observe(subject or identity) if self.adaptive is not None else None
            reply = self._one_trip(keys, args) if keys else []
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc
        now = time.time()
        spike = None
        for n, (item, _key) in enumerate(spike_keys):
            count, ttl = int(reply[2 * n]), int(reply[2 * n + 1])
            if count == item.amount + 1 and spike is None:  # the one attempt crossing it
                window = item.get_expiry()
                spike = SpikeReport(identity, item, count, window, max(0.0, window - max(ttl, 0) / 1000))
        if not items:
            return RateDecision(allowed=True, exempt=True, spike=spike, anomaly=anomaly)
        offset = 2 * len(spike_keys)
        for n, item in enumerate(items):
            if offset + 2 * n >= len(reply):
                break
            count, ttl = int(reply[offset + 2 * n]), int(reply[offset + 2 * n + 1])
            if count > item.amount:
                try:  # refused: a sustained spike is counted apart (refusals only, off the hot path)
                    sustained = self._count_refusal(identity, parts[0])  # counted even when a burst reports
                    spike = spike or sustained
                except self._errors as exc:
                    raise LimiterStorageError(exc) from exc
                return RateDecision(allowed=False, spike=spike, anomaly=anomaly,
                                    stats=(item, 0, now + max(ttl, 0) / 1000))  # fmt: skip
        return RateDecision(allowed=True, spike=spike, anomaly=anomaly, limiter=self, targets=targets)

    def _plan(self, identity: str, endpoint: str | None, override: tuple[RateLimitItem, ...] | None) -> _Plan:
        """The items and storage keys of one token (and endpoint), built once and kept."""
        key = _escape(identity)
        parts: tuple[str, ...]
        if override is None:
            items, parts = self._limits, (key,)
        else:
            # An endpoint's own limits are counted apart from the default ones.
            items, parts = override, (key, _escape(endpoint or ""))
        plan: _Plan = (
            tuple((item, item.key_for(key)) for item in self._spike),
            items,
            parts,
            tuple(item.key_for(*parts) for item in items),
            tuple((item, parts) for item in items),
        )
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()  # cheaper than an LRU; keys are rebuilt on the next request
        self._plans[(identity, endpoint if override is not None else None)] = plan
        return plan

    def _count_spike(self, identity: str, spike_keys: tuple[tuple[RateLimitItem, str], ...]) -> SpikeReport | None:
        report = None
        for item, storage_key in spike_keys:
            count = self._storage.incr(storage_key, item.get_expiry())
            # incr is atomic in every backend, so exactly one attempt per window -- in any
            # worker process -- sees amount + 1: that attempt reports the crossing.
            if count == item.amount + 1 and report is None:
                window = item.get_expiry()
                opened = self._storage.get_expiry(storage_key) - window
                report = SpikeReport(identity, item, count, window, max(0.0, time.time() - opened))
        return report

    def _count_refusal(self, identity: str, key: str) -> SpikeReport | None:
        """Count a refused attempt's minute; report a sustained spike from the N-th minute on.

        Only refused attempts get here, so the steady state pays nothing. Two counters per
        token, both plain ``incr`` (atomic in every storage, so workers share them): a
        marker per minute, whose first increment counts that minute once, and the number of
        such minutes within the span. Every further refused minute past the count reports
        again: at most one event per token and minute.
        """
        item = self._spike_sustain
        if item is None:
            return None
        minute = math.floor(time.time() / MINUTE)
        if self._storage.incr(item.key_for("m", key, str(minute)), MINUTE) != 1:
            return None  # this minute is counted already
        window = item.get_expiry()
        minutes = self._storage.incr(item.key_for("refused", key), window)
        if minutes < item.amount:
            return None
        return SpikeReport(identity, item, minutes, window, 0.0, sustained=True)

    def _sustained_anomaly(self, subject: str) -> tuple[int, bool]:
        """Count one anomalous bucket of ``subject``; (buckets within the span, sustained?)."""
        item = self._adaptive_sustain
        if item is None:
            return 1, True
        buckets = self._storage.incr(item.key_for("anomaly", _escape(subject)), item.get_expiry())
        return buckets, buckets >= item.amount

    def _observe(self, subject: str) -> AnomalyReport | None:
        settings = self.adaptive
        assert settings is not None
        now = time.time()
        if self._memory_baselines is not None:
            flagged, count, ewma = self._memory_baselines.observe(subject, now, settings, self._floor)
        else:
            assert self._lua is not None and isinstance(self._storage, RedisStorage)
            name = self._storage.prefixed_key(f"{self._adaptive_ns}/{_escape(subject)}")
            reply = self._lua(
                keys=[name],
                args=[
                    repr(now),
                    settings.bucket_seconds,
                    repr(settings.alpha),
                    repr(settings.factor),
                    repr(self._floor),
                    settings.min_history,
                    settings.idle_ttl,
                ],
            )
            flagged, count, ewma = bool(reply[0]), int(reply[1]), float(reply[2])
        if not flagged:
            return None
        buckets, sustained = self._sustained_anomaly(subject)
        return AnomalyReport(subject, count, settings.bucket_seconds, ewma, settings.factor, self._floor,
                             anomalous_buckets=buckets, sustained=sustained)  # fmt: skip

    def _tightest(self, targets: tuple[tuple[RateLimitItem, tuple[str, ...]], ...]) -> tuple[RateLimitItem, int, float]:
        try:
            best: tuple[RateLimitItem, int, float] | None = None
            for item, parts in targets:
                reset_at, remaining = self._strategy.get_window_stats(item, *parts)
                if best is None or remaining < best[1]:
                    best = (item, remaining, reset_at)
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc
        assert best is not None
        return best

    def reset(self, identity: str, endpoint: str | None = None) -> None:
        """Forget the counters of ``identity`` (on ``endpoint``, else its default limits).

        Spike counters and baselines are left alone: they describe the token's traffic.

        :raises LimiterStorageError: when the storage fails.
        """
        parts = (_escape(identity),) if endpoint is None else (_escape(identity), _escape(endpoint))
        items = self._limits if endpoint is None else self._endpoints.get(endpoint, ())
        try:
            for item in items:
                self._strategy.clear(item, *parts)
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc


class _LeanMemoryStorage(MemoryStorage):
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


def _resolve_storage(
    storage_uri: str | None,
    storage: Storage | None,
    limiter: Limiter | None,
    options: Mapping[str, float | str | bool] | None,
) -> Storage:
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
                _LeanMemoryStorage(uri, wrap_exceptions=True)
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


def _storage_exceptions(storage: Storage) -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StorageError, ConcurrentUpdateError]
    if not isinstance(storage, MemoryStorage):
        # The backend's own errors (redis.RedisError ...) escape unwrapped from storages
        # built with wrap_exceptions=False -- e.g. an app's Limiter -- and from the
        # adaptive script; OSError covers socket failures a client library lets through.
        base = storage.base_exceptions
        errors.extend(base if isinstance(base, tuple) else (base,))
        errors.append(OSError)
    return tuple(errors)
