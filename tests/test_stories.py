"""Theft and honest-user stories on the recommended production settings.

Every story runs the real pipeline (real SQLite store, real .mmdb file, the limiter on
memory storage) under simulated time, with the settings that docs/production.rst shows
(docs/recommended_settings.py, included there verbatim). Only where state lives and the
keys are replaced. The stories are DESIGN.md's promise for those settings: they stop a
thief who hammers with a stolen token -- under the plain limit or just above it, pausing
and coming back, or hidden inside a busy account's total -- within a few minutes, and
they never block these honest users: a steady user, an app that fires a burst at
start-up, a user on two devices, a second and busier client logging in, a client ramping
up over a day, browser tabs refreshing together, a new user with no baseline yet.
"""

from __future__ import annotations

import dataclasses
import json
import random
import runpy
import typing as t
from collections.abc import Iterable
from pathlib import Path

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask.testing import FlaskClient

from flask_jwt_shield import JWTShield
from flask_jwt_shield import get_claims
from flask_jwt_shield.cli import generate_key

from .conftest import Clock
from .conftest import json_of
from .mmdb_util import write_city_db

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "docs" / "recommended_settings.py"
# Where state lives and the keys: the only settings a story replaces.
REPLACED = {"JWT_SHIELD_STORE_URI", "JWT_SHIELD_RATE_LIMIT_STORAGE_URI", "JWT_SHIELD_GEOIP_DATABASE", "JWT_SHIELD_KEYS"}

ORIGIN = Clock().now  # the simulated instant 0 of every story
BERLIN = "192.0.2.10"  # the owner
BERLIN_TOO = "192.0.2.77"  # the thief, in the owner's own city: geo sees nothing wrong
MINUTE = 60.0


def recommended(environ: dict[str, str]) -> dict[str, t.Any]:
    settings: dict[str, t.Any] = runpy.run_path(str(SETTINGS_FILE))["shield_settings"](environ)
    return settings


@pytest.fixture
def shielded(tmp_path: Path, clock: Clock) -> t.Callable[..., tuple[Flask, JWTShield]]:
    city_db = write_city_db(
        tmp_path / "city.mmdb",
        {
            "192.0.2.0/25": {"country": "DE", "city": "Berlin", "lat": 52.52, "lon": 13.405, "accuracy": 20},
        },
    )

    def factory(**overrides: t.Any) -> tuple[Flask, JWTShield]:
        keys = json.dumps([generate_key("ES256", "story-key")])
        settings = recommended({"JWT_SHIELD_KEYS": keys})
        local = {
            "JWT_SHIELD_STORE_URI": f"sqlite:///{tmp_path / 'shield.db'}",
            "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "memory://",
            "JWT_SHIELD_GEOIP_DATABASE": str(city_db),
            "JWT_SHIELD_KEYS": json.loads(keys),
        }
        assert set(local) == REPLACED
        app = Flask("stories", instance_path=str(tmp_path / "instance"))
        app.testing = True
        app.config.update(settings | local | overrides)
        shield = JWTShield(app)

        @app.get("/api/items")
        def items() -> t.Any:
            return {"sub": get_claims()["sub"]}

        @app.post("/auth/login")
        @shield.exempt
        def login() -> t.Any:
            return shield.issue_tokens(request.args["user"]).as_dict()

        @app.post("/auth/refresh")
        @shield.exempt
        def refresh() -> t.Any:
            return jsonify(shield.refresh(request.get_json()["refresh_token"]).as_dict())

        return app, shield

    return factory


def test_stories_use_the_documented_settings() -> None:
    """production.rst includes the file, and the stories change nothing but state and keys."""
    production = (SETTINGS_FILE.parent / "production.rst").read_text()
    assert "literalinclude:: recommended_settings.py" in production
    settings = recommended({"JWT_SHIELD_KEYS": "[]"})
    assert settings["JWT_SHIELD_MONITOR_ONLY"] is False
    assert REPLACED <= set(settings)


# -- the simulation ---------------------------------------------------------------------


@dataclasses.dataclass
class Device:
    """A client of the API: an app on a phone, a browser, or the thief's script.

    It holds a token pair (or only a copy of an access token), sends requests at the times
    it is given, refreshes its pair before the access token expires or after a 401, and
    logs in again when its session is gone -- what a well-written client does.
    """

    name: str
    ip: str
    user: str
    access: str | None = None
    refresh: str | None = None
    issued_at: float = 0.0
    can_log_in: bool = True
    statuses: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    refreshes: list[int] = dataclasses.field(default_factory=list)
    logins: int = 0

    def login(self, client: FlaskClient, now: float) -> None:
        r = client.post(f"/auth/login?user={self.user}", environ_base={"REMOTE_ADDR": self.ip})
        assert r.status_code == 200, r.get_data(as_text=True)
        self.access, self.refresh, self.issued_at = json_of(r)["access_token"], json_of(r)["refresh_token"], now
        self.logins += 1

    def renew(self, client: FlaskClient, now: float) -> bool:
        if self.refresh is None:
            return False
        r = client.post("/auth/refresh", json={"refresh_token": self.refresh}, environ_base={"REMOTE_ADDR": self.ip})
        self.refreshes.append(r.status_code)
        if r.status_code != 200:
            return False
        self.access, self.refresh, self.issued_at = json_of(r)["access_token"], json_of(r)["refresh_token"], now
        return True

    def call(self, client: FlaskClient, now: float) -> int:
        if self.access is None:
            self.login(client, now)
        elif self.refresh is not None and now - self.issued_at > 14 * MINUTE:
            if not self.renew(client, now) and self.can_log_in:
                self.login(client, now)
        status = self._get(client)
        if status == 401 and (self.renew(client, now) or (self.can_log_in and self._relogin(client, now))):
            status = self._get(client)
        self.statuses.append((now, status))
        return status

    def _relogin(self, client: FlaskClient, now: float) -> bool:
        self.login(client, now)
        return True

    def _get(self, client: FlaskClient) -> int:
        r = client.get(
            "/api/items", headers={"Authorization": f"Bearer {self.access}"}, environ_base={"REMOTE_ADDR": self.ip}
        )
        return int(r.status_code)

    def answered(self, start: float = -1e18, end: float = 1e18) -> int:
        return sum(1 for at, status in self.statuses if start <= at < end and status == 200)

    def refused(self) -> list[tuple[float, int]]:
        return [(at, status) for at, status in self.statuses if status != 200]


def steady(start: float, minutes: float, per_minute: float, rng: random.Random) -> list[float]:
    """Request times at ``per_minute`` on average, spaced irregularly like a real client."""
    times: list[float] = []
    at, end = start, start + minutes * MINUTE
    while True:
        at += rng.expovariate(per_minute / MINUTE)
        if at >= end:
            return times
        times.append(at)


def burst(start: float, count: int, seconds: float) -> list[float]:
    """``count`` requests spread evenly over ``seconds``: an app starting, a page loading."""
    return [start + i * seconds / count for i in range(count)]


def run(client: FlaskClient, clock: Clock, schedule: Iterable[tuple[float, Device]]) -> None:
    """Send every device's requests in time order, moving the clock to each one."""
    for at, device in sorted(schedule, key=lambda item: item[0]):
        assert ORIGIN + at >= clock.now, "a story's time runs forward"
        clock.now = ORIGIN + at
        device.call(client, at)


def plan(device: Device, times: Iterable[float]) -> list[tuple[float, Device]]:
    return [(at, device) for at in times]


def revocations(shield: JWTShield, app: Flask) -> list[str]:
    with app.app_context():
        kinds = ("token-revoked", "family-revoked", "subject-revoked")
        return [e.kind for kind in kinds for e in shield.events(kind=kind, limit=1000)]


def actions(shield: JWTShield, app: Flask, kind: str) -> list[str | None]:
    with app.app_context():
        return [e.action for e in reversed(shield.events(kind=kind, limit=1000))]


def owner_history(device: Device, rng: random.Random, minutes: float = 60) -> list[tuple[float, Device]]:
    """An hour of the owner's ordinary use: ten requests a minute, the baseline it learns."""
    return plan(device, steady(0, minutes, 10, rng))


# -- thieves ---------------------------------------------------------------------------


def test_thief_under_the_limit_at_ten_times_the_owners_rate_is_stopped(shielded: t.Any, clock: Clock) -> None:
    """The seed's example: a client that sends 10 requests a minute suddenly sends 100.

    A copy of the owner's access token, used from the owner's own city at 100/minute, far
    under the 300/minute limit. Sustained for three minutes, the anomaly ends the session.
    """
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(1)
    owner = Device("phone", BERLIN, "alice")
    run(client, clock, owner_history(owner, rng))
    thief = Device("thief", BERLIN_TOO, "alice", access=owner.access, can_log_in=False)
    start = 60 * MINUTE
    run(client, clock, plan(owner, steady(start, 10, 10, rng)) + plan(thief, steady(start, 10, 100, rng)))

    stopped_at = min(at for at, status in thief.statuses if status == 401)
    assert stopped_at - start <= 3 * MINUTE, "the thief must be stopped within three minutes"
    assert all(status == 401 for at, status in thief.statuses if at >= stopped_at)
    assert thief.answered() <= 3 * 100 + 20
    assert "family-revoked" in revocations(shield, app)
    # The anomaly was flagged, flagged, then acted upon.
    assert actions(shield, app, "traffic-anomaly")[:3] == ["flag", "flag", "revoke_family"]
    # The owner logs in again once on the device in hand and carries on.
    assert owner.logins == 2 and owner.statuses[-1][1] == 200


def test_thief_just_above_the_limit_on_a_new_account_is_stopped(shielded: t.Any, clock: Clock) -> None:
    """No baseline to compare with: the account is new, and the thief starts at once,
    pressing a little above the per-token limit (350/minute against 300/minute). No window
    reaches the spike threshold (3000/minute); being refused minute after minute does."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(2)
    owner = Device("phone", BERLIN, "bob")
    owner.login(client, 0)
    thief = Device("thief", BERLIN_TOO, "bob", access=owner.access, can_log_in=False)
    run(client, clock, plan(owner, steady(0, 10, 10, rng)) + plan(thief, steady(0, 10, 350, rng)))

    stopped_at = min(at for at, status in thief.statuses if status == 401)
    assert stopped_at <= 3 * MINUTE
    assert all(status == 401 for at, status in thief.statuses if at >= stopped_at)
    with app.app_context():
        spikes = [e for e in shield.events(kind="traffic-spike", limit=100) if e.detail.get("pattern") == "sustained"]
    assert spikes and spikes[-1].action == "revoke" and spikes[-1].detail["refused_minutes"] == 3
    # The owner refreshed past the revoked token: same session, never logged out.
    assert owner.logins == 1 and owner.statuses[-1][1] == 200


def test_thief_who_pauses_and_comes_back_is_stopped(shielded: t.Any, clock: Clock) -> None:
    """Two minutes at 150/minute, a two-minute pause, and again: the sustain span counts
    anomalous minutes, not a streak, so a pause does not reset it."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(3)
    owner = Device("phone", BERLIN, "carol")
    run(client, clock, owner_history(owner, rng))
    thief = Device("thief", BERLIN_TOO, "carol", access=owner.access, can_log_in=False)
    start = 60 * MINUTE
    bursts = [t for k in range(3) for t in steady(start + k * 4 * MINUTE, 2, 150, rng)]
    run(client, clock, plan(owner, steady(start, 12, 10, rng)) + plan(thief, bursts))

    stopped_at = min(at for at, status in thief.statuses if status == 401)
    assert stopped_at - start <= 5 * MINUTE
    assert all(status == 401 for at, status in thief.statuses if at >= stopped_at)
    assert thief.answered(start + 2 * MINUTE, start + 4 * MINUTE) == 0  # the pause
    assert thief.answered(start + 4 * MINUTE) < 150  # the comeback was cut short
    assert actions(shield, app, "traffic-anomaly")[:3] == ["flag", "flag", "revoke_family"]


def sid_of(app: Flask, token: str | None) -> str:
    assert token is not None
    sid: str = app.extensions["jwt_shield"].codec.inspect(token)["sid"]
    return sid


def test_thief_hiding_in_a_busy_accounts_total_is_stopped(shielded: t.Any, clock: Clock) -> None:
    """A copy of the quiet phone's token, used at 80/minute while the laptop of the same
    account makes 60/minute: the account goes from 70 to 150 a minute (about 2x, under the
    factor), the phone's session from 10 to 90 (9x). The phone's session ends; the laptop,
    whose request may as well have crossed an account-wide line, carries on untouched."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(4)
    phone, laptop = Device("phone", BERLIN, "ivan"), Device("laptop", "192.0.2.20", "ivan")
    run(client, clock, owner_history(phone, rng) + plan(laptop, steady(0, 60, 60, rng)))
    thief = Device("thief", BERLIN_TOO, "ivan", access=phone.access, can_log_in=False)
    phone_sid, laptop_sid = sid_of(app, phone.access), sid_of(app, laptop.access)
    start = 60 * MINUTE
    run(
        client,
        clock,
        plan(phone, steady(start, 10, 10, rng))
        + plan(laptop, steady(start, 10, 60, rng))
        + plan(thief, steady(start, 10, 80, rng)),
    )

    stopped_at = min(at for at, status in thief.statuses if status == 401)
    assert stopped_at - start <= 3 * MINUTE, "the thief must be stopped within three minutes"
    assert all(status == 401 for at, status in thief.statuses if at >= stopped_at)
    assert actions(shield, app, "traffic-anomaly")[:3] == ["flag", "flag", "revoke_family"]
    with app.app_context():
        anomalies = shield.events(kind="traffic-anomaly", limit=100)
        revoked = shield.events(kind="family-revoked", limit=100)
    # Every finding and the revocation name the phone's session, never the laptop's.
    assert {e.sid for e in anomalies} == {phone_sid} and [e.sid for e in revoked] == [phone_sid]
    assert all(e.detail["scope"] == "session" and not e.detail["warmup"] for e in anomalies)
    assert not laptop.refused() and laptop.logins == 1 and sid_of(app, laptop.access) == laptop_sid
    assert phone.logins == 2 and phone.statuses[-1][1] == 200  # the owner logs in again once


def test_monitor_mode_records_what_it_would_have_done(shielded: t.Any, clock: Clock) -> None:
    app, shield = shielded(JWT_SHIELD_MONITOR_ONLY=True)
    client, rng = app.test_client(), random.Random(1)
    owner = Device("phone", BERLIN, "alice")
    run(client, clock, owner_history(owner, rng))
    thief = Device("thief", BERLIN_TOO, "alice", access=owner.access, can_log_in=False)
    run(client, clock, plan(owner, steady(3600, 5, 10, rng)) + plan(thief, steady(3600, 5, 100, rng)))
    assert not thief.refused() and not revocations(shield, app)
    with app.app_context():
        sustained = [e for e in shield.events(kind="traffic-anomaly") if e.detail["sustained"]]
    assert sustained and all(e.detail["intended_action"] == "revoke_family" for e in sustained)


# -- honest users ------------------------------------------------------------------------


def assert_never_blocked(shield: JWTShield, app: Flask, *devices: Device) -> None:
    for device in devices:
        assert not device.refused(), f"{device.name} was refused: {device.refused()[:5]}"
        assert all(status == 200 for status in device.refreshes), f"{device.name}: {device.refreshes}"
        assert device.logins == 1, f"{device.name} had to log in again"
    assert revocations(shield, app) == []
    assert "revoke" not in str(actions(shield, app, "traffic-anomaly"))
    assert actions(shield, app, "traffic-spike") == []
    assert actions(shield, app, "rate-limited") == []


def test_steady_user_for_a_whole_day_of_work(shielded: t.Any, clock: Clock) -> None:
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(10)
    owner = Device("phone", BERLIN, "dave")
    # Eight hours, with the natural unevenness of a person: busier and quieter hours.
    schedule = [
        slot for hour in range(8) for slot in plan(owner, steady(hour * 3600, 60, rng.choice([5, 10, 15, 20]), rng))
    ]
    run(client, clock, schedule)
    assert len(owner.statuses) > 3000
    assert_never_blocked(shield, app, owner)


def test_app_that_fires_a_burst_at_start_up(shielded: t.Any, clock: Clock) -> None:
    """An established user whose app loads everything at start-up: 80 requests in six
    seconds, eight times the usual minute, twice in a day, with the app closed between."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(11)
    owner = Device("phone", BERLIN, "erin")
    schedule = owner_history(owner, rng)
    for opened in (90 * MINUTE, 200 * MINUTE):  # the access token expired while closed
        schedule += plan(owner, burst(opened, 80, 6) + steady(opened + 6, 20, 10, rng))
    run(client, clock, schedule)
    assert_never_blocked(shield, app, owner)
    assert actions(shield, app, "traffic-anomaly") == ["flag", "flag"]  # seen, not acted upon


def test_user_on_two_devices(shielded: t.Any, clock: Clock) -> None:
    """Phone all day; the laptop joins later with its own start-up burst. Twice the rate is
    not ten times it, and each device's token has its own budget."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(12)
    phone, laptop = Device("phone", BERLIN, "frank"), Device("laptop", "192.0.2.20", "frank")
    schedule = plan(phone, steady(0, 180, 10, rng))
    schedule += plan(laptop, burst(60 * MINUTE, 40, 4) + steady(60 * MINUTE + 4, 120, 12, rng))
    run(client, clock, schedule)
    assert_never_blocked(shield, app, phone, laptop)


@pytest.mark.parametrize(("name", "pace"), [("sync", 5), ("dashboard", 10)])
def test_second_busy_client_logs_in_with_the_password(shielded: t.Any, clock: Clock, name: str, pace: int) -> None:
    """An hour of the phone at 10 a minute, then a second client signs in with the password
    and works at ``pace`` times the phone's pace (a sync client, a dashboard left open),
    after a first load of 100 requests in ten seconds. A fresh login has its own pace to
    learn; it is not judged against the account's old one (per subject, the dashboard's
    session was revoked). The account's jump is seen (a flag at most), never acted upon."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(15)
    phone, sync = Device("phone", BERLIN, "judy"), Device(name, "192.0.2.30", "judy")
    joined = 60 * MINUTE
    schedule = plan(phone, steady(0, 180, 10, rng))
    schedule += plan(sync, burst(joined, 100, 10) + steady(joined + 10, 120, 10 * pace, rng))
    run(client, clock, schedule)
    assert sid_of(app, phone.access) != sid_of(app, sync.access)
    assert_never_blocked(shield, app, phone, sync)
    with app.app_context():
        anomalies = shield.events(kind="traffic-anomaly", limit=100)
    assert all(e.action == "flag" for e in anomalies)


def test_client_ramping_up_slowly_over_a_day(shielded: t.Any, clock: Clock) -> None:
    """One session from 2 to 90 requests a minute over ten hours (a team's day getting
    busier): the session's baseline follows, so 45x the morning's pace is ordinary by the
    evening."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(16)
    owner = Device("dashboard", BERLIN, "karl")
    slots = 60  # ten-minute slots
    pace = [2 * 45 ** (k / (slots - 1)) for k in range(slots)]  # per minute, x 1.07 a slot
    schedule = [slot for k in range(slots) for slot in plan(owner, steady(k * 10 * MINUTE, 10, pace[k], rng))]
    run(client, clock, schedule)
    assert owner.answered(9.5 * 3600) > 800  # the evening is far above the floor (60/minute)
    assert_never_blocked(shield, app, owner)


def test_browser_tabs_refreshing_together(shielded: t.Any, clock: Clock) -> None:
    """Five tabs share one session. They poll together, reload together (six requests
    each in the same second), and refresh the pair together with the same refresh token:
    the reuse grace serves the late tabs, so nobody is logged out."""
    app, shield = shielded()
    client = app.test_client()
    first = Device("tab-1", BERLIN, "grace")
    first.login(client, 0)
    tabs = [first] + [dataclasses.replace(first, name=f"tab-{i}", statuses=[], refreshes=[]) for i in range(2, 6)]
    schedule: list[tuple[float, Device]] = []
    for minute in range(120):
        at = minute * MINUTE
        for half in (0, 30):
            schedule += [(at + half + 0.01 * i, tab) for i, tab in enumerate(tabs)]
        if minute % 20 == 5:  # the browser restores every tab at once
            schedule += [(at + 40 + 0.001 * (6 * i + k), tab) for i, tab in enumerate(tabs) for k in range(6)]
    # Every tab refreshes when it sees the shared pair age: all five at the same moment.
    # Share the pair between tabs the way a browser's storage does.
    store = {"pair": (first.access, first.refresh, first.issued_at)}

    def shared_call(device: Device, at: float) -> None:
        device.access, device.refresh, device.issued_at = store["pair"]
        device.call(client, at)
        if device.issued_at >= store["pair"][2]:
            store["pair"] = (device.access, device.refresh, device.issued_at)

    refresh_moments = []
    codec = app.extensions["jwt_shield"].codec
    for at, tab in sorted(schedule, key=lambda item: item[0]):
        clock.now = ORIGIN + at
        if at - store["pair"][2] > 14 * MINUTE:
            # All tabs notice together and send the same refresh token in one second.
            refresh_moments.append(at)
            token = store["pair"][1]
            answers = [
                client.post("/auth/refresh", json={"refresh_token": token}, environ_base={"REMOTE_ADDR": BERLIN})
                for _ in tabs
            ]
            assert [a.status_code for a in answers] == [200] * len(tabs)
            # One live refresh token: the late tabs get the current one again (re-signed).
            assert len({codec.inspect(json_of(a)["refresh_token"])["jti"] for a in answers}) == 1
            store["pair"] = (json_of(answers[0])["access_token"], json_of(answers[0])["refresh_token"], at)
        shared_call(tab, at)
    assert len(refresh_moments) >= 7
    assert_never_blocked(shield, app, *tabs)
    assert actions(shield, app, "refresh-reused") == []


def test_new_user_with_no_baseline_yet(shielded: t.Any, clock: Clock) -> None:
    """The first minutes of an account: a start-up burst before anything is learned, a
    busy first quarter of an hour, then the ordinary rate."""
    app, shield = shielded()
    client, rng = app.test_client(), random.Random(14)
    owner = Device("phone", BERLIN, "heidi")
    schedule = plan(owner, burst(0, 80, 6) + steady(6, 15, 30, rng) + steady(15 * MINUTE, 60, 10, rng))
    run(client, clock, schedule)
    assert_never_blocked(shield, app, owner)
