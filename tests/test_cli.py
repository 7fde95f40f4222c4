"""The `flask jwt-shield` command group."""

from __future__ import annotations

import json
import os
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jwt_shield import JWTShield
from flask_jwt_shield.cli import parse_since
from flask_jwt_shield.state import current_state

from .conftest import SECRET
from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of
from .mmdb_util import write_city_db
from .webhook_util import closed_port_url
from .webhook_util import receiver


def run(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["jwt-shield", *args])


@pytest.fixture
def shared(make_app: AppFactory, tmp_path: Path) -> tuple[Flask, JWTShield]:
    """An app on a SQLite store: what a CLI process and a running server can share."""
    return make_app({"JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shared.db'}"})


def test_revoke_options(shared: tuple[Flask, JWTShield]) -> None:
    app, shield = shared
    client = app.test_client()
    with app.app_context():
        pair = shield.issue_tokens("alice")
        other = shield.create_access_token("bob")
    jti = json_of(client.get("/api/me", headers=bearer(other)))["jti"]
    assert run(app, "revoke", "--jti", jti).output.strip() == "revoked"
    assert client.get("/api/me", headers=bearer(other)).status_code == 401
    assert run(app, "revoke", "--family", pair.sid).exit_code == 0
    assert client.get("/api/me", headers=bearer(pair.access_token)).status_code == 401
    assert run(app, "revoke", "--subject", "carol").exit_code == 0
    result = run(app, "revoke")
    assert result.exit_code != 0 and "exactly one" in result.output
    with app.app_context():
        second = shield.issue_tokens("alice")
    assert run(app, "revoke", "--session", second.sid).output.strip() == "revoked"  # the same as --family
    assert client.get("/api/me", headers=bearer(second.access_token)).status_code == 401
    assert "--session" in run(app, "revoke", "--help").output


def test_revoke_an_unknown_key_fails_with_the_reason(make_app: AppFactory, tmp_path: Path) -> None:
    """Issue 19 item 5: ``revoke --kid nokid`` printed "revoked" and exited 0."""
    app, shield = make_app(
        {
            "JWT_SHIELD_KEYS": [{"kid": "k1", "key": "x" * 40}, {"kid": "k0", "key": "y" * 40}],
            "JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shield.db'}",
        }
    )
    result = run(app, "revoke", "--kid", "nokid")
    assert result.exit_code == 1
    assert "Nothing revoked: there is no key 'nokid' in the key ring. Known keys: k1, k0." in result.output
    with app.app_context():
        assert shield.events(kind="key-revoked") == []
    assert run(app, "revoke", "--kid", "k0").output.strip() == "revoked"  # a verify-only key of the ring


@pytest.mark.parametrize(
    "args",
    [
        ["revoke", "--subject", "alice"],
        ["revoke", "--jti", "j1"],
        ["revoke", "--session", "s1"],
        ["revoke", "--kid", "k0"],
        ["purge"],
    ],
)
def test_write_commands_refuse_a_memory_store(make_app: AppFactory, args: list[str]) -> None:
    """Issue 19 item 5: with ``memory://`` the CLI said "revoked" though the running server,
    a process of its own, never saw it."""
    app, shield = make_app({"JWT_SHIELD_KEYS": [{"kid": "k1", "key": "x" * 40}, {"kid": "k0", "key": "y" * 40}]})
    result = run(app, *args)
    assert result.exit_code == 1, result.output
    assert "a memory store lives inside the running server process" in result.output
    assert "sqlite:///" in result.output and "redis://" in result.output
    assert not result.output.startswith(("revoked", "purged"))
    with app.app_context():
        assert shield.events() == []


def test_revoke_signing_key_refused(make_app: AppFactory, tmp_path: Path) -> None:
    app, _ = make_app(
        {
            "JWT_SHIELD_KEYS": [{"kid": "k1", "key": "x" * 40}],
            "JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shield.db'}",
        }
    )
    result = run(app, "revoke", "--kid", "k1")
    assert result.exit_code != 0 and "still signs" in result.output


def test_events_json_and_trace(app: Flask, shield: JWTShield, client: FlaskClient, clock: Clock) -> None:
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


def test_events_unknown_kind_is_an_error_that_lists_the_kinds(app: Flask) -> None:
    """Issue 19 item 5: ``events --kind nonsense`` printed nothing and exited 0."""
    result = run(app, "events", "--kind", "nonsense")
    assert result.exit_code == 2
    assert "'nonsense' is not one of" in result.output
    assert "'session-started'" in result.output and "'impossible-travel'" in result.output


def test_an_empty_answer_says_so(shared: tuple[Flask, JWTShield]) -> None:
    """Issue 19 item 5: ``trace nobody`` and ``events`` with no match printed nothing."""
    app, shield = shared
    with app.app_context():
        shield.issue_tokens("alice")
    trace = run(app, "trace", "nobody")
    assert trace.exit_code == 0
    assert trace.output.strip() == "no events for 'nobody' (no subject, token or session by that name)"
    events = run(app, "events", "--subject", "nobody", "--kind", "refresh-reused")
    assert events.exit_code == 0
    assert events.output.strip() == "no events for subject 'nobody', kind 'refresh-reused'"
    assert json.loads(run(app, "events", "--json", "--subject", "nobody").output) == []  # still JSON


def test_an_empty_answer_from_a_memory_store_says_why(app: Flask) -> None:
    out = run(app, "trace", "alice").output
    assert out.startswith("no events for 'alice'") and "the store is memory://" in out


def test_event_lines_leave_out_empty_fields(app: Flask, shield: JWTShield) -> None:
    """Issue 19 item 5: lines showed ``country=None action=None``."""
    with app.app_context():
        pair = shield.issue_tokens("alice")
        shield.revoke_subject("alice")
    for command in (["events"], ["trace", "alice"]):
        out = run(app, *command).output
        assert "None" not in out and "=\n" not in out and "= " not in out, out
        started = next(line for line in out.splitlines() if "session-started" in line)
        assert f"sid={pair.sid}" in started and "country=" not in started and "action=" not in started
        assert "action=revoke_subject" in next(line for line in out.splitlines() if "subject-revoked" in line)


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


def test_check_config_and_purge(make_app: AppFactory, clock: Clock, tmp_path: Path) -> None:
    app, shield = make_app({"JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shield.db'}"})
    assert run(app, "check-config").output.strip().endswith("configuration OK (2 warnings)")
    with app.app_context():
        shield.revoke_token("some-jti")
    clock.advance(10**7)
    assert run(app, "purge").output.strip() == "purged 1 expired entries"
    app.config["JWT_SHIELD_ALGORITHM"] = "none"
    result = run(app, "check-config")
    assert result.exit_code != 0 and "'none'" in result.output


# -- sessions ---------------------------------------------------------------------------------

PLACES: dict[str, dict[str, t.Any]] = {
    "192.0.2.0/25": {"country": "DE", "city": "Berlin", "lat": 52.52, "lon": 13.405, "accuracy": 20},
    "203.0.113.0/24": {"country": "JP", "city": "Tokyo", "lat": 35.6762, "lon": 139.6503, "accuracy": 50},
    "198.51.100.0/24": {"country": "BR"},  # a Country-level record: no city, no coordinates
}
BERLIN, TOKYO = "192.0.2.10", "203.0.113.10"


@pytest.fixture
def city_db(tmp_path: Path, clock: Clock) -> str:
    return str(write_city_db(tmp_path / "city.mmdb", PLACES))  # built "now" by the test clock


def test_sessions_lists_sid_times_and_last_place(make_app: AppFactory, city_db: str, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_GEOIP_DATABASE": city_db})
    client = app.test_client()
    first = json_of(client.post("/login?sub=alice", environ_base={"REMOTE_ADDR": BERLIN}))
    clock.advance(3600 * 24)
    second = json_of(client.post("/login?sub=alice", environ_base={"REMOTE_ADDR": TOKYO}))
    clock.advance(60)
    client.post("/refresh", json={"refresh_token": second["refresh_token"]}, environ_base={"REMOTE_ADDR": TOKYO})
    with app.app_context():
        sids = [s.sid for s in shield.sessions("alice")]
    lines = run(app, "sessions", "alice").output.splitlines()
    assert lines[0].split() == ["sid", "created", "last", "used", "last", "IP", "last", "country"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == sids and len(sids) == 2  # oldest first
    assert rows[0][1:] == ["2027-01-15T08:00:00+00:00", "2027-01-15T08:00:00+00:00", BERLIN, "DE"]
    assert rows[1][1:] == ["2027-01-16T08:00:00+00:00", "2027-01-16T08:01:00+00:00", TOKYO, "JP"]
    data = json.loads(run(app, "sessions", "alice", "--json").output)
    assert [d["sid"] for d in data] == sids
    assert set(data[0]) == {"sid", "created_at", "last_used_at", "expires_at", "last_ip", "last_country"}
    assert first["refresh_token"] not in run(app, "sessions", "alice").output
    assert run(app, "sessions", "nobody").output.strip() == "no live sessions for 'nobody'"
    assert json.loads(run(app, "sessions", "nobody", "--json").output) == []


def test_sessions_with_the_store_unreachable(make_app: AppFactory) -> None:
    port = closed_port_url().split(":")[2].split("/")[0]
    app, _ = make_app({"JWT_SHIELD_STORE_URI": f"redis://127.0.0.1:{port}/0", "JWT_SHIELD_RATE_LIMIT": None})
    result = run(app, "sessions", "alice")
    assert result.exit_code == 1 and "The store cannot be reached" in result.output
    assert "Traceback" not in result.output


# -- geo --------------------------------------------------------------------------------------


def test_geo_prints_the_place_and_the_database(make_app: AppFactory, city_db: str) -> None:
    app, _ = make_app({"JWT_SHIELD_GEOIP_DATABASE": city_db})
    result = run(app, "geo", BERLIN)
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines == {
        "ip": BERLIN,
        "country": "DE",
        "city": "Berlin",
        "coordinates": "52.52, 13.405",
        "accuracy": "20 km",
        "database": f"GeoLite2-City, built 2027-01-15T08:00:00+00:00 ({city_db})",
    }
    data = json.loads(run(app, "geo", TOKYO, "--json").output)
    assert data == {
        "ip": TOKYO,
        "country": "JP",
        "city": "Tokyo",
        "latitude": 35.6762,
        "longitude": 139.6503,
        "accuracy_km": 50.0,
        "database": {"path": city_db, "type": "GeoLite2-City", "built_at": "2027-01-15T08:00:00+00:00"},
    }
    country_only = run(app, "geo", "198.51.100.7").output
    assert "country      BR" in country_only and "coordinates  -" in country_only
    assert "IPv4-mapped" not in run(app, "geo", f"::ffff:{BERLIN}").output  # looked up as the IPv4 address
    assert "country      DE" in run(app, "geo", f"::ffff:{BERLIN}").output


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("10.0.0.7", "not a globally routable address"),
        ("127.0.0.1", "not a globally routable address"),
        ("8.8.8.8", "the database has no record for it"),
    ],
)
def test_geo_unknown_places(ip: str, why: str, make_app: AppFactory, city_db: str) -> None:
    app, _ = make_app({"JWT_SHIELD_GEOIP_DATABASE": city_db})
    result = run(app, "geo", ip)
    assert result.exit_code == 0 and f"location     unknown: {why}" in result.output
    assert json.loads(run(app, "geo", ip, "--json").output)["country"] is None


def test_geo_errors(make_app: AppFactory, city_db: str, tmp_path: Path) -> None:
    app, _ = make_app({"JWT_SHIELD_GEOIP_DATABASE": city_db})
    for bad in ("not-an-ip", "999.1.2.3", "192.0.2.10/24", ""):
        result = run(app, "geo", bad)
        assert result.exit_code == 2 and "is not an IPv4 or IPv6 address" in result.output, bad
        assert "Traceback" not in result.output
    os.remove(city_db)  # the file went away after the app started
    result = run(app, "geo", BERLIN)
    assert result.exit_code == 1 and "JWT_SHIELD_GEOIP_DATABASE" in result.output and city_db in result.output
    no_geo, _ = make_app()
    result = run(no_geo, "geo", BERLIN)
    assert result.exit_code == 1 and "No GeoIP database: set JWT_SHIELD_GEOIP_DATABASE" in result.output


# -- check-config -----------------------------------------------------------------------------


@pytest.fixture
def clean(tmp_path: Path, city_db: str) -> dict[str, t.Any]:
    """A configuration check-config has nothing to say about."""
    return {
        "JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shield.db'}",
        "JWT_SHIELD_RATE_LIMIT": None,
        "JWT_SHIELD_GEOIP_DATABASE": city_db,
    }


def production(make_app: AppFactory, config: dict[str, t.Any]) -> Flask:
    app, _ = make_app(config)
    app.testing = False
    return app


def test_check_config_clean_prints_every_setting_masked(make_app: AppFactory, clean: dict[str, t.Any]) -> None:
    from flask_jwt_shield import ConfigKey

    with receiver() as rec:
        alert_secret = "alert-secret-" + "a" * 30
        app = production(
            make_app,
            {**clean, "JWT_SHIELD_ALERT_WEBHOOK": rec.url + "/T0/hidden-path", "JWT_SHIELD_ALERT_SECRET": alert_secret},
        )
        result = run(app, "check-config", "--strict")
        assert result.exit_code == 0, result.output
        (ping,) = rec.received
        assert ping.json["type"] == "ping" and ping.json["event"] is None
        assert ping.headers["X-JWT-Shield-Signature"].startswith("sha256=")
    out = result.output
    assert out.splitlines()[0] == "Effective settings:" and out.splitlines()[-1] == "configuration OK"
    settings = {line.split(" = ")[0].strip() for line in out.splitlines() if " = " in line}
    assert settings == set(ConfigKey.all())  # every key, each once
    assert SECRET not in out and alert_secret not in out and "hidden-path" not in out
    assert "JWT_SHIELD_SECRET_KEY = <set, masked>" in out
    assert "JWT_SHIELD_ALERT_SECRET = <set, masked>" in out
    assert "JWT_SHIELD_ALERT_WEBHOOK = 'http://127.0.0.1:" in out
    assert "JWT_SHIELD_ACCESS_TOKEN_TTL = 900  (default)" in out
    assert "JWT_SHIELD_RATE_LIMIT = None\n" in out  # set, so not marked as the default
    assert "warning" not in out


def test_check_config_refuses_a_limit_allowing_no_request() -> None:
    # Read without init_app (the app's factory never got that far): the limit's own parser
    # refuses it here too, as a clean error naming the key rather than a traceback.
    from flask_jwt_shield.cli import cli

    app = Flask(__name__)
    app.config.update({"JWT_SHIELD_SECRET_KEY": SECRET, "JWT_SHIELD_RATE_LIMIT": "0/minute"})
    result = app.test_cli_runner().invoke(cli, ["check-config", "--offline"])
    assert result.exit_code == 1, result.output
    assert "JWT_SHIELD_RATE_LIMIT is '0/minute'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_config_masks_passwords_in_uris(make_app: AppFactory) -> None:
    app, _ = make_app(
        {
            "JWT_SHIELD_STORE_URI": "redis://:hunter2@127.0.0.1:1/0",
            "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "redis://ops:hunter3@127.0.0.1:1/1",
        }
    )
    out = run(app, "check-config").output
    assert "hunter" not in out
    assert "'redis://:***@127.0.0.1:1/0'" in out and "'redis://ops:***@127.0.0.1:1/1'" in out


SECRETS_IN_URLS = {
    "JWT_SHIELD_STORE_URI": ("redis://admin:s3cret-store@127.0.0.1:1/0?password=s3cret-query", "s3cret"),
    "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": ("redis://:s3cret-limits@127.0.0.1:1/1", "s3cret"),
}


def test_check_config_masks_every_credential(make_app: AppFactory, idp: t.Any) -> None:
    """Issue 24 finding 10: credentials in JWT_SHIELD_JWKS_URL (userinfo, ?token=) and a Redis
    ``?password=`` were printed verbatim."""
    jwks_url = idp.jwks_url.replace("http://", "http://reader:s3cret-pw@") + "?token=s3cret-token&kid=1"
    app, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": jwks_url,
            "JWT_SHIELD_ISSUER": idp.url + "/",
            "JWT_SHIELD_AUDIENCE": "https://api.example",
            **{k: v for k, (v, _) in SECRETS_IN_URLS.items()},
        }
    )
    out = run(app, "check-config", "--offline").output
    assert "s3cret" not in out, out
    host = idp.jwks_url.removeprefix("http://").split("/")[0]
    assert f"JWT_SHIELD_JWKS_URL = 'http://reader:***@{host}/" in out and "?token=***&kid=***'" in out
    assert "JWT_SHIELD_STORE_URI = 'redis://admin:***@127.0.0.1:1/0?password=***'" in out
    assert "JWT_SHIELD_RATE_LIMIT_STORAGE_URI = 'redis://:***@127.0.0.1:1/1'" in out


WARNINGS: list[tuple[str, dict[str, t.Any], str]] = [
    ("memory-store", {"JWT_SHIELD_STORE_URI": "memory://"}, "JWT_SHIELD_STORE_URI is memory://"),
    (
        "hs-audience",
        {"JWT_SHIELD_AUDIENCE": "https://billing.example", "JWT_SHIELD_ISSUER": "https://auth.example"},
        "HS keys sign tokens addressed to 'https://billing.example'",
    ),
    ("hs-audience-no-issuer", {"JWT_SHIELD_AUDIENCE": "https://billing.example"}, "not to their issuer (None)"),
    ("monitor", {"JWT_SHIELD_MONITOR_ONLY": True}, "JWT_SHIELD_MONITOR_ONLY is on"),
    ("no-geoip", {"JWT_SHIELD_GEOIP_DATABASE": None}, "no GeoIP database (JWT_SHIELD_GEOIP_DATABASE)"),
    ("memory-limits", {"JWT_SHIELD_RATE_LIMIT": "100/minute"}, "JWT_SHIELD_RATE_LIMIT ('100/minute') counts in each"),
    (
        "memory-limits-explicit",
        {"JWT_SHIELD_RATE_LIMIT": "100/minute", "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "memory://"},
        "(memory:// limiter storage)",
    ),
    ("webhook-refused", {"JWT_SHIELD_ALERT_WEBHOOK": "<closed>"}, "does not answer a ping (ConnectionRefusedError"),
]


@pytest.mark.parametrize(("extra", "expected"), [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS])
def test_check_config_warns_and_fails_only_with_strict(
    extra: dict[str, t.Any], expected: str, make_app: AppFactory, clean: dict[str, t.Any]
) -> None:
    config = {**clean, **extra}
    if config.get("JWT_SHIELD_ALERT_WEBHOOK") == "<closed>":
        config["JWT_SHIELD_ALERT_WEBHOOK"] = closed_port_url()
    app = production(make_app, config)
    result = run(app, "check-config")
    assert result.exit_code == 0
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and expected in warnings[0], result.output
    assert result.output.splitlines()[-1] == "configuration OK (1 warning)"
    strict = run(app, "check-config", "--strict")
    assert strict.exit_code == 1 and "1 warning(s), and --strict was given." in strict.output
    assert expected in strict.output and "Traceback" not in strict.output


def test_check_config_hs_with_a_published_jwks(make_app: AppFactory, clean: dict[str, t.Any]) -> None:
    app, shield = make_app(clean, defer_init=True)
    shield.init_app(app)
    app.register_blueprint(shield.jwks_blueprint())
    app.testing = False
    out = run(app, "check-config").output
    assert "warning: the app serves a JWK Set (/.well-known/jwks.json)" in out


def test_check_config_asymmetric_keys_and_an_audience_are_fine(make_app: AppFactory, clean: dict[str, t.Any]) -> None:
    from flask_jwt_shield.cli import generate_key

    config = {**clean, "JWT_SHIELD_KEYS": [generate_key("ES256")], "JWT_SHIELD_AUDIENCE": "https://billing.example"}
    app, shield = make_app(config, defer_init=True)
    shield.init_app(app)
    app.register_blueprint(shield.jwks_blueprint())
    app.testing = False
    result = run(app, "check-config", "--strict")
    assert result.exit_code == 0 and "warning" not in result.output
    assert "(ES256, signs)" in result.output and "BEGIN PRIVATE KEY" not in result.output


def test_check_config_memory_store_is_fine_under_testing(make_app: AppFactory, clean: dict[str, t.Any]) -> None:
    app, _ = make_app({**clean, "JWT_SHIELD_STORE_URI": "memory://"})  # app.testing stays True
    assert run(app, "check-config", "--strict").exit_code == 0


def test_check_config_old_and_missing_geoip_database(
    make_app: AppFactory, clean: dict[str, t.Any], city_db: str, clock: Clock
) -> None:
    app = production(make_app, clean)
    clock.advance(29 * 86400)
    assert "warning" not in run(app, "check-config").output
    clock.advance(2 * 86400)
    out = run(app, "check-config").output
    assert f"warning: the GeoIP database {city_db!r} was built 2027-01-15T08:00:00+00:00, 31 days ago" in out
    os.remove(city_db)
    result = run(app, "check-config", "--strict")
    assert result.exit_code == 1 and "warning: JWT_SHIELD_GEOIP_DATABASE: " in result.output
    assert city_db in result.output


def test_check_config_offline_sends_no_ping(make_app: AppFactory, clean: dict[str, t.Any]) -> None:
    app = production(make_app, {**clean, "JWT_SHIELD_ALERT_WEBHOOK": closed_port_url()})
    result = run(app, "check-config", "--strict", "--offline")
    assert result.exit_code == 0 and "warning" not in result.output


def test_check_config_several_warnings(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_MONITOR_ONLY": True})
    app.testing = False
    result = run(app, "check-config")
    assert result.output.splitlines()[-1] == "configuration OK (4 warnings)"


def test_check_config_without_init_app() -> None:
    from flask_jwt_shield.cli import cli

    app = Flask("bare")
    app.config["JWT_SHIELD_SECRET_KEY"] = SECRET
    app.cli.add_command(cli)  # as the flask.commands entry point does
    result = run(app, "check-config")
    assert result.exit_code == 0 and "configuration OK" in result.output
    app.config["JWT_SHIELD_ALERT_WEBHOOK"] = "http://alerts.example.com/"
    result = run(app, "check-config")
    assert result.exit_code == 1 and "must use https://" in result.output and "Traceback" not in result.output
    assert run(app, "sessions", "alice").exit_code == 1
    assert "not initialised" in run(app, "sessions", "alice").output


# -- bad options: click's errors, never a traceback --------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["geo"], "Missing argument 'IP'"),
        (["sessions"], "Missing argument 'SUBJECT'"),
        (["trace"], "Missing argument 'WHO'"),
        (["check-config", "--bogus"], "No such option '--bogus'"),
        (["check-config", "--strict=yes"], "Option '--strict' does not take a value"),
        (["sessions", "alice", "--limit", "3"], "No such option '--limit'"),
        (["events", "--limit", "many"], "'many' is not a valid integer"),
        (["events", "--since", "last tuesday"], "neither a duration"),
        (["keys", "generate", "--alg", "none"], "'none' is not one of"),
        (["geo", "1.2.3.4", "5.6.7.8"], "Got unexpected extra argument"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_bad_options_are_click_errors(args: list[str], message: str, app: Flask) -> None:
    result = run(app, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Error:" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_forget_places(shared: tuple[Flask, JWTShield]) -> None:
    """Newcomer's list, bug 3: operators clear a subject's geo history from the CLI too."""
    app, _ = shared
    with app.app_context():
        current_state().store.put_profile("alice", {"countries": ["JP"]})
    result = run(app, "forget-places", "alice")
    assert result.exit_code == 0 and result.output.strip() == "forgot the places of alice"
    with app.app_context():
        assert current_state().store.get_profile("alice") == {}


def test_check_config_lists_flask_jwt_extended_keys_and_exemption_typos(make_app: AppFactory, tmp_path: Path) -> None:
    """Newcomer's list, item 12: a migrating user's JWT_ACCESS_TOKEN_EXPIRES, and a typo in
    JWT_SHIELD_EXEMPT_ENDPOINTS, are reported by check-config with the shield's key."""
    app, _ = make_app(
        {
            "JWT_ACCESS_TOKEN_EXPIRES": 600,
            "JWT_SHIELD_EXEMPT_ENDPOINTS": ["pubilc"],
            "JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'c.db'}",
        }
    )
    result = run(app, "check-config", "--offline")
    assert "JWT_ACCESS_TOKEN_EXPIRES is a Flask-JWT-Extended setting; the shield reads" in result.output
    assert "'pubilc', which names no endpoint" in result.output
