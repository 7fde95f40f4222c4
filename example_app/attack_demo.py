"""Play the stolen-token stories against the running example app, and say what happened.

    make run                                   # in one terminal
    make demo                                  # in another (make demo URL=... for another address)

Each story logs a user in, hands a copy of something to a thief, lets the thief try, and
prints what the thief got and what the shield recorded (the user's own security events,
read back through the API). The thief's place is played with ``X-Forwarded-For``, which
the example app trusts for the demo (192.0.2.10 Berlin, 192.0.2.140 Munich,
198.51.100.7 São Paulo, 203.0.113.7 Tokyo, from the bundled demo GeoIP database).

The stories do not depend on what was done before: the demo starts by having alice (an
admin) clear both users' GeoIP history (``POST /api/admin/forget-places``), logged in from
an address no database places, so a last place left far away (a visitor trying the start
page's tour from Tokyo) cannot make the logins "impossible travel".

The exit status is 0 when the shield stopped the thief in every story, 1 otherwise.
Nothing here needs more than the standard library and ``flask_jwt_shield.dpop.DPoPKey``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message

from flask_jwt_shield.dpop import DPoPKey

BERLIN, MUNICH, SAO_PAULO, TOKYO = "192.0.2.10", "192.0.2.140", "198.51.100.7", "203.0.113.7"
PLACES = {BERLIN: "Berlin", MUNICH: "Munich", SAO_PAULO: "São Paulo", TOKYO: "Tokyo"}
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
NOWHERE = "127.0.0.1"  # no GeoIP database places it: nothing is judged by place
TIMEOUT = 10  # seconds per request: a hung app ends the demo instead of hanging it


class Answer(t.NamedTuple):
    status: int
    body: dict[str, t.Any]
    headers: Message[str, str]

    def said(self) -> str:
        """The answer in a few words: the status and the error's description, if any."""
        if self.status < 400:
            return f"{self.status} OK"
        text = self.body.get("error_description") or self.body.get("error") or ""
        return f"{self.status} {self.body.get('error', '')}: {text}".rstrip(": ")


class App:
    """The running example app, over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.seen: set[str] = set()  # event ids already shown (or there before the demo)
        self.own_sids: set[str] = set()  # the demo's read-back logins

    def call(
        self,
        method: str,
        path: str,
        *,
        ip: str,
        json_body: t.Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = None
        sent = {"X-Forwarded-For": ip, **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as r:  # noqa: S310 - the URL the user gave
                return Answer(r.status, _json(r.read()), r.headers)
        except urllib.error.HTTPError as e:
            with e:
                return Answer(e.code, _json(e.read()), e.headers)

    def login(self, user: str, ip: str, *, dpop: DPoPKey | None = None) -> Answer:
        headers = {"DPoP": dpop.proof("POST", self.url + "/auth/login")} if dpop is not None else None
        return self.call(
            "POST", "/auth/login", ip=ip, json_body={"username": user, "password": PASSWORDS[user]}, headers=headers
        )

    def me(self, token: str, ip: str) -> Answer:
        return self.call("GET", "/api/me", ip=ip, headers={"Authorization": f"Bearer {token}"})

    def refresh(self, refresh_token: str, ip: str) -> Answer:
        return self.call(
            "POST", "/auth/refresh", ip=ip, form={"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    def new_events(self, user: str, ip: str | None = None) -> list[dict[str, t.Any]]:
        """The user's security events not shown yet, oldest first (read with a new login
        from ``ip``, by default the user's home, which is left out, like the demo's earlier
        read-back logins)."""
        ip = ip or (BERLIN if user == "alice" else MUNICH)
        pair = self.login(user, ip)
        if pair.status != 200:
            return []
        self.own_sids.add(str(_claim(pair.body.get("access_token"), "sid")))
        r = self.call("GET", "/api/events", ip=ip, headers={"Authorization": f"Bearer {pair.body['access_token']}"})
        found = [e for e in r.body.get("events", []) if isinstance(e, dict)] if r.status == 200 else []
        fresh = [
            e
            for e in found
            if e.get("id") not in self.seen
            and not (e.get("kind") == "session-started" and e.get("sid") in self.own_sids)
        ]
        self.seen.update(str(e.get("id")) for e in found)
        return sorted(fresh, key=lambda e: float(e.get("at") or 0))


def _json(raw: bytes) -> dict[str, t.Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _claim(token: object, name: str) -> t.Any:
    import base64

    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get(name)
    except ValueError:
        return None


def forget_places(app: App, users: t.Iterable[str] = tuple(PASSWORDS)) -> str | None:
    """Clear the users' GeoIP history, as alice (an admin); what went wrong, if anything."""
    admin = app.login("alice", NOWHERE)
    if admin.status != 200:
        return f"alice could not log in: {admin.said()}"
    auth = {"Authorization": f"Bearer {admin.body['access_token']}"}
    try:
        for user in users:
            r = app.call("POST", "/api/admin/forget-places", ip=NOWHERE, json_body={"username": user}, headers=auth)
            if r.status != 200:
                return f"clearing {user}'s places: {r.said()}"
    finally:
        app.own_sids.add(str(_claim(admin.body.get("access_token"), "sid")))
        app.call("POST", "/auth/logout", ip=NOWHERE, headers=auth)
    return None


class NotPlayed(Exception):
    """A story could not start (the user's login was refused)."""


def logged_in(answer: Answer, who: str) -> dict[str, t.Any]:
    if answer.status != 200:
        raise NotPlayed(f"{who} could not log in: {answer.said()}")
    return answer.body


class Story:
    """One stolen-token story: prints as it goes, remembers whether the thief was stopped."""

    def __init__(self, number: int, title: str, out: t.TextIO) -> None:
        self.number, self.title, self.out = number, title, out
        self.stopped: bool | None = None
        print(f"\n{number}. {title}", file=out)
        print("-" * (len(title) + 3), file=out)

    def say(self, who: str, text: str) -> None:
        print(f"  {who:<7} {text}", file=self.out)

    def verdict(self, stopped: bool, how: str) -> None:
        self.stopped = stopped
        mark = "STOPPED" if stopped else "NOT STOPPED"
        print(f"  => {mark}: {how}", file=self.out)

    def events(self, app: App, user: str, ip: str | None = None) -> None:
        found = app.new_events(user, ip)
        if not found:
            return
        print("  the shield recorded:", file=self.out)
        for e in found:
            where = f" from {e['country']}" if e.get("country") else ""
            action = f" -> {e['action']}" if e.get("action") else ""
            detail = e.get("detail") or {}
            reason = detail.get("reason") or detail.get("pattern") or detail.get("step_up") or ""
            line = f"    {e['kind']:<18}{where}{action}{f'  ({reason})' if reason else ''}"
            print(line.rstrip(), file=self.out)


def replay_from_abroad(app: App, out: t.TextIO) -> Story:
    s = Story(1, "A stolen access token, replayed from another country", out)
    pair = logged_in(app.login("alice", BERLIN), "alice")
    s.say("alice", f"logs in from Berlin and calls the API: {app.me(pair['access_token'], BERLIN).said()}")
    thief = app.me(pair["access_token"], SAO_PAULO)
    s.say("thief", f"replays her access token from São Paulo a second later: {thief.said()}")
    after = app.me(pair["access_token"], BERLIN)
    s.say("alice", f"her next call: {after.said()} (she logs in again; the thief's copy is dead)")
    s.verdict(
        thief.status in (401, 403),
        "a token used too far away, too soon: the session was revoked"
        if thief.status == 401
        else "refused from another country",
    )
    s.events(app, "alice")
    return s


def impossible_travel(app: App, out: t.TextIO) -> Story:
    s = Story(2, "Impossible travel: the thief has the password too", out)
    logged_in(app.login("alice", BERLIN), "alice")
    s.say("alice", "logs in from Berlin")
    thief = app.login("alice", TOKYO)
    s.say("thief", f"logs in as alice from Tokyo moments later: {thief.said()}")
    s.verdict(thief.status == 403, "Berlin to Tokyo in seconds is faster than any plane: the login was refused")
    s.events(app, "alice")
    return s


def hammering(app: App, out: t.TextIO) -> Story:
    s = Story(3, "Hammering the API with a stolen token", out)
    pair = logged_in(app.login("bob", MUNICH), "bob")
    s.say("bob", "logs in from Munich")
    counts: dict[int, int] = {}
    last = None
    for _ in range(400):  # bounded; the limit (60/minute) and the spike (120/minute) come first
        last = app.me(pair["access_token"], MUNICH)
        counts[last.status] = counts.get(last.status, 0) + 1
        if last.status == 401:
            break
    summary = ", ".join(f"{n} x {code}" for code, n in counts.items())  # in the order they came
    s.say("thief", f"sends request after request with bob's token: {summary}")
    if last is not None:
        s.say("thief", f"last answer: {last.said()}")
    s.verdict(
        counts.get(429, 0) > 0 and last is not None and last.status == 401,
        "rate-limited (429) at 60 a minute, then revoked at the spike threshold",
    )
    s.events(app, "bob")
    return s


def refresh_reuse(app: App, out: t.TextIO, grace: float) -> Story:
    s = Story(4, "A stolen refresh token: reuse detection", out)
    pair = logged_in(app.login("alice", BERLIN), "alice")
    s.say("alice", "logs in from Berlin; the thief copies her refresh token")
    stolen = app.refresh(pair["refresh_token"], BERLIN)
    s.say("thief", f"refreshes first and gets a new pair: {stolen.said()}")
    if grace > 0:
        s.say("", f"(waiting {grace + 1:.0f} s: the example allows {grace:.0f} s for two tabs refreshing at once)")
        time.sleep(grace + 1)
    own = app.refresh(pair["refresh_token"], BERLIN)
    s.say("alice", f"her app refreshes with the token it holds: {own.said()}")
    thief_api = app.me(stolen.body.get("access_token", ""), BERLIN)
    thief_refresh = app.refresh(stolen.body.get("refresh_token", ""), BERLIN)
    s.say("thief", f"uses the new access token: {thief_api.said()}")
    s.say("thief", f"and the new refresh token: {thief_refresh.said()}")
    s.verdict(
        own.status == 400 and thief_api.status == 401 and thief_refresh.status == 400,
        "a refresh token used twice revokes the whole session; alice logs in again",
    )
    s.events(app, "alice")
    return s


def after_logout_everywhere(app: App, out: t.TextIO) -> Story:
    s = Story(5, "Use after 'log out everywhere'", out)
    laptop = logged_in(app.login("alice", BERLIN), "alice")
    copied = logged_in(app.login("alice", BERLIN), "alice")
    s.say("thief", "has a copy of alice's tokens from her phone")
    out_all = app.call(
        "POST", "/auth/logout-all", ip=BERLIN, headers={"Authorization": f"Bearer {laptop['access_token']}"}
    )
    s.say("alice", f"notices and logs out everywhere from her laptop: {out_all.said()}")
    api = app.me(copied["access_token"], BERLIN)
    refreshed = app.refresh(copied["refresh_token"], BERLIN)
    s.say("thief", f"calls the API: {api.said()}")
    s.say("thief", f"tries to refresh: {refreshed.said()}")
    again = app.login("alice", BERLIN)
    s.say("alice", f"logs in again straight away: {again.said()}")
    s.verdict(
        api.status == 401 and refreshed.status == 400 and again.status == 200,
        "every token issued before the log-out is refused; new logins work",
    )
    s.events(app, "alice")
    return s


def dpop_without_key(app: App, out: t.TextIO) -> Story:
    s = Story(6, "A DPoP-bound token replayed without its key", out)
    key = DPoPKey.generate()
    login = logged_in(app.login("alice", BERLIN, dpop=key), "alice")
    token = login["access_token"]
    s.say(
        "alice",
        f"her app logs in with a DPoP proof: token_type {login.get('token_type')!r}, bound to"
        f" key {key.thumbprint[:12]}…",
    )
    url = app.url + "/api/me"
    own = app.call("GET", "/api/me", ip=BERLIN, headers=key.headers("GET", url, token))
    s.say("alice", f"calls the API with a fresh proof: {own.said()}")
    bearer = app.me(token, BERLIN)
    s.say("thief", f"copied the token and sends it as a Bearer token: {bearer.said()}")
    own_key = DPoPKey.generate()
    forged = app.call("GET", "/api/me", ip=BERLIN, headers=own_key.headers("GET", url, token))
    s.say("thief", f"signs a proof with a key of his own: {forged.said()}")
    bare = app.call("GET", "/api/me", ip=BERLIN, headers={"Authorization": f"DPoP {token}"})
    s.say("thief", f"sends it as DPoP with no proof: {bare.said()}")
    s.verdict(
        own.status == 200 and bearer.status == 401 and forged.status == 401 and bare.status == 401,
        "the token is worth nothing without alice's private key",
    )
    s.events(app, "alice")
    return s


def step_up_instead_of_logout(app: App, out: t.TextIO, max_age: float) -> Story:
    s = Story(7, "A token used from another country: the password again, not a logout", out)
    pair = logged_in(app.login("bob", MUNICH), "bob")
    s.say("bob", f"logs in at home in Munich and calls the API: {app.me(pair['access_token'], MUNICH).said()}")
    s.say("thief", "copies his access and refresh tokens")
    s.say(
        "",
        f"(waiting {max_age + 1:.0f} s: the example asks for the password again when a token whose login is"
        f" older than {max_age:.0f} s is used from another country)",
    )
    time.sleep(max_age + 1)
    problem = forget_places(app, ["bob"])
    if problem is not None:
        raise NotPlayed(problem)
    s.say("", "(bob flies to São Paulo: the demo plays the hours of the flight by clearing his last place)")
    thief = app.me(pair["access_token"], TOKYO)
    s.say("thief", f"replays bob's access token from Tokyo: {thief.said()}")
    s.say("", f"WWW-Authenticate: {thief.headers.get('WWW-Authenticate', '')}")
    guess = app.call("POST", "/auth/step-up", ip=TOKYO, json_body={"username": "bob", "password": "password1"})
    s.say("thief", f"answers the challenge with a guessed password: {guess.said()}")
    stolen = app.refresh(pair["refresh_token"], TOKYO)
    s.say("thief", f"tries the refresh token instead: {stolen.said()}")
    own = app.me(pair["access_token"], SAO_PAULO)
    s.say("bob", f"lands in São Paulo; his app calls the API: {own.said()}")
    again = app.call("POST", "/auth/step-up", ip=SAO_PAULO, json_body={"username": "bob", "password": PASSWORDS["bob"]})
    s.say("bob", f"enters his password again (POST /auth/step-up): {again.said()}")
    after = app.me(str(again.body.get("access_token", "")), SAO_PAULO)
    s.say("bob", f"and carries on from São Paulo: {after.said()}")
    challenged = thief.status == 401 and thief.body.get("error") == "insufficient_user_authentication"
    s.verdict(
        challenged
        and guess.status == 400
        and stolen.status == 400
        and own.status == 401
        and again.status == 200
        and after.status == 200,
        "the thief cannot authenticate again; bob does, and no session had to be revoked",
    )
    s.events(app, "bob", SAO_PAULO)
    return s


def main(argv: list[str] | None = None, out: t.TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app.attack_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the running example app")
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="the app's JWT_SHIELD_REFRESH_REUSE_GRACE in seconds (default 5, the example's)",
    )
    parser.add_argument(
        "--step-up-max-age",
        type=float,
        default=5.0,
        help="the app's JWT_SHIELD_STEP_UP_MAX_AGE in seconds (default 5, the example's)",
    )
    args = parser.parse_args(argv)
    app = App(args.url)
    try:
        start = app.call("GET", "/.well-known/jwks.json", ip=BERLIN)
    except OSError as exc:
        print(f"Cannot reach the example app at {app.url} ({exc}). Start it with `make run`.", file=out)
        return 2
    if start.status != 200:
        print(f"{app.url} does not look like the example app ({start.status}).", file=out)
        return 2
    print(f"Playing the stolen-token stories against {app.url}", file=out)
    problem = forget_places(app)
    if problem is not None:
        print(f"Cannot start from a clean slate ({problem}).", file=out)
        return 2
    for user in PASSWORDS:  # what happened before the demo is not part of it
        app.new_events(user)
    plays: list[t.Callable[[], Story]] = [
        lambda: replay_from_abroad(app, out),
        lambda: impossible_travel(app, out),
        lambda: hammering(app, out),
        lambda: refresh_reuse(app, out, args.grace),
        lambda: after_logout_everywhere(app, out),
        lambda: dpop_without_key(app, out),
        lambda: step_up_instead_of_logout(app, out, args.step_up_max_age),
    ]
    stories: list[bool] = []
    for play in plays:
        try:
            stories.append(bool(play().stopped))
        except NotPlayed as exc:
            print(f"  => NOT PLAYED: {exc}", file=out)
            stories.append(False)
    stopped = sum(stories)
    print(
        f"\nThe shield stopped the thief in {stopped} of {len(stories)} stories."
        f" Every step is on the dashboard: {app.url}/shield/ (log in as alice).",
        file=out,
    )
    return 0 if stopped == len(stories) else 1


if __name__ == "__main__":
    sys.exit(main())
