"""The dashboard in a real browser: headless Chromium against the example app served over HTTP.

The story of the 3 a.m. call: Alice logged in from Berlin yesterday; tonight someone logs in
as her from Tokyo (a new country). The admin logs in to the example app, sees the event on
the dashboard, opens Alice's page and revokes that session -- two clicks -- and the thief's
access token gets 401 while Alice's own session lives on.

Screenshots of each step go to the test's temporary folder (or ``$JWT_SHIELD_SCREENSHOTS``);
docs/_static/dashboard.png is one of them.
"""

from __future__ import annotations

import json
import os
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from example_app.app import create_app

from .browser_util import DESKTOP
from .browser_util import PHONE
from .browser_util import chromium
from .browser_util import screenshot
from .browser_util import wait_for_title
from .conftest import json_of
from .example_server import serve

BERLIN, MUNICH, TOKYO = "192.0.2.10", "192.0.2.140", "203.0.113.7"
HTTP_TIMEOUT = 10


def call(
    url: str, *, method: str = "GET", body: dict[str, t.Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, t.Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"{}")


def yesterday(instance: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What happened before tonight, through the app itself at earlier times: Alice in
    Berlin 20 hours ago, Bob around Munich all day. Returns Alice's session id."""
    app = create_app({"TESTING": True}, instance_path=str(instance))
    client = app.test_client()
    real = time.time()

    def at(hours_ago: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real - hours_ago * 3600)

    at(20)
    alice = json_of(
        client.post(
            "/auth/login", json={"username": "alice", "password": "wonderland"}, headers={"X-Forwarded-For": BERLIN}
        )
    )
    for hours_ago in (18, 13, 9, 6, 3, 1.5):
        at(hours_ago)
        bob = json_of(
            client.post(
                "/auth/login", json={"username": "bob", "password": "builder"}, headers={"X-Forwarded-For": MUNICH}
            )
        )
        at(hours_ago - 0.2)
        client.post(
            "/auth/refresh",
            data={"grant_type": "refresh_token", "refresh_token": bob["refresh_token"]},
            headers={"X-Forwarded-For": MUNICH},
        )
        client.get("/api/me", headers={"Authorization": "Bearer not-a-token", "X-Forwarded-For": MUNICH})
    monkeypatch.setattr(time, "time", lambda: real)
    return t.cast(str, jwt.decode(alice["access_token"], options={"verify_signature": False})["sid"])


def test_admin_finds_the_thiefs_session_and_kills_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shots = Path(os.environ.get("JWT_SHIELD_SCREENSHOTS") or tmp_path / "screenshots")
    instance = tmp_path / "instance"
    alice_sid = yesterday(instance, monkeypatch)
    from selenium.webdriver.common.by import By

    with serve(instance) as server, chromium() as browser:
        # Tonight: the thief logs in as Alice from Tokyo, and uses the token.
        status, thief = call(
            server.url + "/auth/login",
            method="POST",
            body={"username": "alice", "password": "wonderland"},
            headers={"X-Forwarded-For": TOKYO},
        )
        assert status == 200 and thief.get("notice") == "login from a new country for this account"
        thief_sid = jwt.decode(thief["access_token"], options={"verify_signature": False})["sid"]
        as_thief = {"Authorization": f"Bearer {thief['access_token']}", "X-Forwarded-For": TOKYO}
        assert call(server.url + "/api/me", headers=as_thief)[0] == 200

        # The admin opens the app, follows the start page to the admin login, logs in.
        browser.get(server.url + "/")
        screenshot(browser, shots, "start-page")
        browser.find_element(By.LINK_TEXT, "Log in as alice").click()
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("wonderland")
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        assert wait_for_title(browser, "Events · Shield") == "Events · Shield"
        assert browser.current_url == server.url + "/shield/"

        # The new-country event is on the dashboard, at the top.
        row = browser.find_element(By.XPATH, "//table[contains(@class,'events')]//tr[.//span[text()='new-country']]")
        assert "JP" in row.text and "new: JP; before: DE" in row.text
        assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")  # the chart has bars
        screenshot(browser, shots, "dashboard")

        # Click 1: the user in that row. Her page marks the session from the new country.
        row.find_element(By.LINK_TEXT, "alice").click()
        wait_for_title(browser, "alice · Shield")
        flagged = browser.find_element(By.CSS_SELECTOR, "table.sessions tr.flagged")
        assert flagged.get_attribute("id") == f"session-{thief_sid}" and "new country" in flagged.text
        assert browser.find_element(By.ID, f"session-{alice_sid}")  # her own session, from Berlin
        screenshot(browser, shots, "subject")

        # Click 2: revoke it.
        flagged.find_element(By.XPATH, ".//button[text()='Revoke session']").click()
        notice = browser.find_element(By.CSS_SELECTOR, "p.notice")
        assert "revoked" in notice.text
        assert not browser.find_elements(By.ID, f"session-{thief_sid}")
        assert browser.find_elements(By.ID, f"session-{alice_sid}")
        screenshot(browser, shots, "revoked")

        # The thief's access token is refused from now on; the refresh token too.
        status, body = call(server.url + "/api/me", headers=as_thief)
        assert status == 401 and "revoked" in body["error_description"]
        status, body = call(
            server.url + "/auth/refresh",
            method="POST",
            body={"refresh_token": thief["refresh_token"]},
            headers={"X-Forwarded-For": TOKYO},
        )
        assert status == 400 and body["error"] == "invalid_grant"

        # The keys page in the same browser session.
        browser.find_element(By.LINK_TEXT, "Keys").click()
        wait_for_title(browser, "Keys · Shield")
        assert "signs" in browser.find_element(By.TAG_NAME, "table").text
        screenshot(browser, shots, "keys")


def test_a_forged_revoke_form_from_another_site_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin who is logged in visits an attacker's page that posts a revoke form to the
    dashboard: the browser sends no cookie cross-site (SameSite) and the form has no valid
    token, so nothing is revoked."""
    instance = tmp_path / "instance"
    alice_sid = yesterday(instance, monkeypatch)
    from selenium.webdriver.common.by import By

    with serve(instance) as server, chromium() as browser:
        browser.get(server.url + "/admin/login")
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("wonderland")
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for_title(browser, "Events · Shield")
        evil = tmp_path / "evil.html"
        evil.write_text(
            f'<form id="f" method="post" action="{server.url}/shield/revoke/subject">'
            f'<input name="sub" value="alice"><input name="csrf_token" value="guess"></form>'
            f'<button id="go" form="f">win a prize</button>'
        )
        browser.get(evil.as_uri())
        browser.find_element(By.ID, "go").click()
        assert wait_for_title(browser, "403", "400")  # the forged form is refused
        browser.get(server.url + "/shield/subject?sub=alice")
        assert browser.find_elements(By.ID, f"session-{alice_sid}")  # still alive


def admin_login(browser: t.Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("wonderland")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def test_the_refusal_page_is_styled_and_login_returns_to_the_page(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 19 item 7: a logged-out admin who opens the Keys page gets a styled 403 page;
    its login link brings them back to the Keys page, not to the start."""
    shots = Path(os.environ.get("JWT_SHIELD_SCREENSHOTS") or tmp_path / "screenshots")
    instance = tmp_path / "instance"
    yesterday(instance, monkeypatch)
    from selenium.webdriver.common.by import By

    with serve(instance) as server, chromium() as browser:
        browser.get(server.url + "/shield/keys")
        assert wait_for_title(browser, "403").startswith("403")
        # The stylesheet loaded: the page has the dashboard's colours, not the browser's defaults.
        header = browser.find_element(By.CSS_SELECTOR, "header.top")
        assert header.value_of_css_property("background-color") == "rgba(29, 39, 51, 1)"
        assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(245, 246, 248)"
        screenshot(browser, shots, "refused")
        screenshot(browser, shots, "refused-phone", width=PHONE)
        browser.set_window_size(DESKTOP, 1000)
        browser.find_element(By.LINK_TEXT, "Log in as an administrator").click()
        admin_login(browser, server.url)
        assert wait_for_title(browser, "Keys · Shield") == "Keys · Shield"
        assert browser.current_url == server.url + "/shield/keys"


def test_log_out_everywhere_asks_for_a_confirmation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 14: "Log out everywhere" ended every session at one click. Now a
    confirmation page comes first (a second form, no script); Cancel changes nothing."""
    shots = Path(os.environ.get("JWT_SHIELD_SCREENSHOTS") or tmp_path / "screenshots")
    instance = tmp_path / "instance"
    alice_sid = yesterday(instance, monkeypatch)
    from selenium.webdriver.common.by import By

    with serve(instance) as server, chromium() as browser:
        status, pair = call(
            server.url + "/auth/login",
            method="POST",
            body={"username": "alice", "password": "wonderland"},
            headers={"X-Forwarded-For": BERLIN},
        )
        assert status == 200
        as_alice = {"Authorization": f"Bearer {pair['access_token']}", "X-Forwarded-For": BERLIN}
        browser.get(server.url + "/admin/login?next=/shield/subject%3Fsub%3Dalice")
        admin_login(browser, server.url)
        wait_for_title(browser, "alice · Shield")
        browser.find_element(By.XPATH, "//button[text()='Log out everywhere']").click()
        wait_for_title(browser, "Log out alice everywhere?")
        assert "2 live sessions end" in browser.find_element(By.CSS_SELECTOR, "section.confirm").text
        screenshot(browser, shots, "confirm")
        screenshot(browser, shots, "confirm-phone", width=PHONE)
        browser.set_window_size(DESKTOP, 1000)
        browser.find_element(By.LINK_TEXT, "Cancel").click()
        wait_for_title(browser, "alice · Shield")
        assert browser.find_elements(By.ID, f"session-{alice_sid}")
        assert call(server.url + "/api/me", headers=as_alice)[0] == 200  # cancelled: nothing happened
        browser.find_element(By.XPATH, "//button[text()='Log out everywhere']").click()
        wait_for_title(browser, "Log out alice everywhere?")
        browser.find_element(By.XPATH, "//button[text()='Yes, log out everywhere']").click()
        wait_for_title(browser, "alice · Shield")
        assert "log out everywhere" in browser.find_element(By.CSS_SELECTOR, "p.notice").text
        status, body = call(server.url + "/api/me", headers=as_alice)
        assert status == 401 and "revoked" in body["error_description"]


PHONE_PAGES = [
    ("events", "/shield/", "Events · Shield"),
    ("subject", "/shield/subject?sub=alice", "alice · Shield"),
    ("keys", "/shield/keys", "Keys · Shield"),
]


def test_pages_fit_a_phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 14: at phone width the header was cut and the tables scrolled the whole
    page sideways. Now nothing is wider than the window; a wide table scrolls in its card."""
    shots = Path(os.environ.get("JWT_SHIELD_SCREENSHOTS") or tmp_path / "screenshots")
    instance = tmp_path / "instance"
    yesterday(instance, monkeypatch)
    from selenium.webdriver.common.by import By

    with serve(instance) as server, chromium() as browser:
        call(
            server.url + "/auth/login",
            method="POST",
            body={"username": "alice", "password": "wonderland"},
            headers={"X-Forwarded-For": TOKYO},
        )
        browser.get(server.url + "/admin/login")
        admin_login(browser, server.url)
        wait_for_title(browser, "Events · Shield")
        browser.set_window_size(PHONE, 800)
        for name, path, title in PHONE_PAGES:
            browser.get(server.url + path)
            wait_for_title(browser, title)
            width = browser.execute_script("return window.innerWidth")
            assert width <= PHONE
            assert browser.execute_script("return document.documentElement.scrollWidth") <= width, name
            for element in browser.find_elements(By.CSS_SELECTOR, "header.top a, header.top input, header.top button"):
                box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", element)
                assert 0 <= box["left"] and box["right"] <= width, (name, element.text, box)
            screenshot(browser, shots, f"{name}-phone", width=PHONE)
            browser.set_window_size(PHONE, 800)
        browser.get(server.url + "/shield/subject?sub=alice")
        browser.find_element(By.XPATH, "//button[text()='Log out everywhere']").click()
        wait_for_title(browser, "Log out alice everywhere?")
        width = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width  # the confirmation too
