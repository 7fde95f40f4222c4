"""Sustained detection: a spike or an anomaly that lasts, counted in distinct minutes.

``JWT_SHIELD_SPIKE_SUSTAIN`` and ``JWT_SHIELD_ADAPTIVE_SUSTAIN``, on memory storage and on a
real redis-server (the counters are plain ``incr``, shared by every worker).
"""

from __future__ import annotations

import typing as t

import pytest

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield.ratelimit import AdaptiveSettings
from flask_jwt_shield.ratelimit import TokenRateLimiter
from flask_jwt_shield.ratelimit.syntax import Sustain
from tests.conftest import AppFactory
from tests.conftest import Clock


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request: pytest.FixtureRequest) -> str:
    """memory://, or a real redis-server of the test's own (conftest's redis_url)."""
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3/10 minutes", Sustain(3, 600)), ("1/minute", Sustain(1, 60)), ("2/hour", Sustain(2, 3600))],
)
def test_sustain_strings(value: str, expected: Sustain) -> None:
    assert Sustain.parse(value) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("JWT_SHIELD_SPIKE_SUSTAIN", "3 per ten", "not a limit string"),
        ("JWT_SHIELD_SPIKE_SUSTAIN", "3/minute;5/hour", "one limit"),
        ("JWT_SHIELD_SPIKE_SUSTAIN", "5/2 minutes", "never happen"),
        ("JWT_SHIELD_ADAPTIVE_SUSTAIN", 3, "string such as '3/10 minutes'"),
        ("JWT_SHIELD_ADAPTIVE_SUSTAIN", "", "string such as '3/10 minutes'"),
        ("JWT_SHIELD_ADAPTIVE_SUSTAIN", "0/minute", "one limit"),
    ],
)
def test_bad_sustain_settings_are_refused_at_init_app(make_app: AppFactory, key: str, value: t.Any,
                                                      message: str) -> None:  # fmt: skip
    with pytest.raises(ConfigurationError, match=key) as info:
        make_app({key: value})
    assert message in str(info.value)


def test_sustain_can_be_turned_off(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_SPIKE_SUSTAIN": None, "JWT_SHIELD_ADAPTIVE_SUSTAIN": None})
    config = app.extensions["jwt_shield"].config
    assert config.rate.spike_sustain is None and config.rate.adaptive_sustain is None


def refuse(engine: TokenRateLimiter, identity: str, n: int) -> list[t.Any]:
    """``n`` attempts; the spike reports they produced."""
    return [d.spike for d in (engine.check(identity) for _ in range(n)) if d.spike is not None]


def test_refused_minutes_make_a_sustained_spike(storage_uri: str, clock: Clock) -> None:
    engine = TokenRateLimiter("5/minute", storage_uri=storage_uri, spike_sustain="3/10 minutes")
    assert refuse(engine, "jti-1", 5) == []  # within the limit: nothing counted
    assert refuse(engine, "jti-1", 20) == []  # refused 15 times, but in one minute
    clock.advance(60)
    assert refuse(engine, "jti-1", 8) == []  # a second minute with refusals
    clock.advance(120)  # a pause does not reset the span
    (report,) = refuse(engine, "jti-1", 8)  # the third: reported once, not per refusal
    assert report.sustained and report.identity == "jti-1" and report.count == 3
    assert report.as_detail() == {"pattern": "sustained", "sustain": "3/600 seconds", "refused_minutes": 3,
                                  "window_seconds": 600}  # fmt: skip
    clock.advance(60)
    (again,) = refuse(engine, "jti-1", 8)  # every further refused minute reports again
    assert again.count == 4
    assert refuse(engine, "jti-2", 8) == []  # another token has its own count


def test_a_refused_minute_per_span_is_not_sustained(clock: Clock) -> None:
    """Bursts far apart (an app restarted now and then) never add up."""
    engine = TokenRateLimiter("5/minute", storage_uri="memory://", spike_sustain="3/10 minutes")
    for _ in range(6):
        assert refuse(engine, "jti-1", 10) == []
        clock.advance(6 * 60)  # two refused minutes never share a ten-minute span twice


def test_no_sustain_no_report(clock: Clock) -> None:
    engine = TokenRateLimiter("5/minute", storage_uri="memory://", spike_sustain=None)
    for _ in range(5):
        assert refuse(engine, "jti-1", 10) == []
        clock.advance(60)


def anomalies(engine: TokenRateLimiter, subject: str, n: int) -> list[t.Any]:
    found = []
    for _ in range(n):
        decision = engine.check(f"{subject}-token", subject=subject)
        if decision.anomaly is not None:
            found.append(decision.anomaly)
    return found


def test_an_anomaly_becomes_sustained_in_its_third_minute(storage_uri: str, clock: Clock) -> None:
    settings = AdaptiveSettings(factor=5.0, floor="20/minute", sustain="3/10 minutes")
    engine = TokenRateLimiter(None, storage_uri=storage_uri, adaptive=settings)
    for _ in range(5):  # the baseline: 10 a minute
        assert anomalies(engine, "alice", 10) == []
        clock.advance(60)
    seen = []
    for minute in range(4):
        seen += anomalies(engine, "alice", 100)
        clock.advance(60 if minute != 1 else 180)  # with a pause after the second minute
    assert [(a.anomalous_buckets, a.sustained) for a in seen] == [(1, False), (2, False), (3, True), (4, True)]
    assert seen[2].as_detail()["sustained"] is True


def test_without_sustain_every_anomaly_is_sustained(clock: Clock) -> None:
    settings = AdaptiveSettings(factor=5.0, floor="20/minute", sustain=None)
    engine = TokenRateLimiter(None, storage_uri="memory://", adaptive=settings)
    for _ in range(5):
        anomalies(engine, "alice", 10)
        clock.advance(60)
    (first,) = anomalies(engine, "alice", 100)
    assert first.sustained and first.anomalous_buckets == 1


def test_pipeline_flags_until_the_anomaly_is_sustained(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": None, "JWT_SHIELD_ADAPTIVE": True,
                            "JWT_SHIELD_ADAPTIVE_FACTOR": 5.0, "JWT_SHIELD_ADAPTIVE_FLOOR": "20/minute",
                            "JWT_SHIELD_ADAPTIVE_ACTION": "revoke"})  # fmt: skip
    client = app.test_client()
    with app.app_context():
        token = shield.create_access_token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(5):
        assert {client.get("/api/me", headers=headers).status_code for _ in range(10)} == {200}
        clock.advance(60)
    statuses = []
    for _ in range(3):
        statuses.append([client.get("/api/me", headers=headers).status_code for _ in range(100)])
        clock.advance(60)
    assert set(statuses[0]) == {200} and set(statuses[1]) == {200}  # flagged only
    assert 401 in statuses[2] and statuses[2][-1] == 401  # sustained: revoked
    with app.app_context():
        anomaly_actions = [e.action for e in reversed(shield.events(kind="traffic-anomaly"))]
        assert anomaly_actions == ["flag", "flag", "revoke"]
        assert shield.events(kind="token-revoked")[0].detail == {"reason": "traffic-anomaly"}


def test_a_refused_minute_counts_even_when_a_burst_reports_it(clock: Clock) -> None:
    """The first refusal of a minute may also cross the burst threshold: that report wins,
    and the minute is still counted for the sustained form."""
    engine = TokenRateLimiter("5/minute", storage_uri="memory://", spike_threshold="5/minute",
                              spike_sustain="3/10 minutes")  # fmt: skip
    for _ in range(3):
        reports = refuse(engine, "jti-1", 6)  # the sixth attempt is refused *and* the burst
        assert [r.sustained for r in reports] == [False]
        clock.advance(60)
    engine.set_endpoint_limit("reports", "2/minute")
    found = [d.spike for d in (engine.check("jti-1", "reports") for _ in range(3)) if d.spike is not None]
    assert [(r.sustained, r.count) for r in found] == [(True, 4)]
