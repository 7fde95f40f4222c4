"""Device Bound Session Credentials (DBSC) for cookie sessions.

A scripted browser follows the W3C Editor's Draft (https://w3c.github.io/webappsec-dbsc/):
it reads ``Secure-Session-Registration`` at the login, registers a key of its own with a
``dbsc+jwt`` proof over the challenge, and when its bound cookie is gone refreshes at the
session's ``refresh_url`` (``Sec-Secure-Session-Id``, a 403 with ``Secure-Session-Challenge``,
then a proof in ``Secure-Session-Response``). Time is the test's clock.
"""

from __future__ import annotations

import json
import re
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm
from jwt.algorithms import RSAAlgorithm

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield

from .conftest import Clock
from .conftest import json_of
from .test_cookies import BASE
from .test_cookies import csrf
from .test_cookies import make_cookie_app

COOKIES = ("__Host-jws_access", "__Host-jws_refresh", "__Host-jws_fgp", "jws_csrf", "__Host-jws_dbsc")


def sf_params(value: str) -> dict[str, str]:
    """The string parameters of one structured-field item (enough for these headers)."""
    return dict(re.findall(r';\s*([a-z_]+)="([^"]*)"', value))


def sf_string(value: str) -> str:
    return json.dumps(value)  # an sf-string of URL-safe text is a JSON string


class DeviceKey:
    """The browser's session key (ES256 by default; RS256 too)."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: t.Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)

    def proof(self, challenge: str, *, with_jwk: bool) -> str:
        headers: dict[str, t.Any] = {"typ": "dbsc+jwt"}
        if with_jwk:
            headers["jwk"] = self.jwk
        return jwt.encode({"jti": challenge}, self.private, algorithm=self.alg, headers=headers)


class DBSCBrowser:
    """A browser that does DBSC as the specification says."""

    def __init__(self, client: FlaskClient, key: DeviceKey | None = None) -> None:
        self.client = client
        self.key = key or DeviceKey()
        self.session_id: str | None = None
        self.refresh_url: str | None = None
        self.cached_challenge: str | None = None

    def login(self) -> t.Any:
        r = self.client.post(f"{BASE}/login")
        assert r.status_code == 200
        header = r.headers.get("Secure-Session-Registration")
        if header is not None:
            assert header.startswith("(ES256 RS256);")
            params = sf_params(header)
            self.register(params["path"], params["challenge"])
        return r

    def register(self, path: str, challenge: str) -> t.Any:
        proof = self.key.proof(challenge, with_jwk=True)
        r = self.client.post(f"{BASE}{path}", headers={"Secure-Session-Response": sf_string(proof)})
        assert r.status_code == 200, r.json
        instructions = json_of(r)
        assert instructions["credentials"] == [
            {"type": "cookie", "name": "__Host-jws_dbsc", "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax"}
        ]
        assert instructions["scope"]["include_site"] is False
        self.session_id = instructions["session_identifier"]
        self.refresh_url = instructions["refresh_url"]
        self._cache(r)
        return r

    def _cache(self, r: t.Any) -> None:
        header = r.headers.get("Secure-Session-Challenge")
        if header is not None:
            assert sf_params(header)["id"] == self.session_id
            self.cached_challenge = json.loads(header.split(";", 1)[0])

    def refresh(self, *, use_cache: bool = True, key: DeviceKey | None = None) -> t.Any:
        """The spec's "send a request": with the cached challenge if any, again after a 403."""
        assert self.session_id is not None
        headers = {"Sec-Secure-Session-Id": sf_string(self.session_id)}
        challenge = self.cached_challenge if use_cache else None
        for _ in range(2):
            sent = dict(headers)
            if challenge is not None:
                sent["Secure-Session-Response"] = sf_string((key or self.key).proof(challenge, with_jwk=False))
            r = self.client.post(f"{BASE}{self.refresh_url}", headers=sent)
            self._cache(r)
            if r.status_code != 403:
                return r
            challenge = self.cached_challenge
        return r

    def drop_bound_cookie(self) -> None:
        self.client.delete_cookie("__Host-jws_dbsc", domain="app.example")


@pytest.fixture
def app(clock: Clock) -> Flask:
    app, shield = make_cookie_app({"JWT_SHIELD_DBSC": "optional"})
    app.register_blueprint(shield.dbsc_blueprint())
    return app


@pytest.fixture
def browser(app: Flask) -> DBSCBrowser:
    b = DBSCBrowser(app.test_client())
    b.login()
    return b


def steal(app: Flask, victim: FlaskClient) -> FlaskClient:
    """Another machine with a copy of every cookie of the victim (an infostealer's haul)."""
    thief = app.test_client()
    for name in COOKIES:
        found = victim.get_cookie(name, domain="app.example")
        if found is not None:
            thief.set_cookie(name, found.value, domain="app.example")
    return thief


def test_full_flow_registration_warm_requests_and_refresh(app: Flask, browser: DBSCBrowser, clock: Clock) -> None:
    r = browser.client.get(f"{BASE}/api/me")
    assert r.status_code == 200
    claims = json_of(r)
    assert claims["sid"] == browser.session_id and claims["dbsc"]["jkt"]
    assert browser.client.post(f"{BASE}/api/items", headers=csrf(browser.client)).status_code == 200
    # The bound cookie lapses; the browser defers its request and refreshes with its key.
    clock.advance(301)
    browser.drop_bound_cookie()
    assert browser.client.get(f"{BASE}/api/me").status_code == 401
    r = browser.refresh()
    assert r.status_code == 200, r.json
    assert json_of(r)["session_identifier"] == browser.session_id
    set_cookies = {h.split("=", 1)[0]: h for h in r.headers.getlist("Set-Cookie")}
    assert {"__Host-jws_dbsc", "__Host-jws_access", "__Host-jws_refresh"} <= set(set_cookies)
    assert "Max-Age=300" in set_cookies["__Host-jws_dbsc"] and "HttpOnly" in set_cookies["__Host-jws_dbsc"]
    r = browser.client.get(f"{BASE}/api/me")
    assert r.status_code == 200 and json_of(r)["sid"] == browser.session_id
    # Again, this time without a cached challenge: 403 with a challenge, then the proof.
    clock.advance(301)
    browser.drop_bound_cookie()
    assert browser.refresh(use_cache=False).status_code == 200
    assert browser.client.get(f"{BASE}/api/me").status_code == 200


def test_registration_moves_the_session_and_ends_the_unbound_one(app: Flask) -> None:
    client = app.test_client()
    r = client.post(f"{BASE}/login")
    params = sf_params(r.headers["Secure-Session-Registration"])
    before = steal(app, client)  # a copy taken before the browser registered
    browser = DBSCBrowser(client)
    browser.register(params["path"], params["challenge"])
    assert before.get(f"{BASE}/api/me").status_code == 401  # its session was revoked
    assert before.post(f"{BASE}/refresh", headers=csrf(before)).status_code == 400
    # The challenge was one-time, and bound to that session.
    again = client.post(
        f"{BASE}{params['path']}",
        headers={"Secure-Session-Response": sf_string(DeviceKey().proof(params["challenge"], with_jwk=True))},
    )
    assert again.status_code == 400


def test_stolen_cookies_replayed_from_another_machine_after_the_bound_cookie_lifetime(
    app: Flask, browser: DBSCBrowser, clock: Clock
) -> None:
    thief = steal(app, browser.client)
    assert thief.get(f"{BASE}/api/me").status_code == 200  # within the bound cookie's minutes
    clock.advance(301)
    r = thief.get(f"{BASE}/api/me")
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"
    assert "DBSC" in json_of(r)["error_description"]
    # The app's own refresh refuses a DBSC session: it renews only with the key.
    r = thief.post(f"{BASE}/refresh", headers=csrf(thief))
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    # The DBSC refresh with a key of the thief's own: the signature is not the session's key.
    thief_browser = DBSCBrowser(thief, DeviceKey())
    thief_browser.session_id, thief_browser.refresh_url = browser.session_id, browser.refresh_url
    r = thief_browser.refresh(use_cache=False)
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    assert thief.get(f"{BASE}/api/me").status_code == 401
    # The owner's browser is unaffected.
    browser.drop_bound_cookie()
    assert browser.refresh().status_code == 200
    assert browser.client.get(f"{BASE}/api/me").status_code == 200


def test_same_machine_without_the_key_is_refused(app: Flask, browser: DBSCBrowser, clock: Clock) -> None:
    # Malware on the machine copies the cookies but cannot export the hardware key.
    clock.advance(301)
    client = browser.client
    assert browser.session_id is not None
    assert client.get(f"{BASE}/api/me").status_code == 401
    r = client.post(f"{BASE}/refresh", headers=csrf(client))
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    r = client.post(f"{BASE}{browser.refresh_url}", headers={"Sec-Secure-Session-Id": sf_string(browser.session_id)})
    assert r.status_code == 403  # a challenge, which only the key can answer
    assert client.get(f"{BASE}/api/me").status_code == 401


def test_refresh_without_proof_gets_a_challenge(app: Flask, browser: DBSCBrowser) -> None:
    assert browser.session_id is not None
    r = browser.client.post(
        f"{BASE}{browser.refresh_url}", headers={"Sec-Secure-Session-Id": sf_string(browser.session_id)}
    )
    assert r.status_code == 403
    header = r.headers["Secure-Session-Challenge"]
    assert sf_params(header)["id"] == browser.session_id and header.startswith('"')
    assert not any(h.startswith("__Host-jws_dbsc=") for h in r.headers.getlist("Set-Cookie"))
    assert r.headers["Cache-Control"] == "no-store"


def test_wrong_key_is_refused(app: Flask, browser: DBSCBrowser) -> None:
    browser.drop_bound_cookie()
    r = browser.refresh(key=DeviceKey())
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    assert browser.client.get(f"{BASE}/api/me").status_code == 401
    r = browser.refresh(key=DeviceKey("RS256"))  # another algorithm than the session's key
    assert r.status_code == 400
    # A proof whose header names another key than the session's.
    challenge = browser.cached_challenge
    assert challenge is not None and browser.session_id is not None
    proof = DeviceKey().proof(challenge, with_jwk=True)
    headers = {"Sec-Secure-Session-Id": sf_string(browser.session_id), "Secure-Session-Response": sf_string(proof)}
    r = browser.client.post(f"{BASE}{browser.refresh_url}", headers=headers)
    assert r.status_code == 400


def test_replayed_challenge_is_refused(app: Flask, browser: DBSCBrowser) -> None:
    assert browser.cached_challenge is not None and browser.session_id is not None
    headers = {
        "Sec-Secure-Session-Id": sf_string(browser.session_id),
        "Secure-Session-Response": sf_string(browser.key.proof(browser.cached_challenge, with_jwk=False)),
    }
    browser.drop_bound_cookie()
    first = browser.client.post(f"{BASE}{browser.refresh_url}", headers=headers)
    assert first.status_code == 200
    browser.drop_bound_cookie()
    replay = browser.client.post(f"{BASE}{browser.refresh_url}", headers=headers)
    assert replay.status_code == 403  # no bound cookie for a spent challenge; a fresh one instead
    assert not any(h.startswith("__Host-jws_dbsc=") for h in replay.headers.getlist("Set-Cookie"))
    assert browser.client.get(f"{BASE}/api/me").status_code == 401


def test_forged_or_foreign_challenges_and_proofs_are_refused(app: Flask, browser: DBSCBrowser) -> None:
    assert browser.session_id is not None
    url = f"{BASE}{browser.refresh_url}"
    sid = {"Sec-Secure-Session-Id": sf_string(browser.session_id)}
    for proof in (
        "garbage",
        "a.b.c",
        jwt.encode({"jti": "x"}, "k" * 32, algorithm="HS256", headers={"typ": "dbsc+jwt"}),
    ):
        r = browser.client.post(url, headers={**sid, "Secure-Session-Response": sf_string(proof)})
        assert r.status_code == 400, proof
    # A registration challenge is not a refresh challenge, and a forged one is nothing.
    forged = browser.key.proof("9999999999.x.y.z", with_jwk=False)
    r = browser.client.post(url, headers={**sid, "Secure-Session-Response": sf_string(forged)})
    assert r.status_code == 403
    # Another session's id.
    r = browser.client.post(url, headers={"Sec-Secure-Session-Id": '"another"'})
    assert r.status_code == 400


def test_rs256_device_key(app: Flask) -> None:
    browser = DBSCBrowser(app.test_client(), DeviceKey("RS256"))
    browser.login()
    browser.drop_bound_cookie()
    assert browser.refresh().status_code == 200
    assert browser.client.get(f"{BASE}/api/me").status_code == 200


def test_browsers_without_dbsc_keep_working(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    r = client.post(f"{BASE}/login")
    assert "Secure-Session-Registration" in r.headers  # offered, ignored
    assert client.get(f"{BASE}/api/me").status_code == 200
    clock.advance(901)
    r = client.post(f"{BASE}/refresh", headers=csrf(client))
    assert r.status_code == 200
    assert client.get(f"{BASE}/api/me").status_code == 200


def test_off_by_default_and_needs_cookies(clock: Clock) -> None:
    app, shield = make_cookie_app()
    app.register_blueprint(shield.dbsc_blueprint())
    client = app.test_client()
    assert "Secure-Session-Registration" not in client.post(f"{BASE}/login").headers
    assert client.post(f"{BASE}/dbsc/register").status_code == 404
    bad = Flask("dbsc_without_cookies")
    bad.config.update({"JWT_SHIELD_SECRET_KEY": "s" * 32, "JWT_SHIELD_DBSC": "optional"})
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_DBSC"):
        JWTShield(bad)


def test_no_registration_header_without_the_endpoints(clock: Clock) -> None:
    app, _ = make_cookie_app({"JWT_SHIELD_DBSC": "optional"})
    assert "Secure-Session-Registration" not in app.test_client().post(f"{BASE}/login").headers


def test_unset_cookies_expires_the_bound_cookie(app: Flask, browser: DBSCBrowser) -> None:
    r = browser.client.post(f"{BASE}/logout")
    assert any(h.startswith("__Host-jws_dbsc=;") for h in r.headers.getlist("Set-Cookie"))


def test_the_cookie_reader_answers_as_werkzeugs_parser() -> None:
    # The pipeline reads its cookies from the header directly (the warm path of a DBSC
    # session); whatever the header, the answer is the one werkzeug's parser gives.
    import random

    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from flask_jwt_shield.transport import request_cookie

    name = "__Host-jws_access"
    parts = [
        name,
        "=",
        ";",
        " ",
        "\t",
        '"',
        "\\",
        "a",
        "b=",
        "x" + name,
        name + "x",
        "; ",
        "=v",
        '"q"',
        '\\"',
        "abc.def-_",
        ",",
        "\\101",
    ]
    rng = random.Random(1)
    builder = EnvironBuilder()
    template = builder.get_environ()
    builder.close()
    for _ in range(20000):
        header = "".join(rng.choice(parts) for _ in range(rng.randint(1, 10)))
        environ = {**template, "HTTP_COOKIE": header}
        assert request_cookie(Request(environ), environ, name) == Request(environ).cookies.get(name), header
        for other in ("a", "b", "x" + name):  # the same split answers for every name
            assert request_cookie(Request(environ), environ, other) == Request(environ).cookies.get(other), header
