"""End to end: the shield issuing with a Token Status List, and the shield in resource-server
mode consuming it, over real HTTP on 127.0.0.1.

The issuing app runs under werkzeug's server in a thread (its JWK Set and its status list
blueprint); the resource server is another app that knows the issuer only by URL. Each kind
of revocation at the issuer is refused at the resource server within the list's ttl plus one
fetch. Real time: the issuer's ``iat``, the ttl and the polling are all wall-clock.
"""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_jwt_shield import InvalidGrant
from flask_jwt_shield import JWTShield
from tests.conftest import AppFactory
from tests.conftest import bearer
from tests.statuslist_util import AUDIENCE
from tests.statuslist_util import ec_pem

TTL = 1


class IssuingApp:
    """A shield app issuing tokens with ``status`` claims, served on 127.0.0.1.

    :meth:`restart` puts another app (another key ring, the same store and URL) behind the
    same server: a key rotation deployed at the issuer.
    """

    def __init__(self, store_uri: str) -> None:
        self._holder: dict[str, Flask] = {}
        self.server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.store_uri = store_uri
        self.restart(["old"])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _dispatch(self, environ: t.Any, start_response: t.Any) -> t.Any:
        return self._holder["app"](environ, start_response)

    def restart(self, kids: list[str]) -> None:
        app = Flask("status_issuer")
        app.testing = True
        app.config.update(
            JWT_SHIELD_ISSUER=self.url,
            JWT_SHIELD_AUDIENCE=AUDIENCE,
            JWT_SHIELD_KEYS=[{"kid": kid, "alg": "ES256", "key": ec_pem(f"e2e-{kid}")} for kid in kids],
            JWT_SHIELD_STATUS_LIST=True,
            JWT_SHIELD_STATUS_LIST_TTL=TTL,
            JWT_SHIELD_STORE_URI=self.store_uri,
            JWT_SHIELD_RATE_LIMIT=None,
        )
        self.shield = JWTShield(app)
        app.register_blueprint(self.shield.jwks_blueprint())
        app.register_blueprint(self.shield.status_list_blueprint())
        self.app = app
        self._holder["app"] = app

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def issuing(tmp_path: Path) -> Iterator[IssuingApp]:
    server = IssuingApp(f"sqlite:///{tmp_path}/issuer.db")
    try:
        yield server
    finally:
        server.stop()


def _refused_within(rs: Flask, token: str, bound: float) -> float:
    """Seconds until ``rs`` refuses ``token`` with 401 (polled every 5 ms); fails past ``bound``."""
    client = rs.test_client()
    started = time.monotonic()
    while True:
        response = client.get("/api/me", headers=bearer(token))
        if response.status_code == 401:
            assert response.json is not None and "revoked by its issuer" in response.json["error_description"]
            return time.monotonic() - started
        assert response.status_code == 200, response.json
        assert time.monotonic() - started < bound, f"still accepted after {bound} s"
        time.sleep(0.005)


@pytest.mark.parametrize("kind", ["token", "family", "subject", "refresh-reuse", "key"])
def test_each_kind_of_revocation_at_the_issuer_is_refused_at_the_resource_server(
    make_app: AppFactory, issuing: IssuingApp, kind: str
) -> None:
    rs, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": issuing.url + "/.well-known/jwks.json",
            "JWT_SHIELD_ISSUER": issuing.url,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_STATUS_LIST_MIN_TTL": 1,
            "JWT_SHIELD_JWKS_MIN_REFETCH": 1,
            "JWT_SHIELD_RATE_LIMIT": None,
        }
    )
    client = rs.test_client()
    with issuing.app.test_request_context():
        pair = issuing.shield.issue_tokens("alice")
    access = pair.access_token
    if kind == "key":
        issuing.restart(["new", "old"])  # a rotation deployed: "new" signs, "old" only verifies
    assert client.get("/api/me", headers=bearer(access)).status_code == 200
    with issuing.app.test_request_context():
        bystander = issuing.shield.issue_tokens("bob").access_token
        assert client.get("/api/me", headers=bearer(bystander)).status_code == 200
        shield = issuing.shield
        if kind == "token":
            shield.revoke_token(access)
        elif kind == "family":
            shield.revoke_family(_claim(rs, access, "sid"))
        elif kind == "subject":
            shield.revoke_subject("alice")
        elif kind == "refresh-reuse":
            shield.refresh(pair.refresh_token)
            with pytest.raises(InvalidGrant):
                shield.refresh(pair.refresh_token)  # the second use revokes the whole session
        else:
            shield.revoke_key("old")
    delay = _refused_within(rs, access, TTL + 2.5)
    assert delay <= TTL + 2.0  # the list's ttl plus one fetch (twice JWT_SHIELD_JWKS_TIMEOUT: 6 s at most)
    assert client.get("/api/me", headers=bearer(bystander)).status_code == 200
    print(f"\n{kind}: refused at the resource server {delay * 1000:.0f} ms after the revocation")


def _claim(rs: Flask, token: str, name: str) -> str:
    response = rs.test_client().get("/api/me", headers=bearer(token))
    value = response.json[name] if response.json else None
    assert isinstance(value, str)
    return value
