"""A DPoP client of the example app: its tokens are useless to whoever copies them.

With the app running (``make run``)::

    .venv/bin/python -m example_app.dpop_client                  # http://127.0.0.1:5000, alice
    .venv/bin/python -m example_app.dpop_client http://127.0.0.1:8000 bob builder

It logs in with a DPoP proof (the session is bound to a key made here, which never leaves
this process), calls ``/api/me`` with a fresh proof, refreshes, and then plays the thief
who copied the access token: sent as ``Bearer``, with proofs from the thief's own key, or
with a proof it captured, the token is refused every time. Standard library only
(``urllib``), besides Flask-JWT-Shield's :class:`~flask_jwt_shield.dpop.DPoPKey`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t
import urllib.error
import urllib.request

from flask_jwt_shield.dpop import DPoPKey


class Answer(t.NamedTuple):
    status: int
    body: dict[str, t.Any]
    headers: dict[str, str]


def call(method: str, url: str, *, headers: dict[str, str] | None = None, body: t.Any = None) -> Answer:
    """One HTTP request; every answer (errors too) comes back as an :class:`Answer`."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 - http(s) checked above
            return Answer(response.status, json.loads(response.read() or b"{}"), dict(response.headers))
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, json.loads(error.read() or b"{}"), dict(error.headers))


class DPoPClient:
    """Logs in, calls and refreshes with DPoP proofs from one key; follows server nonces."""

    def __init__(self, base_url: str, *, key: DPoPKey | None = None, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key or DPoPKey.generate()
        self.extra = dict(headers or {})
        self.access_token: str | None = None
        self.refresh_token: str | None = None

    def _send(self, method: str, path: str, *, token: str | None = None, body: t.Any = None) -> Answer:
        url = self.base_url + path
        for _ in range(2):  # a second try only when the server asks for its nonce
            headers = {**self.extra, "DPoP": self.key.proof(method, url, token)}
            if token is not None:
                headers["Authorization"] = f"DPoP {token}"
            answer = call(method, url, headers=headers, body=body)
            fresh_nonce = self.key.update_nonce(answer.headers)
            if not (answer.body.get("error") == "use_dpop_nonce" and fresh_nonce):
                return answer
        return answer

    def login(self, username: str, password: str) -> Answer:
        answer = self._send("POST", "/auth/login", body={"username": username, "password": password})
        if answer.status == 200:
            self.access_token, self.refresh_token = answer.body["access_token"], answer.body["refresh_token"]
        return answer

    def get(self, path: str) -> Answer:
        return self._send("GET", path, token=self.access_token)

    def refresh(self) -> Answer:
        answer = self._send("POST", "/auth/refresh", body={"refresh_token": self.refresh_token})
        if answer.status == 200:
            self.access_token, self.refresh_token = answer.body["access_token"], answer.body["refresh_token"]
        return answer


def thief_attempts(
    base_url: str, stolen_token: str, captured_proof: str, headers: dict[str, str] | None = None
) -> dict[str, Answer]:
    """What a thief who copied the access token (and saw one proof) can try; from the same
    network, so no GeoIP detector has anything to notice."""
    url = base_url.rstrip("/") + "/api/me"
    extra = dict(headers or {})
    own_key = DPoPKey.generate()
    return {
        "as Bearer": call("GET", url, headers={**extra, "Authorization": f"Bearer {stolen_token}"}),
        "with the thief's own key": call("GET", url, headers={**extra, **own_key.headers("GET", url, stolen_token)}),
        "with a captured proof": call(
            "GET", url, headers={**extra, "Authorization": f"DPoP {stolen_token}", "DPoP": captured_proof}
        ),
    }


def main(argv: list[str]) -> int:
    """``argv`` as in :data:`sys.argv` (the program's name first)."""
    parser = argparse.ArgumentParser(prog="python -m example_app.dpop_client", description=__doc__.split("\n")[0])
    parser.add_argument(
        "url",
        nargs="?",
        default="http://127.0.0.1:5000",
        help="the running example app (default http://127.0.0.1:5000)",
    )
    parser.add_argument("username", nargs="?", default="alice", help="default alice")
    parser.add_argument("password", nargs="?", default="wonderland", help="default wonderland")
    args = parser.parse_args(argv[1:])
    try:
        return _play(args.url, args.username, args.password)
    except BrokenPipeError:  # our output was piped into a reader that stopped (`| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # refused, unreachable, timed out
        reason = getattr(exc, "reason", None) or exc
        print(
            f"error: cannot reach the example app at {args.url} ({reason}). Start it with `make run`.", file=sys.stderr
        )
        return 2
    except ValueError as exc:  # not an http(s) URL, an answer that is not JSON
        print(f"error: {args.url}: {exc}", file=sys.stderr)
        return 2


def _play(base_url: str, username: str, password: str) -> int:
    client = DPoPClient(base_url)
    login = client.login(username, password)
    print(f"login: {login.status} token_type={login.body.get('token_type')} key={client.key.thumbprint}")
    if login.status != 200:
        print(login.body)
        return 1
    print(f"GET /api/me with a proof: {client.get('/api/me').status}")
    print(f"refresh with a proof: {client.refresh().status}")
    assert client.access_token is not None
    me_url = base_url.rstrip("/") + "/api/me"
    captured = client.key.proof("GET", me_url, client.access_token)
    owner = call("GET", me_url, headers={"Authorization": f"DPoP {client.access_token}", "DPoP": captured})
    print(f"GET /api/me, the proof a thief will capture: {owner.status}")
    for attempt, answer in thief_attempts(base_url, client.access_token, captured).items():
        print(f"thief, {attempt}: {answer.status} {answer.body.get('error')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
