"""Sessions: refresh-token rotation, reuse detection, lifetimes, log out one device / everywhere.

Run on the memory and the SQLite store alike.
"""

from __future__ import annotations

import threading
import typing as t

import pytest
from flask import Flask

from flask_jwt_shield import InvalidGrant
from flask_jwt_shield import JWTShield
from flask_jwt_shield import TokenPair

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of


@pytest.fixture(params=["memory://", "sqlite:///shield.db"])
def store_uri(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def session_app(make_app: AppFactory, store_uri: str) -> tuple[Flask, JWTShield]:
    return make_app(
        {
            "JWT_SHIELD_STORE_URI": store_uri,
            "JWT_SHIELD_ACCESS_TOKEN_TTL": 300,
            "JWT_SHIELD_REFRESH_TOKEN_TTL": 3600,
            "JWT_SHIELD_REFRESH_IDLE_TTL": 1800,
        }
    )


def issue(app: Flask, shield: JWTShield, sub: str = "alice", **kw: t.Any) -> TokenPair:
    with app.app_context():
        return shield.issue_tokens(sub, **kw)


def refresh(app: Flask, shield: JWTShield, token: str) -> TokenPair:
    with app.app_context():
        return shield.refresh(token)


def me(app: Flask, token: str) -> int:
    return app.test_client().get("/api/me", headers=bearer(token)).status_code


def test_issue_tokens_shape(session_app: tuple[Flask, JWTShield]) -> None:
    app, shield = session_app
    pair = issue(app, shield, claims={"role": "admin"})
    body = pair.as_dict()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    claims = json_of(app.test_client().get("/api/me", headers=bearer(pair.access_token)))
    assert claims["sid"] == pair.sid and claims["role"] == "admin"


def test_refresh_token_is_not_an_access_token(session_app: tuple[Flask, JWTShield]) -> None:
    app, shield = session_app
    pair = issue(app, shield)
    r = app.test_client().get("/api/me", headers=bearer(pair.refresh_token))
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"


def test_access_token_is_not_a_refresh_token(session_app: tuple[Flask, JWTShield]) -> None:
    app, shield = session_app
    pair = issue(app, shield)
    with pytest.raises(InvalidGrant):
        refresh(app, shield, pair.access_token)
    r = app.test_client().post("/refresh", json={"refresh_token": pair.access_token})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"


def test_rotation_keeps_the_family_and_claims(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app
    pair = issue(app, shield, claims={"role": "admin"})
    clock.advance(10)
    second = refresh(app, shield, pair.refresh_token)
    assert second.sid == pair.sid
    assert second.refresh_token != pair.refresh_token
    claims = json_of(app.test_client().get("/api/me", headers=bearer(second.access_token)))
    assert claims["role"] == "admin" and claims["sid"] == pair.sid
    with app.app_context():
        kinds = [e.kind for e in shield.events(sid=pair.sid)]
    assert kinds[:2] == ["token-refreshed", "session-started"]


def test_reuse_revokes_the_whole_family(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app
    pair = issue(app, shield)
    other_session = issue(app, shield)
    clock.advance(5)
    thief_pair = refresh(app, shield, pair.refresh_token)  # the thief refreshes first
    clock.advance(5)
    r = app.test_client().post(
        "/refresh", json={"refresh_token": pair.refresh_token}, environ_base={"REMOTE_ADDR": "203.0.113.50"}
    )  # the user's stale copy
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    # every token of the family is dead: the thief's access and refresh tokens, the original access token
    assert me(app, thief_pair.access_token) == 401
    assert me(app, pair.access_token) == 401
    with pytest.raises(InvalidGrant):
        refresh(app, shield, thief_pair.refresh_token)
    # another session of the same user is untouched
    assert me(app, other_session.access_token) == 200
    with app.app_context():
        (event,) = shield.events(kind="refresh-reused")
    assert event.sid == pair.sid and event.subject == "alice" and event.action == "revoke_family"
    assert event.detail["first_use"]["ip"] is None  # the first refresh ran outside a request
    assert event.detail["second_use"] == {"at": clock.now, "ip": "203.0.113.50"}
    assert event.detail["first_use"]["at"] == clock.now - 5


def test_grace_returns_the_same_family_without_a_second_branch(
    make_app: AppFactory, store_uri: str, clock: Clock
) -> None:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri, "JWT_SHIELD_REFRESH_REUSE_GRACE": 10})
    pair = issue(app, shield)
    a = refresh(app, shield, pair.refresh_token)  # tab A
    clock.advance(2)
    b = refresh(app, shield, pair.refresh_token)  # tab B, a moment later with the same token
    assert b.sid == a.sid == pair.sid
    # no second live branch: both tabs hold the same refresh token generation
    assert shield_jti(a.refresh_token) == shield_jti(b.refresh_token)
    c = refresh(app, shield, b.refresh_token)
    assert me(app, c.access_token) == 200
    # a token two generations old is reuse even inside the grace period
    with pytest.raises(InvalidGrant):
        refresh(app, shield, pair.refresh_token)
    assert me(app, c.access_token) == 401


def test_grace_expires(make_app: AppFactory, store_uri: str, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri, "JWT_SHIELD_REFRESH_REUSE_GRACE": 10})
    pair = issue(app, shield)
    refresh(app, shield, pair.refresh_token)
    clock.advance(11)
    with pytest.raises(InvalidGrant, match="already used"):
        refresh(app, shield, pair.refresh_token)


def shield_jti(token: str) -> str:
    import base64
    import json

    return t.cast(str, json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"])


def test_absolute_lifetime_is_not_extended(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app  # absolute 3600 s, idle 1800 s
    pair = issue(app, shield)
    token = pair.refresh_token
    for _ in range(3):
        clock.advance(1000)
        token = refresh(app, shield, token).refresh_token
    clock.advance(700)  # 3700 s after login: past the absolute lifetime though used 700 s ago
    with pytest.raises(InvalidGrant):
        refresh(app, shield, token)


def test_idle_lifetime(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app
    pair = issue(app, shield)
    clock.advance(1801)
    with pytest.raises(InvalidGrant, match="expired"):
        refresh(app, shield, pair.refresh_token)


def test_max_sessions_revokes_the_oldest(make_app: AppFactory, store_uri: str, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri, "JWT_SHIELD_MAX_SESSIONS": 2})
    pairs = []
    for _ in range(3):
        pairs.append(issue(app, shield))
        clock.advance(1)
    assert me(app, pairs[0].access_token) == 401
    assert me(app, pairs[1].access_token) == 200
    with app.app_context():
        assert [s.sid for s in shield.sessions("alice")] == [pairs[1].sid, pairs[2].sid]
        (event,) = shield.events(kind="family-revoked")
    assert event.sid == pairs[0].sid and event.detail == {"reason": "max-sessions"}


def test_revoke_family_logs_out_one_device(session_app: tuple[Flask, JWTShield]) -> None:
    app, shield = session_app
    phone, laptop = issue(app, shield), issue(app, shield)
    with app.app_context():
        shield.revoke_family(phone.sid)
    assert me(app, phone.access_token) == 401
    with pytest.raises(InvalidGrant):
        refresh(app, shield, phone.refresh_token)
    assert me(app, laptop.access_token) == 200
    refresh(app, shield, laptop.refresh_token)


def test_revoke_subject_logs_out_everywhere_and_back_in(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app
    phone, laptop = issue(app, shield), issue(app, shield)
    bob = issue(app, shield, "bob")
    with app.app_context():
        shield.revoke_subject("alice")  # password changed
    fresh = issue(app, shield)  # same frozen instant
    for old in (phone, laptop):
        assert me(app, old.access_token) == 401
        with pytest.raises(InvalidGrant):
            refresh(app, shield, old.refresh_token)
    assert me(app, fresh.access_token) == 200
    assert me(app, refresh(app, shield, fresh.refresh_token).access_token) == 200
    assert me(app, bob.access_token) == 200


def test_sessions_lists_live_families(session_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = session_app
    first = issue(app, shield)
    clock.advance(60)
    with app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.10"}):
        second = shield.issue_tokens("alice")
        clock.advance(30)
        shield.refresh(second.refresh_token)
    with app.app_context():
        sessions = shield.sessions("alice")
    assert [s.sid for s in sessions] == [first.sid, second.sid]
    assert sessions[1].created_at == clock.now - 30 and sessions[1].last_used_at == clock.now
    assert sessions[1].last_ip == "192.0.2.10"


@pytest.mark.parametrize("grace", [0, 5])
def test_concurrent_refresh_yields_one_successor(make_app: AppFactory, store_uri: str, grace: int) -> None:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri, "JWT_SHIELD_REFRESH_REUSE_GRACE": grace})
    pair = issue(app, shield)
    n = 8
    barrier = threading.Barrier(n)
    results: list[t.Any] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            outcome: t.Any = refresh(app, shield, pair.refresh_token)
        except InvalidGrant as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    pairs = [r for r in results if isinstance(r, TokenPair)]
    assert len(results) == n
    if grace == 0:
        assert len(pairs) == 1  # exactly one successor; every other attempt was reuse
        with app.app_context():
            assert shield.events(kind="refresh-reused")
        assert me(app, pairs[0].access_token) == 401  # ... which revoked the family
    else:
        assert len(pairs) == n  # within grace all get the same generation
        assert len({shield_jti(p.refresh_token) for p in pairs}) == 1
        assert me(app, pairs[0].access_token) == 200


def test_refresh_with_garbage_is_invalid_grant(session_app: tuple[Flask, JWTShield]) -> None:
    app, _ = session_app
    client = app.test_client()
    for body in ({"refresh_token": "garbage"}, {"refresh_token": 42}, {}, {"refresh_token": "a.b.c"}):
        r = client.post("/refresh", json=body)
        assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant", body


def test_refresh_store_down_is_503_in_both_modes(make_app: AppFactory) -> None:
    from .test_pipeline import BrokenStore

    class Down(BrokenStore):
        def rotate(self, *a: t.Any, **kw: t.Any) -> t.Any:
            from flask_jwt_shield.errors import StoreError

            raise StoreError("down")

        def check(self, **kwargs: t.Any) -> str | None:
            return None

    for mode in ("closed", "open"):
        app, shield = make_app({"JWT_SHIELD_FAIL_MODE": mode}, store=Down())
        pair = issue(app, shield)
        r = app.test_client().post("/refresh", json={"refresh_token": pair.refresh_token})
        assert r.status_code == 503, mode


def test_log_out_everywhere_leaves_no_live_session(make_app: AppFactory, store_uri: str) -> None:
    """Newcomer's list, bug 1: ``sessions(sub)`` is what can still refresh, nothing else."""
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri})
    client = app.test_client()
    pairs = [json_of(client.post("/login?sub=alice")) for _ in range(3)]
    with app.app_context():
        assert len(shield.sessions("alice")) == 3
        shield.revoke_subject("alice")
        assert shield.sessions("alice") == []
    assert all(client.post("/refresh", json={"refresh_token": p["refresh_token"]}).status_code == 400 for p in pairs)
    fresh = json_of(client.post("/login?sub=alice"))  # logging straight back in works
    with app.app_context():
        assert [s.sid for s in shield.sessions("alice")] != []
    assert client.get("/api/me", headers=bearer(fresh["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "call", ["issue_tokens", "create_access_token", "revoke_subject", "sessions", "forget_places", "events"]
)
def test_a_lone_surrogate_is_refused_with_a_clear_error(make_app: AppFactory, store_uri: str, call: str) -> None:
    """Newcomer's list, bug 4: a subject that is not valid Unicode cannot be stored (SQLite
    raised UnicodeEncodeError); every call that takes one refuses it with a ValueError."""
    app, shield = make_app({"JWT_SHIELD_STORE_URI": store_uri})
    with app.test_request_context("/login", method="POST"), pytest.raises(ValueError, match="lone surrogate"):
        if call == "events":
            shield.events(subject="\ud800")
        else:
            getattr(shield, call)("\ud800")
