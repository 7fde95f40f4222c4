"""Security Event Tokens (RFC 8417) pushed per RFC 8935, signed by the test provider's keys.

The provider (tests/idp_util.py) serves its JWK Set over real HTTP on 127.0.0.1; SETs are
POSTed to the real blueprint; the tokens they revoke are then refused by the real pipeline.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import typing as t

import pytest
from flask import Flask
from flask import request
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.ssf import CAEP
from flask_jwt_shield.ssf import RISC
from tests.conftest import AppFactory
from tests.conftest import Clock
from tests.conftest import bearer
from tests.conftest import json_of
from tests.idp_util import IdPServer
from tests.idp_util import SigningKey
from tests.idp_util import down_url
from tests.idp_util import idp_claims
from tests.idp_util import rsa_key

AUDIENCE = "https://api.example.com"
SET_MEDIA = "application/secevent+jwt"
SID = "6d1f6a3e-0b5e-4c7a-9b3c-1f2e3d4c5b6a"
SUB = "f:3b8c5d1e:alice"


@pytest.fixture
def key() -> SigningKey:
    return SigningKey("idp-1", "RS256", rsa_key("idp-1"))


@pytest.fixture
def issuer(idp: IdPServer) -> str:
    return idp.url + "/realms/shop"


@pytest.fixture
def app_shield(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, issuer: str, clock: Clock
) -> tuple[Flask, JWTShield]:
    idp.publish(key)
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_ACCEPTED_TYPES": ["keycloak"],
        }
    )
    app.register_blueprint(shield.security_events_blueprint())
    return app, shield


def access_token(key: SigningKey, issuer: str, **extra: t.Any) -> str:
    claims = idp_claims(issuer, AUDIENCE, sub=SUB, typ="Bearer", sid=SID, jti=secrets.token_hex(8))
    claims.update(extra)
    return key.sign(claims, typ="JWT")


def make_set(key: SigningKey, issuer: str, events: dict[str, t.Any], **claims: t.Any) -> str:
    payload: dict[str, t.Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": int(time.time()),
        "jti": secrets.token_hex(12),
        "events": events,
    }
    payload.update(claims)
    return key.sign({k: v for k, v in payload.items() if v is not None}, typ="secevent+jwt")


def push(app: Flask, body: str | bytes, content_type: str = SET_MEDIA, **headers: str) -> t.Any:
    return app.test_client().post("/security-events", data=body, content_type=content_type, headers=headers)


def user(issuer: str, sub: str = SUB) -> dict[str, t.Any]:
    return {"format": "iss_sub", "iss": issuer, "sub": sub}


def me(app: Flask, token: str) -> int:
    return int(app.test_client().get("/api/me", headers=bearer(token)).status_code)


# -- events mapped to revocations ----------------------------------------------------------------


def test_caep_session_revoked_revokes_that_session(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str
) -> None:
    """Keycloak's tokens carry the session (``sid``): ``session_fallback="none"`` revokes it alone."""
    app, shield = app_shield
    app.register_blueprint(
        shield.security_events_blueprint(session_fallback="none", url="/ssf-by-session", name="by_session")
    )
    token = access_token(key, issuer)
    other_session = access_token(key, issuer, sid="another-session")
    assert me(app, token) == 200
    event = {
        "subject": {"user": user(issuer), "session": {"format": "opaque", "id": SID}},
        "event_timestamp": int(time.time()),
    }
    set_token = make_set(key, issuer, {CAEP + "session-revoked": event})
    response = app.test_client().post("/ssf-by-session", data=set_token, content_type=SET_MEDIA)
    assert response.status_code == 202 and response.data == b""
    assert me(app, token) == 401
    assert me(app, other_session) == 200
    with app.app_context():
        [revoked] = shield.events(kind="family-revoked")
    assert revoked.sid == SID and revoked.action == "revoke_family"
    assert revoked.detail["event"] == CAEP + "session-revoked" and revoked.detail["set_iss"] == issuer
    assert set_token not in json.dumps(revoked.to_dict())


def test_caep_session_revoked_without_a_session_revokes_the_user(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, _ = app_shield
    token = access_token(key, issuer, sid="s1")
    assert push(app, make_set(key, issuer, {CAEP + "session-revoked": {"subject": user(issuer)}})).status_code == 202
    assert me(app, token) == 401


@pytest.mark.parametrize(
    "event_type",
    [CAEP + "credential-change", RISC + "sessions-revoked", RISC + "account-disabled", RISC + "account-purged"],
)
def test_subject_wide_events_revoke_every_token_of_the_subject(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock, event_type: str
) -> None:
    app, shield = app_shield
    tokens = [access_token(key, issuer, sid=f"s{i}") for i in range(3)]
    someone_else = access_token(key, issuer, sub="bob")
    payload: dict[str, t.Any] = {"subject": user(issuer)}
    if event_type.endswith("credential-change"):
        payload.update(credential_type="password", change_type="update")
    assert push(app, make_set(key, issuer, {event_type: payload})).status_code == 202
    assert [me(app, tok) for tok in tokens] == [401, 401, 401]
    assert me(app, someone_else) == 200
    clock.advance(1)
    assert me(app, access_token(key, issuer)) == 200  # a later login works
    with app.app_context():
        [event] = shield.events(kind="subject-revoked")
    assert event.subject == SUB and event.detail["event"] == event_type


def test_risc_legacy_subject_type_and_sub_id(app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str) -> None:
    app, _ = app_shield
    token = access_token(key, issuer)
    legacy = {"subject": {"subject_type": "iss-sub", "iss": issuer, "sub": SUB}}  # Google RISC's shape
    assert push(app, make_set(key, issuer, {RISC + "account-disabled": legacy})).status_code == 202
    assert me(app, token) == 401
    token2 = access_token(key, issuer, sub="carol")
    ssf_shape = make_set(key, issuer, {RISC + "account-purged": {}}, sub_id=user(issuer, "carol"))
    assert push(app, ssf_shape).status_code == 202
    assert me(app, token2) == 401


@pytest.mark.parametrize(
    "event_type",
    [
        "https://schemas.openid.net/secevent/ssf/event-type/verification",
        RISC + "verification",
        CAEP + "assurance-level-change",
        "https://example.com/some-future-event",
    ],
)
def test_other_events_are_accepted_and_ignored(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, event_type: str
) -> None:
    app, shield = app_shield
    token = access_token(key, issuer)
    assert push(app, make_set(key, issuer, {event_type: {"state": "abc"}})).status_code == 202
    assert me(app, token) == 200
    with app.app_context():
        assert shield.events(kind="subject-revoked") == shield.events(kind="family-revoked") == []


def test_resolve_subject_maps_other_identifiers(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, issuer: str, clock: Clock
) -> None:
    idp.publish(key)
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_ACCEPTED_TYPES": ["keycloak"],
        }
    )
    directory = {"alice@example.com": SUB}
    blueprint = shield.security_events_blueprint(resolve_subject=lambda s: directory.get(s.get("email", "")))
    app.register_blueprint(blueprint)
    token = access_token(key, issuer)
    by_email = {"subject": {"format": "email", "email": "alice@example.com"}}
    assert push(app, make_set(key, issuer, {CAEP + "credential-change": by_email})).status_code == 202
    assert me(app, token) == 401
    unknown = {"subject": {"format": "email", "email": "nobody@example.com"}}
    response = push(app, make_set(key, issuer, {CAEP + "credential-change": unknown}))
    assert response.status_code == 400 and response.json["err"] == "invalid_request"


# -- RFC 8935 error codes ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _cases(key: SigningKey, issuer: str) -> list[tuple[str, t.Any, str]]:
    event = {CAEP + "credential-change": {"subject": user(issuer)}}
    stranger = SigningKey("idp-1", "RS256", rsa_key("stranger"))
    good = make_set(key, issuer, event)
    head, payload, signature = good.split(".")
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": "idp-1", "typ": "secevent+jwt"}).encode())
    return [
        ("wrong content type", (good, "application/json"), "invalid_request"),
        ("empty body", "", "invalid_request"),
        ("not a JWS", "hello", "invalid_request"),
        ("garbage segments", "a.b.c", "invalid_request"),
        ("non-ascii", "é.é.é".encode(), "invalid_request"),
        ("an access token posted as a SET", access_token(key, issuer), "invalid_request"),
        ("typ missing", key.sign({"iss": issuer, "aud": AUDIENCE}, typ=None), "invalid_request"),
        ("unknown kid", make_set(SigningKey("who", "RS256", rsa_key("stranger")), issuer, event), "invalid_key"),
        ("signed by another key", make_set(stranger, issuer, event), "invalid_key"),
        ("tampered claims", f"{head}.{_b64(b'{}')}.{signature}", "invalid_key"),
        ("alg HS256", f"{hs_header}.{payload}.{signature}", "invalid_key"),
        ("another issuer", make_set(key, "https://evil.example", event), "invalid_issuer"),
        ("another audience", make_set(key, issuer, event, aud="https://other.example"), "invalid_audience"),
        ("no jti", make_set(key, issuer, event, jti=None), "invalid_request"),
        ("no iat", make_set(key, issuer, event, iat=None), "invalid_request"),
        ("iat in the future", make_set(key, issuer, event, iat=int(time.time()) + 3600), "invalid_request"),
        ("iat too old", make_set(key, issuer, event, iat=int(time.time()) - 8 * 86400), "invalid_request"),
        ("expired", make_set(key, issuer, event, exp=int(time.time()) - 10), "invalid_request"),
        ("no events", make_set(key, issuer, {}), "invalid_request"),
        ("events not an object", make_set(key, issuer, t.cast(t.Any, ["x"])), "invalid_request"),
        ("event without subject", make_set(key, issuer, {CAEP + "credential-change": {}}), "invalid_request"),
        (
            "subject of another issuer",
            make_set(key, issuer, {RISC + "account-disabled": {"subject": user("https://evil.example")}}),
            "invalid_request",
        ),
        ("too large", "a" * 70_000 + ".b.c", "invalid_request"),
    ]


def test_bad_sets_get_rfc8935_error_codes(app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str) -> None:
    app, shield = app_shield
    token = access_token(key, issuer)
    for name, body, err in _cases(key, issuer):
        content_type = SET_MEDIA
        if isinstance(body, tuple):
            body, content_type = body
        response = push(app, body, content_type)
        assert response.status_code == 400, name
        assert response.json["err"] == err, (name, response.json)
        assert response.json["description"], name
        assert response.headers["Cache-Control"] == "no-store"
    assert me(app, token) == 200  # nothing was revoked
    with app.app_context():
        reasons = {e.detail["reason"] for e in shield.events(kind="token-rejected", limit=1000)}
    assert {"set-invalid_request", "set-invalid_key", "set-invalid_issuer", "set-invalid_audience"} <= reasons


def test_attack_set_replay_is_refused(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, shield = app_shield
    set_token = make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}})
    assert push(app, set_token).status_code == 202
    clock.advance(5)
    later = access_token(key, issuer)  # the user logged in again after the credential change
    response = push(app, set_token)  # an attacker replays the captured SET to log them out again
    assert response.status_code == 400 and response.json["err"] == "invalid_request"
    assert "replay" in response.json["description"]
    assert me(app, later) == 200
    with app.app_context():
        assert len(shield.events(kind="subject-revoked")) == 1


def test_authorize_callback_refuses_the_transmitter(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, issuer: str, clock: Clock
) -> None:
    idp.publish(key)
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    app.register_blueprint(
        shield.security_events_blueprint(
            authorize=lambda: request.headers.get("Authorization") == "Bearer transmitter-secret"
        )
    )
    set_token = make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}})
    response = push(app, set_token)
    assert response.status_code == 401 and response.json["err"] == "authentication_failed"
    assert push(app, set_token, Authorization="Bearer transmitter-secret").status_code == 202


def test_keys_unavailable_is_503_so_the_transmitter_retries(
    make_app: AppFactory, key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": down_url(),
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    app.register_blueprint(shield.security_events_blueprint())
    response = push(app, make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}}))
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert response.json["err"] == "temporarily_unavailable"


def test_issuing_app_receives_sets_from_another_issuer(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, clock: Clock
) -> None:
    """Google RISC for an app with its own tokens: the SETs' issuer and keys are Google's."""
    idp.publish(key)
    app, shield = make_app({"JWT_SHIELD_ISSUER": "https://api.example.com", "JWT_SHIELD_AUDIENCE": AUDIENCE})
    google = idp.url + "/google"
    accounts = {"1234567890": "alice"}
    app.register_blueprint(
        shield.security_events_blueprint(
            issuer=google,
            audience="client-id-123.apps.googleusercontent.com",
            jwks_url=idp.jwks_url,
            resolve_subject=lambda s: accounts.get(s.get("sub", "")),
        )
    )
    with app.app_context():
        token = shield.create_access_token("alice")
    event = {RISC + "sessions-revoked": {"subject": {"subject_type": "iss-sub", "iss": google, "sub": "1234567890"}}}
    set_token = make_set(key, google, event, aud="client-id-123.apps.googleusercontent.com")
    assert push(app, set_token).status_code == 202
    assert me(app, token) == 401


def test_blueprint_without_any_jwk_set_is_refused_at_registration(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_ISSUER": "https://api.example.com", "JWT_SHIELD_AUDIENCE": AUDIENCE})
    with pytest.raises(ConfigurationError, match="jwks_url"):
        app.register_blueprint(shield.security_events_blueprint())


def test_blueprint_jwks_url_must_be_https() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        JWTShield().security_events_blueprint(jwks_url="http://idp.example/jwks")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.lists(st.text(alphabet="ABCabc012-_", max_size=40), min_size=3, max_size=3).map(
            lambda p: ".".join(p).encode()
        ),
    )
)
def test_fuzz_never_a_500(app_shield: tuple[Flask, JWTShield], body: bytes) -> None:
    app, _ = app_shield
    response = push(app, body)
    assert response.status_code == 400
    assert response.json["err"] in {"invalid_request", "invalid_key"}


# -- exactly once: a failed delivery is applied by the retry (issue 24, finding 4) -----------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_app(
    request: pytest.FixtureRequest,
    make_app: AppFactory,
    idp: IdPServer,
    key: SigningKey,
    issuer: str,
    tmp_path: t.Any,
    clock: Clock,
) -> tuple[Flask, JWTShield]:
    idp.publish(key)
    config = {
        "JWT_SHIELD_SECRET_KEY": None,
        "JWT_SHIELD_JWKS_URL": idp.jwks_url,
        "JWT_SHIELD_ISSUER": issuer,
        "JWT_SHIELD_AUDIENCE": AUDIENCE,
        "JWT_SHIELD_ACCEPTED_TYPES": ["keycloak"],
    }
    if request.param == "sqlite":
        config["JWT_SHIELD_STORE_URI"] = f"sqlite:///{tmp_path}/ssf.db"
    elif request.param == "redis":
        config["JWT_SHIELD_STORE_URI"] = request.getfixturevalue("redis_url")
    return make_app(config)


def test_attack_set_retry_after_a_resolver_failure_is_applied(
    store_app: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, shield = store_app
    calls = []

    def resolve(subject: dict[str, t.Any]) -> str | None:
        calls.append(subject)
        if len(calls) == 1:
            raise ConnectionError("the user directory is down")
        return SUB

    app.register_blueprint(shield.security_events_blueprint(resolve_subject=resolve))
    token = access_token(key, issuer)
    set_token = make_set(key, issuer, {RISC + "account-disabled": {"subject": {"format": "email", "email": "a@x"}}})
    failed = push(app, set_token)
    assert failed.status_code == 503 and failed.json["err"] == "temporarily_unavailable"
    assert me(app, token) == 200
    clock.advance(int(failed.headers["Retry-After"]))  # the transmitter retries when told
    assert push(app, set_token).status_code == 202  # not refused as a replay
    assert me(app, token) == 401
    replay = push(app, set_token)
    assert replay.status_code == 400 and "replay" in replay.json["description"]
    with app.app_context():
        assert len(shield.events(kind="subject-revoked")) == 1


def test_attack_set_retry_after_a_store_failure_is_applied(
    store_app: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_jwt_shield.errors import StoreError
    from flask_jwt_shield.state import current_state

    app, shield = store_app
    app.register_blueprint(shield.security_events_blueprint())
    token = access_token(key, issuer)
    with app.app_context():
        store = current_state().store
    real = store.revoke_subject
    failures = [StoreError("timeout")]

    def flaky(*args: t.Any, **kwargs: t.Any) -> None:
        if failures:
            raise failures.pop()
        real(*args, **kwargs)

    monkeypatch.setattr(store, "revoke_subject", flaky)
    set_token = make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}})
    failed = push(app, set_token)
    assert failed.status_code == 503 and me(app, token) == 200
    clock.advance(int(failed.headers["Retry-After"]))
    assert push(app, set_token).status_code == 202
    assert me(app, token) == 401
    assert push(app, set_token).status_code == 400
    with app.app_context():
        assert len(shield.events(kind="subject-revoked")) == 1


def test_set_delivered_twice_at_once_is_applied_once(
    store_app: tuple[Flask, JWTShield], key: SigningKey, issuer: str, clock: Clock
) -> None:
    """The second delivery of a SET still being applied is told to retry; the retry is a replay."""
    import threading

    app, shield = store_app
    entered, release = threading.Event(), threading.Event()

    def slow(subject: dict[str, t.Any]) -> str | None:
        entered.set()
        assert release.wait(10)
        return SUB

    app.register_blueprint(shield.security_events_blueprint(resolve_subject=slow))
    set_token = make_set(key, issuer, {RISC + "account-disabled": {"subject": {"format": "email", "email": "a@x"}}})
    answers: list[int] = []
    first = threading.Thread(target=lambda: answers.append(push(app, set_token).status_code))
    first.start()
    assert entered.wait(10)
    second = push(app, set_token)
    assert second.status_code == 503 and second.json["err"] == "temporarily_unavailable"
    assert "Retry-After" in second.headers
    release.set()
    first.join(10)
    assert answers == [202]
    clock.advance(int(second.headers["Retry-After"]))
    assert push(app, set_token).status_code == 400  # the retry: applied already
    with app.app_context():
        assert len(shield.events(kind="subject-revoked")) == 1
        reasons = [e.detail["reason"] for e in shield.events(kind="token-rejected")]
    assert reasons == ["set-invalid_request"]  # the replay; "retry later" is no refusal


# -- session-revoked when the tokens carry no session (issue 24, finding 5) ------------------------


def test_attack_session_revoked_without_sid_in_tokens_revokes_the_user(
    store_app: tuple[Flask, JWTShield], key: SigningKey, issuer: str
) -> None:
    """Entra's access tokens carry no ``sid``: the session cannot be told apart, the user goes."""
    app, shield = store_app
    app.register_blueprint(shield.security_events_blueprint())
    stolen = access_token(key, issuer, sid=None)
    stolen = key.sign({k: v for k, v in _claims(stolen).items() if k != "sid"}, typ="JWT")
    assert me(app, stolen) == 200
    event = {"subject": {"user": user(issuer), "session": {"format": "opaque", "id": SID}}}
    assert push(app, make_set(key, issuer, {CAEP + "session-revoked": event})).status_code == 202
    assert me(app, stolen) == 401
    with app.app_context():
        assert shield.events(kind="family-revoked") == []  # no session was known, none is reported
        [revoked] = shield.events(kind="subject-revoked")
    assert revoked.subject == SUB
    assert revoked.detail["session"] == SID and revoked.detail["session_known"] is False
    assert revoked.detail["session_fallback"] == "subject"


def test_session_fallback_none_refuses_only_tokens_carrying_the_sid(
    store_app: tuple[Flask, JWTShield], key: SigningKey, issuer: str
) -> None:
    app, shield = store_app
    app.register_blueprint(shield.security_events_blueprint(session_fallback="none"))
    carrying, without = (
        access_token(key, issuer),
        key.sign({k: v for k, v in _claims(access_token(key, issuer)).items() if k != "sid"}, typ="JWT"),
    )
    event = {"subject": {"user": user(issuer), "session": {"format": "opaque", "id": SID}}}
    assert push(app, make_set(key, issuer, {CAEP + "session-revoked": event})).status_code == 202
    assert me(app, carrying) == 401
    assert me(app, without) == 200  # the documented cost of "none"
    with app.app_context():
        [revoked] = shield.events(kind="family-revoked")
        assert shield.events(kind="subject-revoked") == []
    assert revoked.sid == SID and revoked.detail["session_known"] is False


def test_session_revoked_of_a_known_family_revokes_that_session_alone(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, clock: Clock
) -> None:
    """An issuing app that transmits to itself (same issuer): the family is known, so exact."""
    idp.publish(key)
    app, shield = make_app({"JWT_SHIELD_ISSUER": "https://api.example.com", "JWT_SHIELD_AUDIENCE": AUDIENCE})
    app.register_blueprint(shield.security_events_blueprint(jwks_url=idp.jwks_url))
    client = app.test_client()
    first = json_of(client.post("/login?sub=alice"))
    second = json_of(client.post("/login?sub=alice"))
    sid = _claims(first["access_token"])["sid"]
    subject = {
        "user": {"format": "iss_sub", "iss": "https://api.example.com", "sub": "alice"},
        "session": {"format": "opaque", "id": sid},
    }
    set_token = make_set(key, "https://api.example.com", {CAEP + "session-revoked": {"subject": subject}})
    assert push(app, set_token).status_code == 202
    assert me(app, first["access_token"]) == 401
    assert me(app, second["access_token"]) == 200
    with app.app_context():
        [revoked] = shield.events(kind="family-revoked")
        assert shield.events(kind="subject-revoked") == []
    assert revoked.sid == sid and revoked.subject == "alice" and "session_known" not in revoked.detail


def test_session_fallback_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="session_fallback"):
        JWTShield().security_events_blueprint(session_fallback=t.cast(t.Any, "everything"))


# -- a transmitter speaks only for its own users (issue 24, finding 8) -----------------------------


def test_attack_third_party_transmitter_cannot_name_a_local_user(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, clock: Clock
) -> None:
    """Google's SETs naming the app's own issuer: not Google's user to speak for."""
    idp.publish(key)
    app, shield = make_app({"JWT_SHIELD_ISSUER": "https://api.example.com", "JWT_SHIELD_AUDIENCE": AUDIENCE})
    google = idp.url + "/google"
    app.register_blueprint(
        shield.security_events_blueprint(
            issuer=google,
            audience=AUDIENCE,
            jwks_url=idp.jwks_url,
            resolve_subject=lambda s: None,
        )
    )
    with app.app_context():
        token = shield.create_access_token("admin")
    for event_type, subject in [
        (RISC + "account-disabled", {"format": "iss_sub", "iss": "https://api.example.com", "sub": "admin"}),
        (CAEP + "session-revoked", {"user": {"format": "iss_sub", "iss": "https://api.example.com", "sub": "admin"}}),
    ]:
        response = push(app, make_set(key, google, {event_type: {"subject": subject}}))
        assert response.status_code == 400 and response.json["err"] == "invalid_request", event_type
    assert me(app, token) == 200
    with app.app_context():
        assert shield.events(kind="subject-revoked") == [] and shield.events(kind="family-revoked") == []


def _claims(token: str) -> dict[str, t.Any]:
    payload = token.split(".")[1]
    return t.cast(dict[str, t.Any], json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_a_store_over_its_bound_still_accepts_new_sets_and_refuses_dropped_ones(
    make_app: AppFactory, idp: IdPServer, key: SigningKey, issuer: str, clock: Clock
) -> None:
    """The memory store drops the oldest remembered keys at its bound and raises a floor:
    a dropped SET is refused (never applied twice), a new one is still applied."""
    from flask_jwt_shield.stores import MemoryStore

    idp.publish(key)
    store = MemoryStore(max_remembered=8)
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_ACCEPTED_TYPES": ["keycloak"],
        },
        store=store,
    )
    app.register_blueprint(shield.security_events_blueprint())
    first = make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}})
    assert push(app, first).status_code == 202
    for n in range(20):  # DPoP proofs, say: the SET's jti is dropped to stay within the bound
        store.remember_once("dpop", f"proof-{n}", time.time() + 300, now=time.time())
    clock.advance(5)
    assert push(app, first).status_code == 400  # dropped, so maybe seen: refused
    later = access_token(key, issuer)
    clock.advance(5)
    second = make_set(key, issuer, {CAEP + "credential-change": {"subject": user(issuer)}})
    assert push(app, second).status_code == 202
    assert me(app, later) == 401
    assert push(app, second).status_code == 400
    with app.app_context():
        assert len(shield.events(kind="subject-revoked")) == 2


# -- the shield's own token-revoked and key-revoked events ---------------------------------------

TOKEN_REVOKED = "urn:flask-jwt-shield:secevent:event-type:token-revoked"
KEY_REVOKED = "urn:flask-jwt-shield:secevent:event-type:key-revoked"


def test_token_and_key_revoked_events_of_the_tokens_issuer_revoke_that_token_and_key(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str
) -> None:
    app, _ = app_shield
    token, other = access_token(key, issuer), access_token(key, issuer)
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    subject = {"format": "opaque", "id": jti}
    assert push(app, make_set(key, issuer, {TOKEN_REVOKED: {"jti": jti}}, sub_id=subject)).status_code == 202
    assert me(app, token) == 401 and me(app, other) == 200
    kid = {"format": "opaque", "id": "idp-1"}
    assert push(app, make_set(key, issuer, {KEY_REVOKED: {"kid": "idp-1"}}, sub_id=kid)).status_code == 202
    assert me(app, other) == 401  # every token of that key


def test_token_and_key_revoked_events_of_another_issuer_revoke_nothing(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, idp: IdPServer
) -> None:
    """A SET Issuer other than the tokens' names none of their ids (a blueprint with its own issuer)."""
    app, shield = app_shield
    other_issuer = idp.url + "/realms/other"
    app.register_blueprint(
        shield.security_events_blueprint(
            issuer=other_issuer, audience=AUDIENCE, jwks_url=idp.jwks_url, url="/other", name="other"
        )
    )
    token = access_token(key, issuer)
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    subject = {"format": "opaque", "id": jti}
    for events in ({TOKEN_REVOKED: {"jti": jti}}, {KEY_REVOKED: {"kid": "idp-1"}}):
        set_token = make_set(key, other_issuer, events, sub_id=subject)
        assert app.test_client().post("/other", data=set_token, content_type=SET_MEDIA).status_code == 202
    assert me(app, token) == 200


@pytest.mark.parametrize("payload", [{}, {"jti": 5}, {"jti": ""}, {"jti": "a.b.c"}, {"jti": "x" * 300}])
def test_a_token_revoked_event_without_a_usable_jti_is_refused(
    app_shield: tuple[Flask, JWTShield], key: SigningKey, issuer: str, payload: dict[str, t.Any]
) -> None:
    app, _ = app_shield
    answer = push(app, make_set(key, issuer, {TOKEN_REVOKED: payload}, sub_id={"format": "opaque", "id": "x"}))
    assert answer.status_code == 400 and answer.get_json()["err"] == "invalid_request"
