"""GeoIP detectors in the pipeline, against real .mmdb files written by mmdb-writer."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield import TokenPair
from flask_jwt_shield.stores import MemoryStore

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .mmdb_util import write_city_db
from .mmdb_util import write_corrupt_db
from .mmdb_util import write_country_db

BERLIN = "192.0.2.10"
MUNICH = "192.0.2.200"
TOKYO = "203.0.113.10"
SAO_PAULO = "198.51.100.10"
PRIVATE = "10.0.0.7"

PLACES = {
    "192.0.2.0/25": {"country": "DE", "city": "Berlin", "lat": 52.52, "lon": 13.405, "accuracy": 20},
    "192.0.2.128/25": {"country": "DE", "city": "Munich", "lat": 48.1351, "lon": 11.582, "accuracy": 20},
    "203.0.113.0/24": {"country": "JP", "city": "Tokyo", "lat": 35.6762, "lon": 139.6503, "accuracy": 20},
    "198.51.100.0/24": {"country": "BR", "city": "São Paulo", "lat": -23.55, "lon": -46.63, "accuracy": 50},
}


@pytest.fixture
def city_db(tmp_path: Path) -> str:
    return str(write_city_db(tmp_path / "city.mmdb", PLACES))


@pytest.fixture
def geo_app(make_app: AppFactory, city_db: str) -> t.Callable[..., tuple[Flask, JWTShield]]:
    def factory(**config: t.Any) -> tuple[Flask, JWTShield]:
        # access tokens live two hours here, so that tests can travel by train
        return make_app(
            {
                "JWT_SHIELD_GEOIP_DATABASE": city_db,
                "JWT_SHIELD_RATE_LIMIT": None,
                "JWT_SHIELD_ACCESS_TOKEN_TTL": 7200,
                **config,
            }
        )

    return factory


def login(app: Flask, ip: str, sub: str = "alice") -> t.Any:
    return app.test_client().post(f"/login?sub={sub}", environ_base={"REMOTE_ADDR": ip})


def use(app: Flask, token: str, ip: str) -> t.Any:
    return app.test_client().get("/api/me", headers=bearer(token), environ_base={"REMOTE_ADDR": ip})


def kinds(app: Flask, shield: JWTShield) -> list[str]:
    with app.app_context():
        return [e.kind for e in shield.events(limit=1000)]


def test_first_login_records_without_flagging_and_sets_ctry(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app()
    r = login(app, BERLIN)
    assert r.status_code == 200
    claims = use(app, r.json["access_token"], BERLIN).json
    assert claims["ctry"] == "DE"
    assert "new-country" not in kinds(app, shield)


def test_new_country_flag(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app()
    login(app, BERLIN)
    clock.advance(86400)
    with app.test_request_context(environ_base={"REMOTE_ADDR": SAO_PAULO}):
        pair: TokenPair = shield.issue_tokens("alice")
    assert pair.new_country
    with app.app_context():
        (event,) = shield.events(kind="new-country")
    assert event.country == "BR" and event.detail["history"] == ["DE"] and event.action == "flag"
    clock.advance(86400)
    with app.test_request_context(environ_base={"REMOTE_ADDR": BERLIN}):
        assert not shield.issue_tokens("alice").new_country  # DE is in the history


def test_new_country_deny_issues_nothing(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_NEW_COUNTRY_ACTION="deny")
    login(app, BERLIN)
    clock.advance(86400)
    r = login(app, TOKYO)
    assert r.status_code == 403 and r.json["error"] == "access_denied"
    assert "access_token" not in r.json
    with app.app_context():
        assert len(shield.sessions("alice")) == 1
        assert shield.events(kind="new-country")[0].action == "deny"
    # the denied country did not enter the history
    clock.advance(86400)
    assert login(app, TOKYO).status_code == 403


def test_country_history_is_bounded(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_COUNTRY_HISTORY=2)
    for ip in (BERLIN, TOKYO, SAO_PAULO):
        login(app, ip)
        clock.advance(86400 * 2)
    with app.app_context():
        assert shield.events(kind="new-country")[0].detail["history"] == ["DE", "JP"]
    login(app, BERLIN)  # DE fell out of a history of two
    with app.app_context():
        assert shield.events(kind="new-country")[0].detail["history"] == ["JP", "BR"]


@pytest.mark.parametrize(
    ("action", "status", "later"),
    [
        ("flag", 200, 200),
        ("deny", 403, 403),
        ("revoke", 401, 401),
        ("revoke_family", 401, 401),
        ("revoke_subject", 401, 401),
    ],
)
def test_country_change_actions(geo_app: t.Any, clock: Clock, action: str, status: int, later: int) -> None:
    app, shield = geo_app(JWT_SHIELD_COUNTRY_CHANGE_ACTION=action, JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH=10**9)
    token = login(app, BERLIN).json["access_token"]
    assert use(app, token, BERLIN).status_code == 200
    clock.advance(3600)
    r = use(app, token, TOKYO)  # the stolen token, used abroad
    assert r.status_code == status
    assert use(app, token, BERLIN).status_code == (200 if action in ("flag", "deny") else later)
    with app.app_context():
        (event,) = shield.events(kind="country-changed")[-1:]
    assert event.detail["issued_in"] == "DE" and event.country == "JP" and event.action == action
    assert event.detail["location"]["city"] == "Tokyo"


def test_monitor_only_downgrades_geo_actions(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(
        JWT_SHIELD_COUNTRY_CHANGE_ACTION="revoke", JWT_SHIELD_MONITOR_ONLY=True, JWT_SHIELD_DENIED_COUNTRIES=["JP"]
    )
    token = login(app, BERLIN).json["access_token"]
    clock.advance(3600)
    assert use(app, token, TOKYO).status_code == 200
    with app.app_context():
        changed = shield.events(kind="country-changed")[0]
        denied = shield.events(kind="country-denied")[0]
    assert changed.action == "flag" and changed.detail["intended_action"] == "revoke"
    assert denied.action == "flag" and denied.detail["intended_action"] == "deny"


def test_impossible_travel(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="revoke_family")
    pair = login(app, BERLIN).json
    other = login(app, BERLIN).json  # a second session of the same user
    clock.advance(600)
    r = use(app, pair["access_token"], MUNICH)  # 504 km in 10 minutes, same country
    assert r.status_code == 401 and "revoked" in r.json["error_description"]
    with app.app_context():
        (event,) = shield.events(kind="impossible-travel")
    assert event.detail["from"]["city"] == "Berlin" and event.detail["to"]["city"] == "Munich"
    assert 400 < event.detail["distance_km"] < 520 and event.detail["speed_kmh"] > 805
    # travel is per subject across sessions, and only this session was revoked
    assert use(app, other["access_token"], BERLIN).status_code == 200


def test_plausible_travel_is_not_flagged(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny")
    token = login(app, BERLIN).json["access_token"]
    clock.advance(3600)  # 504 km less both accuracy radii in one hour: a fast train
    assert use(app, token, MUNICH).status_code == 200
    assert "impossible-travel" not in kinds(app, shield)


def test_login_is_a_use_for_travel(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny")
    login(app, BERLIN)
    clock.advance(1800)
    r = login(app, TOKYO)  # logging in from Tokyo half an hour after Berlin
    assert r.status_code == 403
    assert "impossible-travel" in kinds(app, shield)


@pytest.mark.parametrize(
    ("config", "ip", "status"),
    [
        ({"JWT_SHIELD_ALLOWED_COUNTRIES": ["DE"]}, TOKYO, 403),
        ({"JWT_SHIELD_ALLOWED_COUNTRIES": ["DE"]}, BERLIN, 200),
        ({"JWT_SHIELD_DENIED_COUNTRIES": ["jp"]}, TOKYO, 403),
        ({"JWT_SHIELD_DENIED_COUNTRIES": ["JP"]}, SAO_PAULO, 200),
        ({"JWT_SHIELD_ALLOWED_COUNTRIES": ["DE"]}, PRIVATE, 200),  # no known location: never denied
        ({"JWT_SHIELD_ALLOWED_COUNTRIES": ["DE"]}, "127.0.0.1", 200),
    ],
)
def test_allowed_and_denied_countries(
    geo_app: t.Any, clock: Clock, config: dict[str, t.Any], ip: str, status: int
) -> None:
    app, shield = geo_app(**config)
    assert login(app, ip).status_code == status  # at login
    with app.app_context():
        token = shield.create_access_token("alice")
    assert use(app, token, ip).status_code == status  # and on every request


def test_private_addresses_are_never_flagged(geo_app: t.Any, clock: Clock) -> None:
    app, _ = geo_app(JWT_SHIELD_COUNTRY_CHANGE_ACTION="deny", JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny")
    token = login(app, BERLIN).json["access_token"]
    for ip in (PRIVATE, "127.0.0.1", "::1", "fe80::1", "not-an-ip"):
        assert use(app, token, ip).status_code == 200, ip
    assert use(app, token, "::ffff:" + TOKYO).status_code == 403  # IPv4-mapped resolves as IPv4


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.profile_reads = 0
        self.profile_writes = 0

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        self.profile_reads += 1
        return super().get_profile(sub)

    def put_profile(self, sub: str, profile: dict[str, t.Any]) -> None:
        self.profile_writes += 1
        super().put_profile(sub, profile)


def test_steady_state_writes_nothing(make_app: AppFactory, city_db: str, clock: Clock) -> None:
    store = CountingStore()
    app, _ = make_app({"JWT_SHIELD_GEOIP_DATABASE": city_db}, store=store)
    token = login(app, BERLIN).json["access_token"]
    writes, reads = store.profile_writes, store.profile_reads
    for _ in range(50):
        assert use(app, token, BERLIN).status_code == 200
        clock.advance(0.5)
    assert store.profile_writes - writes <= 1  # at most the first use after login
    assert store.profile_reads - reads <= 1


def test_country_database_checks_countries_not_travel(make_app: AppFactory, tmp_path: Path, clock: Clock) -> None:
    db = write_country_db(tmp_path / "country.mmdb", {"192.0.2.0/24": "DE", "203.0.113.0/24": "JP"})
    app, shield = make_app({"JWT_SHIELD_GEOIP_DATABASE": str(db), "JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION": "deny"})
    token = login(app, BERLIN).json["access_token"]
    clock.advance(60)
    assert use(app, token, TOKYO).status_code == 200  # country change: flag by default
    assert kinds(app, shield).count("impossible-travel") == 0
    assert "country-changed" in kinds(app, shield)


def test_replaced_database_is_used_within_5_seconds(make_app: AppFactory, tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "live.mmdb"
    write_country_db(path, {"203.0.113.0/24": "JP"})
    app, shield = make_app({"JWT_SHIELD_GEOIP_DATABASE": str(path), "JWT_SHIELD_DENIED_COUNTRIES": ["FR"]})
    with app.app_context():
        token = shield.create_access_token("alice")
    assert use(app, token, TOKYO).status_code == 200
    write_country_db(tmp_path / "next.mmdb", {"203.0.113.0/24": "FR"})
    (tmp_path / "next.mmdb").replace(path)  # how geoipupdate replaces a file
    clock.advance(5.1)
    with app.app_context():
        fresh = shield.create_access_token("alice")
    assert use(app, fresh, TOKYO).status_code == 403


def test_proxyfix_supplies_the_client_address(geo_app: t.Any, clock: Clock) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app, _ = geo_app(JWT_SHIELD_COUNTRY_CHANGE_ACTION="deny")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    token = login(app, BERLIN).json["access_token"]
    r = app.test_client().get(
        "/api/me", headers={**bearer(token), "X-Forwarded-For": TOKYO}, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    )
    assert r.status_code == 403


def test_shield_never_reads_x_forwarded_for_itself(geo_app: t.Any, clock: Clock) -> None:
    app, _ = geo_app(JWT_SHIELD_COUNTRY_CHANGE_ACTION="deny")
    token = login(app, BERLIN).json["access_token"]
    r = app.test_client().get(
        "/api/me", headers={**bearer(token), "X-Forwarded-For": TOKYO}, environ_base={"REMOTE_ADDR": BERLIN}
    )
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_database_refused_at_init_app(make_app: AppFactory, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "geo.mmdb"
    if kind == "corrupt":
        write_corrupt_db(path)
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_GEOIP_DATABASE"):
        make_app({"JWT_SHIELD_GEOIP_DATABASE": str(path)})


def test_event_ip_none_keeps_addresses_out(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_EVENT_IP="none")
    token = login(app, BERLIN).json["access_token"]
    clock.advance(3600)
    use(app, token, TOKYO)
    with app.app_context():
        events = shield.events(limit=100)
    assert events and all(e.ip is None for e in events)
    assert BERLIN not in repr([e.to_dict() for e in events]) and TOKYO not in repr([e.to_dict() for e in events])


def test_refresh_abroad_issues_tokens_of_that_country(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app()
    pair = login(app, BERLIN).json
    clock.advance(86400)
    r = app.test_client().post(
        "/refresh", json={"refresh_token": pair["refresh_token"]}, environ_base={"REMOTE_ADDR": TOKYO}
    )
    assert use(app, r.json["access_token"], TOKYO).json["ctry"] == "JP"
    with app.app_context():
        (session,) = shield.sessions("alice")
    assert session.last_country == "JP"


def test_refresh_is_checked_like_a_use(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_COUNTRY_CHANGE_ACTION="revoke_family", JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH=10**9)
    pair = login(app, BERLIN).json
    clock.advance(3600)
    # the stolen refresh token, used from abroad: the session is revoked, nothing is issued
    r = app.test_client().post(
        "/refresh", json={"refresh_token": pair["refresh_token"]}, environ_base={"REMOTE_ADDR": TOKYO}
    )
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    assert use(app, pair["access_token"], BERLIN).status_code == 401
    with app.app_context():
        assert shield.sessions("alice") == []
        assert shield.events(kind="country-changed")[0].detail["issued_in"] == "DE"


def test_login_travel_is_worded_for_a_login(geo_app: t.Any, clock: Clock) -> None:
    app, _ = geo_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny")
    login(app, BERLIN)
    clock.advance(600)
    r = login(app, TOKYO)
    assert r.status_code == 403 and r.json["error_description"] == "This login came too far away, too soon."


def test_repeated_geo_denials_recorded_once_a_minute(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_DENIED_COUNTRIES=["JP"])
    with app.app_context():
        token = shield.create_access_token("alice")
    assert [use(app, token, TOKYO).status_code for _ in range(10)] == [403] * 10
    with app.app_context():
        assert len(shield.events(kind="country-denied")) == 1


@pytest.mark.parametrize(
    ("action", "monitor", "status"),
    [
        ("flag", False, 200),
        ("deny", False, 403),
        ("revoke", False, 401),
        ("revoke_family", False, 401),
        ("revoke_subject", False, 401),
        ("revoke_subject", True, 200),
    ],
)
def test_impossible_travel_action_ladder(geo_app: t.Any, clock: Clock, action: str, monitor: bool, status: int) -> None:
    app, shield = geo_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION=action, JWT_SHIELD_MONITOR_ONLY=monitor)
    token = login(app, BERLIN).json["access_token"]
    other = login(app, BERLIN).json["access_token"]  # another session of the same subject
    clock.advance(600)
    assert use(app, token, MUNICH).status_code == status
    # only revoke_subject reaches the other session
    assert use(app, other, BERLIN).status_code == (401 if action == "revoke_subject" and not monitor else 200)
    with app.app_context():
        event = shield.events(kind="impossible-travel")[-1]  # the first (a flagged move back is one too)
    assert event.detail["to"]["city"] == "Munich"
    assert event.action == ("flag" if monitor else action)
    if monitor:
        assert event.detail["intended_action"] == action


def test_monitor_only_lets_a_new_country_login_through(geo_app: t.Any, clock: Clock) -> None:
    app, shield = geo_app(JWT_SHIELD_NEW_COUNTRY_ACTION="deny", JWT_SHIELD_MONITOR_ONLY=True)
    login(app, BERLIN)
    clock.advance(86400)
    assert login(app, TOKYO).status_code == 200
    with app.app_context():
        (event,) = shield.events(kind="new-country")
    assert event.action == "flag" and event.detail["intended_action"] == "deny"


def test_forget_places_clears_a_subjects_geo_history(geo_app: t.Any, clock: Clock) -> None:
    """Newcomer's list, bug 3: after a false alarm an operator clears the history (countries
    and last place), and the next login is judged like a first one: no travel, no new country."""
    app, shield = geo_app(JWT_SHIELD_NEW_COUNTRY_ACTION="deny", JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny")
    assert login(app, BERLIN).status_code == 200
    clock.advance(600)
    assert login(app, TOKYO).status_code == 403  # a new country, and too far too fast
    with app.app_context():
        shield.forget_places("alice")
    assert login(app, TOKYO).status_code == 200
