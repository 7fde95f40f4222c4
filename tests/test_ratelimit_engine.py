"""The rate limit engine: per-token limits, spikes, adaptive baselines, storage failures.

Memory-storage tests move a fake clock (``time.time`` is patched; the ``limits`` memory
storage reads the same function) instead of sleeping. Redis tests run against a real
``redis-server`` started by ``redis_util``; Redis enforces windows with real TTLs, so those
tests never need to cross a window.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask_limiter import Limiter
from hypothesis import given
from hypothesis import strategies as st
from limits import parse_many

from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.ratelimit import AdaptiveSettings
from flask_jwt_shield.ratelimit import AnomalyReport
from flask_jwt_shield.ratelimit import LimiterStorageError
from flask_jwt_shield.ratelimit import RateDecision
from flask_jwt_shield.ratelimit import TokenRateLimiter
from flask_jwt_shield.ratelimit import default_spike_threshold
from flask_jwt_shield.ratelimit import scale_limit_string
from flask_jwt_shield.ratelimit import validate_limit_string
from tests.conftest import Clock
from tests.redis_util import RedisServer
from tests.redis_util import running_redis

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_040.0  # a multiple of 60: buckets and minute windows start here


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(T0)
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.close()


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


def redis_root(exc: BaseException) -> BaseException:
    """The redis-py exception at the bottom of ``exc``'s chain (limits wraps it in StorageError)."""
    current: BaseException | None = exc
    while current is not None and not isinstance(current, redis.exceptions.RedisError):
        current = current.__cause__
    assert current is not None, f"no redis error under {exc!r}"
    return current


def hits(engine: TokenRateLimiter, identity: str, n: int, endpoint: str | None = None) -> list[RateDecision]:
    return [engine.check(identity, endpoint) for _ in range(n)]


# ------------------------------------------------------------------ limit strings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10/second", "100/second"),
        ("10/second;300/minute", "100/second;3000/minute"),
        ("5 per 2 hours", "50/2 hours"),
    ],
)
def test_scale_limit_string(value: str, expected: str) -> None:
    assert scale_limit_string(value, 10) == expected


@given(
    amount=st.integers(min_value=1, max_value=10**6),
    multiples=st.integers(min_value=1, max_value=100),
    unit=st.sampled_from(["second", "minute", "hour", "day", "month", "year"]),
    factor=st.integers(min_value=1, max_value=1000),
)
def test_scaled_string_parses_back_with_same_window(amount: int, multiples: int, unit: str, factor: int) -> None:
    (original,) = parse_many(f"{amount}/{multiples} {unit}")
    (scaled,) = parse_many(scale_limit_string(f"{amount}/{multiples} {unit}", factor))
    assert scaled.amount == amount * factor
    assert scaled.get_expiry() == original.get_expiry()


def test_default_spike_threshold_is_ten_times_each_limit() -> None:
    assert default_spike_threshold("10/second;300/minute") == "100/second;3000/minute"
    assert default_spike_threshold(None) is None


@pytest.mark.parametrize("value", ["300/minute", "10/second;300/minute", "5 per 2 hours"])
def test_validate_accepts_limit_strings(value: str) -> None:
    assert validate_limit_string(value, "JWT_SHIELD_RATE_LIMIT") == value


@pytest.mark.parametrize("value", ["ten per minute", "300/fortnight", "", "0/minute", None, 300])
def test_validate_names_the_key_and_shows_the_syntax(value: object) -> None:
    with pytest.raises(ValueError, match="JWT_SHIELD_SPIKE_THRESHOLD") as info:
        validate_limit_string(value, "JWT_SHIELD_SPIKE_THRESHOLD")
    assert "'300/minute'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "leaky-bucket"}, "unknown rate limit strategy"),
        ({"storage_uri": "nosuch://x"}, "nosuch://x"),
        ({"storage_uri": "async+memory://"}, "asynchronous"),
        ({"limits": "lots/minute"}, "couldn't parse"),
        ({"key_prefix": "LIMITER"}, "key_prefix"),
        ({"storage_uri": "memory://", "limiter": Limiter(lambda: "k")}, "not storage_uri and limiter"),
    ],
)
def test_bad_construction_raises_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenRateLimiter(**kwargs)  # type: ignore[arg-type]


def test_limiter_before_init_app_is_refused() -> None:
    with pytest.raises(ValueError, match="init_app"):
        TokenRateLimiter(limiter=Limiter(lambda: "k"))


# ------------------------------------------------------------------ plain limits


@pytest.mark.parametrize(
    ("strategy", "exact_reset", "free_after"),
    [
        ("fixed-window", True, 60),
        # limits' moving window keeps an entry until strictly after its expiry
        ("moving-window", True, 60.5),
        # the sliding counter still weighs the previous window in right after a reset
        ("sliding-window-counter", False, 120),
    ],
)
def test_limited_after_n_hits(clock: Clock, strategy: str, exact_reset: bool, free_after: float) -> None:
    engine = TokenRateLimiter("3/minute", strategy=strategy)
    allowed = hits(engine, "jti-1", 3)
    assert [d.allowed for d in allowed] == [True, True, True]
    refused = engine.check("jti-1")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit is not None and refused.limit.amount == 3
    assert refused.retry_after >= 1
    if exact_reset:
        assert refused.reset_at == T0 + 60
        assert refused.retry_after == 60
        clock.advance(45)
        again = engine.check("jti-1")
        assert not again.allowed
        assert again.retry_after == 15
        assert again.headers() == {
            "RateLimit-Limit": "3",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "15",
            "Retry-After": "15",
        }
    clock.now = T0 + free_after
    assert engine.check("jti-1").allowed


def test_remaining_counts_down_when_read_after_each_hit(clock: Clock) -> None:
    engine = TokenRateLimiter("3/minute")
    remaining = []
    for _ in range(3):
        decision = engine.check("jti-1")
        remaining.append(decision.remaining)
        assert decision.retry_after == 0
        assert "Retry-After" not in decision.headers()
    assert remaining == [2, 1, 0]


def test_identities_are_independent(clock: Clock) -> None:
    engine = TokenRateLimiter("2/minute")
    assert [d.allowed for d in hits(engine, "jti-a", 3)] == [True, True, False]
    assert [d.allowed for d in hits(engine, "jti-b", 2)] == [True, True]


def test_separator_in_identity_cannot_reach_other_counters(clock: Clock) -> None:
    # unescaped, ("a/b", default) and ("a", endpoint "b") would be the same storage key
    engine = TokenRateLimiter("2/minute")
    engine.set_endpoint_limit("b", "2/minute")
    assert [d.allowed for d in hits(engine, "a", 3, endpoint="b")] == [True, True, False]
    assert [d.allowed for d in hits(engine, "a/b", 2)] == [True, True]


def test_the_tighter_limit_binds(clock: Clock) -> None:
    engine = TokenRateLimiter("5/minute;2/second")
    first = engine.check("jti-1")
    assert first.limit is not None and first.limit.get_expiry() == 1  # 1 left of 2, 4 of 5
    assert first.remaining == 1
    second, third = hits(engine, "jti-1", 2)
    assert second.allowed and not third.allowed
    assert third.limit is not None and (third.limit.amount, third.limit.get_expiry()) == (2, 1)
    assert third.retry_after == 1
    # refused by the per-second limit before the per-minute one was hit: 3 of 5 are left
    clock.advance(1)
    assert [d.allowed for d in hits(engine, "jti-1", 2)] == [True, True]
    clock.advance(1)
    last = engine.check("jti-1")
    # allowed, and now the minute (0 left) binds rather than the second (1 left)
    assert last.allowed
    assert last.limit is not None and (last.limit.amount, last.remaining) == (5, 0)
    over = engine.check("jti-1")
    assert not over.allowed
    assert over.limit is not None and (over.limit.amount, over.limit.get_expiry()) == (5, 60)
    assert over.retry_after == 58


def test_endpoint_override_and_exemption(clock: Clock) -> None:
    engine = TokenRateLimiter("2/minute")
    engine.set_endpoint_limit("reports", "1/minute")
    engine.exempt_endpoint("health")

    reports = hits(engine, "jti-1", 2, endpoint="reports")
    assert [d.allowed for d in reports] == [True, False]
    assert reports[1].limit is not None and reports[1].limit.amount == 1

    # an endpoint's budget is its own, even with the default's very limit;
    # endpoints without an override share the default budget
    engine.set_endpoint_limit("export", "2/minute")
    assert [d.allowed for d in hits(engine, "jti-1", 3, endpoint="export")] == [True, True, False]
    assert [d.allowed for d in hits(engine, "jti-1", 1, endpoint="items")] == [True]
    assert [d.allowed for d in hits(engine, "jti-1", 2)] == [True, False]

    health = hits(engine, "jti-1", 10, endpoint="health")
    assert all(d.allowed and d.exempt for d in health)
    assert health[0].headers() == {}
    assert health[0].remaining is None


def test_reset_forgets_an_identity(clock: Clock) -> None:
    engine = TokenRateLimiter("1/minute")
    assert [d.allowed for d in hits(engine, "jti-1", 2)] == [True, False]
    engine.reset("jti-1")
    assert engine.check("jti-1").allowed


def test_empty_identity_is_a_bug() -> None:
    with pytest.raises(ValueError, match="identity"):
        TokenRateLimiter().check("")


def test_keys_never_collide_with_an_app_limiter(storage_uri: str) -> None:
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri
    # the app's limiter keys its counters by the very string we use as identity
    limiter = Limiter(lambda: "tok-1", app=app, default_limits=["2/minute"])

    @app.get("/")
    def index() -> str:
        return "ok"

    engine = TokenRateLimiter("2/minute", limiter=limiter)
    assert engine.storage is limiter.storage
    # same identity, endpoint and limit as the app's: only the key prefix keeps them apart
    engine.set_endpoint_limit("index", "2/minute")

    assert [d.allowed for d in hits(engine, "tok-1", 3, "index")] == [True, True, False]
    client = app.test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    # and the app's hits did not reach our counter, nor ours theirs
    engine.reset("tok-1", "index")
    assert [d.allowed for d in hits(engine, "tok-1", 3, "index")] == [True, True, False]
    assert client.get("/").status_code == 429

    if storage_uri.startswith("redis"):
        keys = sorted(k.decode() for k in redis.Redis.from_url(storage_uri).keys("*"))
        ours = [k for k in keys if k.startswith("LIMITS:jwt_shield/rate/")]
        theirs = [k for k in keys if k.startswith("LIMITS:LIMITER/")]
        assert ours and theirs and len(ours) + len(theirs) == len(keys)


# ------------------------------------------------------------------ spikes


def test_spike_once_per_window_counting_refused_attempts(clock: Clock) -> None:
    engine = TokenRateLimiter("2/minute", spike_threshold="5/minute")
    decisions = []
    for _ in range(10):
        decisions.append(engine.check("jti-1"))
        clock.advance(1)
    assert [d.allowed for d in decisions] == [True, True] + [False] * 8
    spikes = [(i, d.spike) for i, d in enumerate(decisions) if d.spike is not None]
    assert len(spikes) == 1
    index, spike = spikes[0]
    # the sixth attempt crosses "5/minute", although attempts 3-6 were all refused
    assert index == 5
    assert (spike.count, spike.window, spike.elapsed) == (6, 60, 5.0)
    assert spike.as_detail() == {
        "threshold": "5/minute",
        "count": 6,
        "window_seconds": 60,
        "elapsed_seconds": 5.0,
    }

    clock.now = T0 + 60  # the spike window (opened by the first attempt) is over
    later = [engine.check("jti-1") for _ in range(12)]
    assert [i for i, d in enumerate(later) if d.spike is not None] == [5]


def test_spike_counts_exempt_endpoints_and_no_plain_limit(clock: Clock) -> None:
    engine = TokenRateLimiter(None, spike_threshold="3/second")
    decisions = hits(engine, "jti-1", 5, endpoint="anything")
    assert all(d.allowed and d.exempt for d in decisions)
    assert [d.spike is not None for d in decisions] == [False, False, False, True, False]


def test_spike_windows_are_per_identity_and_per_threshold(clock: Clock) -> None:
    engine = TokenRateLimiter(None, spike_threshold="2/second;4/minute")
    first = hits(engine, "jti-1", 3)
    assert first[2].spike is not None and first[2].spike.window == 1
    assert engine.check("jti-2").spike is None
    clock.advance(1)
    second = hits(engine, "jti-1", 2)  # attempts 4 and 5 of this minute
    assert second[0].spike is None
    assert second[1].spike is not None and second[1].spike.window == 60


def test_simultaneous_crossings_report_the_shortest_window(clock: Clock) -> None:
    engine = TokenRateLimiter(None, spike_threshold="2/minute;2/second")
    decisions = hits(engine, "jti-1", 4)
    assert [d.spike is not None for d in decisions] == [False, False, True, False]
    spike = decisions[2].spike
    assert spike is not None and (spike.window, spike.count) == (1, 3)


# ------------------------------------------------------------------ adaptive baseline


def run_bucket(engine: TokenRateLimiter, clock: Clock, bucket: int, count: int) -> list[int]:
    """``count`` requests inside bucket number ``bucket``; the counts that were flagged."""
    clock.now = T0 + 60 * bucket + 1
    flagged = []
    for i in range(count):
        # two tokens of one session (a refresh): the baseline is the session's, not the token's
        decision = engine.check(f"jti-{i % 2}", subject="alice", session="alice-phone")
        if decision.anomaly is not None:
            assert decision.anomaly.subject == "alice" and decision.anomaly.session == "alice-phone"
            assert decision.anomaly.scope == "session"
            flagged.append(decision.anomaly.count)
    return flagged


@pytest.fixture
def adaptive_engine(storage_uri: str, clock: Clock) -> TokenRateLimiter:
    return TokenRateLimiter(
        None,
        storage_uri=storage_uri,
        adaptive=AdaptiveSettings(factor=10.0, floor="60/minute", bucket_seconds=60),
    )


def train(engine: TokenRateLimiter, clock: Clock, per_bucket: int, buckets: int = 5) -> None:
    for bucket in range(buckets):
        assert run_bucket(engine, clock, bucket, per_bucket) == []


def test_adaptive_flags_twenty_times_normal_once_per_bucket(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    train(adaptive_engine, clock, per_bucket=40)
    # flagged when the bucket passes 10 x 40 = 400, and only once in that bucket
    assert run_bucket(adaptive_engine, clock, 5, 800) == [401]
    # a flagged bucket teaches nothing: the next burst is flagged against the same baseline
    assert run_bucket(adaptive_engine, clock, 6, 800) == [401]


def test_adaptive_report_carries_the_baseline(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    train(adaptive_engine, clock, per_bucket=40)
    clock.now = T0 + 60 * 5 + 1
    reports = [adaptive_engine.check("jti", subject="alice", session="alice-phone").anomaly for _ in range(401)]
    report = reports[-1]
    assert report is not None and reports.count(None) == 400
    assert (report.count, report.bucket_seconds, report.baseline) == (401, 60, 40.0)
    assert report.as_detail()["floor"] == 60.0


def test_adaptive_ignores_twice_normal(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    train(adaptive_engine, clock, per_bucket=40)
    assert run_bucket(adaptive_engine, clock, 5, 80) == []  # 2x, and above the floor


def test_adaptive_floor_protects_quiet_subjects(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    train(adaptive_engine, clock, per_bucket=1)
    assert run_bucket(adaptive_engine, clock, 5, 50) == []  # 50x normal, under 60/minute
    # baseline now 0.1 * 50 + 0.9 * 1 = 5.9, so 10x is 59: the floor binds, at 61
    assert run_bucket(adaptive_engine, clock, 6, 70) == [61]


def test_adaptive_learns_before_flagging(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    assert run_bucket(adaptive_engine, clock, 0, 500) == []  # no history yet (min_history 3)


def test_adaptive_baseline_is_shared_through_redis(redis_url: str, clock: Clock) -> None:
    # two engines = two workers: one learns the baseline, the other flags against it
    settings = AdaptiveSettings(factor=10.0, floor="60/minute")
    learner = TokenRateLimiter(None, storage_uri=redis_url, adaptive=settings)
    watcher = TokenRateLimiter(None, storage_uri=redis_url, adaptive=settings)
    train(learner, clock, per_bucket=40)
    assert run_bucket(watcher, clock, 5, 500) == [401]
    client = redis.Redis.from_url(redis_url)
    state = client.hgetall("LIMITS:jwt_shield/adaptive/{alice}/alice-phone")  # the session's
    assert float(state[b"e"]) == 40.0 and int(state[b"c"]) == 500
    total = client.hgetall("LIMITS:jwt_shield/adaptive/{alice}")  # the subject's, in the same hash slot
    assert float(total[b"e"]) == 40.0 and int(total[b"c"]) == 500


def bucket_of(engine: TokenRateLimiter, clock: Clock, bucket: int, traffic: dict[str, int]) -> list[AnomalyReport]:
    """Requests of several sessions of "alice" inside bucket ``bucket``, interleaved as they
    would arrive: ``traffic`` maps a session to its count. The reports, in order."""
    clock.now = T0 + 60 * bucket + 1
    order = [session for session, count in traffic.items() for _ in range(count)]
    random.Random(bucket).shuffle(order)
    found = []
    for session in order:
        anomaly = engine.check(f"{session}-token", subject="alice", session=session).anomaly
        if anomaly is not None:
            found.append(anomaly)
    return found


def test_a_copy_of_a_quiet_session_stands_out_of_a_busy_account(
    adaptive_engine: TokenRateLimiter, clock: Clock
) -> None:
    """The thief who hides in the account's total: the busy laptop makes 200 a minute, the
    quiet phone 10; a copy of the phone's token adds 110. The account went from 210 to 320
    (1.5x), the phone's session from 10 to 120 (12x): flagged, and named."""
    for bucket in range(5):
        assert bucket_of(adaptive_engine, clock, bucket, {"laptop": 200, "phone": 10}) == []
    found = bucket_of(adaptive_engine, clock, 5, {"laptop": 200, "phone": 120})
    assert [(a.scope, a.session, a.count, a.warmup) for a in found] == [("session", "phone", 101, False)]
    assert found[0].baseline == 10.0 and found[0].subject_baseline == 210.0


def test_the_anomaly_names_the_anomalous_session_not_the_busy_one(
    adaptive_engine: TokenRateLimiter, clock: Clock
) -> None:
    """Whichever session's request crosses the account's line, the finding is the session
    whose own traffic is anomalous: the busy laptop at its own pace never is."""
    for bucket in range(5):
        assert bucket_of(adaptive_engine, clock, bucket, {"laptop": 500, "phone": 10}) == []
    for bucket in range(5, 8):
        found = bucket_of(adaptive_engine, clock, bucket, {"laptop": 500, "phone": 300})
        assert [(a.scope, a.session) for a in found] == [("session", "phone")]
    assert all(a.session != "laptop" for a in bucket_of(adaptive_engine, clock, 8, {"laptop": 900}))


def test_a_fresh_session_warms_up_under_its_subjects_cap(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    """A new login is not judged against the account's old pace: the sync client makes 30
    times the phone's 10 a minute from its first minute on. Only far above the subject's
    cap (factor x the larger of floor and the subject's baseline: 600) is it anomalous."""
    for bucket in range(5):
        assert bucket_of(adaptive_engine, clock, bucket, {"phone": 10}) == []
    found = bucket_of(adaptive_engine, clock, 5, {"phone": 10, "sync": 300})
    assert [(a.scope, a.sustained) for a in found] == [("subject", False)]  # the account jumped: a signal
    for bucket in range(6, 9):  # three buckets learned: sync has a pace of its own
        assert [a.scope for a in bucket_of(adaptive_engine, clock, bucket, {"phone": 10, "sync": 300})] in (
            [],
            ["subject"],
        )
    assert bucket_of(adaptive_engine, clock, 9, {"phone": 10, "sync": 300}) == []


def test_a_fresh_token_hammered_at_once_is_capped(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    """No pace of its own yet, but not unbounded: factor x max(floor, the subject's 10) = 600."""
    for bucket in range(5):
        assert bucket_of(adaptive_engine, clock, bucket, {"phone": 10}) == []
    found = bucket_of(adaptive_engine, clock, 5, {"phone": 10, "fresh": 700})
    assert [a.scope for a in found] == ["subject", "session"]  # the account's jump is seen first
    assert (found[1].session, found[1].count, found[1].warmup, found[1].baseline) == ("fresh", 601, True, 60.0)
    assert (found[1].anomalous_buckets, found[1].sustained) == (1, False)  # sustain counts the session


def test_a_fresh_token_hammered_at_a_steady_rate_stays_capped(storage_uri: str, clock: Clock) -> None:
    """The cap of the warm-up does not learn the hammering: the subject's view skips the
    buckets in which one of its sessions was anomalous, so the third minute is sustained."""
    settings = AdaptiveSettings(factor=5.0, floor="20/minute", sustain="3/10 minutes")
    engine = TokenRateLimiter(None, storage_uri=storage_uri, adaptive=settings)
    for bucket in range(5):
        assert bucket_of(engine, clock, bucket, {"phone": 10}) == []
    found = [
        a for b in range(5, 8) for a in bucket_of(engine, clock, b, {"phone": 10, "fresh": 400}) if a.scope == "session"
    ]
    assert [(a.session, a.warmup, a.baseline, a.sustained) for a in found] == [
        ("fresh", True, 20.0, False),
        ("fresh", True, 20.0, False),
        ("fresh", True, 20.0, True),
    ]


def test_a_new_account_learns_before_anything_is_flagged(adaptive_engine: TokenRateLimiter, clock: Clock) -> None:
    assert bucket_of(adaptive_engine, clock, 0, {"phone": 500, "laptop": 500}) == []


def test_the_subject_signal_is_never_sustained(storage_uri: str, clock: Clock) -> None:
    settings = AdaptiveSettings(factor=5.0, floor="20/minute", sustain="1/10 minutes")
    engine = TokenRateLimiter(None, storage_uri=storage_uri, adaptive=settings)
    for bucket in range(5):
        assert bucket_of(engine, clock, bucket, {"a": 10, "b": 10, "c": 10}) == []
    # every session doubles: none is anomalous, the account is 2x -- below the factor
    assert bucket_of(engine, clock, 5, {"a": 20, "b": 20, "c": 20}) == []
    # ten new sessions at 20 each, each under its warm-up cap: the account alone is anomalous
    found = bucket_of(engine, clock, 6, {"a": 10, "b": 10, "c": 10} | {f"n{i}": 20 for i in range(10)})
    assert [(a.scope, a.sustained, a.anomalous_buckets) for a in found] == [("subject", False, 0)]
    assert found[0].as_detail()["scope"] == "subject" and found[0].as_detail()["sustained"] is False


def test_one_script_call_counts_the_session_and_its_subject(redis_url: str, clock: Clock) -> None:
    """With Redis, the adaptive step stays one call per request (both views in one script),
    beside the one call that hits the limits and the spike counters."""
    engine = TokenRateLimiter(
        "300/minute", storage_uri=redis_url, spike_threshold="3000/minute", adaptive=AdaptiveSettings()
    )
    client = redis.Redis.from_url(redis_url)
    engine.check("sid-1", subject="alice", session="sid-1")  # scripts loaded
    client.config_resetstat()
    for _ in range(10):
        assert engine.check("sid-1", subject="alice", session="sid-1").allowed
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items()}
    # Two script calls per request; every other command ran inside them (Redis counts those too).
    assert calls.pop("evalsha") == 20 and calls.pop("hmget") == 20  # two hashes, one call
    assert set(calls) <= {"info", "config|resetstat", "incrby", "expire", "hset", "pttl"}, calls


def test_memory_baselines_are_bounded_by_sessions(clock: Clock) -> None:
    """The least recently seen sessions are forgotten; a subject's baseline lives on with
    any of its sessions, and a fresh session of the subject finds it."""
    settings = AdaptiveSettings(factor=5.0, floor="20/minute", max_subjects=2, sustain=None)
    engine = TokenRateLimiter(None, storage_uri="memory://", adaptive=settings)
    for bucket in range(4):
        assert bucket_of(engine, clock, bucket, {"phone": 10, "laptop": 10}) == []
    # a third session pushes the least recent one out; the subject's baseline (20) stays
    found = bucket_of(engine, clock, 4, {"laptop": 10, "fresh": 101})
    assert [(a.session, a.warmup, a.baseline) for a in found if a.scope == "session"] == [("fresh", True, 20.0)]
    assert len(engine._baselines._sessions) == 2  # type: ignore[union-attr]


def findings(report: AnomalyReport | None) -> tuple[str | None, dict[str, object]] | None:
    return None if report is None else (report.session, report.as_detail())


def test_memory_and_redis_baselines_agree(redis_url: str, clock: Clock) -> None:
    """The rule and its Lua twin, request by request, on traffic that crosses every branch:
    several sessions and subjects, fresh logins, bursts, idle buckets and warm-ups."""
    settings = AdaptiveSettings(factor=4.0, floor="20/minute", sustain=None, min_history=2)
    memory = TokenRateLimiter(None, storage_uri="memory://", adaptive=settings)
    shared = TokenRateLimiter(None, storage_uri=redis_url, adaptive=settings)
    rng = random.Random(7)
    sessions = {f"s{i}": f"u{i % 3}" for i in range(8)}
    born: dict[str, int] = {}
    seen: set[tuple[object, ...]] = set()
    for bucket in range(40):
        clock.now = T0 + 60 * bucket + 0.5
        if bucket % 7 == 6:  # a fresh login, hammered in its warm-up
            born[f"s{len(sessions)}"] = bucket
            sessions[f"s{len(sessions)}"] = f"u{bucket % 3}"
        if bucket == 30:  # a dozen new sessions of u0, each quiet: only the total jumps
            for i in range(12):
                sessions[f"crowd{i}"] = "u0"
        for session, subject in list(sessions.items()):
            if rng.random() < 0.3 and not session.startswith("crowd"):
                continue  # an idle bucket for this session
            if session.startswith("crowd"):
                count = 15
            elif bucket - born.get(session, -99) < 2 or rng.random() < 0.1:
                count = rng.randint(40, 200)  # a burst
            else:
                count = rng.randint(1, 12)
            for _ in range(count):
                clock.now += 0.001
                mine = memory.check(session, subject=subject).anomaly
                theirs = shared.check(session, subject=subject).anomaly
                # the same findings; Lua keeps the baselines to 14 significant digits
                assert findings(mine) == findings(theirs), (bucket, session)
                if mine is not None:
                    seen.add((mine.scope, mine.warmup) if mine.scope == "session" else (mine.scope,))
    # the traffic crossed every branch: established and warming-up sessions, subjects alone
    assert {("session", False), ("session", True), ("subject",)} <= seen, seen


@pytest.mark.parametrize(
    "kwargs",
    [{"factor": 0.5}, {"floor": "60/minute;1/second"}, {"floor": "sixty"}, {"alpha": 0.0}],
)
def test_adaptive_settings_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AdaptiveSettings(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Redis: shared, failing


CHILD = """
import json, sys
from flask_jwt_shield.ratelimit import TokenRateLimiter
engine = TokenRateLimiter("10/minute", storage_uri=sys.argv[1], spike_threshold="12/minute")
out = []
for _ in range(int(sys.argv[2])):
    d = engine.check("jti-shared")
    out.append([d.allowed, d.spike.count if d.spike else None])
print(json.dumps(out))
"""


def test_two_processes_share_counts_through_redis(redis_url: str) -> None:
    parent = TokenRateLimiter("10/minute", storage_uri=redis_url, spike_threshold="12/minute")
    assert all(d.allowed for d in hits(parent, "jti-shared", 6))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, "8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # attempts 7-10 allowed, 11-14 refused; the 13th crosses the spike threshold
    assert json.loads(child.stdout) == [[True, None]] * 4 + [[False, None], [False, None], [False, 13], [False, None]]
    last = parent.check("jti-shared")
    assert not last.allowed and last.spike is None
    assert parent.check("jti-other").allowed


def test_two_engines_in_one_process_share_redis(redis_url: str) -> None:
    one = TokenRateLimiter("3/minute", storage_uri=redis_url)
    two = TokenRateLimiter("3/minute", storage_uri=redis_url)
    assert one.check("jti-1").allowed and two.check("jti-1").allowed
    assert two.check("jti-1").remaining == 0
    refused = one.check("jti-1")
    assert not refused.allowed and 1 <= refused.retry_after <= 60


ENGINES = {
    "fixed": lambda url: TokenRateLimiter("5/minute", storage_uri=url),
    "moving": lambda url: TokenRateLimiter("5/minute", storage_uri=url, strategy="moving-window"),
    "sliding": lambda url: TokenRateLimiter("5/minute", storage_uri=url, strategy="sliding-window-counter"),
    "spike": lambda url: TokenRateLimiter(None, storage_uri=url, spike_threshold="5/minute"),
    "adaptive": lambda url: TokenRateLimiter(None, storage_uri=url, adaptive=AdaptiveSettings()),
}


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_redis_down_raises_limiter_storage_error(kind: str) -> None:
    with running_redis() as server:
        engine = ENGINES[kind](server.url)
        assert engine.check("jti-1").allowed
        server.stop()
        assert not server.running()
        with pytest.raises(LimiterStorageError) as info:
            engine.check("jti-1")
    assert info.value.__cause__ is info.value.original
    assert isinstance(redis_root(info.value), redis.exceptions.ConnectionError)
    # a store failure like any other: whoever handles StoreError handles this one too
    assert isinstance(info.value, StoreError)


def test_reused_app_limiter_errors_are_wrapped_too() -> None:
    # Flask-Limiter builds its storage without wrap_exceptions: raw redis errors escape it
    with running_redis() as server:
        app = Flask(__name__)
        app.config["RATELIMIT_STORAGE_URI"] = server.url
        engine = TokenRateLimiter("5/minute", limiter=Limiter(lambda: "k", app=app))
        decision = engine.check("jti-1")
        server.stop()
        with pytest.raises(LimiterStorageError) as info:
            engine.check("jti-1")
        # the lazily read window of an earlier decision fails the same way
        with pytest.raises(LimiterStorageError):
            _ = decision.remaining
    # no limits wrapper here: the raw redis error is what we caught and wrapped
    assert isinstance(info.value.original, redis.exceptions.ConnectionError)


def test_unreachable_at_construction_fails_only_on_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    engine = TokenRateLimiter("5/minute", storage_uri=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(LimiterStorageError) as info:
        engine.check("jti-1")
    assert isinstance(redis_root(info.value), redis.exceptions.ConnectionError)


def test_hung_redis_times_out_into_limiter_storage_error() -> None:
    # a server that accepts connections and never answers: the socket timeout ends the wait
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        engine = TokenRateLimiter(
            "5/minute",
            storage_uri=f"redis://127.0.0.1:{port}/0",
            storage_options={"socket_timeout": 0.1, "socket_connect_timeout": 0.1},
        )
        with pytest.raises(LimiterStorageError) as info:
            engine.check("jti-1")
    assert isinstance(redis_root(info.value), redis.exceptions.TimeoutError)
