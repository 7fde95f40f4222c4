"""The `flask jwt-shield` command group."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask

from flask_jwt_shield import JWTShield
from flask_jwt_shield.cli import parse_since

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer


def run(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["jwt-shield", *args])


def test_revoke_options(app: Flask, shield: JWTShield, client: t.Any) -> None:
    with app.app_context():
        pair = shield.issue_tokens("alice")
        other = shield.create_access_token("bob")
    jti = client.get("/api/me", headers=bearer(other)).json["jti"]
    assert run(app, "revoke", "--jti", jti).output.strip() == "revoked"
    assert client.get("/api/me", headers=bearer(other)).status_code == 401
    assert run(app, "revoke", "--family", pair.sid).exit_code == 0
    assert client.get("/api/me", headers=bearer(pair.access_token)).status_code == 401
    assert run(app, "revoke", "--subject", "carol").exit_code == 0
    result = run(app, "revoke")
    assert result.exit_code != 0 and "exactly one" in result.output


def test_revoke_signing_key_refused(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_KEYS": [{"kid": "k1", "key": "x" * 40}]})
    result = run(app, "revoke", "--kid", "k1")
    assert result.exit_code != 0 and "still signs" in result.output


def test_events_json_and_trace(app: Flask, shield: JWTShield, client: t.Any, clock: Clock) -> None:
    with app.app_context():
        pair = shield.issue_tokens("alice")
        clock.advance(10)
        shield.refresh(pair.refresh_token)
        clock.advance(10)
        shield.revoke_subject("alice")
    events = json.loads(run(app, "events", "--json", "--subject", "alice").output)
    assert [e["kind"] for e in events] == ["subject-revoked", "token-refreshed", "session-started"]
    assert json.loads(run(app, "events", "--json", "--kind", "session-started").output)[0]["sid"] == pair.sid
    trace = run(app, "trace", "alice").output.splitlines()
    assert [line.split()[1] for line in trace] == ["session-started", "token-refreshed", "subject-revoked"]
    assert "subject-revoked" in run(app, "events", "--since", "1h").output
    assert run(app, "events", "--since", "yesterday").exit_code != 0


def test_parse_since(clock: Clock) -> None:
    assert parse_since("90m") == clock.now - 5400
    assert parse_since("7d") == clock.now - 7 * 86400
    assert parse_since("2026-01-01T00:00:00+00:00") == 1767225600.0
    assert parse_since("2026-01-01T00:00:00") == 1767225600.0  # naive means UTC


@pytest.mark.parametrize("alg", ["ES256", "HS256", "EdDSA"])
def test_keys_generate_prints_a_ring_entry(alg: str, make_app: AppFactory) -> None:
    app, _ = make_app()
    entry = json.loads(run(app, "keys", "generate", "--alg", alg).output)
    assert entry["alg"] == alg and entry["kid"] and entry["key"]
    app2, shield2 = make_app({"JWT_SHIELD_KEYS": [entry]})  # pastes into JWT_SHIELD_KEYS as is
    with app2.app_context():
        token = shield2.create_access_token("alice")
    assert app2.test_client().get("/api/me", headers=bearer(token)).status_code == 200
    assert run(app2, "keys", "list").output.split() == [entry["kid"], alg, "signs"]


def test_check_config_and_purge(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app()
    assert run(app, "check-config").output.strip() == "configuration OK"
    with app.app_context():
        shield.revoke_token("some-jti")
    clock.advance(10**7)
    assert run(app, "purge").output.strip() == "purged 1 expired entries"
    app.config["JWT_SHIELD_ALGORITHM"] = "none"
    result = run(app, "check-config")
    assert result.exit_code != 0 and "'none'" in result.output
