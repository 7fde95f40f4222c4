"""The example app behind `make run` works as the README and docs/example.rst say."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from example_app.app import create_app

from .conftest import Clock
from .conftest import bearer


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> t.Any:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    return app.test_client()


def login(client: t.Any, ip: str = "192.0.2.10", password: str = "wonderland") -> t.Any:
    return client.post("/auth/login", json={"username": "alice", "password": password},
                       headers={"X-Forwarded-For": ip})  # fmt: skip


def test_secret_and_store_live_in_the_instance_folder(client: t.Any, tmp_path: Path) -> None:
    assert login(client).status_code == 200
    secret = (tmp_path / "instance" / "jwt-secret.txt").read_text()
    assert len(secret) >= 32
    assert (tmp_path / "instance" / "shield.db").exists()


def test_wrong_password(client: t.Any) -> None:
    r = login(client, password="nope")
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"


def test_session_walkthrough(client: t.Any, clock: Clock) -> None:
    pair = login(client).json
    here = {"X-Forwarded-For": "192.0.2.10"}
    me = client.get("/api/me", headers={**bearer(pair["access_token"]), **here})
    assert me.status_code == 200 and me.json["role"] == "admin"
    clock.advance(60)
    # The documented request (RFC 6749 §6, form-encoded); the reuse below sends JSON, which works too.
    second = client.post("/auth/refresh", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
                         headers=here).json  # fmt: skip
    clock.advance(60)  # past the 5 s grace: the stale refresh token is reuse
    reuse = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}, headers=here)
    assert reuse.status_code == 400 and reuse.json["error"] == "invalid_grant"
    assert client.get("/api/me", headers={**bearer(second["access_token"]), **here}).status_code == 401


def test_logout_and_logout_all(client: t.Any, clock: Clock) -> None:
    here = {"X-Forwarded-For": "192.0.2.10"}
    phone, laptop = login(client).json, login(client).json
    assert client.post("/auth/logout", headers={**bearer(phone["access_token"]), **here}).status_code == 200
    assert client.get("/api/me", headers={**bearer(phone["access_token"]), **here}).status_code == 401
    assert client.get("/api/me", headers={**bearer(laptop["access_token"]), **here}).status_code == 200
    assert client.post("/auth/logout-all", headers={**bearer(laptop["access_token"]), **here}).status_code == 200
    assert client.get("/api/me", headers={**bearer(laptop["access_token"]), **here}).status_code == 401
    fresh = login(client).json
    assert client.get("/api/me", headers={**bearer(fresh["access_token"]), **here}).status_code == 200


def test_reports_limit(client: t.Any) -> None:
    token = login(client).json["access_token"]
    here = {"X-Forwarded-For": "192.0.2.10"}
    codes = [client.post("/api/reports", headers={**bearer(token), **here}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


def test_stolen_token_used_from_abroad(client: t.Any, clock: Clock) -> None:
    token = login(client).json["access_token"]
    clock.advance(120)
    r = client.get("/api/me", headers={**bearer(token), "X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 401 and "revoked" in r.json["error_description"]  # impossible travel: revoke_family


def test_a_view_returns_the_claims(client: t.Any) -> None:
    pair = login(client).json
    r = client.get("/api/claims", headers=bearer(pair["access_token"]))
    assert r.status_code == 200
    claims = r.json
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert {"sub", "jti", "exp", "iat", "sid"} <= set(claims)
