"""The request pipeline: exemption, extraction, verification, revocation, publishing, errors."""

from __future__ import annotations

import json
import logging
import typing as t

import pytest
from flask import Flask
from flask import jsonify
from flask.testing import FlaskClient

from flask_jwt_shield import InvalidToken
from flask_jwt_shield import JWTShield
from flask_jwt_shield import get_claims
from flask_jwt_shield import signals
from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.stores import MemoryStore

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of


def test_valid_token_publishes_claims(client: FlaskClient, token: str) -> None:
    r = client.get("/api/me", headers=bearer(token))
    assert r.status_code == 200
    assert json_of(r)["sub"] == "alice"
    assert {"iat", "nbf", "exp", "jti"} <= set(json_of(r))


def test_missing_token_is_a_bare_challenge(client: FlaskClient) -> None:
    r = client.get("/api/me")
    assert r.status_code == 401
    # RFC 6750 §3.1: no error code when the request carries no credentials
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert r.headers["Cache-Control"] == "no-store"
    assert r.is_json


def test_other_scheme_counts_as_no_token(client: FlaskClient) -> None:
    r = client.get("/api/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert r.status_code == 401
    assert "error=" not in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(client: FlaskClient, token: str, scheme: str) -> None:
    assert client.get("/api/me", headers={"Authorization": f"{scheme} {token}"}).status_code == 200


@pytest.mark.parametrize(
    ("header", "status", "error"),
    [
        ("Bearer", 400, "invalid_request"),
        ("Bearer ", 400, "invalid_request"),
        ("Bearer a b", 400, "invalid_request"),
        ("Bearer a,b", 400, "invalid_request"),
        ("Bearer abc", 401, "invalid_token"),
        ("Bearer a.b.c", 401, "invalid_token"),
        ("Bearer ....", 401, "invalid_token"),
    ],
)
def test_error_table(client: FlaskClient, header: str, status: int, error: str) -> None:
    r = client.get("/api/me", headers={"Authorization": header})
    assert r.status_code == status
    assert json_of(r)["error"] == error
    assert f'error="{error}"' in r.headers["WWW-Authenticate"]
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="api", ')


def test_expired_token_says_expired(app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock) -> None:
    with app.app_context():
        token = shield.create_access_token("alice", expires_in=60)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    clock.advance(61)
    r = client.get("/api/me", headers=bearer(token))
    assert r.status_code == 401
    assert json_of(r)["error"] == "invalid_token"
    assert "expired" in json_of(r)["error_description"]
    assert "expired" in r.headers["WWW-Authenticate"]


def test_leeway_extends_expiry(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_LEEWAY": 30})
    with app.app_context():
        token = shield.create_access_token("alice", expires_in=60)
    client = app.test_client()
    clock.advance(80)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    clock.advance(20)
    assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_cached_token_still_expires(app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock) -> None:
    with app.app_context():
        token = shield.create_access_token("alice", expires_in=60)
    for _ in range(3):
        assert client.get("/api/me", headers=bearer(token)).status_code == 200
    clock.advance(60)
    assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_cached_token_still_revocable(app: Flask, shield: JWTShield, client: FlaskClient, token: str) -> None:
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    with app.app_context():
        shield.revoke_token(token)
    r = client.get("/api/me", headers=bearer(token))
    assert r.status_code == 401
    assert "revoked" in json_of(r)["error_description"]


def test_failure_is_never_cached_as_success(app: Flask, shield: JWTShield, client: FlaskClient, token: str) -> None:
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        assert client.get("/api/me", headers=bearer(forged)).status_code == 401
    assert client.get("/api/me", headers=bearer(token)).status_code == 200


def test_cache_is_bounded(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_TOKEN_CACHE_SIZE": 3})
    client = app.test_client()
    with app.app_context():
        tokens = [shield.create_access_token(f"u{i}") for i in range(10)]
    for tok in tokens:
        assert client.get("/api/me", headers=bearer(tok)).status_code == 200
    codec = app.extensions["jwt_shield"].codec
    assert len(codec._verified) == 3
    assert set(codec._verified) == set(tokens[-3:])


@pytest.mark.parametrize("method", ["revoke_token_by_jti", "revoke_subject"])
def test_revocation_kinds(app: Flask, shield: JWTShield, client: FlaskClient, method: str) -> None:
    with app.app_context():
        token = shield.create_access_token("alice")
        other = shield.create_access_token("bob")
    claims = json_of(client.get("/api/me", headers=bearer(token)))
    with app.app_context():
        if method == "revoke_token_by_jti":
            shield.revoke_token(claims["jti"])
        else:
            shield.revoke_subject("alice")
    assert client.get("/api/me", headers=bearer(token)).status_code == 401
    assert client.get("/api/me", headers=bearer(other)).status_code == 200


def test_key_rotation_and_revoke_key(make_app: AppFactory) -> None:
    old_key, new_key = {"kid": "old", "key": "o" * 40}, {"kid": "new", "key": "n" * 40}
    before, before_shield = make_app({"JWT_SHIELD_KEYS": [old_key]})
    with before.app_context():
        old_token = before_shield.create_access_token("alice")
    app, shield = make_app({"JWT_SHIELD_KEYS": [new_key, old_key]})  # rotation: the new key signs
    client = app.test_client()
    with app.app_context():
        new_token = shield.create_access_token("alice")
    assert new_token.split(".")[0] != old_token.split(".")[0]
    assert client.get("/api/me", headers=bearer(old_token)).status_code == 200  # nobody logged out
    with app.app_context():
        shield.revoke_key("old")
    r = client.get("/api/me", headers=bearer(old_token))
    assert r.status_code == 401 and "signing key" in json_of(r)["error_description"]
    assert client.get("/api/me", headers=bearer(new_token)).status_code == 200


def test_signing_key_cannot_be_revoked_while_it_signs(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_KEYS": [{"kid": "new", "key": "n" * 40}, {"kid": "old", "key": "o" * 40}]})
    with app.app_context(), pytest.raises(ValueError, match="still signs"):
        shield.revoke_key("new")
    # (the old key, which only verifies, can be revoked)
    with app.app_context():
        shield.revoke_key("old")


def test_revoke_subject_is_exact_within_one_clock_tick(
    app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock
) -> None:
    with app.app_context():
        before = shield.create_access_token("alice")
        shield.revoke_subject("alice")  # same frozen instant
        after = shield.create_access_token("alice")
    assert client.get("/api/me", headers=bearer(before)).status_code == 401
    assert client.get("/api/me", headers=bearer(after)).status_code == 200


def test_revocation_checker_callbacks(app: Flask, shield: JWTShield, client: FlaskClient, token: str) -> None:
    banned: set[str] = set()
    seen: list[str] = []

    @shield.revocation_checker
    def first(claims: t.Any) -> bool:
        seen.append("first")
        return claims["sub"] in banned

    @shield.revocation_checker
    def second(claims: t.Any) -> bool:
        seen.append("second")
        return False

    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    assert seen == ["first", "second"]
    banned.add("alice")
    r = client.get("/api/me", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in json_of(r)["error_description"]


class BrokenStore(MemoryStore):
    def check(self, **kwargs: t.Any) -> str | None:
        raise StoreError("connection refused")

    def add_event(self, event: dict[str, t.Any], *, retention: int) -> None:
        raise StoreError("connection refused")


def test_fail_closed_answers_503(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app, shield = make_app(store=BrokenStore())
    with app.app_context():
        token = shield.create_access_token("alice")
    received: list[t.Any] = []
    signals.store_unavailable.connect(lambda sender, event: received.append(event), weak=False)
    try:
        r = app.test_client().get("/api/me", headers=bearer(token))
    finally:
        signals.store_unavailable.receivers.clear()
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert received and received[0].kind == "store-unavailable"
    assert token not in caplog.text


def test_fail_open_allows_and_records(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app, shield = make_app({"JWT_SHIELD_FAIL_MODE": "open"}, store=BrokenStore())
    with app.app_context():
        token = shield.create_access_token("alice")
    caplog.set_level(logging.INFO)
    r = app.test_client().get("/api/me", headers=bearer(token))
    assert r.status_code == 200
    audit = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "flask_jwt_shield.audit"]
    assert [a["kind"] for a in audit] == ["store-unavailable"]
    assert audit[0]["detail"]["fail_mode"] == "open"


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_raising_revocation_checker_follows_fail_mode(make_app: AppFactory, mode: str) -> None:
    app, shield = make_app({"JWT_SHIELD_FAIL_MODE": mode})

    @shield.revocation_checker
    def broken(claims: t.Any) -> bool:
        raise ConnectionError("the app's own database is down")

    with app.app_context():
        token = shield.create_access_token("alice")
    r = app.test_client().get("/api/me", headers=bearer(token))
    assert r.status_code == (503 if mode == "closed" else 200)


def test_exempt_decorator_config_static_and_preflight(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_EXEMPT_ENDPOINTS": ["health"]})

    @app.get("/health")
    def health() -> t.Any:
        return {"ok": True, "claims": dict(get_claims(optional=True))}

    client = app.test_client()
    assert client.get("/public").status_code == 200
    assert client.get("/health").json == {"ok": True, "claims": {}}
    assert client.get("/static/nothing.txt").status_code == 404  # static is exempt: 404, not 401
    preflight = client.options(
        "/api/me", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 200
    assert client.options("/api/me").status_code == 401  # a plain OPTIONS is not a preflight
    assert client.get("/no/such/route").status_code == 404


def test_get_claims_without_token_raises(app: Flask) -> None:
    with app.test_request_context("/public"), pytest.raises(RuntimeError, match="exempt"):
        get_claims()


def test_token_verified_signal(app: Flask, client: FlaskClient, token: str) -> None:
    seen: list[tuple[t.Any, t.Any]] = []

    def receiver(sender: t.Any, claims: t.Any) -> None:
        seen.append((sender, claims["sub"]))

    with signals.token_verified.connected_to(receiver):
        client.get("/api/me", headers=bearer(token))
    assert seen == [(app, "alice")]


def test_rejection_is_an_event_without_the_token(
    app: Flask, shield: JWTShield, client: FlaskClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = client.get("/api/me", headers=bearer(forged))
    assert r.status_code == 401
    with app.app_context():
        events = shield.events(kind="token-rejected")
    assert events[0].detail["reason"] == "bad-signature"
    assert events[0].ip == "127.0.0.1"
    for text in (caplog.text, r.get_data(as_text=True), json.dumps([e.to_dict() for e in events]), str(r.headers)):
        assert forged not in text and token not in text


def test_event_ip_truncated(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_EVENT_IP": "truncated"})
    app.test_client().get("/api/me", headers=bearer("a.b.c"), environ_base={"REMOTE_ADDR": "198.51.100.77"})
    with app.app_context():
        assert shield.events()[0].ip == "198.51.100.0"


def test_realm_is_configurable(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_REALM": "billing"})
    assert app.test_client().get("/api/me").headers["WWW-Authenticate"] == 'Bearer realm="billing"'


def test_app_can_override_rendering(app: Flask, client: FlaskClient) -> None:
    @app.errorhandler(InvalidToken)
    def custom(exc: InvalidToken) -> t.Any:
        return jsonify(mine=exc.description), 401

    assert client.get("/api/me", headers=bearer("a.b.c")).json == {"mine": "The token is malformed."}


def test_disabled_shield_installs_nothing(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_ENABLED": False})

    @app.get("/open")
    def open_() -> t.Any:
        return "ok"

    assert app.test_client().get("/open").status_code == 200


def test_several_apps_per_process(make_app: AppFactory) -> None:
    app1, shield = make_app({"JWT_SHIELD_SECRET_KEY": "1" * 40})
    app2 = Flask("second")
    app2.config["JWT_SHIELD_SECRET_KEY"] = "2" * 40
    app2.testing = True
    shield.init_app(app2)

    @app2.get("/api/me")
    def me2() -> t.Any:
        return {"sub": get_claims()["sub"]}

    with app1.app_context():
        token1 = shield.create_access_token("one")
    with app2.app_context():
        token2 = shield.create_access_token("two")
    assert app1.test_client().get("/api/me", headers=bearer(token1)).status_code == 200
    assert app2.test_client().get("/api/me", headers=bearer(token2)).json == {"sub": "two"}
    # each app's key is its own
    assert app1.test_client().get("/api/me", headers=bearer(token2)).status_code == 401


def test_second_registration_refused(app: Flask, shield: JWTShield) -> None:
    with pytest.raises(RuntimeError, match="already been registered"):
        JWTShield().init_app(app)


def test_api_without_init_app_explains(shield: JWTShield) -> None:
    other = Flask("plain")
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        shield.create_access_token("alice")


def test_create_access_token_refuses_reserved_claims(app: Flask, shield: JWTShield) -> None:
    with app.app_context():
        with pytest.raises(ValueError, match="exp"):
            shield.create_access_token("alice", claims={"exp": 1})
        with pytest.raises(TypeError):
            shield.create_access_token(42)  # type: ignore[arg-type]
        token = shield.create_access_token("alice", claims={"role": "admin"}, expires_in=30)
    assert isinstance(token, str)


def test_access_token_shape(app: Flask, shield: JWTShield, make_app: AppFactory) -> None:
    import base64

    app, shield = make_app({"JWT_SHIELD_ISSUER": "https://issuer.example", "JWT_SHIELD_AUDIENCE": "api"})
    with app.app_context():
        token = shield.create_access_token("alice")
    header_b64, payload_b64, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "HS256" and header["kid"]
    assert payload["iss"] == "https://issuer.example" and payload["aud"] == "api"
    assert payload["exp"] - payload["nbf"] == 900
    assert len(base64.urlsafe_b64decode(payload["jti"] + "==")) >= 16  # ≥ 128 random bits
    assert app.test_client().get("/api/me", headers=bearer(token)).status_code == 200


def test_jwks_blueprint_serves_public_keys(make_app: AppFactory) -> None:
    from flask_jwt_shield.cli import generate_key

    app, shield = make_app({"JWT_SHIELD_KEYS": [generate_key("ES256"), generate_key("RS256")]})
    app.register_blueprint(shield.jwks_blueprint())
    r = app.test_client().get("/.well-known/jwks.json")  # exempt: no token needed
    assert r.status_code == 200
    assert [k["alg"] for k in json_of(r)["keys"]] == ["ES256", "RS256"]
    assert all("d" not in k for k in json_of(r)["keys"])
    assert r.headers["Cache-Control"] == "public, max-age=300"


def test_repeated_rejections_recorded_once_a_minute(
    clock: Clock, app: Flask, shield: JWTShield, client: FlaskClient
) -> None:
    with app.app_context():
        token = shield.create_access_token("alice")
        shield.revoke_token(token)
    for _ in range(20):
        assert client.get("/api/me", headers=bearer(token)).status_code == 401
    for _ in range(5):
        client.get("/api/me", headers=bearer("a.b.c"))
    with app.app_context():
        assert [e.detail["reason"] for e in shield.events(kind="token-rejected")] == ["malformed", "revoked-token"]
    clock.advance(61)
    client.get("/api/me", headers=bearer(token))
    with app.app_context():
        assert len(shield.events(kind="token-rejected")) == 3


# -- the remembered Authorization header (transport.TokenExtractor) ---------------------------


def _counting_extractor(monkeypatch: pytest.MonkeyPatch, known: bool, remember: int = 100) -> tuple[t.Any, list[str]]:
    from flask_jwt_shield import transport

    parsed: list[str] = []
    real = transport.extract_token

    def counting(*args: t.Any, **kwargs: t.Any) -> tuple[str, transport.Location]:
        found = real(*args, **kwargs)
        parsed.append(found[0])
        return found

    monkeypatch.setattr(transport, "extract_token", counting)
    extractor = transport.TokenExtractor(
        8192, headers=True, dpop=False, cookies=False, remember=remember, known=lambda token: known
    )
    return extractor, parsed


def _extract(extractor: t.Any, header: str) -> tuple[str, str]:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    environ = EnvironBuilder("/api/me", headers=[("Authorization", header)]).get_environ()
    return t.cast(tuple[str, str], extractor.extract(Request(environ), environ))


def test_a_header_whose_token_verified_before_is_parsed_once_more_then_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extractor, parsed = _counting_extractor(monkeypatch, known=True)
    for _ in range(5):
        assert _extract(extractor, "Bearer aaa.bbb.ccc") == ("aaa.bbb.ccc", "bearer")
    assert parsed == ["aaa.bbb.ccc"]


def test_well_formed_garbage_takes_no_room_among_remembered_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any string of token characters passes the parsing; only the signature check tells
    garbage apart. A flood of such headers must not fill the memory (up to 8 KB each) or push
    out the headers of real tokens: one is remembered only once its token verified."""
    extractor, parsed = _counting_extractor(monkeypatch, known=False)
    for n in range(50):
        _extract(extractor, f"Bearer garbage{n}.x.y")
        _extract(extractor, f"Bearer garbage{n}.x.y")
    assert len(parsed) == 100  # every request parsed: nothing was remembered
