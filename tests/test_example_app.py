"""The example app behind `make run` works as the README and docs/example.rst say."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from example_app.app import _demo_signing_key
from example_app.app import create_app

from .conftest import Clock
from .conftest import bearer
from .conftest import json_of


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> t.Any:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    return app.test_client()


def login(client: FlaskClient, ip: str = "192.0.2.10", password: str = "wonderland") -> t.Any:
    return client.post("/auth/login", json={"username": "alice", "password": password}, headers={"X-Forwarded-For": ip})


def test_secret_and_store_live_in_the_instance_folder(client: FlaskClient, tmp_path: Path) -> None:
    assert login(client).status_code == 200
    key = (tmp_path / "instance" / "jwt-signing-key.pem").read_text()
    assert key.startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "instance" / "jwt-signing-key.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "instance" / "shield.db").exists()


@pytest.mark.redis
def test_two_example_servers_share_one_redis(
    tmp_path: Path, clock: Clock, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SHIELD_STORE_URI", redis_url)
    monkeypatch.setenv("JWT_SHIELD_PRIVATE_KEY", _demo_signing_key(tmp_path / "shared"))
    one = create_app({"TESTING": True}, instance_path=str(tmp_path / "one")).test_client()
    two = create_app({"TESTING": True}, instance_path=str(tmp_path / "two")).test_client()
    here = {"X-Forwarded-For": "192.0.2.10"}
    pair = json_of(login(one))
    assert two.get("/api/me", headers={**bearer(pair["access_token"]), **here}).status_code == 200
    assert one.post("/auth/logout", headers={**bearer(pair["access_token"]), **here}).status_code == 200
    assert two.get("/api/me", headers={**bearer(pair["access_token"]), **here}).status_code == 401
    assert not (tmp_path / "one" / "shield.db").exists()


def test_wrong_password(client: FlaskClient) -> None:
    r = login(client, password="nope")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"


def test_session_walkthrough(client: FlaskClient, clock: Clock) -> None:
    pair = json_of(login(client))
    here = {"X-Forwarded-For": "192.0.2.10"}
    me = client.get("/api/me", headers={**bearer(pair["access_token"]), **here})
    assert me.status_code == 200 and json_of(me)["role"] == "admin"
    clock.advance(60)
    # The documented request (RFC 6749 §6, form-encoded); the reuse below sends JSON, which works too.
    grant = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    second = json_of(client.post("/auth/refresh", data=grant, headers=here))
    clock.advance(60)  # past the 5 s grace: the stale refresh token is reuse
    reuse = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}, headers=here)
    assert reuse.status_code == 400 and json_of(reuse)["error"] == "invalid_grant"
    assert client.get("/api/me", headers={**bearer(second["access_token"]), **here}).status_code == 401


def test_logout_and_logout_all(client: FlaskClient, clock: Clock) -> None:
    here = {"X-Forwarded-For": "192.0.2.10"}
    phone, laptop = login(client).json, login(client).json
    assert client.post("/auth/logout", headers={**bearer(phone["access_token"]), **here}).status_code == 200
    assert client.get("/api/me", headers={**bearer(phone["access_token"]), **here}).status_code == 401
    assert client.get("/api/me", headers={**bearer(laptop["access_token"]), **here}).status_code == 200
    assert client.post("/auth/logout-all", headers={**bearer(laptop["access_token"]), **here}).status_code == 200
    assert client.get("/api/me", headers={**bearer(laptop["access_token"]), **here}).status_code == 401
    fresh = json_of(login(client))
    assert client.get("/api/me", headers={**bearer(fresh["access_token"]), **here}).status_code == 200


def test_reports_limit(client: FlaskClient) -> None:
    token = json_of(login(client))["access_token"]
    here = {"X-Forwarded-For": "192.0.2.10"}
    codes = [client.post("/api/reports", headers={**bearer(token), **here}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


def test_stolen_token_used_from_abroad(client: FlaskClient, clock: Clock) -> None:
    token = json_of(login(client))["access_token"]
    clock.advance(120)
    r = client.get("/api/me", headers={**bearer(token), "X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 401 and "revoked" in json_of(r)["error_description"]  # impossible travel: revoke_family


def test_a_token_used_from_another_country_asks_for_the_password_again(client: FlaskClient, clock: Clock) -> None:
    berlin, tokyo = {"X-Forwarded-For": "192.0.2.10"}, {"X-Forwarded-For": "203.0.113.7"}
    pair = json_of(login(client))
    clock.advance(600)  # the login is older than the example's 5 s
    # alice flies to Tokyo: an admin clearing her places stands in for the hours of the flight
    r = client.post(
        "/api/admin/forget-places", json={"username": "alice"}, headers={**bearer(pair["access_token"]), **berlin}
    )
    assert r.status_code == 200
    r = client.get("/api/me", headers={**bearer(pair["access_token"]), **tokyo})
    assert r.status_code == 401 and json_of(r)["error"] == "insufficient_user_authentication"
    assert r.headers["WWW-Authenticate"].endswith('max_age="5"')
    wrong = client.post("/auth/step-up", json={"username": "alice", "password": "nope"}, headers=tokyo)
    assert wrong.status_code == 400 and json_of(wrong)["error"] == "invalid_grant"
    fresh = client.post("/auth/step-up", json={"username": "alice", "password": "wonderland"}, headers=tokyo)
    assert fresh.status_code == 200
    claims = client.get("/api/claims", headers={**bearer(json_of(fresh)["access_token"]), **tokyo})
    assert claims.status_code == 200
    assert json_of(claims)["auth_time"] == int(clock.now) and json_of(claims)["ctry"] == "JP"


def test_a_view_returns_the_claims(client: FlaskClient) -> None:
    pair = json_of(login(client))
    r = client.get("/api/claims", headers=bearer(pair["access_token"]))
    assert r.status_code == 200
    claims = json_of(r)
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert {"sub", "jti", "exp", "iat", "sid"} <= set(claims)


def test_users_live_in_sqlite_with_hashed_passwords(client: FlaskClient, tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "instance" / "users.db") as db:
        rows = dict(db.execute("SELECT username, password FROM users").fetchall())
    assert set(rows) == {"alice", "bob"}
    assert all(h.startswith(("scrypt:", "pbkdf2:")) and "wonderland" not in h for h in rows.values())


def test_change_password_logs_out_everywhere_else(client: FlaskClient, clock: Clock) -> None:
    here = {"X-Forwarded-For": "192.0.2.10"}
    phone, laptop = login(client).json, login(client).json
    r = client.post(
        "/auth/change-password",
        json={"current_password": "wonderland", "new_password": "looking-glass"},
        headers={**bearer(laptop["access_token"]), **here},
    )
    assert r.status_code == 200 and json_of(r)["password_changed"] is True
    for old in (phone, laptop):
        assert client.get("/api/me", headers={**bearer(old["access_token"]), **here}).status_code == 401
        refreshed = client.post("/auth/refresh", json={"refresh_token": old["refresh_token"]}, headers=here)
        assert refreshed.status_code == 400
    assert client.get("/api/me", headers={**bearer(json_of(r)["access_token"]), **here}).status_code == 200
    assert login(client).status_code == 400  # the old password is gone
    assert login(client, password="looking-glass").status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"current_password": "nope", "new_password": "looking-glass"}, 400),
        ({"current_password": "wonderland", "new_password": "short"}, 400),
        ({"current_password": "wonderland"}, 400),
    ],
)
def test_change_password_refusals(client: FlaskClient, body: dict[str, str], status: int) -> None:
    token = json_of(login(client))["access_token"]
    r = client.post("/auth/change-password", json=body, headers=bearer(token))
    assert r.status_code == status and r.mimetype == "application/json"
    assert client.get("/api/me", headers=bearer(token)).status_code == 200  # nothing was revoked


def test_notes(client: FlaskClient) -> None:
    alice = json_of(login(client))["access_token"]
    bob = json_of(client.post("/auth/login", json={"username": "bob", "password": "builder"}))["access_token"]
    assert client.post("/api/notes", json={"text": "buy milk"}, headers=bearer(alice)).status_code == 201
    assert [n["text"] for n in json_of(client.get("/api/notes", headers=bearer(alice)))["notes"]] == ["buy milk"]
    assert json_of(client.get("/api/notes", headers=bearer(bob)))["notes"] == []
    assert client.post("/api/notes", json={"text": "x" * 501}, headers=bearer(alice)).status_code == 400
    assert client.get("/api/notes").status_code == 401


def test_start_page_says_how_to_log_in(client: FlaskClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for needle in ("alice", "wonderland", "/auth/login", "/admin/login", "X-Forwarded-For", "example_app.attack_demo"):
        assert needle in html


def _admin_login(client: FlaskClient, username: str, password: str) -> t.Any:
    import re

    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    return client.post("/admin/login", data={"csrf_token": token.group(1), "username": username, "password": password})


def test_dashboard_is_behind_the_admin_login(client: FlaskClient) -> None:
    r = client.get("/shield/")
    assert r.status_code == 403 and 'href="/admin/login?next=%2Fshield%2F"' in r.get_data(as_text=True)
    assert _admin_login(client, "bob", "builder").status_code == 403  # not an admin
    assert client.get("/shield/").status_code == 403
    assert _admin_login(client, "alice", "nope").status_code == 400
    r = _admin_login(client, "alice", "wonderland")
    assert r.status_code == 303 and r.headers["Location"] == "/shield/"
    assert client.get("/shield/").status_code == 200


def test_admin_login_needs_its_csrf_token(client: FlaskClient) -> None:
    client.get("/admin/login")
    r = client.post("/admin/login", data={"username": "alice", "password": "wonderland", "csrf_token": "x"})
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)
    assert client.get("/shield/").status_code == 403


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
    owner = call(
        "GET", me_url, headers={**same_place, "Authorization": f"DPoP {victim.access_token}", "DPoP": captured}
    )
    assert owner.status == 200
    attempts = thief_attempts(served, victim.access_token, captured, headers=same_place)
    assert {name: answer.status for name, answer in attempts.items()} == {
        "as Bearer": 401,
        "with the thief's own key": 401,
        "with a captured proof": 401,
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


def test_dpop_client_help(capsys: pytest.CaptureFixture[str]) -> None:
    from example_app.dpop_client import main

    with pytest.raises(SystemExit) as exited:
        main(["dpop_client", "--help"])
    assert exited.value.code == 0
    assert "usage: python -m example_app.dpop_client" in capsys.readouterr().out


def test_dpop_client_without_a_server_says_so_in_one_line() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "example_app.dpop_client", url], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the example app at {url} (") and "make run" in line


# -- the settings: the issuer follows the port, and the app passes its own check-config --------


def _issuer_of(app: t.Any) -> str:
    import jwt

    pair = (
        app.test_client()
        .post(
            "/auth/login",
            json={"username": "alice", "password": "wonderland"},
            headers={"X-Forwarded-For": "192.0.2.10"},
        )
        .json
    )
    return str(jwt.decode(pair["access_token"], options={"verify_signature": False})["iss"])


def test_issuer_follows_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_SHIELD_ISSUER", raising=False)
    monkeypatch.setenv("PORT", "8123")  # PORT=8123 make run
    assert _issuer_of(create_app({"TESTING": True}, instance_path=str(tmp_path / "a"))) == "http://127.0.0.1:8123"
    monkeypatch.delenv("PORT")
    assert _issuer_of(create_app({"TESTING": True}, instance_path=str(tmp_path / "b"))) == "http://127.0.0.1:5000"
    monkeypatch.setenv("JWT_SHIELD_ISSUER", "https://api.example.com")
    assert _issuer_of(create_app({"TESTING": True}, instance_path=str(tmp_path / "c"))) == "https://api.example.com"


def test_check_config_has_nothing_to_say_about_the_example_keys(tmp_path: Path) -> None:
    from flask_jwt_shield.cli import cli

    app = create_app({}, instance_path=str(tmp_path / "instance"))
    out = app.test_cli_runner().invoke(cli, ["check-config"]).output
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    # One warning stays, on purpose: `make run` is one process, so the example counts its
    # rate limits in memory, and check-config cannot know how many processes will serve it.
    assert [w for w in warnings if "counts in each process" not in w] == []
    assert len(warnings) <= 1
    assert "HS keys" not in out


# -- the start page's tour and the attack demo on a fresh instance ---------------------------------


def test_forget_places_is_for_admins(client: t.Any) -> None:
    berlin = {"X-Forwarded-For": "192.0.2.10"}
    alice = login(client).json["access_token"]
    bob = client.post("/auth/login", json={"username": "bob", "password": "builder"}, headers=berlin)
    r = client.post(
        "/api/admin/forget-places", json={"username": "alice"}, headers={**bearer(bob.json["access_token"]), **berlin}
    )
    assert r.status_code == 403
    r = client.post("/api/admin/forget-places", json={"username": "nobody"}, headers={**bearer(alice), **berlin})
    assert r.status_code == 400
    # alice was last in Berlin: a login from Tokyo moments later is impossible travel ...
    assert login(client, "203.0.113.7").status_code == 403
    r = client.post("/api/admin/forget-places", json={"username": "alice"}, headers={**bearer(alice), **berlin})
    assert r.status_code == 200 and r.json == {"forgotten": "alice"}
    # ... and after an admin cleared her places (a false alarm), it is a first login again.
    assert login(client, "203.0.113.7").status_code == 200


def _tour_commands(html: str) -> list[str]:
    """The start page's shell commands, one string each (continuation lines joined)."""
    import html as html_lib
    import re

    blocks = [html_lib.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", html, re.DOTALL)]
    return [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("curl")]


def test_the_tour_does_what_it_says_on_a_fresh_instance(client: t.Any) -> None:
    import re
    import shlex

    commands = _tour_commands(client.get("/").get_data(as_text=True))
    login_cmd, me_cmd, thief_cmd = commands  # log in, call the API, be a thief in Tokyo

    def forwarded(command: str) -> dict[str, str]:
        found = re.findall(r"X-Forwarded-For: ([0-9.]+)", command)
        return {"X-Forwarded-For": found[0]} if found else {}

    data = shlex.split(login_cmd)[shlex.split(login_cmd).index("-d") + 1]
    import json

    pair = client.post("/auth/login", json=json.loads(data), headers=forwarded(login_cmd)).json
    token = bearer(pair["access_token"])
    assert client.get("/api/me", headers={**token, **forwarded(me_cmd)}).status_code == 200
    assert forwarded(thief_cmd) == {"X-Forwarded-For": "203.0.113.7"}
    thief = client.get("/api/me", headers={**token, **forwarded(thief_cmd)})
    assert thief.status_code == 401  # as the page promises: refused, the session revoked
    assert client.get("/api/me", headers={**token, **forwarded(me_cmd)}).status_code == 401
    # Tokyo did not become alice's last place: she logs in again from Berlin.
    assert login(client).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        '{"username": "\\ud800", "password": "wonderland"}',
        '{"username": "alice", "password": "\\udfff"}',
    ],
)
def test_a_lone_surrogate_gets_400_not_500(client: t.Any, body: str) -> None:
    """Newcomer's list, bug 4: JSON may escape a lone surrogate; it is no text to store."""
    r = client.post("/auth/login", data=body, content_type="application/json")
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"


def test_a_note_with_a_lone_surrogate_gets_400(client: t.Any) -> None:
    token = login(client).json["access_token"]
    r = client.post(
        "/api/notes",
        data='{"text": "hi \\ud800"}',
        content_type="application/json",
        headers={**bearer(token), "X-Forwarded-For": "192.0.2.10"},
    )
    assert r.status_code == 400
