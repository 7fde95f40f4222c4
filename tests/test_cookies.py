"""Tokens in cookies for browsers: ``set_cookies``, CSRF double-submit, the fingerprint.

Every request goes through the real app with werkzeug's test client, whose cookie jar plays
the browser; cookies are read back from ``Set-Cookie`` as a browser would.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask.testing import FlaskClient

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims

from .conftest import SECRET
from .conftest import Clock
from .conftest import json_of

BASE = "https://app.example"


def make_cookie_app(config: dict[str, t.Any] | None = None) -> tuple[Flask, JWTShield]:
    app = Flask("cookie_test")
    app.testing = True
    app.config.update({"JWT_SHIELD_SECRET_KEY": SECRET, "JWT_SHIELD_TOKEN_LOCATIONS": ["headers", "cookies"]})
    app.config.update(config or {})
    shield = JWTShield(app)

    @app.post("/login")
    @shield.exempt
    def login() -> t.Any:
        pair = shield.issue_tokens(request.args.get("sub", "alice"), cookies=True)
        return shield.set_cookies(jsonify(ok=True), pair)  # no token in the body: no script sees one

    @app.post("/login-api")
    @shield.exempt
    def login_api() -> t.Any:
        return shield.issue_tokens("alice").as_dict()

    @app.post("/refresh")
    @shield.exempt
    def refresh() -> t.Any:
        body = request.get_json(silent=True) or {}
        return shield.set_cookies(jsonify(ok=True), shield.refresh(body.get("refresh_token")))

    @app.post("/logout")
    @shield.exempt
    def logout() -> t.Any:
        return shield.unset_cookies(jsonify(ok=True))

    @app.get("/api/me")
    def me() -> t.Any:
        return jsonify(dict(current_claims))

    @app.post("/api/items")
    def add_item() -> t.Any:
        return {"added": True, "by": current_claims["sub"]}

    return app, shield


@pytest.fixture
def app(clock: Clock) -> Flask:
    return make_cookie_app()[0]


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    client = app.test_client()
    r = client.post(f"{BASE}/login")
    assert r.status_code == 200, r.json
    return client


def cookie(client: FlaskClient, name: str) -> str:
    found = client.get_cookie(name, domain="app.example")
    assert found is not None, name
    return found.value


def csrf(client: FlaskClient) -> dict[str, str]:
    return {"X-CSRF-Token": cookie(client, "jws_csrf")}


def test_login_sets_hardened_cookies(app: Flask) -> None:
    r = app.test_client().post(f"{BASE}/login")
    assert r.json == {"ok": True}
    set_cookies = {h.split("=", 1)[0]: h for h in r.headers.getlist("Set-Cookie")}
    assert set(set_cookies) == {"__Host-jws_access", "__Host-jws_refresh", "__Host-jws_fgp", "jws_csrf"}
    for name in ("__Host-jws_access", "__Host-jws_refresh", "__Host-jws_fgp"):
        header = set_cookies[name]
        assert "; Secure" in header and "; HttpOnly" in header and "; Path=/" in header, header
        assert "Domain=" not in header  # __Host-: this host only
    assert "SameSite=Lax" in set_cookies["__Host-jws_access"]
    assert "SameSite=Strict" in set_cookies["__Host-jws_refresh"]
    assert "HttpOnly" not in set_cookies["jws_csrf"] and "; Secure" in set_cookies["jws_csrf"]
    assert "Max-Age=900" in set_cookies["__Host-jws_access"]


def test_samesite_strict(clock: Clock) -> None:
    app, _ = make_cookie_app({"JWT_SHIELD_COOKIE_SAMESITE": "Strict"})
    r = app.test_client().post(f"{BASE}/login")
    assert all("SameSite=Strict" in h for h in r.headers.getlist("Set-Cookie"))


def test_cookie_request_works_and_carries_the_fingerprint_claim(browser: FlaskClient) -> None:
    r = browser.get(f"{BASE}/api/me")
    assert r.status_code == 200
    assert json_of(r)["sub"] == "alice" and "fgp" in json_of(r)
    r = browser.post(f"{BASE}/api/items", headers=csrf(browser))
    assert r.status_code == 200 and r.json == {"added": True, "by": "alice"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_need_the_csrf_header(browser: FlaskClient, method: str) -> None:
    r = browser.open(f"{BASE}/api/items", method=method)
    # 405 for the methods the view lacks comes after the shield: the CSRF check answers first.
    assert r.status_code in (400, 405)
    if method == "POST":
        assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"


def test_csrf_value_planted_by_a_sibling_domain_does_not_pass(browser: FlaskClient) -> None:
    # A sibling domain can plant a jws_csrf cookie of its choosing and a page that echoes
    # it; the value must be the HMAC of the HttpOnly fingerprint, which it cannot read.
    browser.set_cookie("jws_csrf", "planted", domain="app.example")
    r = browser.post(f"{BASE}/api/items", headers={"X-CSRF-Token": "planted"})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"


def test_header_and_cookie_together_are_two_credentials(browser: FlaskClient, app: Flask) -> None:
    api = json_of(app.test_client().post("/login-api"))
    r = browser.get(f"{BASE}/api/me", headers={"Authorization": f"Bearer {api['access_token']}"})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"


def test_other_authorization_schemes_leave_the_cookie_in_charge(browser: FlaskClient) -> None:
    r = browser.get(f"{BASE}/api/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 200


def test_stolen_cookie_token_without_the_fingerprint_fails_as_bearer_and_as_cookie(
    browser: FlaskClient, app: Flask
) -> None:
    token = cookie(browser, "__Host-jws_access")
    thief = app.test_client()
    r = thief.get(f"{BASE}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"
    thief.set_cookie("__Host-jws_access", token, domain="app.example")
    r = thief.get(f"{BASE}/api/me")
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"


def test_refresh_through_cookies(browser: FlaskClient, app: Flask) -> None:
    first = cookie(browser, "__Host-jws_access")
    fingerprint = cookie(browser, "__Host-jws_fgp")
    r = browser.post(f"{BASE}/refresh")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"  # no CSRF header
    r = browser.post(f"{BASE}/refresh", headers=csrf(browser))
    assert r.status_code == 200, r.json
    names = {h.split("=", 1)[0] for h in r.headers.getlist("Set-Cookie")}
    assert names == {"__Host-jws_access", "__Host-jws_refresh"}  # the fingerprint stays
    assert cookie(browser, "__Host-jws_access") != first
    assert cookie(browser, "__Host-jws_fgp") == fingerprint
    assert browser.post(f"{BASE}/api/items", headers=csrf(browser)).status_code == 200


def test_stolen_refresh_cookie_is_useless_without_the_fingerprint(browser: FlaskClient, app: Flask) -> None:
    refresh = cookie(browser, "__Host-jws_refresh")
    thief = app.test_client()
    r = thief.post(f"{BASE}/refresh", json={"refresh_token": refresh})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    # Nothing was spent: the owner refreshes as usual.
    assert browser.post(f"{BASE}/refresh", headers=csrf(browser)).status_code == 200


def test_refresh_reuse_is_still_caught_through_cookies(browser: FlaskClient) -> None:
    old = cookie(browser, "__Host-jws_refresh")
    assert browser.post(f"{BASE}/refresh", headers=csrf(browser)).status_code == 200
    r = browser.post(f"{BASE}/refresh", json={"refresh_token": old}, headers=csrf(browser))
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    assert browser.get(f"{BASE}/api/me").status_code == 401  # the session is revoked


def test_logout_expires_every_cookie(browser: FlaskClient) -> None:
    r = browser.post(f"{BASE}/logout")
    expired = r.headers.getlist("Set-Cookie")
    assert {h.split("=", 1)[0] for h in expired} == {
        "__Host-jws_access",
        "__Host-jws_refresh",
        "__Host-jws_fgp",
        "jws_csrf",
    }
    assert all("Max-Age=0" in h for h in expired)
    assert browser.get(f"{BASE}/api/me").status_code == 401


def test_set_cookies_refuses_a_pair_without_fingerprint(clock: t.Any) -> None:
    app, shield = make_cookie_app()
    with app.test_request_context("/login-api", method="POST"):
        pair = shield.issue_tokens("alice")
        with pytest.raises(ValueError, match="cookies=True"):
            shield.set_cookies(jsonify(ok=True), pair)


def test_cookies_are_ignored_where_they_are_no_location(clock: Clock) -> None:
    cookie_app, _ = make_cookie_app()
    token = None
    client = cookie_app.test_client()
    client.post(f"{BASE}/login")
    token = cookie(client, "__Host-jws_access")
    header_app, shield = make_cookie_app({"JWT_SHIELD_TOKEN_LOCATIONS": ["headers"]})
    plain = header_app.test_client()
    plain.set_cookie("__Host-jws_access", token, domain="app.example")
    assert plain.get(f"{BASE}/api/me").status_code == 401
    with header_app.test_request_context("/login", method="POST"), pytest.raises(RuntimeError, match="cookies"):
        shield.issue_tokens("alice", cookies=True)


def test_cookies_only_ignores_the_authorization_header(clock: Clock) -> None:
    app, _ = make_cookie_app({"JWT_SHIELD_TOKEN_LOCATIONS": ["cookies"]})
    api = json_of(app.test_client().post("/login-api"))
    assert (
        app.test_client().get("/api/me", headers={"Authorization": f"Bearer {api['access_token']}"}).status_code == 401
    )
    browser = app.test_client()
    browser.post(f"{BASE}/login")
    assert browser.get(f"{BASE}/api/me").status_code == 200


def test_header_clients_of_a_cookie_app_are_untouched(app: Flask) -> None:
    api = json_of(app.test_client().post("/login-api"))
    r = app.test_client().post("/api/items", headers={"Authorization": f"Bearer {api['access_token']}"})
    assert r.status_code == 200  # no cookie, no CSRF question
