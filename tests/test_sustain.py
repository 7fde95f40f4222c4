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
def test_bad_sustain_settings_are_refused_at_init_app(
    make_app: AppFactory, key: str, value: t.Any, message: str
) -> None:
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
    assert report.as_detail() == {
        "pattern": "sustained",
        "sustain": "3/600 seconds",
        "refused_minutes": 3,
        "window_seconds": 600,
    }
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
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": None,
            "JWT_SHIELD_ADAPTIVE": True,
            "JWT_SHIELD_ADAPTIVE_FACTOR": 5.0,
            "JWT_SHIELD_ADAPTIVE_FLOOR": "20/minute",
            "JWT_SHIELD_ADAPTIVE_ACTION": "revoke",
        }
    )
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
    engine = TokenRateLimiter(
        "5/minute", storage_uri="memory://", spike_threshold="5/minute", spike_sustain="3/10 minutes"
    )
    for _ in range(3):
        reports = refuse(engine, "jti-1", 6)  # the sixth attempt is refused *and* the burst
        assert [r.sustained for r in reports] == [False]
        clock.advance(60)
    engine.set_endpoint_limit("reports", "2/minute")
    found = [d.spike for d in (engine.check("jti-1", "reports") for _ in range(3)) if d.spike is not None]
    assert [(r.sustained, r.count) for r in found] == [(True, 4)]


# -- the action lands on the anomalous session --------------------------------------------

ANOMALY_ON_SESSIONS = {
    "JWT_SHIELD_RATE_LIMIT": None,
    "JWT_SHIELD_ADAPTIVE": True,
    "JWT_SHIELD_ADAPTIVE_FACTOR": 5.0,
    "JWT_SHIELD_ADAPTIVE_FLOOR": "20/minute",
    "JWT_SHIELD_ADAPTIVE_ACTION": "revoke_family",
}


def two_sessions(app: t.Any) -> tuple[dict[str, str], dict[str, str], str, str]:
    """Two logins of alice: (headers of the busy one, of the quiet one, their sids)."""
    client = app.test_client()
    pairs = [client.post("/login?sub=alice").get_json() for _ in range(2)]
    codec = app.extensions["jwt_shield"].codec
    busy, quiet = ({"Authorization": f"Bearer {p['access_token']}"} for p in pairs)
    return busy, quiet, codec.inspect(pairs[0]["access_token"])["sid"], codec.inspect(pairs[1]["access_token"])["sid"]


def minute(client: t.Any, clock: Clock, traffic: list[tuple[dict[str, str], int]]) -> list[tuple[int, int]]:
    """One minute: each (headers, count) in turn; the (index, status) of every request."""
    order = [n for n, (_, count) in enumerate(traffic) for _ in range(count)]
    statuses = [(n, client.get("/api/me", headers=traffic[n][0]).status_code) for n in order]
    clock.advance(60)
    return statuses


def test_the_action_lands_on_the_anomalous_session_not_on_another_session_of_the_subject(
    make_app: AppFactory, clock: Clock
) -> None:
    """Alice's busy laptop makes 100 a minute, her quiet phone 5. A copy of the phone's token
    adds 60 a minute: the account goes from 105 to 165 (1.6x, no anomaly per subject), the
    phone's session from 5 to 65 (13x). Three minutes on, the phone's session is revoked --
    and only it: the laptop, at its own pace all along, keeps working."""
    app, shield = make_app(ANOMALY_ON_SESSIONS)
    client = app.test_client()
    laptop, phone, laptop_sid, phone_sid = two_sessions(app)
    for _ in range(5):
        assert {s for _, s in minute(client, clock, [(laptop, 100), (phone, 5)])} == {200}
    results = [minute(client, clock, [(laptop, 100), (phone, 65)]) for _ in range(3)]
    assert all(s == 200 for r in results for n, s in r if n == 0), "the laptop's session is untouched"
    assert {s for r in results[:2] for n, s in r if n == 1} == {200}  # flagged only
    assert [s for n, s in results[2] if n == 1][-1] == 401  # sustained: the phone's session ends
    assert client.get("/api/me", headers=laptop).status_code == 200
    with app.app_context():
        anomalies = list(reversed(shield.events(kind="traffic-anomaly")))
        revoked = shield.events(kind="family-revoked")
    assert [(e.action, e.sid) for e in anomalies] == [
        ("flag", phone_sid),
        ("flag", phone_sid),
        ("revoke_family", phone_sid),
    ]
    assert [e.sid for e in revoked] == [phone_sid] and laptop_sid != phone_sid


def test_the_session_whose_request_crosses_the_accounts_line_is_not_blamed(make_app: AppFactory, clock: Clock) -> None:
    """Per subject, whichever request crossed the line took the action: here the laptop's,
    most of the account's traffic. Per session, the phone's session -- the anomalous one --
    is named, even when the laptop sends most of the requests of the anomalous minute."""
    app, shield = make_app(ANOMALY_ON_SESSIONS)
    client = app.test_client()
    laptop, phone, laptop_sid, phone_sid = two_sessions(app)
    for _ in range(5):
        minute(client, clock, [(laptop, 10), (phone, 2)])
    # The phone's copy fires first in the minute (55: above its 5 x 2, and the floor, 20),
    # then the laptop's ordinary 10 push the account over 5 x 12 = 60: a laptop request
    # crosses the account's line.
    for _ in range(3):
        minute(client, clock, [(phone, 55), (laptop, 10)])
    with app.app_context():
        events = shield.events(kind="traffic-anomaly") + shield.events(kind="family-revoked")
    sids = {e.sid for e in events}
    assert sids == {phone_sid} and laptop_sid not in sids
    assert client.get("/api/me", headers=laptop).status_code == 200
    assert client.get("/api/me", headers=phone).status_code == 401


def test_anomalous_minutes_of_two_sessions_do_not_add_up(make_app: AppFactory, clock: Clock) -> None:
    """The sustain span counts per session: one burst on each of three devices is three
    flags, not a sustained anomaly of anybody."""
    app, shield = make_app(ANOMALY_ON_SESSIONS)
    client = app.test_client()
    pairs = [client.post("/login?sub=alice").get_json() for _ in range(3)]
    devices = [{"Authorization": f"Bearer {p['access_token']}"} for p in pairs]
    for _ in range(5):
        minute(client, clock, [(d, 5) for d in devices])
    for burst in range(3):
        statuses = minute(client, clock, [(d, 60 if n == burst else 5) for n, d in enumerate(devices)])
        assert {s for _, s in statuses} == {200}
    with app.app_context():
        assert [e.action for e in shield.events(kind="traffic-anomaly")] == ["flag"] * 3
        assert shield.events(kind="family-revoked") == []
