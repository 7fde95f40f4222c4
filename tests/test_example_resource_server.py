"""The resource-server example (example_app/resource_server.py) against the test provider."""

from __future__ import annotations

import secrets
import time
import typing as t
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from example_app.resource_server import create_app
from flask_jwt_shield.ssf import CAEP
from tests.conftest import Clock
from tests.conftest import bearer
from tests.conftest import json_of
from tests.idp_util import IdPServer
from tests.idp_util import SigningKey
from tests.idp_util import idp_claims
from tests.idp_util import rsa_key

AUDIENCE = "https://api.example.com"


@pytest.fixture
def key(idp: IdPServer) -> SigningKey:
    signing = SigningKey("idp-1", "RS256", rsa_key("idp-1"))
    idp.publish(signing)
    return signing


@pytest.fixture
def client(idp: IdPServer, key: SigningKey, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> t.Any:
    monkeypatch.setenv("IDP_ISSUER", idp.url)
    monkeypatch.setenv("IDP_AUDIENCE", AUDIENCE)
    monkeypatch.delenv("IDP_JWKS_URL", raising=False)  # discovery from the issuer
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    return app.test_client()


def token(key: SigningKey, issuer: str, **claims: t.Any) -> str:
    return key.sign(idp_claims(issuer, AUDIENCE, sub="user-1", jti=secrets.token_hex(8), **claims))


def test_provider_tokens_and_scopes(client: FlaskClient, key: SigningKey, idp: IdPServer, tmp_path: Path) -> None:
    plain = token(key, idp.url, scope="openid")
    assert json_of(client.get("/api/me", headers=bearer(plain)))["sub"] == "user-1"
    response = client.get("/api/reports", headers=bearer(plain))
    assert response.status_code == 403 and json_of(response)["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert client.get("/api/reports", headers=bearer(token(key, idp.url, scope="read:reports"))).status_code == 200
    assert client.get("/api/me").status_code == 401
    assert (tmp_path / "instance" / "shield-rs.db").exists()


def test_the_providers_security_event_revokes_the_user(client: FlaskClient, key: SigningKey, idp: IdPServer) -> None:
    access = token(key, idp.url)
    assert client.get("/api/me", headers=bearer(access)).status_code == 200
    event = {CAEP + "credential-change": {"subject": {"format": "iss_sub", "iss": idp.url, "sub": "user-1"}}}
    set_token = key.sign(
        {"iss": idp.url, "aud": AUDIENCE, "iat": int(time.time()), "jti": "set-1", "events": event}, typ="secevent+jwt"
    )
    response = client.post("/security-events", data=set_token, content_type="application/secevent+jwt")
    assert response.status_code == 202
    assert client.get("/api/me", headers=bearer(access)).status_code == 401
