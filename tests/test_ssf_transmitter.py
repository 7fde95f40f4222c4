"""The Shared Signals transmitter in one process: SETs out of every revocation, the SSF
endpoints (discovery, streams, status, verification, RFC 8936 poll), their bounds and their
refusals. Across processes and over real HTTP: tests/test_ssf_two_apps.py."""

from __future__ import annotations

import json
import logging
import secrets
import time
import typing as t

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.ssf import bearer_receivers
from flask_jwt_shield.ssf import vocabulary as v
from flask_jwt_shield.ssf.transmitter import EVENTS_SUPPORTED
from flask_jwt_shield.ssf.transmitter import Transmitter
from tests.conftest import AppFactory

ISSUER = "http://127.0.0.1:5001"
TOKEN = secrets.token_urlsafe(32)
OTHER = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def es256_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEY = es256_pem()
OLD_KEY = es256_pem()


def transmitter_config(**extra: t.Any) -> dict[str, t.Any]:
    return {
        "JWT_SHIELD_SECRET_KEY": None,
        "JWT_SHIELD_ALGORITHM": "ES256",
        "JWT_SHIELD_KEYS": [{"kid": "k2", "key": KEY}, {"kid": "k1", "key": OLD_KEY}],
        "JWT_SHIELD_ISSUER": ISSUER,
        "JWT_SHIELD_AUDIENCE": "https://api.example.com",
        "JWT_SHIELD_SSF_TRANSMIT": True,
        **extra,
    }


@pytest.fixture
def tx_app(make_app: AppFactory) -> t.Iterator[tuple[Flask, JWTShield]]:
    app, shield = make_app(transmitter_config())
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(shield.ssf_blueprint(authorize=bearer_receivers({"api": TOKEN, "other": OTHER})))
    yield app, shield
    with app.app_context():
        transmitter = shield.ssf_transmitter()
        assert transmitter is not None
        transmitter.courier.close(1)


def transmitter(app: Flask, shield: JWTShield) -> Transmitter:
    with app.app_context():
        found = shield.ssf_transmitter()
    assert found is not None
    return found


def create_stream(client: FlaskClient, **body: t.Any) -> dict[str, t.Any]:
    response = client.post("/ssf/streams", json=body, headers=AUTH)
    assert response.status_code == 201, response.get_data(as_text=True)
    return t.cast(dict[str, t.Any], response.get_json())


def poll(client: FlaskClient, stream_id: str, **body: t.Any) -> dict[str, t.Any]:
    body.setdefault("returnImmediately", True)
    response = client.post(f"/ssf/poll/{stream_id}", json=body, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(dict[str, t.Any], response.get_json())


def drain(app: Flask, shield: JWTShield) -> None:
    assert transmitter(app, shield).courier.flush(5)


def decoded(client: FlaskClient, token: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """Header and claims, verified by joserfc with the published JWK Set."""
    keys = KeySet.import_key_set(client.get("/.well-known/jwks.json").get_json())
    result = jose_jwt.decode(token, keys, algorithms=["ES256"])
    return dict(result.header), dict(result.claims)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SHIELD_ISSUER": None}, "needs JWT_SHIELD_ISSUER"),
        ({"JWT_SHIELD_ISSUER": "http://auth.example.com"}, "must use https://"),
        (
            {"JWT_SHIELD_KEYS": None, "JWT_SHIELD_ALGORITHM": "HS256", "JWT_SHIELD_SECRET_KEY": "x" * 40},
            "needs an asymmetric signing key",
        ),
        ({"JWT_SHIELD_SSF_RETENTION": 8 * 86400}, "at most 7 days"),
        ({"JWT_SHIELD_SSF_MAX_PENDING": 0}, "at least 1"),
        ({"JWT_SHIELD_SSF_POLL_WAIT": 61}, "Use 0 to 60"),
        ({"JWT_SHIELD_SSF_PUSH_RETRY_DELAY": 301}, "Use 0 to 300"),
        ({"JWT_SHIELD_SSF_TRANSMIT": "yes"}, "must be True or False"),
        ({"JWT_SHIELD_SSF_TRANSMIT": False, "JWT_SHIELD_SSF_MAX_STREAMS": 5}, "is not True"),
        ({"JWT_SHIELD_SSF_RECEIVE_TOKEN": "x"}, "JWT_SHIELD_SSF_RECEIVE_FROM is not"),
        ({"JWT_SHIELD_SSF_RECEIVE_FROM": "http://idp.example.com"}, "must use https://"),
        (
            {"JWT_SHIELD_SSF_RECEIVE_FROM": "https://idp.example.com", "JWT_SHIELD_SSF_RECEIVE_DELIVERY": "push"},
            "needs JWT_SHIELD_SSF_RECEIVE_PUSH_URL",
        ),
        (
            {"JWT_SHIELD_SSF_RECEIVE_FROM": "https://idp.example.com", "JWT_SHIELD_SSF_RECEIVE_DELIVERY": "fax"},
            "must be one of",
        ),
        (
            {
                "JWT_SHIELD_SSF_RECEIVE_FROM": "https://idp.example.com",
                "JWT_SHIELD_SSF_RECEIVE_PUSH_URL": "https://api.example.com/security-events",
            },
            "is 'poll'",
        ),
    ],
)
def test_bad_ssf_config_refused_at_init_app(make_app: AppFactory, config: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(transmitter_config(**config))


def test_transmitting_in_resource_server_mode_is_refused(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="resource-server mode"):
        make_app(
            {
                "JWT_SHIELD_SECRET_KEY": None,
                "JWT_SHIELD_JWKS_URL": "https://idp.example.com/jwks",
                "JWT_SHIELD_ISSUER": "https://idp.example.com",
                "JWT_SHIELD_AUDIENCE": "api",
                "JWT_SHIELD_SSF_TRANSMIT": True,
            }
        )


def test_the_blueprint_needs_the_transmitter(make_app: AppFactory) -> None:
    app, shield = make_app()
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_SSF_TRANSMIT"):
        app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "x"))


def test_bearer_receivers_wants_long_secrets() -> None:
    with pytest.raises(ValueError, match="32"):
        bearer_receivers({"api": "short"})


# -- discovery and authorization ------------------------------------------------------------------


def test_discovery_document(tx_app: tuple[Flask, JWTShield]) -> None:
    app, _ = tx_app
    client = app.test_client()
    response = client.get("/.well-known/ssf-configuration")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["issuer"] == ISSUER
    assert doc["spec_version"] == "1_0"
    assert doc["jwks_uri"] == "http://localhost/.well-known/jwks.json"
    assert doc["delivery_methods_supported"] == [v.PUSH, v.POLL]
    assert doc["configuration_endpoint"] == "http://localhost/ssf/streams"
    assert doc["status_endpoint"] == "http://localhost/ssf/status"
    assert doc["verification_endpoint"] == "http://localhost/ssf/verify"
    assert client.get("/.well-known/ssf-configuration/tenant").status_code == 404


def test_no_authorize_callback_denies_everything_with_a_clear_error(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config())
    app.register_blueprint(shield.ssf_blueprint())
    client = app.test_client()
    assert client.get("/.well-known/ssf-configuration").status_code == 200  # public
    for method, path in [("POST", "/ssf/streams"), ("GET", "/ssf/streams"), ("POST", "/ssf/poll/x")]:
        response = client.open(path, method=method, json={}, headers=AUTH)
        assert response.status_code == 403
        body = response.get_json()
        assert "ssf_blueprint(authorize=fn)" in body["error_description"]
        if "poll" in path:  # in RFC 8936's words too
            assert body["err"] == "access_denied" and body["description"] == body["error_description"]


def test_unauthenticated_receivers_get_401_and_see_only_their_own_streams(
    tx_app: tuple[Flask, JWTShield],
) -> None:
    app, _ = tx_app
    client = app.test_client()
    assert client.get("/ssf/streams").status_code == 401
    assert client.get("/ssf/streams", headers={"Authorization": "Bearer " + "x" * 40}).status_code == 401
    stream = create_stream(client)
    other = {"Authorization": f"Bearer {OTHER}"}
    sid = stream["stream_id"]
    assert client.get(f"/ssf/streams?stream_id={sid}", headers=other).status_code == 404
    assert client.get("/ssf/streams", headers=other).get_json() == []
    assert client.post(f"/ssf/poll/{sid}", json={}, headers=other).status_code == 404
    assert client.delete(f"/ssf/streams?stream_id={sid}", headers=other).status_code == 404
    assert client.post("/ssf/verify", json={"stream_id": sid}, headers=other).status_code == 404


# -- streams ----------------------------------------------------------------------------------------


def test_stream_lifecycle(tx_app: tuple[Flask, JWTShield]) -> None:
    app, _ = tx_app
    client = app.test_client()
    stream = create_stream(client, events_requested=[v.SESSION_REVOKED, "urn:unknown"], description="api")
    sid = stream["stream_id"]
    assert stream["iss"] == ISSUER and stream["aud"] == "api"
    assert stream["delivery"] == {"method": v.POLL, "endpoint_url": f"http://localhost/ssf/poll/{sid}"}
    assert stream["events_supported"] == list(EVENTS_SUPPORTED)
    assert stream["events_delivered"] == [v.SESSION_REVOKED]
    assert client.get(f"/ssf/streams?stream_id={sid}", headers=AUTH).get_json() == stream
    assert client.get("/ssf/streams", headers=AUTH).get_json() == [stream]
    # PATCH changes what it names; PUT replaces.
    patched = client.patch("/ssf/streams", json={"stream_id": sid, "description": "b"}, headers=AUTH).get_json()
    assert patched["description"] == "b" and patched["events_delivered"] == [v.SESSION_REVOKED]
    push = {"method": v.PUSH, "endpoint_url": "https://api.example.com/se", "authorization_header": "Bearer s"}
    put = client.put("/ssf/streams", json={"stream_id": sid, "delivery": push}, headers=AUTH).get_json()
    assert put["delivery"] == {"method": v.PUSH, "endpoint_url": "https://api.example.com/se"}  # header never shown
    assert "description" not in put and put["events_delivered"] == list(EVENTS_SUPPORTED)
    # status
    assert client.get(f"/ssf/status?stream_id={sid}", headers=AUTH).get_json() == {
        "stream_id": sid,
        "status": "enabled",
    }
    answer = client.post(
        "/ssf/status", json={"stream_id": sid, "status": "paused", "reason": "maintenance"}, headers=AUTH
    )
    assert answer.get_json() == {"stream_id": sid, "status": "paused", "reason": "maintenance"}
    assert client.delete(f"/ssf/streams?stream_id={sid}", headers=AUTH).status_code == 204
    assert client.get(f"/ssf/streams?stream_id={sid}", headers=AUTH).status_code == 404


def test_streams_are_bounded(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_SSF_MAX_STREAMS=2))
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    client = app.test_client()
    create_stream(client)
    create_stream(client)
    response = client.post("/ssf/streams", json={}, headers=AUTH)
    assert response.status_code == 409


def test_a_production_transmitter_pushes_to_https_only_not_to_its_own_loopback(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_ISSUER="https://auth.example.com"))
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    for url in ("http://127.0.0.1:8080/admin", "http://localhost/x", "HTTP://[::1]/"):
        response = app.test_client().post("/ssf/streams", json={"delivery": {"method": v.PUSH, "endpoint_url": url}})
        assert response.status_code == 400, url
    ok = {"delivery": {"method": v.PUSH, "endpoint_url": "https://api.example.com/se"}}
    assert app.test_client().post("/ssf/streams", json=ok).status_code == 201


def test_push_endpoints_must_be_https(tx_app: tuple[Flask, JWTShield]) -> None:
    app, _ = tx_app
    response = app.test_client().post(
        "/ssf/streams", json={"delivery": {"method": v.PUSH, "endpoint_url": "http://evil.example.com/"}}, headers=AUTH
    )
    assert response.status_code == 400
    assert "https://" in response.get_json()["error_description"]


# -- SETs out of revocations ---------------------------------------------------------------------


def test_each_revocation_becomes_one_signed_set_that_joserfc_verifies(
    tx_app: tuple[Flask, JWTShield], caplog: pytest.LogCaptureFixture
) -> None:
    app, shield = tx_app
    client = app.test_client()
    stream = create_stream(client)
    sid = stream["stream_id"]
    caplog.set_level(logging.DEBUG)
    pair = client.post("/login?sub=alice").get_json()
    with app.app_context():
        access = shield.create_access_token("bob")
        family = shield.sessions("alice")[0].sid
        shield.revoke_family(family)
        shield.revoke_subject("carol")
        jti = shield.revoke_token(access)
        shield.revoke_key("k1")
    drain(app, shield)
    answer = poll(client, sid)
    assert answer["moreAvailable"] is False
    sets = answer["sets"]
    assert len(sets) == 4
    seen: dict[str, dict[str, t.Any]] = {}
    for set_jti, token in sets.items():
        header, claims = decoded(client, token)
        assert header["typ"] == "secevent+jwt" and header["alg"] == "ES256" and header["kid"] == "k2"
        assert claims["jti"] == set_jti and claims["iss"] == ISSUER and claims["aud"] == "api"
        assert abs(claims["iat"] - time.time()) < 60 and isinstance(claims["iat"], int)
        assert len(claims["events"]) == 1  # one event per SET
        ((event_type, payload),) = claims["events"].items()
        seen[event_type] = {**payload, "sub_id": claims["sub_id"], "txn": claims["txn"]}
    assert seen[v.SESSION_REVOKED]["sub_id"] == {
        "format": "complex",
        "session": {"format": "opaque", "id": family},
        "user": {"format": "iss_sub", "iss": ISSUER, "sub": "alice"},
    }
    assert seen[v.SESSION_REVOKED]["initiating_entity"] == "admin"
    assert seen[v.SESSIONS_REVOKED]["sub_id"] == {"format": "iss_sub", "iss": ISSUER, "sub": "carol"}
    with app.app_context():
        (logout,) = shield.events(kind="subject-revoked")
    assert seen[v.SESSIONS_REVOKED]["not_before"] == logout.detail["not_before"]  # the exact instant
    assert seen[v.TOKEN_REVOKED]["jti"] == jti
    assert seen[v.KEY_REVOKED]["kid"] == "k1"
    assert seen[v.KEY_REVOKED]["sub_id"] == {"format": "opaque", "id": "k1"}
    # Polled SETs stay until acknowledged; acknowledged ones are gone.
    assert set(poll(client, sid)["sets"]) == set(sets)
    assert poll(client, sid, ack=list(sets))["sets"] == {}
    # No token and no SET in any log line.
    for secret in (pair["access_token"], pair["refresh_token"], access, *sets.values()):
        assert secret not in caplog.text
    assert "eyJ" not in caplog.text
    with app.app_context():
        for event in shield.events(limit=1000):
            assert "eyJ" not in json.dumps(event.to_dict())


def test_refresh_reuse_and_max_sessions_send_session_revoked(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_MAX_SESSIONS=1))
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    client = app.test_client()
    sid = create_stream(client)["stream_id"]
    first = client.post("/login?sub=alice").get_json()
    client.post("/login?sub=alice")  # the first session is beyond MAX_SESSIONS now
    second = client.post("/login?sub=bob").get_json()
    client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert client.post("/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 400  # reuse
    drain(app, shield)
    reasons = []
    for token in poll(client, sid)["sets"].values():
        (payload,) = jose_jwt.decode(token, KeySet.import_key_set(shield_jwks(app, shield))).claims["events"].values()
        reasons.append((payload["reason_admin"]["en"], payload["initiating_entity"]))
    assert sorted(reasons) == [("max-sessions", "policy"), ("refresh-reused", "policy")]
    assert first


def shield_jwks(app: Flask, shield: JWTShield) -> t.Any:
    with app.app_context():
        return shield.jwks()


def event_type(app: Flask, shield: JWTShield, token: str) -> str:
    (name,) = jose_jwt.decode(token, KeySet.import_key_set(shield_jwks(app, shield))).claims["events"]
    return t.cast(str, name)


def test_a_stream_gets_only_what_it_asked_for_and_subject_revocation_falls_back_to_caep(
    tx_app: tuple[Flask, JWTShield],
) -> None:
    app, shield = tx_app
    client = app.test_client()
    caep_only = create_stream(client, events_requested=[v.SESSION_REVOKED])["stream_id"]
    nothing = create_stream(client, events_requested=[])["stream_id"]
    with app.app_context():
        shield.revoke_subject("alice")
        shield.revoke_token("some-jti")
    drain(app, shield)
    assert poll(client, nothing)["sets"] == {}
    (token,) = poll(client, caep_only)["sets"].values()
    claims = jose_jwt.decode(token, KeySet.import_key_set(shield_jwks(app, shield))).claims
    assert list(claims["events"]) == [v.SESSION_REVOKED]
    assert claims["sub_id"] == {"format": "complex", "user": {"format": "iss_sub", "iss": ISSUER, "sub": "alice"}}


def test_paused_streams_hold_disabled_streams_get_nothing(tx_app: tuple[Flask, JWTShield]) -> None:
    app, shield = tx_app
    client = app.test_client()
    paused = create_stream(client)["stream_id"]
    disabled = create_stream(client)["stream_id"]
    client.post("/ssf/status", json={"stream_id": paused, "status": "paused"}, headers=AUTH)
    client.post("/ssf/status", json={"stream_id": disabled, "status": "disabled"}, headers=AUTH)
    poll(client, paused, ack=list(poll(client, paused)["sets"]))  # nothing while paused
    with app.app_context():
        shield.revoke_subject("alice")
    drain(app, shield)
    assert poll(client, paused)["sets"] == {}
    client.post("/ssf/status", json={"stream_id": disabled, "status": "enabled"}, headers=AUTH)
    client.post("/ssf/status", json={"stream_id": paused, "status": "enabled"}, headers=AUTH)
    kinds = [event_type(app, shield, s) for s in poll(client, paused)["sets"].values()]
    assert v.SESSIONS_REVOKED in kinds and v.STREAM_UPDATED in kinds
    kinds = [event_type(app, shield, s) for s in poll(client, disabled)["sets"].values()]
    assert kinds == [v.STREAM_UPDATED]  # the revocation while disabled was never made


def test_verification_event(tx_app: tuple[Flask, JWTShield]) -> None:
    app, shield = tx_app
    client = app.test_client()
    sid = create_stream(client)["stream_id"]
    assert client.post("/ssf/verify", json={"stream_id": sid, "state": "abc"}, headers=AUTH).status_code == 204
    (token,) = poll(client, sid)["sets"].values()
    claims = jose_jwt.decode(token, KeySet.import_key_set(shield_jwks(app, shield))).claims
    assert claims["events"] == {v.VERIFICATION: {"state": "abc"}}
    assert claims["sub_id"] == {"format": "opaque", "id": sid}


def test_poll_semantics_max_events_more_available_set_errs_and_a_bounded_wait(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_SSF_POLL_WAIT=0.5))
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    client = app.test_client()
    sid = create_stream(client)["stream_id"]
    started = time.monotonic()
    assert poll(client, sid, returnImmediately=False) == {"sets": {}, "moreAvailable": False}
    assert 0.4 <= time.monotonic() - started < 5
    with app.app_context():
        for i in range(5):
            shield.revoke_subject(f"user{i}")
    drain(app, shield)
    first = poll(client, sid, maxEvents=2)
    assert len(first["sets"]) == 2 and first["moreAvailable"] is True
    rest = poll(client, sid, ack=list(first["sets"]), maxEvents=10)
    assert len(rest["sets"]) == 3 and rest["moreAvailable"] is False and not set(rest["sets"]) & set(first["sets"])
    bad = next(iter(rest["sets"]))
    assert poll(client, sid, maxEvents=0, setErrs={bad: {"err": "invalid_key", "description": "x"}})["sets"] == {}
    assert bad not in poll(client, sid)["sets"]


def test_undelivered_sets_are_bounded_and_drops_counted(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_SSF_MAX_PENDING=3))
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    client = app.test_client()
    sid = create_stream(client)["stream_id"]
    with caplog.at_level(logging.WARNING, "flask_jwt_shield"), app.app_context():
        for i in range(5):
            shield.revoke_subject(f"user{i}")
        drain(app, shield)
    assert len(poll(client, sid)["sets"]) == 3
    assert transmitter(app, shield).stats().dropped == 2
    assert "dropped the 1 oldest" in caplog.text


def test_a_revocation_a_set_caused_is_not_transmitted_again(tx_app: tuple[Flask, JWTShield]) -> None:
    app, shield = tx_app
    tx = transmitter(app, shield)
    from flask_jwt_shield.events import SecurityEvent

    echo = SecurityEvent(kind="subject-revoked", at=time.time(), subject="a", detail={"reason": "security-event"})
    assert tx.submit(echo) is False
    assert tx.submit(SecurityEvent(kind="session-started", at=time.time(), subject="a")) is False
    assert tx.submit(SecurityEvent(kind="subject-revoked", at=time.time(), subject="a")) is True


def test_the_request_path_does_not_wait_for_a_hung_receiver(tx_app: tuple[Flask, JWTShield]) -> None:
    import socket

    app, shield = tx_app
    client = app.test_client()
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # accepts, never answers
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/se"
        create_stream(client, delivery={"method": v.PUSH, "endpoint_url": url})
        started = time.monotonic()
        with app.app_context():
            for i in range(20):
                shield.revoke_subject(f"user{i}")
        assert time.monotonic() - started < 2  # the pushes wait in the worker, not here
    finally:
        transmitter(app, shield).courier.close(0.1)
        hung.close()


# -- garbage -------------------------------------------------------------------------------------------

GARBAGE: list[tuple[str | bytes | None, str]] = [
    (None, "application/json"),
    (b"", "application/json"),
    (b"not json", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'"x"', "application/json"),
    (b"NaN", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b"{}", "text/plain"),
    (b"x" * 70000, "application/json"),
    (json.dumps({"stream_id": None}), "application/json"),  # from here on: objects
    (json.dumps({"stream_id": ["a"]}), "application/json"),
    (json.dumps({"stream_id": "\u0000"}), "application/json"),
    (json.dumps({"stream_id": "x" * 1000}), "application/json"),
    (json.dumps({"delivery": "push"}), "application/json"),
    (json.dumps({"delivery": {"method": v.PUSH}}), "application/json"),
    (json.dumps({"delivery": {"method": v.PUSH, "endpoint_url": 5}}), "application/json"),
    (json.dumps({"delivery": {"method": v.PUSH, "endpoint_url": "ftp://x"}}), "application/json"),
    (json.dumps({"delivery": {"method": v.PUSH, "endpoint_url": "https://[::1"}}), "application/json"),
    (json.dumps({"events_requested": "all"}), "application/json"),
    (json.dumps({"events_requested": [1, 2]}), "application/json"),
    (json.dumps({"description": {"a": 1}}), "application/json"),
    (json.dumps({"status": "on"}), "application/json"),
    (json.dumps({"maxEvents": -1}), "application/json"),
    (json.dumps({"maxEvents": True}), "application/json"),
    (json.dumps({"maxEvents": 1e309}), "application/json"),
    (json.dumps({"returnImmediately": "yes"}), "application/json"),
    (json.dumps({"ack": "x"}), "application/json"),
    (json.dumps({"ack": [None]}), "application/json"),
    (json.dumps({"setErrs": []}), "application/json"),
    (json.dumps({"setErrs": {"a": "b"}}), "application/json"),
    (json.dumps({"state": ["x"]}), "application/json"),
]


NOT_AN_OBJECT = 11


def test_garbage_to_every_endpoint_gets_a_clean_4xx(make_app: AppFactory) -> None:
    app, shield = make_app(transmitter_config(JWT_SHIELD_SSF_POLL_WAIT=0))
    app.register_blueprint(shield.ssf_blueprint(authorize=bearer_receivers({"api": TOKEN})))
    client = app.test_client()
    sid = create_stream(client)["stream_id"]
    endpoints = [
        ("POST", "/ssf/streams"),
        ("PATCH", "/ssf/streams"),
        ("PUT", "/ssf/streams"),
        ("DELETE", "/ssf/streams"),
        ("GET", "/ssf/streams?stream_id=%00"),
        ("GET", "/ssf/status?stream_id="),
        ("POST", "/ssf/status"),
        ("POST", "/ssf/verify"),
        ("POST", f"/ssf/poll/{sid}"),
        ("POST", "/ssf/poll/nope"),
        ("GET", f"/ssf/poll/{sid}"),
        ("POST", "/.well-known/ssf-configuration"),
        ("GET", "/.well-known/ssf-configuration/%ff"),
    ]
    for method, path in endpoints:
        for headers in (AUTH, {}, {"Authorization": "Bearer \u00e9"}):
            for body, mimetype in GARBAGE:
                response = client.open(path, method=method, data=body, content_type=mimetype, headers=headers)
                status = response.status_code
                assert status < 500, (method, path, body, status)
                if status >= 400 and status != 405:  # 405 is Flask's own page
                    answer = response.get_json()
                    assert "error" in answer or "err" in answer, (method, path, body, status)
                reads_body = method in ("POST", "PATCH", "PUT") and path.startswith("/ssf/") and "nope" not in path
                if reads_body and headers is AUTH and GARBAGE.index((body, mimetype)) < NOT_AN_OBJECT:
                    assert status == 400, (method, path, body, status)


# -- the receiver's connection, against a transmitter served from a thread -------------------------


@pytest.fixture
def served(make_app: AppFactory) -> t.Iterator[tuple[Flask, JWTShield, str]]:
    import socket
    import threading

    from werkzeug.serving import make_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app, shield = make_app(transmitter_config(JWT_SHIELD_ISSUER=url, JWT_SHIELD_SSF_POLL_WAIT=0.2))
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(shield.ssf_blueprint(authorize=bearer_receivers({"api": TOKEN})))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, shield, url
    finally:
        server.shutdown()
        thread.join(5)
        transmitter(app, shield).courier.close(1)


def receiver_config(url: str, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "JWT_SHIELD_SECRET_KEY": None,
        "JWT_SHIELD_JWKS_URL": f"{url}/.well-known/jwks.json",
        "JWT_SHIELD_ISSUER": url,
        "JWT_SHIELD_AUDIENCE": "https://api.example.com",
        "JWT_SHIELD_ALLOWED_ALGORITHMS": ["ES256"],
        "JWT_SHIELD_SSF_RECEIVE_FROM": url,
        "JWT_SHIELD_SSF_RECEIVE_TOKEN": TOKEN,
        "JWT_SHIELD_SSF_RECEIVE_POLL_INTERVAL": 0.1,
        **extra,
    }


def until(predicate: t.Callable[[], bool], what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        time.sleep(0.02)


def test_the_connection_applies_polled_sets_and_returns_bad_ones_in_set_errs(
    served: tuple[Flask, JWTShield, str], make_app: AppFactory
) -> None:
    tx_app_, tx_shield, url = served
    app, shield = make_app(receiver_config(url))
    with app.app_context():
        connection = shield.ssf_connection()
    assert connection is not None
    try:
        until(connection.ready.is_set, "the stream is set up")
        stream_id = connection.stats().stream_id
        assert stream_id is not None
        tx = transmitter(tx_app_, tx_shield)
        with tx_app_.app_context():
            token = tx_shield.create_access_token("alice")
        client = app.test_client()
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # A SET the receiver must refuse for good (not signed by the transmitter's keys).
        tx.streams.hold(stream_id, "forged", "eyJhbGciOiJFUzI1NiIsInR5cCI6InNlY2V2ZW50K2p3dCJ9.e30.AAAA")
        with tx_app_.app_context():
            tx_shield.revoke_subject("alice")
        until(lambda: client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401, "refused")
        until(lambda: tx.streams.pending(stream_id, 10) == [], "acknowledged and the forged one sent back")
        assert connection.stats().refused == 1 and connection.stats().applied >= 1
    finally:
        connection.stop(2)


def test_the_connection_refuses_a_discovery_document_of_another_issuer(
    served: tuple[Flask, JWTShield, str], make_app: AppFactory
) -> None:
    _, _, url = served
    # The same server under another name: its document names 127.0.0.1, not localhost.
    app, shield = make_app(receiver_config(url, JWT_SHIELD_SSF_RECEIVE_FROM=url.replace("127.0.0.1", "localhost")))
    with app.app_context():
        connection = shield.ssf_connection()
    assert connection is not None
    try:
        until(lambda: connection.stats().last_error is not None, "an error")
        assert not connection.ready.is_set()
        assert "names issuer" in (connection.stats().last_error or "")
    finally:
        connection.stop(2)


def test_a_hung_receiver_does_not_hold_up_another_streams_pushes(make_app: AppFactory) -> None:
    import socket

    from tests.webhook_util import receiver

    app, shield = make_app(
        transmitter_config(
            JWT_SHIELD_SSF_PUSH_TIMEOUT=0.5, JWT_SHIELD_SSF_PUSH_RETRIES=1, JWT_SHIELD_SSF_PUSH_RETRY_DELAY=0.1
        )
    )
    app.register_blueprint(shield.ssf_blueprint(authorize=lambda: "api"))
    client = app.test_client()
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # accepts, never answers
    try:
        with receiver("ok") as good:
            create_stream(
                client, delivery={"method": v.PUSH, "endpoint_url": f"http://127.0.0.1:{hung.getsockname()[1]}/"}
            )
            create_stream(client, delivery={"method": v.PUSH, "endpoint_url": good.url})
            started = time.monotonic()
            with app.app_context():
                for i in range(10):
                    shield.revoke_subject(f"user{i}")
            good.wait_for(10, timeout=8)
            # Without the pause one hung receiver costs 2 x 0.5 s per SET: 10 s for these.
            assert time.monotonic() - started < 6
            assert transmitter(app, shield).courier.flush(8)
    finally:
        transmitter(app, shield).courier.close(0.1)
        hung.close()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "stream_id",
    "delivery",
    "method",
    "endpoint_url",
    "authorization_header",
    "events_requested",
    "description",
    "status",
    "reason",
    "state",
    "maxEvents",
    "returnImmediately",
    "ack",
    "setErrs",
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[Flask, str]]:
    app = Flask("ssf_fuzz", instance_path=str(tmp_path_factory.mktemp("ssf") / "instance"))
    app.testing = True
    app.config.update(transmitter_config(JWT_SHIELD_SSF_POLL_WAIT=0))
    shield = JWTShield(app)
    app.register_blueprint(shield.ssf_blueprint(authorize=bearer_receivers({"api": TOKEN})))
    stream_id = create_stream(app.test_client())["stream_id"]
    yield app, stream_id
    transmitter(app, shield).courier.close(0.1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.sampled_from(
        [
            ("POST", "/ssf/streams"),
            ("PATCH", "/ssf/streams"),
            ("PUT", "/ssf/streams"),
            ("POST", "/ssf/status"),
            ("POST", "/ssf/verify"),
            ("POST", "/ssf/poll/$ID"),
            ("GET", "/ssf/status?stream_id=$ID"),
        ]
    ),
    fields=st.dictionaries(st.sampled_from(_FIELDS), _json_values | st.just("$ID"), max_size=6),
    delivery=st.none()
    | st.dictionaries(
        st.sampled_from(["method", "endpoint_url", "authorization_header"]),
        _json_values | st.sampled_from([v.PUSH, v.POLL, "https://127.0.0.1:9/x"]),
        max_size=3,
    ),
)
def test_fuzzed_bodies_from_an_authorized_receiver_never_get_a_5xx(
    fuzzed: tuple[Flask, str], endpoint: tuple[str, str], fields: dict[str, t.Any], delivery: dict[str, t.Any] | None
) -> None:
    app, stream_id = fuzzed
    method, path = endpoint
    body = {k: (stream_id if val == "$ID" else val) for k, val in fields.items()}
    if delivery is not None:
        body["delivery"] = delivery
    response = app.test_client().open(
        path.replace("$ID", stream_id),
        method=method,
        data=json.dumps(body),
        content_type="application/json",
        headers=AUTH,
    )
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert "error" in response.get_json()
