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


@pytest.mark.redis
def test_two_example_servers_share_one_redis(tmp_path: Path, clock: Clock, redis_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("JWT_SHIELD_STORE_URI", redis_url)
    monkeypatch.setenv("JWT_SHIELD_SECRET_KEY", "example-two-servers-" + "s" * 40)
    one = create_app({"TESTING": True}, instance_path=str(tmp_path / "one")).test_client()
    two = create_app({"TESTING": True}, instance_path=str(tmp_path / "two")).test_client()
    here = {"X-Forwarded-For": "192.0.2.10"}
    pair = login(one).json
    assert two.get("/api/me", headers={**bearer(pair["access_token"]), **here}).status_code == 200
    assert one.post("/auth/logout", headers={**bearer(pair["access_token"]), **here}).status_code == 200
    assert two.get("/api/me", headers={**bearer(pair["access_token"]), **here}).status_code == 401
    assert not (tmp_path / "one" / "shield.db").exists()


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


# -- the DPoP client, against the example app on a real HTTP server -------------------------------


@pytest.fixture
def served(tmp_path: Path) -> t.Iterator[str]:
    """The example app on a werkzeug server on 127.0.0.1 (a free port), stopped afterwards."""
    import threading

    from werkzeug.serving import make_server

    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def test_dpop_client_session(served: str) -> None:
    from example_app.dpop_client import DPoPClient

    client = DPoPClient(served, headers={"X-Forwarded-For": "192.0.2.10"})
    login = client.login("alice", "wonderland")
    assert login.status == 200 and login.body["token_type"] == "DPoP"
    me = client.get("/api/me")
    assert me.status == 200 and me.body["sub"] == "alice"
    assert client.refresh().status == 200
    claims = client.get("/api/claims").body
    assert claims["cnf"] == {"jkt": client.key.thumbprint}


def test_dpop_stolen_token_fails_even_from_the_same_country(served: str) -> None:
    # The thief sits on the victim's network (same address, same country): no GeoIP
    # detector has anything to notice. The token is still useless without the key.
    from example_app.dpop_client import DPoPClient
    from example_app.dpop_client import call
    from example_app.dpop_client import thief_attempts

    same_place = {"X-Forwarded-For": "192.0.2.10"}
    victim = DPoPClient(served, headers=same_place)
    assert victim.login("alice", "wonderland").status == 200
    assert victim.access_token is not None
    me_url = served + "/api/me"
    captured = victim.key.proof("GET", me_url, victim.access_token)
    owner = call("GET", me_url, headers={**same_place, "Authorization": f"DPoP {victim.access_token}",
                                         "DPoP": captured})  # fmt: skip
    assert owner.status == 200
    attempts = thief_attempts(served, victim.access_token, captured, headers=same_place)
    assert {name: answer.status for name, answer in attempts.items()} == {
        "as Bearer": 401, "with the thief's own key": 401, "with a captured proof": 401,
    }
    assert attempts["with the thief's own key"].body["error"] == "invalid_dpop_proof"
    assert attempts["with a captured proof"].body["error"] == "invalid_dpop_proof"
    assert victim.get("/api/me").status == 200  # the owner is untouched
    # The stolen refresh token is useless too: refused before anything rotates.
    thief = DPoPClient(served, headers=same_place)
    thief.refresh_token = victim.refresh_token
    refused = thief.refresh()
    assert refused.status == 400 and refused.body["error"] == "invalid_dpop_proof"
    assert victim.refresh().status == 200


def test_dpop_client_script(served: str, capsys: pytest.CaptureFixture[str]) -> None:
    from example_app.dpop_client import main

    assert main(["dpop_client", served]) == 0
    out = capsys.readouterr().out
    assert "login: 200 token_type=DPoP" in out
    assert "thief, as Bearer: 401 invalid_token" in out
    assert "thief, with the thief's own key: 401 invalid_dpop_proof" in out
    assert "thief, with a captured proof: 401 invalid_dpop_proof" in out
