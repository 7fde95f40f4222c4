"""The RFC 6749 §6 token endpoint: ``shield.token_view()`` / ``shield.token_blueprint()``.

Requests are made by hand here, one per rule of RFC 6749 §3.1, §3.2, §2.3, §5.1 and §5.2;
tests/test_oauth_clients.py drives the same endpoint with real OAuth 2.0 client libraries.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import typing as t
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jwt_shield import ClientCredentials
from flask_jwt_shield import InvalidGrant
from flask_jwt_shield import JWTShield
from flask_jwt_shield import TokenPair
from flask_jwt_shield.dpop import DPoPKey

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of

FORM = "application/x-www-form-urlencoded"
URL = "/oauth/token"


@pytest.fixture(params=["memory://", "sqlite:///shield.db"])
def token_app(request: pytest.FixtureRequest, make_app: AppFactory, clock: Clock) -> tuple[Flask, JWTShield]:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": request.param})
    app.register_blueprint(shield.token_blueprint())
    return app, shield


@pytest.fixture
def app(token_app: tuple[Flask, JWTShield]) -> Flask:
    return token_app[0]


@pytest.fixture
def shield(token_app: tuple[Flask, JWTShield]) -> JWTShield:
    return token_app[1]


def issue(app: Flask, shield: JWTShield, **claims: t.Any) -> TokenPair:
    with app.app_context():
        return shield.issue_tokens("alice", claims=claims or None)


def form(client: FlaskClient, body: str | dict[str, str] | list[tuple[str, str]], **kw: t.Any) -> t.Any:
    data = body if isinstance(body, str) else urlencode(body)
    return client.post(kw.pop("url", URL), data=data, content_type=kw.pop("content_type", FORM), **kw)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_form_refresh_answers_rfc6749_5_1(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield)
    r = form(client, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    body = json_of(r)
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["refresh_token"] != pair.refresh_token  # rotated
    me = json_of(client.get("/api/me", headers=bearer(body["access_token"])))
    assert me["sid"] == pair.sid


def test_json_body_with_and_without_grant_type(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    """Clients written against the old documented view send {"refresh_token": ...}."""
    pair = issue(app, shield)
    r = client.post(URL, json={"refresh_token": pair.refresh_token})
    assert r.status_code == 200
    r = client.post(URL, json={"grant_type": "refresh_token", "refresh_token": json_of(r)["refresh_token"]})
    assert r.status_code == 200 and r.headers["Pragma"] == "no-cache"


def test_charset_parameter_and_unknown_parameters_are_fine(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield)
    body = {"grant_type": "refresh_token", "refresh_token": pair.refresh_token, "state": "x", "foo": ""}
    r = form(client, body, content_type=FORM + "; charset=UTF-8")
    assert r.status_code == 200  # RFC 6749 §3.2: unrecognised parameters are ignored


def test_rotation_and_reuse_through_the_endpoint(
    app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock
) -> None:
    first = issue(app, shield)
    tokens = [first.refresh_token]
    for _ in range(3):
        clock.advance(60)
        r = form(client, {"grant_type": "refresh_token", "refresh_token": tokens[-1]})
        assert r.status_code == 200
        tokens.append(json_of(r)["refresh_token"])
        latest_access = json_of(r)["access_token"]
    clock.advance(60)
    r = form(client, {"grant_type": "refresh_token", "refresh_token": tokens[1]})  # a spent one
    assert r.status_code == 400
    assert r.json == {
        "error": "invalid_grant",
        "error_description": "The refresh token was already used; the session has been revoked.",
    }
    assert "WWW-Authenticate" not in r.headers and r.headers["Cache-Control"] == "no-store"
    # The whole session is gone: its newest refresh token and its access tokens.
    newest = form(client, {"grant_type": "refresh_token", "refresh_token": tokens[-1]})
    assert json_of(newest)["error"] == "invalid_grant"
    assert client.get("/api/me", headers=bearer(latest_access)).status_code == 401
    with app.app_context():
        kinds = [e.kind for e in shield.events(sid=first.sid)]
    assert "refresh-reused" in kinds and "family-revoked" in kinds


@pytest.mark.parametrize(
    ("body", "content_type", "error", "reason"),
    [
        ("grant_type=refresh_token", FORM, "invalid_request", "missing refresh_token"),
        ("grant_type=refresh_token&refresh_token=", FORM, "invalid_request", "empty = omitted (§3.1)"),
        ("refresh_token=abc", FORM, "invalid_request", "form without grant_type"),
        ("grant_type=refresh_token&grant_type=refresh_token&refresh_token=a", FORM, "invalid_request", "duplicate"),
        ("grant_type=refresh_token&refresh_token=a&refresh_token=b", FORM, "invalid_request", "duplicate"),
        ("grant_type=password&username=a&password=b", FORM, "unsupported_grant_type", "another grant"),
        ("grant_type=client_credentials", FORM, "unsupported_grant_type", "another grant"),
        ("grant_type=REFRESH_TOKEN&refresh_token=a", FORM, "unsupported_grant_type", "case matters"),
        ("grant_type=refresh_token&refresh_token=abc", FORM, "invalid_grant", "garbage token"),
        ("grant_type=refresh_token&refresh_token=a.b.c", FORM, "invalid_grant", "garbage token"),
        ("grant_type=refresh_token&refresh_token=%FF%FE", FORM, "invalid_grant", "non-UTF-8 escapes"),
        ("grant_type=refresh_token&refresh_token=a&scope=%22bad%22", FORM, "invalid_scope", "§3.3 characters"),
        ("grant_type=refresh_token&refresh_token=a&scope=a%20%20b", FORM, "invalid_scope", "double space"),
        ("\xff\xfe", FORM, "invalid_request", "body not UTF-8"),
        ("&".join(f"p{i}=v" for i in range(100)), FORM, "invalid_request", "too many parameters"),
        ('{"refresh_token": "a"}', "text/plain", "invalid_request", "wrong content type"),
        ('{"refresh_token": "a"}', "multipart/form-data; boundary=x", "invalid_request", "wrong content type"),
        ("grant_type=refresh_token&refresh_token=a", "", "invalid_request", "no content type"),
        ("[null, null]", "application/json", "invalid_request", "JSON not an object"),
        ('"refresh_token"', "application/json", "invalid_request", "JSON not an object"),
        ("{", "application/json", "invalid_request", "bad JSON"),
        ("", "application/json", "invalid_request", "empty JSON"),
        ("[" * 100_000 + "]" * 100_000, "application/json", "invalid_request", "deep nesting"),
        ('{"refresh_token": ["a"]}', "application/json", "invalid_request", "not a string"),
        ('{"refresh_token": null}', "application/json", "invalid_request", "not a string"),
        ('{"refresh_token": 1e999}', "application/json", "invalid_request", "not a string"),
        ('{"refresh_token": "a", "refresh_token": "b"}', "application/json", "invalid_request", "duplicate"),
        ('{"grant_type": "password"}', "application/json", "unsupported_grant_type", "another grant"),
        ('{"grant_type": 7, "refresh_token": "a"}', "application/json", "invalid_request", "not a string"),
        (
            '{"refresh_token": "' + "9" * 5000 + '", "x": ' + "9" * 5000 + "}",
            "application/json",
            "invalid_request",
            "integer too long for Python",
        ),
        ('{"refresh_token": "a"}', "application/json", "invalid_grant", "garbage token"),
    ],
)
def test_bad_requests_get_rfc6749_5_2_errors(
    client: FlaskClient, body: str, content_type: str, error: str, reason: str
) -> None:
    r = client.post(URL, data=body.encode("latin-1"), content_type=content_type)
    assert r.status_code == 400, reason
    assert r.mimetype == "application/json"
    assert json_of(r)["error"] == error, (reason, r.json)
    assert isinstance(json_of(r)["error_description"], str)
    assert "WWW-Authenticate" not in r.headers  # no Bearer challenge at the token endpoint
    assert r.headers["Cache-Control"] == "no-store"


def test_wrong_method_is_not_served(client: FlaskClient) -> None:
    assert client.get(URL).status_code == 405  # RFC 6749 §3.2: POST only


def test_huge_body_is_refused_before_reading(client: FlaskClient) -> None:
    r = form(client, "grant_type=refresh_token&refresh_token=" + "a" * 100_000)
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    assert "too large" in json_of(r)["error_description"]


def test_chunked_body_without_length_is_bounded(client: FlaskClient) -> None:
    stream = io.BytesIO(b"grant_type=refresh_token&refresh_token=" + b"a" * 100_000)
    # The server terminates a chunked body (wsgi.input_terminated), as werkzeug's and gunicorn do.
    r = client.post(
        URL,
        input_stream=stream,
        content_type=FORM,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    assert "too large" in json_of(r)["error_description"]


def test_refresh_token_in_the_url_is_refused(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield)
    r = form(client, {"grant_type": "refresh_token"}, url=f"{URL}?refresh_token={pair.refresh_token}")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    # ... and nothing was spent: the token still refreshes once sent properly.
    assert form(client, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}).status_code == 200


def test_access_token_is_not_a_grant(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield)
    r = form(client, {"grant_type": "refresh_token", "refresh_token": pair.access_token})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"


def test_expired_and_revoked_sessions_are_invalid_grant(
    app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock
) -> None:
    revoked, expired = issue(app, shield), issue(app, shield)
    with app.app_context():
        shield.revoke_family(revoked.sid)
    r = form(client, {"grant_type": "refresh_token", "refresh_token": revoked.refresh_token})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    clock.advance(31 * 86400)
    r = form(client, {"grant_type": "refresh_token", "refresh_token": expired.refresh_token})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"


def test_error_bodies_and_logs_never_hold_the_token(
    app: Flask, shield: JWTShield, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pair = issue(app, shield)
    form(client, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
    answers = [
        form(client, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}),  # reuse
        form(client, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token[:-3] + "AAA"}),
        form(client, [("grant_type", "refresh_token"), ("refresh_token", pair.refresh_token)] * 2),
    ]
    for r in answers:
        assert r.status_code == 400
        assert pair.refresh_token not in r.get_data(as_text=True)
        assert pair.refresh_token[:-3] not in r.get_data(as_text=True)
    assert pair.refresh_token[:-3] not in caplog.text


# -- client authentication (RFC 6749 §2.3) ----------------------------------------------


CLIENTS = {"web": "s3cret:with%colon", "cli": "other"}


@pytest.fixture
def client_app(make_app: AppFactory, clock: Clock) -> tuple[Flask, JWTShield, list[ClientCredentials]]:
    app, shield = make_app()
    seen: list[ClientCredentials] = []

    def authenticate(client: ClientCredentials) -> bool:
        seen.append(client)
        if client.client_id is None:
            return client.client_secret is None  # public client without an id
        return CLIENTS.get(client.client_id) == client.client_secret

    app.add_url_rule("/token", view_func=shield.token_view(authenticate_client=authenticate), methods=["POST"])
    return app, shield, seen


def _refresh_body(pair: TokenPair, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": pair.refresh_token, **extra}


def test_client_secret_basic(client_app: tuple[Flask, JWTShield, list[ClientCredentials]]) -> None:
    app, shield, seen = client_app
    pair = issue(app, shield)
    # RFC 6749 §2.3.1: id and secret are form-encoded before Basic; ':' and '%' survive.
    encoded = "s3cret%3Awith%25colon"
    r = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("web", encoded))
    assert r.status_code == 200, r.json
    assert seen[-1] == ClientCredentials("web", "s3cret:with%colon", "client_secret_basic")
    assert "s3cret" not in repr(seen[-1])  # the secret stays out of logs


def test_client_secret_post(client_app: tuple[Flask, JWTShield, list[ClientCredentials]]) -> None:
    app, shield, seen = client_app
    pair = issue(app, shield)
    r = form(app.test_client(), _refresh_body(pair, client_id="cli", client_secret="other"), url="/token")
    assert r.status_code == 200
    assert seen[-1].method == "client_secret_post"


def test_public_client(client_app: tuple[Flask, JWTShield, list[ClientCredentials]]) -> None:
    app, shield, seen = client_app
    pair = issue(app, shield)
    assert form(app.test_client(), _refresh_body(pair), url="/token").status_code == 200
    assert seen[-1] == ClientCredentials(None, None, "none")


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        (basic("web", "wrong"), {}),
        (basic("nobody", "x"), {}),
        ({"Authorization": "Basic !!!not-base64"}, {}),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, {}),
        ({"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}, {}),
        ({"Authorization": "Basic"}, {}),
        ({}, {"client_id": "web", "client_secret": "wrong"}),
        ({}, {"client_id": "web"}),  # a confidential client without its secret
    ],
)
def test_failed_client_authentication_is_401_invalid_client(
    client_app: tuple[Flask, JWTShield, list[ClientCredentials]], headers: dict[str, str], extra: dict[str, str]
) -> None:
    app, shield, _ = client_app
    pair = issue(app, shield)
    r = form(app.test_client(), _refresh_body(pair, **extra), url="/token", headers=headers)
    assert r.status_code == 401
    assert json_of(r)["error"] == "invalid_client"
    assert r.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
    # Nothing was spent: the right client still refreshes with the same token.
    ok = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("web", "s3cret%3Awith%25colon"))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        (basic("web", "s3cret"), {"client_secret": "s3cret"}),  # two methods at once
        (basic("web", "s3cret"), {"client_id": "cli"}),  # two different client ids
        ({}, {"client_secret": "other"}),  # a secret without an id
    ],
)
def test_ambiguous_client_authentication_is_invalid_request(
    client_app: tuple[Flask, JWTShield, list[ClientCredentials]], headers: dict[str, str], extra: dict[str, str]
) -> None:
    app, shield, _ = client_app
    r = form(app.test_client(), _refresh_body(issue(app, shield), **extra), url="/token", headers=headers)
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"


def test_authenticator_that_raises_is_503_not_200(
    make_app: AppFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    app, shield = make_app()

    def broken(client: ClientCredentials) -> bool:
        raise ConnectionError("client registry down")

    app.add_url_rule("/token", view_func=shield.token_view(authenticate_client=broken), methods=["POST"])
    pair = issue(app, shield)
    r = form(app.test_client(), _refresh_body(pair), url="/token")
    assert r.status_code == 503 and json_of(r)["error"] == "temporarily_unavailable" and "Retry-After" in r.headers
    assert "authenticate_client raised" in caplog.text


def test_session_bound_to_a_client(client_app: tuple[Flask, JWTShield, list[ClientCredentials]]) -> None:
    """RFC 6749 §6: the refresh token must have been issued to the authenticated client."""
    app, shield, _ = client_app
    pair = issue(app, shield, client_id="cli")
    other = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("web", "s3cret%3Awith%25colon"))
    assert other.status_code == 400 and json_of(other)["error"] == "invalid_grant"
    anonymous = form(app.test_client(), _refresh_body(pair), url="/token")
    assert anonymous.status_code == 400 and json_of(anonymous)["error"] == "invalid_grant"
    own = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("cli", "other"))
    assert own.status_code == 200  # the refused attempts spent nothing


# -- scope (RFC 6749 §3.3, §6) ----------------------------------------------------------


def test_scope_of_the_session(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield, scope="read write")
    # No scope asked: the session's, named in the response.
    r = form(client, _refresh_body(pair))
    assert r.status_code == 200 and json_of(r)["scope"] == "read write"
    # The same or a narrower scope is accepted; the session's scope is what is issued (§3.3).
    r = form(client, {"grant_type": "refresh_token", "refresh_token": json_of(r)["refresh_token"], "scope": "read"})
    assert r.status_code == 200 and json_of(r)["scope"] == "read write"
    # More than was granted: refused before anything is spent.
    refresh_token = json_of(r)["refresh_token"]
    r = form(client, {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": "read admin"})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_scope"
    assert form(client, {"grant_type": "refresh_token", "refresh_token": refresh_token}).status_code == 200


def test_scope_asked_of_a_session_without_one(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    pair = issue(app, shield)
    r = form(client, _refresh_body(pair, scope="read"))
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_scope"
    r = form(client, _refresh_body(pair))
    assert r.status_code == 200 and "scope" not in r.json


def test_errorhandler_can_take_over(app: Flask, client: FlaskClient) -> None:
    @app.errorhandler(InvalidGrant)
    def mine(exc: InvalidGrant) -> t.Any:
        return {"mine": exc.error}, 400

    r = form(client, {"grant_type": "refresh_token", "refresh_token": "x"})
    assert r.json == {"mine": "invalid_grant"}


def test_view_is_exempt_from_the_pipeline(client: FlaskClient) -> None:
    """A refresh needs no access token (it is how a client gets one)."""
    r = form(client, {"grant_type": "refresh_token", "refresh_token": "x"})
    assert r.status_code == 400 and "WWW-Authenticate" not in r.headers


def test_json_error_body_is_one_object(client: FlaskClient) -> None:
    r = client.post(URL, data="[null, null]", content_type="application/json")
    assert json.loads(r.get_data(as_text=True)) == {
        "error": "invalid_request",
        "error_description": "The request body must be a JSON object.",
    }


def test_refusals_before_the_refresh_are_recorded_once_a_minute(
    client_app: tuple[Flask, JWTShield, list[ClientCredentials]], clock: Clock
) -> None:
    app, shield, _ = client_app
    pair = issue(app, shield, client_id="cli")
    for _ in range(5):  # a guesser trying secrets
        r = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("cli", "guess"))
        assert r.status_code == 401
    r = form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("web", "s3cret%3Awith%25colon"))
    assert r.status_code == 400  # the right secret of another client
    with app.app_context():
        rejected = shield.events(kind="token-rejected")
    reasons = sorted(e.detail["reason"] for e in rejected)
    assert reasons == ["client-mismatch", "invalid-client"]
    mismatch = next(e for e in rejected if e.detail["reason"] == "client-mismatch")
    assert mismatch.sid == pair.sid and mismatch.detail["client_id"] == "web"
    for event in rejected:
        assert pair.refresh_token not in json.dumps(event.to_dict())
    clock.advance(61)
    form(app.test_client(), _refresh_body(pair), url="/token", headers=basic("cli", "guess"))
    with app.app_context():
        assert len(shield.events(kind="token-rejected")) == 3


def test_app_max_content_length_still_applies(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"MAX_CONTENT_LENGTH": 100})
    app.register_blueprint(shield.token_blueprint())
    pair = issue(app, shield)
    r = form(app.test_client(), {"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
    assert r.status_code == 400 and "too large" in json_of(r)["error_description"]
    stream = io.BytesIO(b"grant_type=refresh_token&refresh_token=" + pair.refresh_token.encode())
    r = app.test_client().post(
        URL,
        input_stream=stream,
        content_type=FORM,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 400 and "too large" in json_of(r)["error_description"]


def test_flask_limiter_on_the_endpoint_as_documented(make_app: AppFactory, clock: Clock) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app, shield = make_app(defer_init=True)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
    shield = JWTShield(app, limiter=limiter)
    view = limiter.limit("3/minute")(shield.token_view())
    app.add_url_rule("/oauth/token", view_func=view, methods=["POST"])
    codes = [
        form(app.test_client(), {"grant_type": "refresh_token", "refresh_token": "x"}).status_code for _ in range(4)
    ]
    assert codes == [400, 400, 400, 429]


# -- DPoP (RFC 9449 §5): the proof in the DPoP header reaches refresh() ------------------


TOKEN_URL = "http://localhost" + URL


def test_dpop_bound_session_refreshes_at_the_endpoint(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_DPOP": "optional"})
    app.register_blueprint(shield.token_blueprint())
    client = app.test_client()
    key = DPoPKey.generate()
    login = json_of(client.post("/login", headers={"DPoP": key.proof("POST", "http://localhost/login")}))
    assert login["token_type"] == "DPoP"
    body = {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    # Without a proof, or with another key's: refused, nothing spent.
    assert json_of(form(client, body))["error"] == "invalid_dpop_proof"
    other = DPoPKey.generate()
    foreign = form(client, body, headers={"DPoP": other.proof("POST", TOKEN_URL)})
    assert json_of(foreign)["error"] == "invalid_dpop_proof"
    r = form(client, body, headers={"DPoP": key.proof("POST", TOKEN_URL)})
    assert r.status_code == 200, r.json
    assert json_of(r)["token_type"] == "DPoP" and r.headers["Pragma"] == "no-cache"
    me = client.get("/api/me", headers=key.headers("GET", "http://localhost/api/me", json_of(r)["access_token"]))
    assert me.status_code == 200


def test_dpop_nonce_at_the_endpoint(make_app: AppFactory, clock: Clock) -> None:
    """RFC 9449 §8: the token endpoint asks for a nonce (400 use_dpop_nonce); the retry with it refreshes."""
    app, shield = make_app({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_NONCE_TTL": 300})
    app.register_blueprint(shield.token_blueprint())
    client = app.test_client()
    key = DPoPKey.generate()
    asked = client.post("/login", headers={"DPoP": key.proof("POST", "http://localhost/login")})
    assert asked.status_code == 400 and json_of(asked)["error"] == "use_dpop_nonce"
    nonce = asked.headers["DPoP-Nonce"]
    login = client.post("/login", headers={"DPoP": key.proof("POST", "http://localhost/login", nonce=nonce)})
    assert login.status_code == 200, login.json
    body = {"grant_type": "refresh_token", "refresh_token": json_of(login)["refresh_token"]}
    without = form(client, body, headers={"DPoP": key.proof("POST", TOKEN_URL)})
    assert without.status_code == 400 and json_of(without)["error"] == "use_dpop_nonce"
    assert "DPoP-Nonce" in without.headers
    r = form(client, body, headers={"DPoP": key.proof("POST", TOKEN_URL, nonce=without.headers["DPoP-Nonce"])})
    assert r.status_code == 200, r.json
    assert json_of(r)["token_type"] == "DPoP" and r.headers["Cache-Control"] == "no-store"
