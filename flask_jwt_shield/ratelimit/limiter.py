"""Per-token rate limits, spike detection and adaptive per-session baselines.

This module is the rate step of the request pipeline (DESIGN.md, step 6). It uses the
:mod:`limits` strategies and storages directly -- the library Flask-Limiter is built on --
rather than Flask-Limiter's per-request machinery, which would add its own before/after
request hooks, key functions and header injection to every request; one
:meth:`TokenRateLimiter.check` costs a few microseconds on memory storage.

One call per request does everything, in this order:

1. **spike** -- every attempt presenting the token is counted against the spike threshold,
   rejected attempts included (a thief hammering a limited token is still hammering);
2. **adaptive** (optional) -- the session's request rate is compared with its own learned
   baseline (a fresh session's with its subject's, until it has one), the subject's total
   with the subject's as a second signal; an anomaly of the session that lasts
   (``sustain``) is reported as sustained;
3. **limit** -- the per-token limits (or the endpoint's own limits) are hit in order of
   increasing window, stopping at the first one exceeded. A token refused in several
   distinct minutes within a span (``spike_sustain``) is reported as a sustained spike:
   a thief who keeps pressing just above the limit, pausing and coming back, is hammering
   too, even though no single window reaches the spike threshold.

Storage failures of any backend surface as :class:`~.storage.LimiterStorageError` only, so
the pipeline can apply ``JWT_SHIELD_FAIL_MODE``.
"""

from __future__ import annotations

import hashlib
import math
import time
import typing as t
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Final

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.storage import RedisClusterStorage
from limits.storage import RedisStorage
from limits.storage import Storage
from limits.strategies import STRATEGIES
from limits.strategies import RateLimiter

from .adaptive import SESSION
from .adaptive import AdaptiveSettings
from .adaptive import MemoryBaselines
from .adaptive import Observation
from .adaptive import RedisBaselines
from .adaptive import memory_baselines
from .decision import AnomalyReport
from .decision import RateDecision
from .decision import SpikeReport
from .decision import Target
from .leases import LeaseBook
from .storage import LimiterStorageError
from .storage import hash_tag
from .storage import key_part
from .storage import resolve_storage
from .storage import storage_exceptions
from .syntax import MINUTE
from .syntax import Sustain
from .syntax import parse_limits

if TYPE_CHECKING:
    from flask_limiter import Limiter

__all__ = ["TokenRateLimiter"]


def _with_namespace(items: tuple[RateLimitItem, ...], namespace: str) -> tuple[RateLimitItem, ...]:
    # parse_many puts every item in the "LIMITER" namespace, which is where Flask-Limiter
    # keeps its own counters; our namespace is the first part of every key we write.
    return tuple(type(item)(item.amount, item.multiples, namespace=namespace) for item in items)


def _by_window(items: tuple[RateLimitItem, ...]) -> tuple[RateLimitItem, ...]:
    # Shortest window first (Flask-Limiter's order): a burst is refused by "10/second"
    # before it eats into the "300/minute" budget.
    return tuple(sorted(items, key=lambda item: item.get_expiry()))


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


class _ScriptClient(t.Protocol):
    """The two calls of a redis-py client that run a script (limits' own client type lacks them)."""

    def evalsha(self, sha: str, numkeys: int, /, *keys_and_args: str | int) -> list[int]: ...

    def eval(self, script: bytes, numkeys: int, /, *keys_and_args: str | int) -> list[int]: ...


def _one_trip_caller(storage: RedisStorage) -> t.Callable[[list[str], list[int]], list[int]]:
    """``call(keys, args)`` runs :data:`_HIT_ALL_LUA` by its hash (EVALSHA), loading it once
    when the server does not know it. Calling the client directly rather than through
    redis-py's ``Script`` object saves a third of the round trip's cost on the hot path."""
    from redis.exceptions import NoScriptError

    source = _HIT_ALL_LUA.encode()
    sha = hashlib.sha1(source).hexdigest()  # noqa: S324 - the script's name in Redis, not a secret

    def call(keys: list[str], args: list[int]) -> list[int]:
        client = t.cast(_ScriptClient, storage.get_connection())
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # a new or flushed server: EVAL runs it and caches it there
            return client.eval(source, len(keys), *keys, *args)

    return call


_EXEMPT: Final = ()


# Per token (and endpoint): the spike items with their storage keys, the limit items, the
# key parts, the limit items' storage keys, and the (item, parts) pairs for window stats.
_Plan = tuple[
    tuple[tuple[RateLimitItem, str], ...],
    tuple[RateLimitItem, ...],
    tuple[str, ...],
    tuple[str, ...],
    tuple[Target, ...],
]
_MAX_PLANS: Final = 100_000

# The leased mode's plan of one token (and endpoint): the spike counters as
# (Redis key, identity, item), the limit windows as (lease key, item), and the plan.
_Ticket = tuple[
    tuple[tuple[str, str, RateLimitItem], ...],
    tuple[tuple[str, RateLimitItem], ...],
    _Plan,
]


_V = t.TypeVar("_V")


def _keep(cache: dict[tuple[str, str | None], _V], key: tuple[str, str | None], value: _V) -> None:
    """Keep a token's plan or ticket; at :data:`_MAX_PLANS` start over (cheaper than an LRU:
    the keys are rebuilt on the next request)."""
    if len(cache) >= _MAX_PLANS:
        cache.clear()
    cache[key] = value


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
    :param mode: ``"exact"`` (the default): every check is one round trip to a shared
        storage, and a limit of ``L`` admits exactly ``L``. ``"leased"``: on Redis, each
        process admits from a lease of the window's budget and settles in the background
        every ``sync_interval`` seconds (:mod:`.leases`); no round trip per request, and at
        most ``N * CREDIT`` admitted above ``L`` with ``N`` processes. Needs the
        ``fixed-window`` strategy. On ``memory://`` the counters are this process's own
        anyway, and the mode changes nothing.
    :param sync_interval: Δ of the leased mode, seconds between two settlement rounds.
    :raises ValueError: for a bad limit string, strategy, URI, mode, or storage combination.
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
        mode: str = "exact",
        sync_interval: float = 0.1,
    ) -> None:
        self._storage = resolve_storage(storage_uri, storage, limiter, storage_options)
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown rate limit strategy {strategy!r}: use one of {sorted(STRATEGIES)}")
        try:
            self._strategy: RateLimiter = STRATEGIES[strategy](self._storage)
        except NotImplementedError:
            raise ValueError(f"the {type(self._storage).__name__} does not support the {strategy!r} strategy") from None
        self.strategy = strategy
        self._fixed = strategy == "fixed-window"
        self._plans: dict[tuple[str, str | None], _Plan] = {}
        self._tickets: dict[tuple[str, str | None], _Ticket] = {}
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
        self._errors = storage_exceptions(self._storage)
        # Redis (one server or a cluster) and fixed windows: the spike counters and the
        # limits of a request are hit in one script, one round trip. On a cluster too: every
        # key of a token carries its hash tag, so they all sit in one slot.
        self._one_trip: t.Callable[[list[str], list[int]], list[int]] | None = None
        if self._fixed and type(self._storage) in (RedisStorage, RedisClusterStorage):
            self._one_trip = _one_trip_caller(t.cast(RedisStorage, self._storage))
        self.mode = mode
        self._leases: LeaseBook | None = None
        if mode not in ("exact", "leased"):
            raise ValueError(f"unknown rate limit mode {mode!r}: use 'exact' or 'leased'")
        if mode == "leased" and not isinstance(self._storage, MemoryStorage):
            if not isinstance(self._storage, RedisStorage):
                raise ValueError(
                    f"the leased mode needs Redis (or memory) rate limit storage, not"
                    f" {type(self._storage).__name__}; use the exact mode"
                )
            if not self._fixed:
                raise ValueError(
                    f"the leased mode counts fixed windows, not {strategy!r}: use the"
                    " 'fixed-window' strategy, or the exact mode"
                )
            if not 0.005 <= sync_interval <= 10:
                raise ValueError(f"the leased mode's sync interval must be 0.005 to 10 seconds, got {sync_interval!r}")
            self._one_trip = None
            self._lease_key: t.Callable[[str], str] = self._storage.prefixed_key
            self._leases = LeaseBook(
                self._storage, interval=sync_interval, channel=f"{prefix}/rate/exhausted", errors=self._errors
            )

        self.adaptive = adaptive
        self._settings = adaptive if adaptive is not None else AdaptiveSettings()
        self._floor = adaptive.floor_per_bucket if adaptive is not None else 0.0
        self._spike_sustain = self._sustain_item(spike_sustain)
        self._adaptive_sustain = self._sustain_item(adaptive.sustain if adaptive is not None else None)
        self._baselines: MemoryBaselines | RedisBaselines | None = None
        if adaptive is not None:
            if isinstance(self._storage, MemoryStorage):
                self._baselines = memory_baselines(self._storage)
            elif isinstance(self._storage, RedisStorage):
                self._baselines = RedisBaselines(self._storage, self._adaptive_ns)
            else:
                raise ValueError(
                    "the adaptive baseline needs memory or Redis rate limit storage,"
                    f" not {type(self._storage).__name__}"
                )
        self._update_active()

    def close(self) -> None:
        """Stop the leased mode's background threads (nothing else needs closing). What this
        process holds is not given back: Redis takes its leases back after their TTL, as
        for a process that died."""
        if self._leases is not None:
            self._leases.stop()

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
        self._active = bool(self._limits or self._spike or self.adaptive is not None or any(self._endpoints.values()))

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
        self._tickets.clear()

    def exempt_endpoint(self, endpoint: str) -> None:
        """Serve ``endpoint`` without per-token limits (spikes and anomalies still count)."""
        self._endpoints[endpoint] = _EXEMPT
        self._update_active()
        self._plans.clear()
        self._tickets.clear()

    # -- the per-request call --------------------------------------------------------------

    def check(
        self, identity: str, endpoint: str | None = None, *, subject: str | None = None, session: str | None = None
    ) -> RateDecision:
        """Count one request presenting a token and decide whether it may proceed.

        :param identity: the rate limit key: the token's session (``sid``) or ``jti``, or its ``sub``.
        :param endpoint: the request's endpoint, for per-endpoint limits and exemptions.
        :param subject: the token's ``sub``, the adaptive baselines' second view (default: identity).
        :param session: the token's ``sid`` (its ``jti`` without one), whose own adaptive
            baseline the request is counted in (default: identity).
        :raises LimiterStorageError: when the storage fails.
        :raises ValueError: for an empty identity (every token would share one budget).
        """
        if not identity:
            raise ValueError("an empty rate limit identity would merge every token's budget")
        override = None if endpoint is None else self._endpoints.get(endpoint)
        leases = self._leases
        if leases is not None:
            ticket = self._tickets.get((identity, endpoint if override is not None else None))
            if ticket is None:
                ticket = self._ticket(identity, endpoint, override)
            return self._check_leased(leases, identity, subject, session, ticket)
        plan = self._plans.get((identity, endpoint if override is not None else None))
        if plan is None:
            plan = self._plan(identity, endpoint, override)
        spike_keys, items, parts, rate_keys, targets = plan
        storage = self._storage
        if self._one_trip is not None:
            return self._check_in_one_trip(identity, subject, session, plan)
        try:
            spike = self._count_spike(identity, spike_keys) if spike_keys else None
            anomaly = None
            baselines = self._baselines
            if baselines is not None:
                seen = baselines.observe(
                    session or identity, subject or identity, time.time(), self._settings, self._floor
                )
                if seen is not None:
                    anomaly = self._report(seen, session or identity, subject or identity)
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
        return RateDecision(True, False, spike, anomaly, None, self, targets)  # allowed, not exempt

    def _check_in_one_trip(self, identity: str, subject: str | None, session: str | None, plan: _Plan) -> RateDecision:
        """:meth:`check` on Redis: the same counters, hit by one script."""
        spike_keys, items, parts, rate_keys, targets = plan
        storage = self._storage
        assert self._one_trip is not None and isinstance(storage, RedisStorage)
        keys = [storage.prefixed_key(k) for _, k in spike_keys]
        keys += [storage.prefixed_key(k) for k in rate_keys]
        args: list[int] = [len(spike_keys)]
        for item in (*(i for i, _ in spike_keys), *items):
            args += (item.get_expiry(), item.amount)
        try:
            anomaly = None
            baselines = self._baselines
            if baselines is not None:
                seen = baselines.observe(
                    session or identity, subject or identity, time.time(), self._settings, self._floor
                )
                if seen is not None:
                    anomaly = self._report(seen, session or identity, subject or identity)
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
                return RateDecision(
                    allowed=False, spike=spike, anomaly=anomaly, stats=(item, 0, now + max(ttl, 0) / 1000)
                )
        return RateDecision(True, False, spike, anomaly, None, self, targets)  # allowed, not exempt

    def _check_leased(
        self, leases: LeaseBook, identity: str, subject: str | None, session: str | None, ticket: _Ticket
    ) -> RateDecision:
        """:meth:`check` from this process's leases: the same counters, no round trip."""
        spikes, windows, plan = ticket
        anomaly = None
        baselines = self._baselines
        if baselines is not None:  # the adaptive baselines stay one script call (documented)
            try:
                seen = baselines.observe(
                    session or identity, subject or identity, time.time(), self._settings, self._floor
                )
                if seen is not None:
                    anomaly = self._report(seen, session or identity, subject or identity)
            except self._errors as exc:
                raise LimiterStorageError(exc) from exc
        refused = leases.admit(spikes, windows)
        spike = leases.reports(identity)
        if not windows:
            return RateDecision(allowed=True, exempt=True, spike=spike, anomaly=anomaly)
        _spike_keys, _items, parts, _rate_keys, targets = plan
        if refused < 0:
            return RateDecision(True, False, spike, anomaly, None, self, targets)  # allowed, not exempt
        lease_key, item = windows[refused]
        sustain = self._spike_sustain
        if sustain is not None:
            prefixed, key = self._lease_key, parts[0]
            minute = math.floor(time.time() / MINUTE)
            leases.note_refusal(
                prefixed(sustain.key_for("m", key, str(minute))),
                prefixed(sustain.key_for("refused", key)),
                identity,
                sustain,
            )
        _left, reset_at = leases.window(lease_key, item)
        return RateDecision(allowed=False, spike=spike, anomaly=anomaly, stats=(item, 0, reset_at))

    def _ticket(self, identity: str, endpoint: str | None, override: tuple[RateLimitItem, ...] | None) -> _Ticket:
        """The leased mode's plan of one token (and endpoint), with its Redis keys, kept
        (in place of the plan: the leased mode keeps tickets only)."""
        plan = self._build_plan(identity, endpoint, override)
        spike_keys, items, _parts, rate_keys, _targets = plan
        ticket: _Ticket = (
            tuple((self._lease_key(key), identity, item) for item, key in spike_keys),
            tuple((self._lease_name(key), item) for item, key in zip(items, rate_keys, strict=True)),
            plan,
        )
        _keep(self._tickets, (identity, endpoint if override is not None else None), ticket)
        return ticket

    def _lease_name(self, storage_key: str) -> str:
        """The Redis hash of the leased window whose exact-mode counter is ``storage_key``."""
        return self._lease_key(storage_key) + "/lease"

    def _plan(self, identity: str, endpoint: str | None, override: tuple[RateLimitItem, ...] | None) -> _Plan:
        """The items and storage keys of one token (and endpoint), built once and kept."""
        plan = self._build_plan(identity, endpoint, override)
        _keep(self._plans, (identity, endpoint if override is not None else None), plan)
        return plan

    def _build_plan(self, identity: str, endpoint: str | None, override: tuple[RateLimitItem, ...] | None) -> _Plan:
        # Every key of a token sits in its identity's slot (a hash tag): on a cluster its
        # counters live on one master, and a settlement round is one call to one node.
        key = hash_tag(identity)
        parts: tuple[str, ...]
        if override is None:
            items, parts = self._limits, (key,)
        else:
            # An endpoint's own limits are counted apart from the default ones.
            items, parts = override, (key, key_part(endpoint or ""))
        return (
            tuple((item, item.key_for(key)) for item in self._spike),
            items,
            parts,
            tuple(item.key_for(*parts) for item in items),
            tuple((item, parts) for item in items),
        )

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

    def _sustained_anomaly(self, session: str) -> tuple[int, bool]:
        """Count one anomalous bucket of ``session``; (buckets within the span, sustained?)."""
        item = self._adaptive_sustain
        if item is None:
            return 1, True
        buckets = self._storage.incr(item.key_for("anomaly", key_part(session)), item.get_expiry())
        return buckets, buckets >= item.amount

    def _report(self, seen: Observation, session: str, subject: str) -> AnomalyReport:
        """The report of an unusual observation (the baselines were counted inline in
        :meth:`check`: the warm path makes no further call)."""
        settings = self._settings
        found, count, baseline, learned, total, total_baseline = seen
        if found == SESSION:
            buckets, sustained = self._sustained_anomaly(session)
        else:  # the subject's total only: a second signal, never sustained
            buckets, sustained = 0, False
        return AnomalyReport(
            subject,
            count,
            settings.bucket_seconds,
            baseline,
            settings.factor,
            self._floor,
            anomalous_buckets=buckets,
            sustained=sustained,
            session=session,
            scope="session" if found == SESSION else "subject",
            warmup=learned < settings.min_history,
            subject_count=total,
            subject_baseline=total_baseline,
        )

    def tightest_window(self, targets: tuple[Target, ...]) -> tuple[RateLimitItem, int, float]:
        """The binding limit among ``targets``: (item, requests left, epoch of its reset).

        Read by an allowed :class:`RateDecision` when its window figures are first asked for.

        :raises LimiterStorageError: when the storage fails.
        """
        leases = self._leases
        if leases is not None:  # this process's view: no round trip
            windows = [(item, *leases.window(self._lease_name(item.key_for(*parts)), item)) for item, parts in targets]
            return min(windows, key=lambda w: w[1])
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
        parts = (hash_tag(identity),) if endpoint is None else (hash_tag(identity), key_part(endpoint))
        items = self._limits if endpoint is None else self._endpoints.get(endpoint, ())
        leases = self._leases
        try:
            if leases is not None:
                prefixed = self._lease_key
                leases.forget([prefixed(item.key_for(*parts)) + "/lease" for item in items])
                return
            for item in items:
                self._strategy.clear(item, *parts)
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc
