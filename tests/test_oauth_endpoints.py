"""Revocation (RFC 7009), introspection (RFC 7662), metadata (RFC 8414, RFC 9728) and the
identity provider's global token revocation, driven by real clients where they exist.

The example app is served by a real HTTP server (werkzeug's, in a thread, on 127.0.0.1)
and called by Authlib's ``OAuth2Session``, which finds every endpoint in the RFC 8414
document. The rules (which client may revoke what, what introspection reflects) are
checked against apps built from config dicts.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from flask import Flask
from flask import request
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server

from example_app.app import create_app
from flask_jwt_shield import JWTShield
from flask_jwt_shield import signals

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of
from .idp_util import IdPServer
from .idp_util import SigningKey
from .idp_util import rsa_key

TIMEOUT = 10
CLI = ("example-cli", "example-cli-secret")


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


class Served:
    def __init__(self, server: BaseWSGIServer, app: Flask) -> None:
        self.server = server
        self.app = app
        self.url = f"http://127.0.0.1:{server.server_port}"

    def login(self, username: str = "alice", password: str = "wonderland") -> dict[str, t.Any]:
        r = requests.post(self.url + "/auth/login", json={"username": username, "password": password}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return t.cast(dict[str, t.Any], r.json())

    def metadata(self) -> dict[str, t.Any]:
        r = requests.get(self.url + "/.well-known/oauth-authorization-server", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return t.cast(dict[str, t.Any], r.json())


@pytest.fixture
def idp() -> Iterator[IdPServer]:
    server = IdPServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def okta_key() -> SigningKey:
    return SigningKey("okta-1", "RS256", rsa_key("okta-1"))


@pytest.fixture
def served(
    tmp_path: Path, clock: Clock, idp: IdPServer, okta_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain HTTP on 127.0.0.1, for the test only
    idp.publish(okta_key)
    app = create_app(
        {"TESTING": True, "UNIVERSAL_LOGOUT_ISSUER": idp.url, "UNIVERSAL_LOGOUT_JWKS_URL": idp.jwks_url},
        instance_path=str(tmp_path / "instance"),
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(server, app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive()


# -- metadata ----------------------------------------------------------------------------------


def test_authorization_server_metadata_passes_authlib_validation(served: Served) -> None:
    document = served.metadata()
    AuthorizationServerMetadata(document).validate()  # raises on any violation of RFC 8414
    # Generated from what the app mounted, at the URL the client used.
    assert document["token_endpoint"] == served.url + "/auth/refresh"
    assert document["revocation_endpoint"] == served.url + "/oauth/revoke"
    assert document["introspection_endpoint"] == served.url + "/oauth/introspect"
    assert document["global_token_revocation_endpoint"] == served.url + "/oauth/global-token-revocation"
    assert document["jwks_uri"] == served.url + "/.well-known/jwks.json"
    assert document["grant_types_supported"] == ["refresh_token"]
    assert "none" not in document["introspection_endpoint_auth_methods_supported"]  # public clients never introspect
    assert "ES256" in document["dpop_signing_alg_values_supported"]  # the example's DPoP is optional


def test_protected_resource_metadata_is_named_by_every_challenge(served: Served) -> None:
    r = requests.get(served.url + "/.well-known/oauth-protected-resource", timeout=TIMEOUT)
    document = r.json()
    assert document["resource"] == served.url
    assert document["authorization_servers"] == [served.app.config["JWT_SHIELD_ISSUER"]]
    assert document["bearer_methods_supported"] == ["header"]
    assert document["dpop_bound_access_tokens_required"] is False
    challenged = requests.get(served.url + "/api/me", timeout=TIMEOUT)
    assert challenged.status_code == 401
    challenges = challenged.headers["WWW-Authenticate"]
    expected = f'resource_metadata="{served.url}/.well-known/oauth-protected-resource"'
    assert challenges.count(expected) == 2  # the Bearer and the DPoP challenge
    # A path-suffixed request for another resource is not this one's document.
    assert requests.get(served.url + "/.well-known/oauth-protected-resource/other", timeout=TIMEOUT).status_code == 404


def test_resource_metadata_with_a_path_and_in_resource_server_mode(make_app: AppFactory, idp: IdPServer) -> None:
    key = SigningKey("idp-1", "RS256", rsa_key("idp-1"))
    idp.publish(key)
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": idp.url,
            "JWT_SHIELD_AUDIENCE": "https://api.example.com/v1",
            "JWT_SHIELD_DPOP": "required",
        }
    )
    app.register_blueprint(shield.metadata_blueprint(resource="https://api.example.com/v1", scopes=["notes:read"]))
    client = app.test_client()
    r = client.get("/.well-known/oauth-protected-resource/v1")
    algorithms = sorted(app.extensions["jwt_shield"].config.dpop.dpop_algorithms)
    assert json_of(r) == {
        "resource": "https://api.example.com/v1",
        "authorization_servers": [idp.url],
        "scopes_supported": ["notes:read"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": algorithms,
        "dpop_bound_access_tokens_required": True,
    }
    assert client.get("/.well-known/oauth-protected-resource").status_code == 404
    assert client.get("/.well-known/oauth-authorization-server").status_code == 404  # the provider is the AS
    challenge = client.get("/api/me").headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP ")
    assert 'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/v1"' in challenge


# -- Authlib's client against the example app --------------------------------------------------


def test_authlib_introspects_and_revokes_with_endpoints_from_the_metadata(served: Served) -> None:
    document = served.metadata()
    pair = served.login()
    cli = OAuth2Session(client_id=CLI[0], client_secret=CLI[1])
    r = cli.introspect_token(document["introspection_endpoint"], token=pair["access_token"], timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    answer = r.json()
    assert answer["active"] is True and answer["sub"] == "alice" and answer["token_type"] == "Bearer"
    assert set(answer) <= {
        "active",
        "scope",
        "client_id",
        "sub",
        "exp",
        "iat",
        "nbf",
        "iss",
        "aud",
        "jti",
        "token_type",
        "cnf",
    }
    refresh = cli.introspect_token(
        document["introspection_endpoint"],
        token=pair["refresh_token"],
        token_type_hint="refresh_token",
        timeout=TIMEOUT,
    ).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"

    # The password login issued without a client_id: the app's own tokens, any client revokes them.
    r = cli.revoke_token(
        document["revocation_endpoint"], token=pair["refresh_token"], token_type_hint="refresh_token", timeout=TIMEOUT
    )
    assert r.status_code == 200
    # The whole session: its refresh token and the access token issued with it.
    for token in (pair["refresh_token"], pair["access_token"]):
        r = cli.introspect_token(document["introspection_endpoint"], token=token, timeout=TIMEOUT)
        assert r.json() == {"active": False}
    assert (
        requests.get(served.url + "/api/me", headers=bearer(pair["access_token"]), timeout=TIMEOUT).status_code == 401
    )
    # Revoking again, or revoking garbage, is still 200 (RFC 7009 §2.2).
    assert (
        cli.revoke_token(document["revocation_endpoint"], token=pair["refresh_token"], timeout=TIMEOUT).status_code
        == 200
    )
    assert cli.revoke_token(document["revocation_endpoint"], token="not-a-token", timeout=TIMEOUT).status_code == 200


def test_a_public_client_revokes_but_never_introspects(served: Served) -> None:
    document = served.metadata()
    pair = served.login()
    spa = OAuth2Session(
        client_id="example-spa", token_endpoint_auth_method="none", revocation_endpoint_auth_method="none"
    )
    r = spa.introspect_token(document["introspection_endpoint"], token=pair["access_token"], timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = spa.revoke_token(document["revocation_endpoint"], token=pair["access_token"], timeout=TIMEOUT)
    assert r.status_code == 200
    assert (
        requests.get(served.url + "/api/me", headers=bearer(pair["access_token"]), timeout=TIMEOUT).status_code == 401
    )
    # Revoking an access token leaves its session: the refresh token still works.
    cli = OAuth2Session(client_id=CLI[0], client_secret=CLI[1])
    r = cli.introspect_token(document["introspection_endpoint"], token=pair["refresh_token"], timeout=TIMEOUT)
    assert r.json()["active"] is True
    wrong = OAuth2Session(client_id=CLI[0], client_secret="wrong")
    r = wrong.revoke_token(document["revocation_endpoint"], token=pair["refresh_token"], timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# -- the rules, on apps built from config ------------------------------------------------------


CLIENT_SECRETS = {"app-a": "secret-a", "app-b": "secret-b"}


def _check_client(credentials: t.Any) -> bool:
    if credentials.client_id in CLIENT_SECRETS:
        return bool(credentials.client_secret == CLIENT_SECRETS[credentials.client_id])
    return credentials.client_secret is None


@pytest.fixture
def oauth_app(make_app: AppFactory, clock: Clock) -> tuple[Flask, JWTShield]:
    app, shield = make_app(
        {
            "JWT_SHIELD_REFRESH_REUSE_GRACE": 5,
            "JWT_SHIELD_REFRESH_IDLE_TTL": 3600,
            "JWT_SHIELD_REFRESH_TOKEN_TTL": 7200,
            "JWT_SHIELD_ACCESS_TOKEN_TTL": 600,
        }
    )
    app.register_blueprint(shield.oauth_blueprint(authenticate_client=_check_client))
    return app, shield


def _introspect(client: t.Any, token: str) -> dict[str, t.Any]:
    r = client.post("/oauth/introspect", data={"token": token}, headers=basic("app-a", "secret-a"))
    assert r.status_code == 200, json_of(r)
    return t.cast(dict[str, t.Any], json_of(r))


def test_a_token_issued_to_another_client_is_not_revoked(oauth_app: tuple[Flask, JWTShield]) -> None:
    app, shield = oauth_app
    client = app.test_client()
    with app.test_request_context():
        pair = shield.issue_tokens("alice", claims={"client_id": "app-a", "scope": "notes:read notes:write"})
    for token in (pair.refresh_token, pair.access_token):
        r = client.post("/oauth/revoke", data={"token": token}, headers=basic("app-b", "secret-b"))
        assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
        assert "WWW-Authenticate" not in r.headers
        answer = _introspect(client, token)
        assert (
            answer["active"] is True and answer["client_id"] == "app-a" and answer["scope"] == "notes:read notes:write"
        )
    r = client.post(
        "/oauth/revoke", data={"token": pair.access_token, "client_id": "app-a", "client_secret": "secret-a"}
    )
    assert r.status_code == 200
    assert _introspect(client, pair.access_token) == {"active": False}
    with app.app_context():
        events = shield.events(kind="token-revoked")
    assert events[0].detail["client_id"] == "app-a" and events[0].jti is not None
    assert all(pair.access_token not in repr(e.to_dict()) for e in events)  # named by jti, never given


def test_a_dpop_bound_session_is_revoked_without_a_proof(make_app: AppFactory, clock: Clock) -> None:
    from .dpop_util import HandKey

    app, shield = make_app({"JWT_SHIELD_DPOP": "optional"})
    app.register_blueprint(shield.oauth_blueprint(authenticate_client=_check_client))
    key = HandKey(url="http://localhost/login", method="POST")
    client = app.test_client()
    r = client.post("/login", headers={"DPoP": key.proof(token=None)})
    assert json_of(r)["token_type"] == "DPoP", json_of(r)
    answer = _introspect(client, json_of(r)["access_token"])
    assert answer["token_type"] == "DPoP" and answer["cnf"] == {"jkt": key.jkt}
    assert client.post("/oauth/revoke", data={"token": json_of(r)["refresh_token"]}).status_code == 200  # no proof
    assert _introspect(client, json_of(r)["access_token"]) == {"active": False}


def test_introspection_sees_every_kind_of_revocation(
    make_app: AppFactory, oauth_app: tuple[Flask, JWTShield], clock: Clock
) -> None:
    app, shield = oauth_app
    client = app.test_client()

    def login(sub: str = "alice") -> dict[str, t.Any]:
        return t.cast(dict[str, t.Any], json_of(client.post(f"/login?sub={sub}")))

    token_case, session_case, subject_case, reuse_case = login(), login(), login("bob"), login("carol")
    for pair in (token_case, session_case, subject_case, reuse_case):
        assert _introspect(client, pair["access_token"])["active"] is True
    with app.app_context():
        shield.revoke_token(token_case["access_token"])
        shield.revoke_family(app.extensions["jwt_shield"].codec.inspect(session_case["access_token"])["sid"])
        shield.revoke_subject("bob")
    assert _introspect(client, token_case["access_token"]) == {"active": False}
    assert _introspect(client, token_case["refresh_token"])["active"] is True  # only the access token
    for pair in (session_case, subject_case):
        assert _introspect(client, pair["access_token"]) == {"active": False}
        assert _introspect(client, pair["refresh_token"]) == {"active": False}

    # Refresh reuse: the spent token stays active within the grace, then the session ends.
    first = reuse_case["refresh_token"]
    second = json_of(client.post("/refresh", json={"refresh_token": first}))
    assert _introspect(client, first)["active"] is True  # within the 5 s grace
    clock.advance(6)
    assert _introspect(client, first) == {"active": False}  # spent past the grace
    assert _introspect(client, second["refresh_token"])["active"] is True
    assert client.post("/refresh", json={"refresh_token": first}).status_code == 400  # reuse: revoked
    for token in (second["refresh_token"], second["access_token"], reuse_case["access_token"]):
        assert _introspect(client, token) == {"active": False}

    # A revoked signing key.
    old, old_shield = make_app({"JWT_SHIELD_KEYS": [{"kid": "old", "key": "o" * 40}]})
    with old.app_context():
        old_token = old_shield.create_access_token("alice")
    rotated, rotated_shield = make_app(
        {"JWT_SHIELD_KEYS": [{"kid": "new", "key": "n" * 40}, {"kid": "old", "key": "o" * 40}]}
    )
    rotated.register_blueprint(rotated_shield.oauth_blueprint(authenticate_client=_check_client))
    other = rotated.test_client()
    assert _introspect(other, old_token)["active"] is True
    with rotated.app_context():
        rotated_shield.revoke_key("old")
    assert _introspect(other, old_token) == {"active": False}


def test_introspection_sees_expiry_and_the_session_lifetimes(oauth_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, _ = oauth_app
    client = app.test_client()
    pair = json_of(client.post("/login"))
    refreshed = _introspect(client, pair["refresh_token"])
    assert refreshed["exp"] == int(clock.now) + 3600  # the idle lifetime ends first
    clock.advance(601)
    assert _introspect(client, pair["access_token"]) == {"active": False}  # expired
    assert _introspect(client, pair["refresh_token"])["active"] is True
    clock.advance(3600)
    assert _introspect(client, pair["refresh_token"]) == {"active": False}  # idle too long
    # The absolute lifetime: used every 50 minutes, the session still ends after 2 hours.
    pair = json_of(client.post("/login"))
    for _ in range(2):
        clock.advance(3000)
        pair = json_of(client.post("/refresh", json={"refresh_token": pair["refresh_token"]}))
        assert _introspect(client, pair["refresh_token"])["active"] is True
    clock.advance(1300)
    assert _introspect(client, pair["refresh_token"]) == {"active": False}


def test_introspection_is_rate_limited_per_client_and_recorded(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_INTROSPECTION_RATE_LIMIT": "3/minute"})
    app.register_blueprint(shield.oauth_blueprint(authenticate_client=_check_client))
    client = app.test_client()
    token = json_of(client.post("/login"))["access_token"]
    seen: list[t.Any] = []
    with signals.token_introspected.connected_to(lambda app, event: seen.append(event)):
        for _ in range(3):
            assert json_of(client.post("/oauth/introspect", data={"token": token}, headers=basic("app-a", "secret-a")))[
                "active"
            ]
    assert len(seen) == 1 and seen[0].jti is not None and seen[0].detail == {"client_id": "app-a", "active": True}
    r = client.post("/oauth/introspect", data={"token": token}, headers=basic("app-a", "secret-a"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # Another client has its own budget.
    assert (
        client.post("/oauth/introspect", data={"token": token}, headers=basic("app-b", "secret-b")).status_code == 200
    )


def test_introspection_for_resource_servers_through_authorize(make_app: AppFactory) -> None:
    app, shield = make_app()
    app.add_url_rule(
        "/introspect",
        "introspect",
        methods=["POST"],
        view_func=shield.introspection_view(authorize=lambda: request.headers.get("X-Gateway-Key") == "k"),
    )
    client = app.test_client()
    token = json_of(client.post("/login"))["access_token"]
    assert json_of(client.post("/introspect", data={"token": token}, headers={"X-Gateway-Key": "k"}))["active"] is True
    r = client.post("/introspect", data={"token": token}, headers={"X-Gateway-Key": "no"})
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_client"
    with pytest.raises(ValueError, match="authenticate_client"):
        shield.introspection_view()


# -- global token revocation ---------------------------------------------------------------


def _okta_request(
    served: Served, key: SigningKey, idp: IdPServer, sub_id: dict[str, t.Any], **claims: t.Any
) -> requests.Response:
    url = served.url + "/oauth/global-token-revocation"
    now = int(time.time())
    payload = {
        "iss": idp.url,
        "aud": url,
        "sub": "0oa-example-app",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_hex(12),
        **claims,
    }
    jwt_token = key.sign({k: v for k, v in payload.items() if v is not None}, typ="JWT")
    return requests.post(url, json={"sub_id": sub_id}, headers=bearer(jwt_token), timeout=TIMEOUT)


def test_global_token_revocation_like_okta_ends_every_session(
    served: Served, idp: IdPServer, okta_key: SigningKey
) -> None:
    laptop, phone, bob = served.login(), served.login(), served.login("bob", "builder")
    r = _okta_request(served, okta_key, idp, {"format": "email", "email": "alice@example.com"})
    assert r.status_code == 204, r.text
    cli = OAuth2Session(client_id=CLI[0], client_secret=CLI[1])
    introspect = served.url + "/oauth/introspect"
    for pair in (laptop, phone):
        for token in (pair["access_token"], pair["refresh_token"]):
            assert cli.introspect_token(introspect, token=token, timeout=TIMEOUT).json() == {"active": False}
    assert cli.introspect_token(introspect, token=bob["access_token"], timeout=TIMEOUT).json()["active"] is True
    with served.app.app_context():
        shield = served.app.extensions["jwt_shield"]
        event = shield.store.events(kind="global-logout", limit=1)[0]
    assert event["subject"] == "alice" and event["detail"]["format"] == "email" and event["detail"]["status"] == 204
    # Okta's iss_sub of the user works too (the example maps it).
    assert _okta_request(served, okta_key, idp, {"format": "iss_sub", "iss": idp.url, "sub": "bob"}).status_code == 204


@pytest.mark.parametrize(
    ("sub_id", "claims", "status"),
    [
        pytest.param({"format": "email", "email": "nobody@example.com"}, {}, 404, id="unknown-user"),
        pytest.param({"format": "email"}, {}, 400, id="no-email"),
        pytest.param({"format": "x509"}, {}, 400, id="unsupported-format"),
        pytest.param(
            {"format": "email", "email": "alice@example.com"}, {"aud": "https://elsewhere"}, 401, id="wrong-audience"
        ),
        pytest.param(
            {"format": "email", "email": "alice@example.com"}, {"iss": "https://evil"}, 401, id="wrong-issuer"
        ),
        pytest.param({"format": "email", "email": "alice@example.com"}, {"exp": 1}, 401, id="expired"),
        pytest.param({"format": "email", "email": "alice@example.com"}, {"jti": None}, 401, id="no-jti"),
    ],
)
def test_global_token_revocation_refusals(
    served: Served,
    idp: IdPServer,
    okta_key: SigningKey,
    sub_id: dict[str, t.Any],
    claims: dict[str, t.Any],
    status: int,
) -> None:
    pair = served.login()
    r = _okta_request(served, okta_key, idp, sub_id, **claims)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert (
        requests.get(served.url + "/api/me", headers=bearer(pair["access_token"]), timeout=TIMEOUT).status_code == 200
    )


def test_global_token_revocation_refuses_a_replay_and_a_forged_signature(
    served: Served, idp: IdPServer, okta_key: SigningKey
) -> None:
    url = served.url + "/oauth/global-token-revocation"
    now = int(time.time())
    payload = {"iss": idp.url, "aud": url, "iat": now, "exp": now + 300, "jti": "once"}
    token = okta_key.sign(payload, typ="JWT")
    body = {"sub_id": {"format": "email", "email": "alice@example.com"}}
    assert requests.post(url, json=body, headers=bearer(token), timeout=TIMEOUT).status_code == 204
    assert requests.post(url, json=body, headers=bearer(token), timeout=TIMEOUT).status_code == 401  # replayed
    forged = SigningKey("okta-1", "RS256", rsa_key("attacker")).sign({**payload, "jti": "other"}, typ="JWT")
    assert requests.post(url, json=body, headers=bearer(forged), timeout=TIMEOUT).status_code == 401
    assert requests.post(url, json=body, timeout=TIMEOUT).status_code == 401


# -- bad input on every new endpoint: the RFC's error, never a 500 ---------------------------


ENDPOINTS = [
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/token",
    "/oauth/global-token-revocation",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-protected-resource",
]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "multipart/form-data",
    "application/x-www-form-urlencoded; charset=latin-1",
    "",
]
NAMES = ["token", "token_type_hint", "client_id", "client_secret", "grant_type", "refresh_token", "sub_id", "x"]
AUTHORIZATIONS = [
    None,
    "Basic " + base64.b64encode(b"app-a:secret-a").decode(),
    "Basic " + base64.b64encode(b"app-a:wrong").decode(),
    "Basic !!!",
    "Bearer x.y.z",
    "DPoP abc",
    "Basic " + base64.b64encode(b"app-b:secret-b").decode(),
]


@pytest.fixture
def fuzz_app(make_app: AppFactory, idp: IdPServer, okta_key: SigningKey) -> tuple[Flask, list[str]]:
    idp.publish(okta_key)
    app, shield = make_app({"JWT_SHIELD_INTROSPECTION_RATE_LIMIT": None})
    app.register_blueprint(shield.oauth_blueprint(authenticate_client=_check_client))
    view = shield.global_token_revocation_view(
        issuer=idp.url, jwks_url=idp.jwks_url, resolve_subject=lambda sub_id: sub_id.get("email")
    )
    app.add_url_rule("/oauth/global-token-revocation", "gtr", methods=["POST"], view_func=view)
    foreign, _ = make_app({"JWT_SHIELD_SECRET_KEY": "another-secret-" + "x" * 32})
    with app.test_request_context():
        own = shield.issue_tokens("alice", claims={"client_id": "app-a"})
    with foreign.test_request_context():
        other = foreign.extensions["jwt_shield"].codec
        foreign_token = other.encode(other.claims_for("alice", ttl=600), "at+jwt")
    okta = okta_key.sign(
        {
            "iss": idp.url,
            "aud": "http://localhost/oauth/global-token-revocation",
            "iat": int(time.time()),
            "exp": int(time.time()) + 300,
            "jti": "j",
        },
        typ="JWT",
    )
    tokens = [own.access_token, own.refresh_token, foreign_token, okta, own.access_token[:-4] + "AAAA", "a.b.c", ""]
    return app, tokens


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_input_never_gets_a_500(fuzz_app: tuple[Flask, list[str]], data: st.DataObject) -> None:
    app, tokens = fuzz_app
    values = st.one_of(
        st.sampled_from(tokens), st.text(max_size=40), st.sampled_from(["access_token", "refresh_token"])
    )
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=6))  # duplicates included
    kind = data.draw(st.sampled_from(["form", "json", "raw", "huge"]))
    if kind == "form":
        body: bytes = urlencode(pairs).encode()
    elif kind == "json":
        shaped = data.draw(st.sampled_from(["object", "sub_id", "list"]))
        if shaped == "sub_id":
            body = json.dumps({"sub_id": dict(pairs)}).encode()
        elif shaped == "list":
            body = json.dumps(pairs).encode()
        else:
            body = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()
    elif kind == "raw":
        body = data.draw(st.binary(max_size=200))
    else:
        body = b"token=" + b"A" * data.draw(st.sampled_from([20_000, 200_000]))
    headers = {}
    authorization = data.draw(st.sampled_from([*AUTHORIZATIONS, "Bearer " + tokens[3]]))
    if authorization is not None:
        headers["Authorization"] = authorization
    content_type = data.draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    path = data.draw(st.sampled_from(ENDPOINTS))
    method = data.draw(st.sampled_from(["POST", "POST", "GET", "PUT"]))
    r = app.test_client().open(path, method=method, data=body, headers=headers)
    assert r.status_code < 500 or r.status_code == 503, (path, r.status_code, r.data[:200])
    if r.status_code == 400 and path in ENDPOINTS[:3]:
        assert json_of(r)["error"] in {"invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_scope"}
    if path == "/oauth/introspect" and r.status_code == 200:
        answer = json_of(r)
        assert answer == {"active": False} or answer["active"] is True
    if r.status_code == 200 and path == "/oauth/revoke":
        assert r.data == b""
