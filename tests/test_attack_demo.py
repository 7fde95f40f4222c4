"""``python -m example_app.attack_demo`` against the example app served over HTTP from its own
process: every story runs and the shield stops the thief in each (real time, so the refresh
reuse story waits out the example's 5 s grace)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import typing as t
from pathlib import Path

from example_app.app import create_app
from example_app.app import shield

from .example_server import ROOT
from .example_server import serve

DEMO_TIMEOUT = 180


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "example_app.attack_demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def test_the_demo_plays_every_story_and_the_shield_stops_each(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    with serve(instance) as server:
        done = run_demo("--url", server.url)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for title in (
        "A stolen access token, replayed from another country",
        "Impossible travel",
        "Hammering the API",
        "A stolen refresh token: reuse detection",
        "Use after 'log out everywhere'",
        "A DPoP-bound token replayed without its key",
        "A token used from another country: the password again, not a logout",
    ):
        assert title in out
    assert out.count("=> STOPPED") == 7 and "NOT STOPPED" not in out
    assert "The shield stopped the thief in 7 of 7 stories." in out
    # What it printed is what the shield stored.
    for line in (
        "impossible-travel  from BR -> revoke_family",
        "new-country        from JP -> flag",
        "traffic-spike      -> revoke",
        "refresh-reused     -> revoke_family",
        "subject-revoked    -> revoke_subject",
        "dpop-rejected      -> deny  (dpop-wrong-key)",
        "country-changed    from JP -> step_up  (required)",
    ):
        assert line in out, line
    app = create_app({"TESTING": True}, instance_path=str(instance))
    with app.app_context():
        kinds = {e.kind for e in shield.events(limit=1000)}
    assert {
        "impossible-travel",
        "new-country",
        "traffic-spike",
        "rate-limited",
        "refresh-reused",
        "subject-revoked",
        "dpop-rejected",
        "country-changed",
    } <= kinds
    # RFC 9470 §3: the thief got the challenge, with the requirement to meet.
    (challenge,) = [line.strip() for line in out.splitlines() if "WWW-Authenticate:" in line]
    assert challenge.startswith(
        'WWW-Authenticate: Bearer realm="api", error="insufficient_user_authentication",'
        ' error_description="This token was issued in another country. Authenticate'
        ' again to continue."'
    )
    assert challenge.endswith(', max_age="5"')
    assert "eyJ" not in out  # no token is ever printed


def _call(url: str, *, body: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> t.Any:
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_the_demo_does_not_depend_on_what_the_visitor_did_before(tmp_path: Path) -> None:
    """A visitor logs in from 127.0.0.1 (no country) and then uses the token from Tokyo:
    accepted (there is no last place to travel from), so Tokyo becomes each user's last
    place. The demo, whose stories start in Berlin and Munich seconds later, still plays all
    six: it clears their places first."""
    with serve(tmp_path / "instance") as server:
        for user, password in (("alice", "wonderland"), ("bob", "builder")):
            pair = _call(server.url + "/auth/login", body={"username": user, "password": password})
            me = _call(
                server.url + "/api/me",
                headers={"Authorization": f"Bearer {pair['access_token']}", "X-Forwarded-For": "203.0.113.7"},
            )
            assert me["sub"] == user
        done = run_demo("--url", server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The shield stopped the thief in 7 of 7 stories." in done.stdout
    assert "NOT PLAYED" not in done.stdout


def test_the_demo_says_when_the_app_is_not_running() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_demo("--url", f"http://127.0.0.1:{port}")
    assert done.returncode == 2 and "Start it with `make run`" in done.stdout
