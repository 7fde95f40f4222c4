"""The admin dashboard (``shield.dashboard_blueprint``): pages, revoke buttons, CSRF,
authorisation, bad input. The same pages in a real browser: tests/test_browser.py."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_jwt_shield import JWTShield
from flask_jwt_shield.dashboard import CONFIRM
from flask_jwt_shield.dashboard import PER_PAGE
from flask_jwt_shield.dashboard import is_local_path
from flask_jwt_shield.dashboard.chart import hourly
from flask_jwt_shield.dashboard.csrf import COOKIE
from flask_jwt_shield.events import SecurityEvent
from flask_jwt_shield.state import current_state

from .conftest import AppFactory
from .conftest import Clock
from .conftest import bearer
from .conftest import json_of

DEMO_DB = Path(__file__).resolve().parent.parent / "example_app" / "demo-geoip.mmdb"
OLD_KEY = {"kid": "old", "key": "o" * 40}
NEW_KEY = {"kid": "new", "key": "n" * 40}


class Admin:
    """Whether the current request comes from an admin (what the app's authorize() says)."""

    def __init__(self) -> None:
        self.allowed = True

    def __call__(self) -> bool:
        return self.allowed


@pytest.fixture
def admin() -> Admin:
    return Admin()


@pytest.fixture
def dash(make_app: AppFactory, admin: Admin, clock: Clock) -> tuple[Flask, JWTShield]:
    app, shield = make_app({"JWT_SHIELD_KEYS": [NEW_KEY, OLD_KEY]})
    app.register_blueprint(shield.dashboard_blueprint(authorize=admin), url_prefix="/shield")
    return app, shield


def csrf_of(page: t.Any) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert match, page.get_data(as_text=True)[:500]
    return match.group(1)


def login(client: FlaskClient, sub: str = "alice") -> dict[str, t.Any]:
    r = client.post(f"/login?sub={sub}")
    assert r.status_code == 200
    return t.cast(dict[str, t.Any], r.json)


def sid_of(app: Flask, token: str) -> str:
    import jwt

    return t.cast(str, jwt.decode(token, options={"verify_signature": False})["sid"])


# -- who may look --------------------------------------------------------------------------


PAGES = ["/shield/", "/shield/subject?sub=alice", "/shield/keys"]
FORMS = ["/shield/revoke/session", "/shield/revoke/token", "/shield/revoke/subject", "/shield/revoke/key"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_no_token_and_are_html(dash: tuple[Flask, JWTShield], path: str) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    r = client.get(path)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", PAGES + FORMS)
def test_authorize_false_is_403_everywhere(dash: tuple[Flask, JWTShield], admin: Admin, path: str) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    admin.allowed = False
    method = "POST" if path in FORMS else "GET"
    r = client.open(path, method=method, data={"sid": "x", "csrf_token": "x"})
    assert r.status_code == 403 and r.mimetype == "text/html"
    assert "not allowed" in r.get_data(as_text=True)


def test_authorize_must_say_true(dash: tuple[Flask, JWTShield], admin: Admin) -> None:
    """A truthy non-bool (a user object, a role string) is not a yes: authorize() returns a bool."""
    app, _ = dash
    admin.allowed = "admin"  # type: ignore[assignment]
    assert app.test_client().get("/shield/").status_code == 403


def test_the_pipeline_never_runs_for_the_dashboard(dash: tuple[Flask, JWTShield]) -> None:
    """Exempt: a garbage Authorization header is not even looked at, no event is recorded."""
    app, shield = dash
    client = app.test_client()
    r = client.get("/shield/keys", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 200
    with app.app_context():
        assert shield.events(kind="token-rejected") == []


def test_the_warm_path_is_untouched(dash: tuple[Flask, JWTShield]) -> None:
    """The dashboard adds no before_request hook to the app: only the blueprint's own."""
    app, _ = dash
    assert [f.__name__ for f in app.before_request_funcs[None]] == ["jwt_shield_guard"]


def test_registering_needs_a_function() -> None:
    with pytest.raises(TypeError, match="authorize"):
        JWTShield().dashboard_blueprint(authorize=True)  # type: ignore[arg-type]


# -- revoking ------------------------------------------------------------------------------


def test_revoke_a_session_in_two_clicks(dash: tuple[Flask, JWTShield]) -> None:
    """From the events page to the subject page (click 1), then its Revoke button (click 2)."""
    app, shield = dash
    client = app.test_client()
    laptop, thief = login(client), login(client)
    thief_sid = sid_of(app, thief["access_token"])
    events = client.get("/shield/").get_data(as_text=True)
    assert f'href="/shield/subject?sub=alice#session-{thief_sid}"' in events  # click 1
    page = client.get("/shield/subject?sub=alice")
    assert f'id="session-{thief_sid}"' in page.get_data(as_text=True)
    r = client.post("/shield/revoke/session", data={"sid": thief_sid, "csrf_token": csrf_of(page)})  # click 2
    assert r.status_code == 303
    assert r.headers["Location"].startswith("/shield/subject?sub=alice&done=session")
    done = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "revoked: its refresh token and every access token from it are refused" in done
    assert client.get("/api/me", headers=bearer(thief["access_token"])).status_code == 401
    assert client.get("/api/me", headers=bearer(laptop["access_token"])).status_code == 200
    with app.app_context():
        assert [s.sid for s in shield.sessions("alice")] == [sid_of(app, laptop["access_token"])]
        revoked = shield.events(kind="family-revoked")[0]
        assert revoked.sid == thief_sid and revoked.detail == {"by": "dashboard"}  # the timeline says who


def test_revoke_a_token(dash: tuple[Flask, JWTShield]) -> None:
    app, shield = dash
    client = app.test_client()
    pair = login(client)
    import jwt

    jti = jwt.decode(pair["access_token"], options={"verify_signature": False})["jti"]
    client.get("/api/me", headers={**bearer(pair["access_token"]), "X-Forwarded-For": "192.0.2.1"})
    with app.app_context():
        shield.revoke_token(jti)  # the token is named by an event now, as the dashboard requires
    page = client.get("/shield/subject?sub=alice")
    r = client.post("/shield/revoke/token", data={"jti": jti, "csrf_token": csrf_of(page)})
    assert r.status_code == 303 and "done=token" in r.headers["Location"]
    assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401


def test_revoke_every_token_of_a_subject(dash: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, _ = dash
    client = app.test_client()
    one, two, bob = login(client), login(client), login(client, "bob")
    page = client.get("/shield/subject?sub=alice")
    confirm = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": csrf_of(page)})
    r = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": csrf_of(confirm), "confirm": CONFIRM})
    assert r.status_code == 303
    for pair in (one, two):
        assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401
    assert client.get("/api/me", headers=bearer(bob["access_token"])).status_code == 200
    fresh = login(client)  # a new login works at once
    assert client.get("/api/me", headers=bearer(fresh["access_token"])).status_code == 200


def test_keys_page_and_revoke_a_verify_only_key(dash: tuple[Flask, JWTShield], make_app: AppFactory) -> None:
    app, _ = dash
    old_app, old_shield = make_app({"JWT_SHIELD_KEYS": [OLD_KEY]})
    with old_app.app_context():
        old_token = old_shield.create_access_token("alice")
    client = app.test_client()
    assert client.get("/api/me", headers=bearer(old_token)).status_code == 200
    page = client.get("/shield/keys")
    text = page.get_data(as_text=True)
    assert "<strong>signs</strong>" in text and "verifies only" in text
    assert 'name="kid" value="new"' not in text  # the signing key has no button
    r = client.post("/shield/revoke/key", data={"kid": "old", "csrf_token": csrf_of(page)})
    assert r.status_code == 303 and r.headers["Location"].startswith("/shield/keys")
    assert client.get("/api/me", headers=bearer(old_token)).status_code == 401
    assert "revoked" in client.get("/shield/keys").get_data(as_text=True)


def test_the_signing_key_is_refused_with_a_reason(dash: tuple[Flask, JWTShield]) -> None:
    app, _ = dash
    client = app.test_client()
    page = client.get("/shield/keys")
    r = client.post("/shield/revoke/key", data={"kid": "new", "csrf_token": csrf_of(page)})
    assert r.status_code == 409 and "Put a new key first" in r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/shield/revoke/session", "sid", "no-such-session"),
        ("/shield/revoke/token", "jti", "no-such-token"),
        ("/shield/revoke/subject", "sub", "nobody"),
        ("/shield/revoke/key", "kid", "no-such-key"),
    ],
)
def test_unknown_ids_are_404(dash: tuple[Flask, JWTShield], path: str, field: str, value: str) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    page = client.get("/shield/subject?sub=alice")
    r = client.post(path, data={field: value, "csrf_token": csrf_of(page)})
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert value in r.get_data(as_text=True)


# -- CSRF ----------------------------------------------------------------------------------


def test_every_form_carries_the_csrf_token(dash: tuple[Flask, JWTShield]) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    for path in PAGES[1:]:  # the events page has only GET forms (the filters)
        html = client.get(path).get_data(as_text=True)
        forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", html, re.S)
        assert forms, path
        assert all('name="csrf_token" value="' in f for f in forms), path


@pytest.mark.parametrize("case", ["missing", "wrong", "no-cookie", "another-cookie"])
def test_a_forged_form_is_400_and_revokes_nothing(dash: tuple[Flask, JWTShield], case: str) -> None:
    app, _ = dash
    client = app.test_client()
    pair = login(client)
    sid = sid_of(app, pair["access_token"])
    token = csrf_of(client.get("/shield/subject?sub=alice"))
    data = {"sid": sid, "csrf_token": token}
    if case == "missing":
        del data["csrf_token"]
    elif case == "wrong":
        data["csrf_token"] = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif case == "no-cookie":
        client.delete_cookie(COOKIE, path="/shield")
    else:  # the attacker's own valid pair of cookie and token does not fit the victim's cookie
        other = app.test_client()
        login(other, "bob")
        data["csrf_token"] = csrf_of(other.get("/shield/subject?sub=bob"))
    r = client.post("/shield/revoke/session", data=data)
    assert r.status_code == 400 and "did not come from this dashboard" in r.get_data(as_text=True)
    assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 200


def test_csrf_cookie_is_httponly_strict(dash: tuple[Flask, JWTShield]) -> None:
    app, _ = dash
    r = app.test_client().get("/shield/")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/shield" in cookie


def test_without_secret_key_the_signing_key_derives_the_csrf_key(make_app: AppFactory) -> None:
    app, shield = make_app()
    assert not app.secret_key
    app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/d")
    client = app.test_client()
    login(client)
    page = client.get("/d/subject?sub=alice")
    sid = re.search(r'name="sid" value="([^"]+)"', page.get_data(as_text=True))
    assert sid
    r = client.post("/d/revoke/session", data={"sid": sid.group(1), "csrf_token": csrf_of(page)})
    assert r.status_code == 303


# -- events, filters, pages, chart -------------------------------------------------------


def test_filters_and_pagination(dash: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, _ = dash
    client = app.test_client()
    for _ in range(PER_PAGE + 10):
        login(client, "bob")
    login(client, "alice")
    first = client.get("/shield/?kind=session-started").get_data(as_text=True)
    assert first.count('<tr class="info">') == PER_PAGE
    assert "older →" in first
    second = client.get("/shield/?kind=session-started&page=2").get_data(as_text=True)
    assert second.count('<tr class="info">') == 11 and "older →" not in second and "← newer" in second
    alice = client.get("/shield/?subject=alice").get_data(as_text=True)
    assert alice.count('<tr class="info">') == 1
    clock.advance(2 * 3600)
    assert "No events match" in client.get("/shield/?since=1h").get_data(as_text=True)
    assert client.get("/shield/?since=3h").get_data(as_text=True).count('<tr class="info">') == PER_PAGE


@pytest.mark.parametrize(
    "query",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": "x"},
        {"page": "99999999999999999999"},
        {"page": "1.5"},
        {"kind": "no-such-kind"},
        {"since": "yesterday"},
        {"since": "9999999999d"},
        {"subject": "a" * 600},
        {"subject": "\x00"},
    ],
)
def test_odd_query_parameters_are_400(dash: tuple[Flask, JWTShield], query: dict[str, str]) -> None:
    app, _ = dash
    r = app.test_client().get("/shield/?" + urlencode(query))
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert "Traceback" not in r.get_data(as_text=True)


def test_subject_page_needs_a_known_subject(dash: tuple[Flask, JWTShield]) -> None:
    app, _ = dash
    client = app.test_client()
    assert client.get("/shield/subject").status_code == 400
    r = client.get("/shield/subject?sub=nobody")
    assert r.status_code == 404 and "knows nothing about the subject" in r.get_data(as_text=True)


def test_subject_page_shows_sessions_places_and_timeline(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_GEOIP_DATABASE": str(DEMO_DB)})
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/shield")
    client = app.test_client()
    berlin = json_of(client.post("/login", headers={"X-Forwarded-For": "192.0.2.10"}))
    clock.advance(86_400)
    tokyo = json_of(client.post("/login", headers={"X-Forwarded-For": "203.0.113.7"}))
    html = client.get("/shield/subject?sub=alice").get_data(as_text=True)
    tokyo_sid, berlin_sid = sid_of(app, tokyo["access_token"]), sid_of(app, berlin["access_token"])
    row = re.search(rf'<tr id="session-{tokyo_sid}" class="flagged">.*?</tr>', html, re.S)
    assert row and "new country" in row.group(0) and "JP" in row.group(0)
    assert re.search(rf'<tr id="session-{berlin_sid}" class="">', html)
    assert "Logged in from, most recent first:" in html
    assert html.index('<span class="country">JP</span>') < html.index('<span class="country">DE</span>')
    assert "new-country" in html and "new: JP; before: DE" in html


def test_chart_counts_events_per_hour_by_kind() -> None:
    now = 1_800_000_000.0  # 08:00:00 UTC
    hour = 3600
    events = [
        SecurityEvent(kind="session-started", at=now - 10),
        SecurityEvent(kind="session-started", at=now - 20),
        SecurityEvent(kind="new-country", at=now - 30),
        SecurityEvent(kind="token-rejected", at=now - 5 * hour),
        SecurityEvent(kind="token-rejected", at=now - 30 * hour),
    ]
    chart = hourly(events, now=now)
    assert chart.total == 4  # the one 30 hours ago is outside
    assert [(k, n) for k, _, n in chart.legend] == [("session-started", 2), ("token-rejected", 1), ("new-country", 1)]
    last_hour = [b for b in chart.bars if b.title.startswith("07:00")]
    assert sorted(b.title for b in last_hour) == ["07:00 UTC: 1 new-country", "07:00 UTC: 2 session-started"]
    stacked = sorted(last_hour, key=lambda b: b.y)
    assert stacked[0].y + stacked[0].height == pytest.approx(stacked[1].y, abs=0.2)  # stacked, not overlapping
    assert [label for _, label in chart.grid] == ["0", "2", "4"]  # 3 at the peak: the axis goes to 4
    assert chart.ticks[0][1] == "09:00" and chart.ticks[-1][1] == "06:00" and len(chart.ticks) == 8


def test_the_page_loads_nothing_from_elsewhere(dash: tuple[Flask, JWTShield]) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    html = client.get("/shield/").get_data(as_text=True)
    assert "<svg" in html and "<script" not in html
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/", "#")), url
    with client.get("/shield/static/dashboard.css") as css:
        assert css.status_code == 200 and css.mimetype == "text/css"


# -- never a 500 ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        ["/shield/", "/shield/subject", "/shield/keys", *FORMS, "/shield/static/x", "/shield/revoke/"]
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    fields=st.dictionaries(
        st.sampled_from(["sid", "jti", "sub", "kid", "csrf_token", "kind", "page", "since", "subject"]),
        st.text(max_size=40),
        max_size=4,
    ),
    good_csrf=st.booleans(),
)
def test_no_dashboard_request_gets_a_5xx(
    dash: tuple[Flask, JWTShield], path: str, method: str, fields: dict[str, str], good_csrf: bool
) -> None:
    app, _ = dash
    client = app.test_client()
    login(client)
    if good_csrf:
        fields = {**fields, "csrf_token": csrf_of(client.get("/shield/subject?sub=alice"))}
    if method == "GET":
        r = client.get(path, query_string=fields)
    else:
        r = client.open(path, method=method, data=fields)
    assert r.status_code < 500, r.get_data(as_text=True)[:300]


def test_an_app_with_no_key_for_the_forms_is_refused_at_registration(make_app: AppFactory) -> None:
    """Verify-only mode (a public key only) and no SECRET_KEY: nothing to sign CSRF tokens with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from flask_jwt_shield import ConfigurationError

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    app, shield = make_app({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PUBLIC_KEY": public})
    with pytest.raises(ConfigurationError, match="set SECRET_KEY"):
        app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/shield")
    app.secret_key = "s" * 32
    app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True, name="dash2"), url_prefix="/shield")
    assert app.test_client().get("/shield/keys").status_code == 200


@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("redis", marks=pytest.mark.redis), pytest.param("redis-cluster", marks=pytest.mark.redis)],
)
def test_find_and_revoke_on_every_store(
    make_app: AppFactory, admin: Admin, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from .test_store_contract import make_store

    store = make_store(backend, request, tmp_path)
    try:
        app, shield = make_app(store=store)
        app.register_blueprint(shield.dashboard_blueprint(authorize=admin), url_prefix="/shield")
        client = app.test_client()
        keep, thief = login(client), login(client)
        sid = sid_of(app, thief["access_token"])
        assert f"#session-{sid}" in client.get("/shield/?kind=session-started").get_data(as_text=True)
        page = client.get("/shield/subject?sub=alice")
        assert page.get_data(as_text=True).count("Revoke session") == 2
        r = client.post("/shield/revoke/session", data={"sid": sid, "csrf_token": csrf_of(page)})
        assert r.status_code == 303
        assert client.get("/api/me", headers=bearer(thief["access_token"])).status_code == 401
        assert client.get("/api/me", headers=bearer(keep["access_token"])).status_code == 200
        assert "family-revoked" in client.get("/shield/subject?sub=alice").get_data(as_text=True)
    finally:
        store.close()


def test_resource_server_mode_lists_and_revokes_the_providers_keys(make_app: AppFactory, clock: Clock) -> None:
    from .idp_util import IdPServer
    from .idp_util import SigningKey
    from .idp_util import idp_claims
    from .idp_util import rsa_key

    idp = IdPServer()
    try:
        rs, other = SigningKey("idp-rs", "RS256", rsa_key("idp-1")), SigningKey("idp-old", "RS256", rsa_key("idp-2"))
        idp.publish(rs, other)
        issuer, audience = idp.url + "/", "https://api.example.com"
        app, shield = make_app(
            {
                "JWT_SHIELD_SECRET_KEY": None,
                "JWT_SHIELD_JWKS_URL": idp.jwks_url,
                "JWT_SHIELD_ISSUER": issuer,
                "JWT_SHIELD_AUDIENCE": audience,
            }
        )
        app.secret_key = "dashboard-secret-" + "s" * 32  # no signing key here: SECRET_KEY keys the forms
        app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/shield")
        client = app.test_client()
        old_token = other.sign(idp_claims(issuer, audience, sub="auth0|alice"), typ="at+jwt")
        assert client.get("/api/me", headers=bearer(old_token)).status_code == 200  # the JWK Set is fetched
        page = client.get("/shield/keys")
        html = page.get_data(as_text=True)
        assert "Resource-server mode" in html and "idp-rs" in html and "idp-old" in html
        r = client.post("/shield/revoke/key", data={"kid": "idp-old", "csrf_token": csrf_of(page)})
        assert r.status_code == 303
        assert client.get("/api/me", headers=bearer(old_token)).status_code == 401
        new_token = rs.sign(idp_claims(issuer, audience, sub="auth0|alice"), typ="at+jwt")
        assert client.get("/api/me", headers=bearer(new_token)).status_code == 200
    finally:
        idp.stop()


# -- issue 19 (items 7 and 14) and issue 24 (findings 9 and 10) ------------------------------


def test_log_out_everywhere_asks_first(dash: tuple[Flask, JWTShield]) -> None:
    """Issue 19 item 14: one click on "Log out everywhere" ended every session of the user.
    Now the button shows a confirmation page (a second POST, no script), which keeps CSRF."""
    app, shield = dash
    client = app.test_client()
    pair = login(client)
    page = client.get("/shield/subject?sub=alice")
    assert "Log out everywhere" in page.get_data(as_text=True)
    r = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": csrf_of(page)})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "Log out alice everywhere?" in html and "the 1 live session ends" in html
    assert f'name="confirm" value="{CONFIRM}"' in html and 'name="csrf_token" value="' in html
    assert 'href="/shield/subject?sub=alice">Cancel</a>' in html
    assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 200  # nothing yet
    with app.app_context():
        assert shield.events(kind="subject-revoked") == []
    wrong = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": csrf_of(r), "confirm": "yes"})
    assert wrong.status_code == 200 and "Log out alice everywhere?" in wrong.get_data(as_text=True)
    forged = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": "x", "confirm": CONFIRM})
    assert forged.status_code == 400
    assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 200
    done = client.post("/shield/revoke/subject", data={"sub": "alice", "csrf_token": csrf_of(r), "confirm": CONFIRM})
    assert done.status_code == 303 and "done=subject" in done.headers["Location"]
    assert client.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401


def test_the_refusal_page_is_styled(dash: tuple[Flask, JWTShield], admin: Admin) -> None:
    """Issue 19 item 7: the stylesheet sat behind authorize(), so the 403 page -- the first
    page a logged-out admin sees -- was bare HTML."""
    app, _ = dash
    admin.allowed = False
    client = app.test_client()
    page = client.get("/shield/keys")
    assert page.status_code == 403
    css_url = re.search(r'<link rel="stylesheet" href="([^"]+)"', page.get_data(as_text=True))
    assert css_url and css_url.group(1) == "/shield/static/dashboard.css"
    with client.get(css_url.group(1)) as css:
        assert css.status_code == 200 and css.mimetype == "text/css"
        assert ".top {" in css.get_data(as_text=True)


@pytest.mark.parametrize(
    ("login_url", "path", "method", "expected"),
    [
        ("/admin/login", "/shield/keys", "GET", "/admin/login?next=%2Fshield%2Fkeys"),
        (
            "/admin/login",
            "/shield/?kind=new-country&since=7d",
            "GET",
            "/admin/login?next=%2Fshield%2F%3Fkind%3Dnew-country%26since%3D7d",
        ),
        (
            "https://sso.example/login?app=shop&next=/x",
            "/shield/subject?sub=alice",
            "GET",
            "https://sso.example/login?app=shop&amp;next=%2Fshield%2Fsubject%3Fsub%3Dalice",
        ),
        ("/admin/login", "/shield/revoke/session", "POST", "/admin/login?next=%2Fshield%2F"),
    ],
)
def test_the_login_link_returns_to_the_page_asked_for(
    make_app: AppFactory, login_url: str, path: str, method: str, expected: str
) -> None:
    """Issue 19 item 7: logging in did not return to the page asked for. The 403 page passes
    it to ``login_url`` as ``next`` (a POST's page is the dashboard's start)."""
    app, shield = make_app()
    app.register_blueprint(
        shield.dashboard_blueprint(authorize=lambda: False, login_url=login_url), url_prefix="/shield"
    )
    r = app.test_client().open(path, method=method, data={"sid": "x", "csrf_token": "x"})
    assert r.status_code == 403
    assert f'<a class="button" href="{expected}">Log in as an administrator</a>' in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "value",
    ["/shield/", "/shield/keys", "/shield/?kind=new-country&since=7d", "/shield/subject?sub=auth0%7Calice", "/a/b#c"],
)
def test_local_paths_are_followed(value: str) -> None:
    assert is_local_path(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "/\\/evil.example",
        "javascript:alert(1)",
        "evil.example/shield",
        " /shield/",
        "/shield/\r\nSet-Cookie: x=1",
        "/\t/evil.example",
        "http:/evil.example",
        "/" + "a" * 3000,
    ],
)
def test_next_is_never_an_open_redirect(value: str | None) -> None:
    assert not is_local_path(value)


def test_the_example_apps_login_follows_only_a_local_next(tmp_path: Path) -> None:
    """The example app's admin login goes back to ``next`` -- only when it is a local path."""
    from example_app.app import create_app

    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))

    def log_in(next_value: str) -> str:
        client = app.test_client()
        forbidden = client.get("/shield/keys")
        assert forbidden.status_code == 403 and "/admin/login?next=%2Fshield%2Fkeys" in forbidden.get_data(as_text=True)
        form = client.get("/admin/login", query_string={"next": next_value}).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        r = client.post(
            "/admin/login",
            data={"username": "alice", "password": "wonderland", "csrf_token": token.group(1), "next": next_value},
        )
        assert r.status_code == 303
        return r.headers["Location"]

    assert log_in("/shield/keys") == "/shield/keys"
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        assert log_in(evil) == "/shield/"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_keys_page_shows_a_revoked_key_on_a_shared_store(
    make_app: AppFactory, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Issue 24 finding 9: every key was checked with one fake jti, and the process's local
    "not revoked" view answered the repeats: a revoked key showed "in use"."""
    from .test_store_contract import make_store

    store = make_store(backend, request, tmp_path)
    try:
        app, shield = make_app({"JWT_SHIELD_KEYS": [NEW_KEY, OLD_KEY, {"kid": "older", "key": "q" * 40}]}, store=store)
        app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/shield")
        client = app.test_client()
        with app.app_context():
            shield.revoke_key("older")
        for _ in range(2):  # the second look is the one a local view would answer
            html = client.get("/shield/keys").get_data(as_text=True)
            rows = dict(
                re.findall(
                    r'<td class="mono">([^<]+)</td>.*?<td>(?:<span class="kind action">)?'
                    r"(revoked|in use)",
                    html,
                    re.S,
                )
            )
            assert rows == {"new": "in use", "old": "in use", "older": "revoked"}, rows
        assert store.is_revoked("kid", "older", now=1e12) is False  # forgotten after its horizon
        import time

        assert store.is_revoked("kid", "older", now=time.time()) and not store.is_revoked("kid", "old", now=time.time())
    finally:
        store.close()


def test_keys_page_masks_the_jwks_urls_credentials(make_app: AppFactory, idp: t.Any) -> None:
    """Issue 24 finding 10 on the dashboard: the JWK Set URL is shown with its credentials masked."""
    jwks_url = idp.jwks_url.replace("http://", "http://reader:s3cret-pw@") + "?token=s3cret-token"
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": jwks_url,
            "JWT_SHIELD_ISSUER": idp.url + "/",
            "JWT_SHIELD_AUDIENCE": "https://api.example",
        }
    )
    app.secret_key = "dashboard-secret-" + "s" * 32
    app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: True), url_prefix="/shield")
    html = app.test_client().get("/shield/keys").get_data(as_text=True)
    assert "s3cret" not in html
    assert 'JWK Set: <span class="mono">http://reader:***@127.0.0.1:' in html and "?token=***</span>" in html


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            SecurityEvent(
                kind="impossible-travel",
                at=0,
                detail={
                    "from": {"city": "Berlin", "country": "DE"},
                    "to": {"city": "Tokyo", "country": "JP"},
                    "speed_kmh": 8912.4,
                    "limit_kmh": 805.0,
                },
            ),
            "Berlin, DE → Tokyo, JP, 8,912 km/h (limit 805 km/h)",
        ),
        (SecurityEvent(kind="session-started", at=0, detail={"bound": "dpop"}), "bound to a DPoP key"),
        (SecurityEvent(kind="session-started", at=0, detail={"bound": "fingerprint"}), "bound to a browser cookie"),
    ],
)
def test_event_summaries_name_units_and_keys(event: SecurityEvent, text: str) -> None:
    """Issue 19 item 14: "(limit 805.0)" had no unit; "bound to a dpop" said nothing to a reader."""
    from flask_jwt_shield.dashboard import _summary

    assert _summary(event) == text


def test_next_keeps_the_apps_mount_point(make_app: AppFactory) -> None:
    """An app mounted under a path (SCRIPT_NAME) gets ``next`` with that path in front."""
    app, shield = make_app()
    app.register_blueprint(
        shield.dashboard_blueprint(authorize=lambda: False, login_url="/app/admin/login"), url_prefix="/shield"
    )
    r = app.test_client().get("/shield/keys", base_url="http://localhost/app")
    assert r.status_code == 403
    assert 'href="/app/admin/login?next=%2Fapp%2Fshield%2Fkeys"' in r.get_data(as_text=True)


def test_next_never_echoes_a_token(make_app: AppFactory) -> None:
    """The query string is whatever the client sent: ``next`` keeps only the dashboard's own
    parameters, and none shaped like a token (found by tests/test_example_fuzz.py)."""
    app, shield = make_app()
    app.register_blueprint(
        shield.dashboard_blueprint(authorize=lambda: False, login_url="/login-page"), url_prefix="/shield"
    )
    with app.app_context():
        token = shield.issue_tokens("alice").refresh_token
    client = app.test_client()
    r = client.get("/shield/", query_string={"refresh_token": token, "kind": "new-country", "x": "1"})
    html = r.get_data(as_text=True)
    assert r.status_code == 403 and token not in html and token.split(".")[1] not in html
    assert 'href="/login-page?next=%2Fshield%2F%3Fkind%3Dnew-country"' in html
    r = client.get("/shield/subject", query_string={"sub": token})
    assert token.split(".")[1] not in r.get_data(as_text=True)
    assert 'href="/login-page?next=%2Fshield%2Fsubject"' in r.get_data(as_text=True)


def test_forget_places_from_the_subject_page(dash: tuple[Flask, JWTShield]) -> None:
    """Newcomer's list, bug 3: after a false alarm an operator clears the geo history."""
    app, _ = dash
    client = app.test_client()
    login(client)
    with app.app_context():
        current_state().store.put_profile("alice", {"countries": ["JP"], "last": {"country": "JP", "at": 1.0}})
    page = client.get("/shield/subject?sub=alice")
    assert "Forget places" in page.get_data(as_text=True)
    r = client.post("/shield/forget-places", data={"sub": "alice", "csrf_token": csrf_of(page)})
    assert r.status_code == 303
    with app.app_context():
        assert current_state().store.get_profile("alice") == {}
    assert "Forget places" not in client.get("/shield/subject?sub=alice").get_data(as_text=True)
    forged = client.post("/shield/forget-places", data={"sub": "alice", "csrf_token": "guess"})
    assert forged.status_code in (400, 403)
