"""The page "Coming from Flask-JWT-Extended" runs: every example it shows is a file under
docs/examples/ (fje_*.py) that Sphinx includes and these tests import and drive with Flask's
test client, asserting what the page says about it."""

from __future__ import annotations

import copy
import pathlib
import re
import sys
import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jwt_shield.config import flask_jwt_extended_warnings

from .conftest import SECRET
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of

DOCS = pathlib.Path(__file__).parent.parent / "docs"
PAGE = DOCS / "flask-jwt-extended.rst"
sys.path.insert(0, str(DOCS / "examples"))

import fje_app  # noqa: E402
import fje_cookies  # noqa: E402
import fje_errors  # noqa: E402

TEST_CONFIG = {"TESTING": True, "JWT_SHIELD_SECRET_KEY": SECRET, "JWT_SHIELD_STORE_URI": "memory://"}
HTTPS = "https://app.example"


@pytest.fixture(autouse=True)
def users(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, t.Any]]:
    """A fresh copy of the example's users for each test (a test changes a password)."""
    fresh = copy.deepcopy(fje_app.USERS)
    monkeypatch.setattr(fje_app, "USERS", fresh)
    return fresh


@pytest.fixture
def app() -> Flask:
    return fje_app.create_app(TEST_CONFIG)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def login(client: FlaskClient, username: str = "alice", password: str = "wonderland") -> dict[str, t.Any]:
    r = client.post("/login", json={"username": username, "password": password})
    assert r.status_code == 200, json_of(r)
    return t.cast(dict[str, t.Any], json_of(r))


# -- the page itself ---------------------------------------------------------------------


def test_every_example_on_the_page_is_an_included_file_imported_here() -> None:
    text = PAGE.read_text()
    assert not re.search(r"^\s*\.\. code-block:: python", text, re.MULTILINE), "include a docs/examples file instead"
    assert not re.search(r"::\s*\n\n\s+(from|import|@|def |app\.|shield\.)", text), "no literal Python blocks"
    included = set(re.findall(r"^\.\. literalinclude:: examples/(\S+)$", text, re.MULTILINE))
    files = {p.name for p in (DOCS / "examples").glob("fje_*.py")}
    assert included == files
    assert {f.removesuffix(".py") for f in files} <= set(sys.modules)


def test_page_is_in_the_toctree() -> None:
    assert re.search(r"^   flask-jwt-extended$", (DOCS / "index.rst").read_text(), re.MULTILINE)


def test_settings_table_matches_the_warnings() -> None:
    """Every Flask-JWT-Extended key in the page's table is one init_app names, and back."""
    section = PAGE.read_text().split("\nSettings\n--------\n", 1)[1].split("\nIssuing tokens\n", 1)[0]
    first_column = [line for line in section.splitlines() if line.startswith("   * - ")]
    table = {k for line in first_column for k in re.findall(r"``(JWT_(?!SHIELD_)[A-Z_]+)``", line)}
    assert table
    for key in table:
        assert flask_jwt_extended_warnings({key: object()}), key
    assert not flask_jwt_extended_warnings({k: object() for k in {"JWT_UNKNOWN_KEY"}})
    every = flask_jwt_extended_warnings({k: object() for k in _all_fje_keys()})
    assert {w.split(" ", 1)[0] for w in every} == table


def _all_fje_keys() -> list[str]:
    from flask_jwt_shield.config.read import FLASK_JWT_EXTENDED_KEYS

    return list(FLASK_JWT_EXTENDED_KEYS)


# -- JWTManager(app) / init_app and the settings -------------------------------------------


def test_setup_reads_timedelta_settings_and_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_JWT_SHIELD_SECRET_KEY", "s" * 48)
    app = fje_app.create_app({"TESTING": True, "JWT_SHIELD_STORE_URI": "memory://"})
    config = app.extensions["jwt_shield"].config
    assert (config.sessions.access_token_ttl, config.sessions.refresh_token_ttl) == (900, 30 * 86400)
    assert config.keys.keys[0].key == "s" * 48
    assert login(app.test_client())["expires_in"] == 900


# -- create_access_token / create_refresh_token -> issue_tokens ----------------------------


def test_login_issues_a_pair_with_the_extra_claims(client: FlaskClient) -> None:
    bad = client.post("/login", json={"username": "alice", "password": "queen"})
    assert bad.status_code == 401 and bad.json == {"error": "bad username or password"}
    pair = login(client)
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert pair["token_type"] == "Bearer"
    r = client.get("/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 200 and json_of(r) == {"user": "alice", "role": "admin"}


# -- @jwt_required() -> protected by default, get_jwt_identity / get_jwt ------------------


def test_every_route_is_protected_by_default(client: FlaskClient) -> None:
    for path in ("/me", "/claims", "/profile"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert client.post("/logout").status_code == 401
    # What the page says about the other answers: a malformed header, a token in the URL.
    r = client.get("/me", headers={"Authorization": "Bearer"})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    r = client.get("/me?access_token=abc")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"


def test_claims_as_json(client: FlaskClient) -> None:
    pair = login(client)
    claims = json_of(client.get("/claims", headers=bearer(pair["access_token"])))
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert {"exp", "iat", "jti", "sid"} <= set(claims)


# -- @jwt_required(optional=True) -> @shield.optional -------------------------------------


def test_optional(client: FlaskClient) -> None:
    assert client.get("/greeting").json == {"hello": "stranger"}
    pair = login(client)
    assert client.get("/greeting", headers=bearer(pair["access_token"])).json == {"hello": "alice"}
    r = client.get("/greeting", headers=bearer("not.a.token"))
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"  # a bad token is still refused


# -- public routes: @shield.exempt, exempt blueprints, patterns, the health check ---------


def test_public_routes(client: FlaskClient) -> None:
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/public/terms").status_code == 200
    assert client.get("/docs/").json == {"docs": "/docs/"}
    assert client.get("/profile").status_code == 401  # its neighbours are not public


# -- @jwt_required(refresh=True) -> shield.refresh / the token endpoint -------------------


def test_refresh_rotates_and_detects_reuse(client: FlaskClient) -> None:
    first = login(client)
    # A refresh token is not an access token (its typ differs).
    r = client.get("/me", headers=bearer(first["refresh_token"]))
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"
    second = json_of(client.post("/refresh", json={"refresh_token": first["refresh_token"]}))
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    # The spent refresh token again: reuse. The whole session is revoked, the thief's and the user's.
    again = client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 400 and json_of(again)["error"] == "invalid_grant"
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 401
    late = client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert late.status_code == 400 and json_of(late)["error"] == "invalid_grant"


def test_token_endpoint(client: FlaskClient) -> None:
    pair = login(client)
    r = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert client.get("/me", headers=bearer(json_of(r)["access_token"])).status_code == 200


# -- user_lookup_loader -> a before_request; token_in_blocklist_loader -> revocation -------


def test_user_lookup_in_before_request(client: FlaskClient) -> None:
    pair = login(client, "bob", "builder")
    assert client.get("/profile", headers=bearer(pair["access_token"])).json == {"role": "user", "active": True}


def test_revocation_checker_refuses_a_disabled_user(client: FlaskClient, users: dict[str, t.Any]) -> None:
    pair = login(client, "bob", "builder")
    users["bob"]["active"] = False
    r = client.get("/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"
    assert "revoked" in json_of(r)["error_description"]
    users["bob"]["active"] = True
    assert client.get("/me", headers=bearer(pair["access_token"])).status_code == 200


def test_logout_revokes_the_session(client: FlaskClient) -> None:
    pair, other = login(client), login(client)
    assert client.post("/logout", headers=bearer(pair["access_token"])).json == {"logged_out": True}
    assert client.get("/me", headers=bearer(pair["access_token"])).status_code == 401
    r = client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200  # another session


# -- fresh tokens -> ask for the password again -------------------------------------------


def test_sensitive_action_asks_for_the_password_and_logs_out_everywhere(client: FlaskClient) -> None:
    pair, laptop = login(client), login(client)
    r = client.post(
        "/password", json={"current_password": "guess", "new_password": "x"}, headers=bearer(pair["access_token"])
    )
    assert r.status_code == 403
    r = client.post(
        "/password",
        json={"current_password": "wonderland", "new_password": "looking-glass"},
        headers=bearer(pair["access_token"]),
    )
    assert json_of(r) == {"changed": True}
    for token in (pair["access_token"], laptop["access_token"]):
        assert client.get("/me", headers=bearer(token)).status_code == 401
    assert client.post("/login", json={"username": "alice", "password": "wonderland"}).status_code == 401
    assert client.get("/me", headers=bearer(login(client, "alice", "looking-glass")["access_token"])).status_code == 200


# -- expired_token_loader & co -> @app.errorhandler ---------------------------------------


def test_error_handlers(clock: Clock) -> None:
    app = fje_app.create_app(TEST_CONFIG)
    fje_errors.register_error_handlers(app)
    client = app.test_client()
    r = client.get("/me")
    assert r.status_code == 401 and json_of(r) == {"msg": "Missing Authorization Header"}
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    r = client.get("/me", headers=bearer("not.a.token"))
    assert r.status_code == 401 and set(json_of(r)) == {"msg"}
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    pair = login(client)
    clock.advance(901)
    r = client.get("/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 401 and json_of(r) == {"msg": "Token has expired"}
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


# -- set_access_cookies / unset_jwt_cookies -> set_cookies / unset_cookies ----------------


def test_cookies() -> None:
    app = fje_cookies.create_app(TEST_CONFIG)
    browser = app.test_client()
    r = browser.post(f"{HTTPS}/login", data={"username": "alice"})
    assert json_of(r) == {"login": True}
    names = {h.split("=", 1)[0] for h in r.headers.getlist("Set-Cookie")}
    assert names == {"__Host-jws_access", "__Host-jws_refresh", "__Host-jws_fgp", "jws_csrf"}
    assert "access_token" not in r.get_data(as_text=True)  # no token in the body for a script to read
    r = browser.post(f"{HTTPS}/notes")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"  # no CSRF header
    csrf_cookie = browser.get_cookie("jws_csrf", domain="app.example")
    assert csrf_cookie is not None
    csrf = {"X-CSRF-Token": csrf_cookie.value}
    r = browser.post(f"{HTTPS}/notes", headers=csrf)
    assert r.status_code == 201 and json_of(r) == {"saved": True, "by": "alice"}
    r = browser.post(f"{HTTPS}/refresh")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"  # refresh needs it too
    assert browser.post(f"{HTTPS}/refresh", headers=csrf).json == {"refresh": True}
    # A copy of every cookie, taken before the log-out (a thief's, say).
    copied = app.test_client()
    for name in ("__Host-jws_access", "__Host-jws_refresh", "__Host-jws_fgp", "jws_csrf"):
        cookie = browser.get_cookie(name, domain="app.example")
        assert cookie is not None
        copied.set_cookie(name, cookie.value, domain="app.example")
    assert browser.post(f"{HTTPS}/logout", headers=csrf).json == {"logout": True}
    assert browser.get_cookie("__Host-jws_access", domain="app.example") is None
    assert copied.post(f"{HTTPS}/notes", headers=csrf).status_code == 401
    assert copied.post(f"{HTTPS}/refresh", headers=csrf).status_code == 400
