"""The ``step_up`` rung (RFC 9470): a finding asks the person to authenticate again instead
of logging the session out. Real .mmdb files; time is frozen and moved."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask import request

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import InsufficientUserAuthentication
from flask_jwt_shield import InvalidToken
from flask_jwt_shield import JWTShield
from flask_jwt_shield import StoreError
from flask_jwt_shield.actions import ACTIONS
from flask_jwt_shield.stores import MemoryStore

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of
from .mmdb_util import write_city_db
from .test_geo_pipeline import BERLIN
from .test_geo_pipeline import MUNICH
from .test_geo_pipeline import PLACES
from .test_geo_pipeline import TOKYO
from .test_geo_pipeline import use

HOUR = 3600


@pytest.fixture
def step_app(make_app: AppFactory, tmp_path: Path) -> t.Callable[..., tuple[Flask, JWTShield]]:
    """An app with a City database, a country change answered by ``step_up``, travel out of
    the way (unless a test sets it), and ``POST /login?sub=&acr=&auth_time=``."""
    city_db = str(write_city_db(tmp_path / "city.mmdb", PLACES))

    def factory(**config: t.Any) -> tuple[Flask, JWTShield]:
        settings = {
            "JWT_SHIELD_GEOIP_DATABASE": city_db,
            "JWT_SHIELD_RATE_LIMIT": None,
            "JWT_SHIELD_ACCESS_TOKEN_TTL": 4 * HOUR,
            "JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH": 10**9,
            "JWT_SHIELD_COUNTRY_CHANGE_ACTION": "step_up",
            "JWT_SHIELD_STEP_UP_MAX_AGE": 300,
            **config,
        }
        app, shield = make_app(settings)

        @app.post("/login-with")
        @shield.exempt
        def login_with() -> t.Any:
            args = request.args
            auth_time = float(args["auth_time"]) if "auth_time" in args else None
            return shield.issue_tokens(args.get("sub", "alice"), acr=args.get("acr"), auth_time=auth_time).as_dict()

        return app, shield

    return factory


def login(app: Flask, ip: str, **params: t.Any) -> t.Any:
    return app.test_client().post("/login-with", query_string=params, environ_base={"REMOTE_ADDR": ip})


def refresh(app: Flask, refresh_token: str, ip: str) -> t.Any:
    return app.test_client().post("/refresh", json={"refresh_token": refresh_token}, environ_base={"REMOTE_ADDR": ip})


def events(app: Flask, shield: JWTShield, kind: str) -> list[t.Any]:
    with app.app_context():
        return shield.events(kind=kind, limit=1000)


# -- the ladder --------------------------------------------------------------------------------


def test_step_up_sits_between_flag_and_deny() -> None:
    assert ACTIONS == ("flag", "step_up", "deny", "revoke", "revoke_family", "revoke_subject")


# -- the challenge -----------------------------------------------------------------------------


def test_challenge_follows_rfc_9470_section_3(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_STEP_UP_ACR_VALUES=["mfa", "phr"])
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(HOUR)  # the login is an hour old: older than max_age
    r = use(app, token, TOKYO)
    assert r.status_code == 401
    assert r.headers.getlist("WWW-Authenticate") == [
        'Bearer realm="api", error="insufficient_user_authentication",'
        ' error_description="This token was issued in another country. Authenticate again to continue.",'
        ' acr_values="mfa phr", max_age="300"'
    ]
    assert json_of(r) == {
        "error": "insufficient_user_authentication",
        "error_description": "This token was issued in another country. Authenticate again to continue.",
    }
    assert r.headers["Cache-Control"] == "no-store"
    (event,) = events(app, shield, "country-changed")
    assert event.action == "step_up" and event.country == "JP"
    assert event.detail["step_up"] == "required" and event.detail["issued_in"] == "DE"
    assert event.detail["auth_time"] == 1_800_000_000 and event.detail["acr"] is None
    # Not a logout: the owner at home goes on with the same token.
    assert use(app, token, BERLIN).status_code == 200


@pytest.mark.parametrize(
    ("config", "params"),
    [
        ({"JWT_SHIELD_STEP_UP_MAX_AGE": 600}, 'max_age="600"'),
        ({"JWT_SHIELD_STEP_UP_MAX_AGE": None, "JWT_SHIELD_STEP_UP_ACR_VALUES": "mfa"}, 'acr_values="mfa"'),
    ],
)
def test_challenge_names_only_what_is_configured(
    step_app: t.Any, clock: Clock, config: dict[str, t.Any], params: str
) -> None:
    app, _ = step_app(**config)
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(HOUR)
    challenge = use(app, token, TOKYO).headers["WWW-Authenticate"]
    assert challenge.endswith(f'Authenticate again to continue.", {params}')


def test_the_error_is_an_invalid_token_for_handlers() -> None:
    error = InsufficientUserAuthentication(acr_values=["mfa"], max_age=0)
    assert isinstance(error, InvalidToken) and error.code == 401
    assert error.challenges()[0].endswith('acr_values="mfa", max_age="0"')


def test_dpop_required_carries_the_params_in_the_dpop_challenge() -> None:
    error = InsufficientUserAuthentication("Again.", max_age=60)
    error.dpop = ("required", "ES256")
    assert error.challenges() == [
        'DPoP realm="api", error="insufficient_user_authentication", error_description="Again.", algs="ES256",'
        ' max_age="60"'
    ]


# -- passing the rung ----------------------------------------------------------------------------


def test_a_recent_authentication_passes(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_STEP_UP_MAX_AGE=2 * HOUR)
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(HOUR)
    assert use(app, token, TOKYO).status_code == 200
    (event,) = events(app, shield, "country-changed")
    assert event.action == "step_up" and event.detail["step_up"] == "passed"
    clock.advance(2 * HOUR)  # now older than max_age
    r = use(app, token, TOKYO)
    assert r.status_code == 401 and json_of(r)["error"] == "insufficient_user_authentication"


def test_a_strong_acr_passes(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_STEP_UP_ACR_VALUES=["mfa"], JWT_SHIELD_STEP_UP_MAX_AGE=None)
    strong = json_of(login(app, BERLIN, acr="mfa"))["access_token"]
    weak = json_of(login(app, BERLIN, acr="pwd"))["access_token"]
    clock.advance(HOUR)
    assert use(app, strong, TOKYO).status_code == 200
    assert use(app, weak, TOKYO).status_code == 401
    outcomes = {e.detail["acr"]: e.detail["step_up"] for e in events(app, shield, "country-changed")}
    assert outcomes == {"mfa": "passed", "pwd": "required"}


def test_a_token_without_auth_time_never_passes_by_age(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_STEP_UP_MAX_AGE=10**9)
    with app.app_context():  # a lower-level token: no session, no auth_time
        token = shield.create_access_token("alice", claims={"ctry": "DE"})
    assert use(app, token, TOKYO).status_code == 401


def test_an_auth_time_in_the_future_does_not_pass(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_STEP_UP_MAX_AGE=10**9)
    with app.app_context():  # as an identity provider with a broken clock might send it
        token = shield.create_access_token("alice", claims={"ctry": "DE", "auth_time": clock.now + HOUR})
    assert use(app, token, TOKYO).status_code == 401


def test_repeated_challenges_are_recorded_once_a_while(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app()
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(HOUR)
    assert [use(app, token, TOKYO).status_code for _ in range(5)] == [401] * 5
    assert len(events(app, shield, "country-changed")) == 1
    # the finding's event says it; the challenge is not recorded a second time as a rejection
    assert [e for e in events(app, shield, "token-rejected") if e.detail["reason"].startswith("step-up")] == []


def test_monitor_mode_downgrades_step_up_to_flag(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(JWT_SHIELD_MONITOR_ONLY=True)
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(HOUR)
    assert use(app, token, TOKYO).status_code == 200
    (event,) = events(app, shield, "country-changed")
    assert event.action == "flag" and event.detail["intended_action"] == "step_up"


def test_impossible_travel_can_ask_for_a_step_up(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH=805,
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="step_up",
        JWT_SHIELD_COUNTRY_CHANGE_ACTION="flag",
    )
    token = json_of(login(app, BERLIN))["access_token"]
    clock.advance(600)
    r = use(app, token, MUNICH)  # 504 km in 10 minutes; the login is older than max_age
    assert r.status_code == 401 and json_of(r)["error"] == "insufficient_user_authentication"
    assert events(app, shield, "impossible-travel")[0].action == "step_up"
    assert use(app, token, BERLIN).status_code == 200  # the session lives on
    # The owner authenticates again in Munich (a login is a use: travel passes the rung,
    # the authentication being now) and goes on there.
    fresh = login(app, MUNICH)
    assert fresh.status_code == 200 and use(app, json_of(fresh)["access_token"], MUNICH).status_code == 200


@pytest.mark.parametrize("age", [60, 600])  # a login that would pass step_up, and one that would not
def test_a_stronger_answer_on_the_same_use_comes_first(step_app: t.Any, clock: Clock, age: int) -> None:
    """Berlin to Tokyo in minutes: the country change asks for a step-up, the travel
    revokes the session. The revocation wins, whatever the login's age: step_up waits for
    the other findings of a use, so a recent login never shields a thief from them."""
    app, shield = step_app(JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH=805, JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="revoke_family")
    pair = json_of(login(app, BERLIN))
    clock.advance(age)
    r = use(app, pair["access_token"], TOKYO)
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"
    assert "revoked" in json_of(r)["error_description"]
    assert use(app, pair["access_token"], BERLIN).status_code == 401
    assert events(app, shield, "impossible-travel")[0].action == "revoke_family"


def test_a_stronger_answer_at_login_comes_first(step_app: t.Any, clock: Clock) -> None:
    app, _ = step_app(
        JWT_SHIELD_NEW_COUNTRY_ACTION="step_up",
        JWT_SHIELD_STEP_UP_ACR_VALUES=["mfa"],
        JWT_SHIELD_STEP_UP_MAX_AGE=None,
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_KMH=805,
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="deny",
    )
    login(app, BERLIN)
    clock.advance(600)
    r = login(app, TOKYO)  # a new country without the second factor, and impossible travel
    assert r.status_code == 403 and json_of(r)["error"] == "access_denied"


class ProfileOutage(MemoryStore):
    """A store whose geo profiles are out of reach (the rest works)."""

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        raise StoreError("profiles unreachable")


def test_a_waiting_step_up_is_applied_when_the_profile_is_out_of_reach(
    make_app: AppFactory, tmp_path: Path, clock: Clock
) -> None:
    city_db = str(write_city_db(tmp_path / "city.mmdb", PLACES))
    app, _ = make_app(
        {
            "JWT_SHIELD_GEOIP_DATABASE": city_db,
            "JWT_SHIELD_FAIL_MODE": "open",
            "JWT_SHIELD_COUNTRY_CHANGE_ACTION": "step_up",
            "JWT_SHIELD_STEP_UP_MAX_AGE": 300,
        },
        store=ProfileOutage(),
    )
    token = json_of(app.test_client().post("/login", environ_base={"REMOTE_ADDR": BERLIN}))["access_token"]
    clock.advance(600)  # older than max_age, younger than the access token's 15 minutes
    r = use(app, token, TOKYO)
    assert r.status_code == 401 and json_of(r)["error"] == "insufficient_user_authentication"


def test_an_adaptive_anomaly_can_ask_for_a_step_up(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": None,
            "JWT_SHIELD_ADAPTIVE": True,
            "JWT_SHIELD_ADAPTIVE_FACTOR": 5.0,
            "JWT_SHIELD_ADAPTIVE_FLOOR": "20/minute",
            "JWT_SHIELD_ADAPTIVE_ACTION": "step_up",
            "JWT_SHIELD_STEP_UP_MAX_AGE": 120,
        }
    )
    client = app.test_client()
    token = json_of(client.post("/login"))["access_token"]
    for _ in range(5):  # the baseline: 10 a minute
        assert {client.get("/api/me", headers=bearer(token)).status_code for _ in range(10)} == {200}
        clock.advance(60)
    answers = []
    for _ in range(3):  # 100 a minute, sustained in the third minute
        answers.append([client.get("/api/me", headers=bearer(token)) for _ in range(100)])
        clock.advance(60)
    assert {r.status_code for r in answers[0] + answers[1]} == {200}
    # Like deny, the rung answers the request on which the anomaly is reported (once per
    # anomalous minute): the login is older than max_age, so that one is challenged.
    (refused,) = [r for r in answers[2] if r.status_code != 200]
    assert refused.status_code == 401 and json_of(refused)["error"] == "insufficient_user_authentication"
    assert refused.headers["WWW-Authenticate"].endswith('max_age="120"')
    # The person authenticates again: a new session, with a baseline of its own (issue 23:
    # baselines belong to sessions), so its 100 requests are not the old session's anomaly
    # and nothing asks it to step up.
    fresh = json_of(client.post("/login"))["access_token"]
    assert {client.get("/api/me", headers=bearer(fresh)).status_code for _ in range(100)} == {200}
    with app.app_context():
        outcomes = [e.detail.get("step_up") for e in shield.events(kind="traffic-anomaly") if e.action == "step_up"]
    assert outcomes == ["required"]


# -- sessions: the authentication is the login's, refreshes never renew it --------------------


def test_tokens_carry_acr_and_auth_time_and_refreshes_keep_them(step_app: t.Any, clock: Clock) -> None:
    app, _ = step_app()
    pair = json_of(login(app, BERLIN, acr="mfa"))
    claims = json_of(use(app, pair["access_token"], BERLIN))
    assert claims["acr"] == "mfa" and claims["auth_time"] == 1_800_000_000
    clock.advance(HOUR)
    refreshed = json_of(refresh(app, pair["refresh_token"], BERLIN))
    claims = json_of(use(app, refreshed["access_token"], BERLIN))
    assert claims["auth_time"] == 1_800_000_000 and claims["acr"] == "mfa"
    assert claims["iat"] == 1_800_000_000 + HOUR


def test_auth_time_given_at_login(step_app: t.Any, clock: Clock) -> None:
    app, _ = step_app()
    pair = json_of(login(app, BERLIN, auth_time=clock.now - 100.7))  # e.g. a single sign-on's
    assert json_of(use(app, pair["access_token"], BERLIN))["auth_time"] == 1_800_000_000 - 101


def test_a_refresh_from_abroad_needs_a_new_login(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app()
    pair = json_of(login(app, BERLIN))
    clock.advance(HOUR)
    r = refresh(app, pair["refresh_token"], TOKYO)
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_grant"
    assert json_of(r)["error_description"].endswith("Authenticate again to continue.")
    assert events(app, shield, "country-changed")[0].action == "step_up"
    # nothing rotated: the owner at home refreshes as before
    assert refresh(app, pair["refresh_token"], BERLIN).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"claims": {"acr": "mfa"}}, "pass issue_tokens(sub, acr=..., auth_time=...)"),
        ({"claims": {"auth_time": 1}}, "pass issue_tokens(sub, acr=..., auth_time=...)"),
        ({"acr": ""}, "acr must be a non-empty string"),
        ({"acr": 2}, "acr must be a non-empty string"),
        ({"auth_time": "yesterday"}, "auth_time must be the epoch seconds"),
        ({"auth_time": float("nan")}, "auth_time must be the epoch seconds"),
        ({"auth_time": True}, "auth_time must be the epoch seconds"),
        ({"auth_time": 1_800_000_000 + 60}, "auth_time lies in the future"),
    ],
)
def test_issue_tokens_checks_acr_and_auth_time(
    step_app: t.Any, clock: Clock, kwargs: dict[str, t.Any], message: str
) -> None:
    app, shield = step_app()
    with app.app_context(), pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shield.issue_tokens("alice", **kwargs)


# -- at login ----------------------------------------------------------------------------------


def test_at_login_a_new_country_asks_for_a_stronger_authentication(step_app: t.Any, clock: Clock) -> None:
    """New country with ``step_up``: the login itself is the authentication judged. A
    password login is recent by definition, so only ``acr_values`` (or an older
    ``auth_time`` handed in) can refuse it: here the app must have done its second factor."""
    app, shield = step_app(
        JWT_SHIELD_NEW_COUNTRY_ACTION="step_up", JWT_SHIELD_STEP_UP_ACR_VALUES=["mfa"], JWT_SHIELD_STEP_UP_MAX_AGE=None
    )
    assert login(app, BERLIN).status_code == 200
    clock.advance(86400)
    r = login(app, TOKYO, acr="pwd")
    assert r.status_code == 401 and "access_token" not in json_of(r)
    assert r.headers["WWW-Authenticate"].endswith('acr_values="mfa"')
    assert json_of(r)["error"] == "insufficient_user_authentication"
    with app.app_context():
        assert len(shield.sessions("alice")) == 1  # nothing issued
    (refused,) = events(app, shield, "new-country")
    assert refused.action == "step_up" and refused.detail["step_up"] == "required"
    # the refused country did not enter the history; with the second factor the login passes
    r = login(app, TOKYO, acr="mfa")
    assert r.status_code == 200
    passed = events(app, shield, "new-country")[0]
    assert passed.action == "step_up" and passed.detail["step_up"] == "passed" and passed.detail["acr"] == "mfa"


def test_at_login_max_age_judges_the_auth_time_handed_in(step_app: t.Any, clock: Clock) -> None:
    app, _ = step_app(JWT_SHIELD_NEW_COUNTRY_ACTION="step_up")
    assert login(app, BERLIN).status_code == 200
    clock.advance(86400)
    assert login(app, TOKYO, auth_time=clock.now - HOUR).status_code == 401  # an old single sign-on
    assert login(app, TOKYO).status_code == 200  # a password checked just now


def test_monitor_mode_lets_a_step_up_login_through(step_app: t.Any, clock: Clock) -> None:
    app, shield = step_app(
        JWT_SHIELD_NEW_COUNTRY_ACTION="step_up", JWT_SHIELD_STEP_UP_ACR_VALUES=["mfa"], JWT_SHIELD_MONITOR_ONLY=True
    )
    login(app, BERLIN)
    clock.advance(86400)
    assert login(app, TOKYO, auth_time=clock.now - HOUR).status_code == 200
    assert events(app, shield, "new-country")[0].detail["intended_action"] == "step_up"


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "JWT_SHIELD_NEW_COUNTRY_ACTION",
        "JWT_SHIELD_COUNTRY_CHANGE_ACTION",
        "JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION",
        "JWT_SHIELD_ADAPTIVE_ACTION",
    ],
)
def test_step_up_needs_max_age_or_acr_values(make_app: AppFactory, key: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{key} is 'step_up', which needs JWT_SHIELD_STEP_UP_MAX_AGE"):
        make_app({key: "step_up"})
    make_app({key: "step_up", "JWT_SHIELD_STEP_UP_MAX_AGE": 300})
    make_app({key: "step_up", "JWT_SHIELD_STEP_UP_ACR_VALUES": ["mfa"]})


def test_step_up_is_no_answer_to_a_spike(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_SPIKE_ACTION is 'step_up'; it must be one of"):
        make_app({"JWT_SHIELD_SPIKE_ACTION": "step_up", "JWT_SHIELD_STEP_UP_MAX_AGE": 300})


@pytest.mark.parametrize("value", [[], "", ["mfa phr"], ['m"fa'], ["mfä"], [""], [1], {"mfa": 1}, 7])
def test_bad_acr_values_are_refused(make_app: AppFactory, value: t.Any) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_STEP_UP_ACR_VALUES must be a non-empty list"):
        make_app({"JWT_SHIELD_STEP_UP_ACR_VALUES": value})


@pytest.mark.parametrize("value", [-1, 1.5, "300", True])
def test_bad_max_age_is_refused(make_app: AppFactory, value: t.Any) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_STEP_UP_MAX_AGE must be"):
        make_app({"JWT_SHIELD_STEP_UP_MAX_AGE": value})


def test_step_up_settings_are_read(make_app: AppFactory) -> None:
    from flask_jwt_shield.state import current_state

    app, _ = make_app({"JWT_SHIELD_STEP_UP_ACR_VALUES": "mfa  phr", "JWT_SHIELD_STEP_UP_MAX_AGE": 0})
    with app.app_context():
        config = current_state().config
    assert config.step_up.acr_values == ("mfa", "phr") and config.step_up.max_age == 0
