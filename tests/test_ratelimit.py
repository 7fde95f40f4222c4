"""Per-token rate limits and spike detection in the request pipeline (controlled time)."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jwt_shield import JWTShield

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of
from .redis_util import RedisServer


def tokens(app: Flask, shield: JWTShield, *subs: str) -> list[str]:
    with app.app_context():
        return [shield.create_access_token(sub) for sub in subs]


def statuses(client: FlaskClient, token: str, n: int, path: str = "/api/me", method: str = "get") -> list[int]:
    return [getattr(client, method)(path, headers=bearer(token)).status_code for _ in range(n)]


def test_jti_mode_limits_one_token_not_the_other(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "3/minute"})
    a, b = tokens(app, shield, "alice", "alice")
    client = app.test_client()
    assert statuses(client, a, 4) == [200, 200, 200, 429]
    assert statuses(client, b, 3) == [200, 200, 200]  # another token of the same user
    clock.advance(60)
    assert statuses(client, a, 1) == [200]  # a new window


def test_sub_mode_limits_the_user(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "3/minute", "JWT_SHIELD_RATE_LIMIT_KEY": "sub"})
    a, b, bob = tokens(app, shield, "alice", "alice", "bob")
    client = app.test_client()
    assert statuses(client, a, 2) == [200, 200]
    assert statuses(client, b, 2) == [200, 429]  # same subject, shared budget
    assert statuses(client, bob, 1) == [200]


def test_429_headers(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "10/second;2/minute"})
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    statuses(client, a, 2)
    clock.advance(15)
    r = client.get("/api/me", headers=bearer(a))
    assert r.status_code == 429
    assert json_of(r)["error"] == "rate_limited"
    assert r.headers["Retry-After"] == "45"
    assert r.headers["RateLimit-Limit"] == "2"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert r.headers["RateLimit-Reset"] == "45"


def test_several_limits_the_tightest_binds(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "2/second;5/minute"})
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 3) == [200, 200, 429]
    for _ in range(3):
        clock.advance(1)
        statuses(client, a, 1)
    clock.advance(1)
    r = client.get("/api/me", headers=bearer(a))
    assert r.status_code == 429 and r.headers["RateLimit-Limit"] == "5"


def test_endpoint_override_and_exemption(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "100/minute"})

    @app.post("/reports")
    @shield.limit("2/minute")
    def reports() -> t.Any:
        return {"ok": True}

    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 3, "/reports", "post") == [200, 200, 429]
    assert statuses(client, a, 2) == [200, 200]  # the default budget is separate

    app2, shield2 = make_app({"JWT_SHIELD_RATE_LIMIT": "1/minute"})

    @app2.get("/cheap")
    @shield2.limit(exempt=True)
    def cheap2() -> t.Any:
        return {"ok": True}

    (c,) = tokens(app2, shield2, "carol")
    assert statuses(app2.test_client(), c, 5, "/cheap") == [200] * 5
    assert statuses(app2.test_client(), c, 2) == [200, 429]


def test_limit_decorator_refuses_bad_input(shield: JWTShield) -> None:
    with pytest.raises(ValueError):
        shield.limit("many")
    with pytest.raises(TypeError):
        shield.limit()  # type: ignore[call-overload]


def test_flask_limiter_must_be_initialised_first(make_app: AppFactory) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    from flask_jwt_shield import ConfigurationError

    with pytest.raises(ConfigurationError, match="init_app"):
        make_app(limiter=Limiter(get_remote_address, storage_uri="memory://"))


def test_spike_revokes_the_hammered_token(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": "5/minute",
            "JWT_SHIELD_SPIKE_THRESHOLD": "8/minute",
            "JWT_SHIELD_SPIKE_ACTION": "revoke",
        }
    )
    a, b = tokens(app, shield, "alice", "alice")
    client = app.test_client()
    # 5 allowed, then 429s; the 9th attempt (rejected ones count) crosses the threshold
    assert statuses(client, a, 9) == [200] * 5 + [429] * 3 + [401]
    clock.advance(120)  # a new window: still revoked
    r = client.get("/api/me", headers=bearer(a))
    assert r.status_code == 401 and "revoked" in json_of(r)["error_description"]
    assert statuses(client, b, 1) == [200]  # the user's other token is untouched
    with app.app_context():
        (spike,) = shield.events(kind="traffic-spike")
        (revoked,) = shield.events(kind="token-revoked")
    assert spike.action == "revoke" and spike.detail["count"] == 9 and spike.detail["window_seconds"] == 60
    assert revoked.jti == spike.jti and revoked.detail == {"reason": "traffic-spike"}


def test_spike_flag_once_per_window(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "100/minute", "JWT_SHIELD_SPIKE_THRESHOLD": "3/minute"})
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 10) == [200] * 10  # flag: requests go on
    clock.advance(60)
    statuses(client, a, 10)
    with app.app_context():
        assert len(shield.events(kind="traffic-spike")) == 2  # once per window


def test_default_spike_threshold_is_ten_times_the_limit(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "2/minute", "JWT_SHIELD_SPIKE_ACTION": "deny"})
    (a,) = tokens(app, shield, "alice")
    codes = statuses(app.test_client(), a, 21)
    assert codes[:2] == [200, 200] and set(codes[2:20]) == {429}
    assert codes[20] == 403  # the 21st attempt crossed 20/minute: deny


def test_monitor_only_downgrades_spike_action(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": "100/minute",
            "JWT_SHIELD_SPIKE_THRESHOLD": "3/minute",
            "JWT_SHIELD_SPIKE_ACTION": "revoke_subject",
            "JWT_SHIELD_MONITOR_ONLY": True,
        }
    )
    (a,) = tokens(app, shield, "alice")
    assert statuses(app.test_client(), a, 6) == [200] * 6
    with app.app_context():
        (event,) = shield.events(kind="traffic-spike")
        assert not shield.events(kind="subject-revoked")
    assert event.action == "flag" and event.detail["intended_action"] == "revoke_subject"


def test_rate_limited_event_is_throttled(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "1/minute", "JWT_SHIELD_SPIKE_THRESHOLD": "1000/minute"})
    (a,) = tokens(app, shield, "alice")
    statuses(app.test_client(), a, 20)
    with app.app_context():
        events = shield.events(kind="rate-limited")
    assert len(events) == 1 and events[0].detail["limit"] and events[0].jti


def test_adaptive_flags_20x_not_2x(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": None,
            "JWT_SHIELD_ADAPTIVE": True,
            "JWT_SHIELD_ADAPTIVE_FACTOR": 10.0,
            "JWT_SHIELD_ADAPTIVE_FLOOR": "20/minute",
        }
    )
    client = app.test_client()
    clock.now = 1_800_000_000 - 1_800_000_000 % 60  # start of a minute bucket
    (a,) = tokens(app, shield, "alice")
    for _ in range(10):  # ten minutes of normal traffic: 5 requests a minute
        assert statuses(client, a, 5) == [200] * 5
        clock.advance(60)
    statuses(client, a, 10)  # 2x normal
    with app.app_context():
        assert shield.events(kind="traffic-anomaly") == []
    clock.advance(60)
    statuses(client, a, 100)  # 20x normal
    with app.app_context():
        (event,) = shield.events(kind="traffic-anomaly")
    assert event.subject == "alice" and event.detail["count"] > 50


def test_adaptive_floor_spares_quiet_users(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app(
        {"JWT_SHIELD_RATE_LIMIT": None, "JWT_SHIELD_ADAPTIVE": True, "JWT_SHIELD_ADAPTIVE_FLOOR": "60/minute"}
    )
    client = app.test_client()
    clock.now = 1_800_000_000 - 1_800_000_000 % 60
    (a,) = tokens(app, shield, "alice")
    for _ in range(5):
        statuses(client, a, 1)
        clock.advance(60)
    statuses(client, a, 30)  # 30x normal, but under the floor
    with app.app_context():
        assert shield.events(kind="traffic-anomaly") == []


def test_rate_limit_off(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": None})
    (a,) = tokens(app, shield, "alice")
    assert statuses(app.test_client(), a, 50) == [200] * 50


def test_beside_an_apps_own_flask_limiter(make_app: AppFactory, clock: Clock) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    limiter = Limiter(get_remote_address, storage_uri="memory://")
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "3/minute"}, limiter=limiter, defer_init=True)
    limiter.init_app(app)  # the app's own limiter first: the shield shares its storage
    shield.init_app(app)

    @app.get("/ip-limited")
    @limiter.limit("2/minute")
    def ip_limited() -> t.Any:
        return {"ok": True}

    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 3, "/ip-limited") == [200, 200, 429]
    # the third /ip-limited request was refused by Flask-Limiter, after the shield counted it
    assert statuses(client, a, 1) == [429]
    keys = set(limiter.storage.storage)  # type: ignore[attr-defined]
    assert any(k.startswith("LIMITER/") for k in keys) and any("jwt_shield/" in k for k in keys)
    storage = app.extensions["jwt_shield"].limiter.storage
    assert storage is limiter.storage  # one storage, two key spaces


@pytest.mark.redis
def test_limits_shared_across_workers_through_redis(make_app: AppFactory, redis_url: str) -> None:
    config = {"JWT_SHIELD_RATE_LIMIT": "4/hour", "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": redis_url}
    worker1, shield = make_app(config)
    worker2, _ = make_app(config)  # a second app: another worker process's state
    (a,) = tokens(worker1, shield, "alice")
    c1, c2 = worker1.test_client(), worker2.test_client()
    assert statuses(c1, a, 2) + statuses(c2, a, 2) == [200] * 4
    assert statuses(c1, a, 1) == [429] and statuses(c2, a, 1) == [429]


@pytest.mark.redis
@pytest.mark.parametrize(("mode", "status"), [("closed", 503), ("open", 200)])
def test_limiter_storage_down_follows_fail_mode(
    make_app: AppFactory, redis_server: RedisServer, mode: str, status: int
) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": "100/hour",
            "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": redis_server.url,
            "JWT_SHIELD_FAIL_MODE": mode,
        }
    )
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 1) == [200]
    redis_server.stop()
    r = client.get("/api/me", headers=bearer(a))
    assert r.status_code == status
    if status == 503:
        assert r.headers["Retry-After"]
    with app.app_context():
        assert shield.events(kind="store-unavailable")


def test_retry_after_sent_once(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "1/minute"})
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    statuses(client, a, 1)
    r = client.get("/api/me", headers=bearer(a))
    assert r.headers.getlist("Retry-After") == ["60"]


def test_limiter_and_storage_uri_together_refused(make_app: AppFactory) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    from flask_jwt_shield import ConfigurationError

    limiter = Limiter(get_remote_address, storage_uri="memory://")
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "memory://"}, limiter=limiter, defer_init=True)
    limiter.init_app(app)
    with pytest.raises(ConfigurationError, match="remove one"):
        shield.init_app(app)


def test_endpoint_limit_without_a_default_limit(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": None})

    @app.post("/reports")
    @shield.limit("2/minute")
    def reports() -> t.Any:
        return {"ok": True}

    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert statuses(client, a, 5) == [200] * 5  # no default limit, so no step on /api/me
    assert statuses(client, a, 3, "/reports", "post") == [200, 200, 429]


def test_limiter_is_idle_without_anything_to_count() -> None:
    from flask_jwt_shield.ratelimit import TokenRateLimiter

    assert not TokenRateLimiter(None).active
    assert TokenRateLimiter(None, spike_threshold="10/minute").active
    limiter = TokenRateLimiter(None)
    limiter.exempt_endpoint("a")
    assert not limiter.active
    limiter.set_endpoint_limit("b", "5/minute")
    assert limiter.active


@pytest.mark.parametrize("switch", [{"JWT_SHIELD_RATE_LIMIT_HEADERS": True}, {"RATELIMIT_HEADERS_ENABLED": True}])
def test_ratelimit_headers_on_every_limited_response(
    make_app: AppFactory, clock: Clock, switch: dict[str, bool]
) -> None:
    """Newcomer's list, item 13: as Flask-Limiter with its headers enabled, every limited
    response says where the token stands, not only the 429 (Flask-Limiter's own switch, for
    an app that already uses it, turns them on too)."""
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "3/minute", **switch})
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    seen = []
    for _ in range(3):
        r = client.get("/api/me", headers=bearer(a))
        assert r.status_code == 200
        seen.append((r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]))
        assert "Retry-After" not in r.headers
    assert seen == [("3", "2"), ("3", "1"), ("3", "0")]
    assert client.get("/api/me", headers=bearer(a)).headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Limit" not in client.get("/public").headers  # exempt: no limit, no headers


def test_no_ratelimit_headers_on_success_by_default(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_RATE_LIMIT": "3/minute"})
    (a,) = tokens(app, shield, "alice")
    assert "RateLimit-Limit" not in app.test_client().get("/api/me", headers=bearer(a)).headers
