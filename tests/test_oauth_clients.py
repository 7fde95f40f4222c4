"""Standard OAuth 2.0 clients refresh against the example app with no custom code.

The example app is served by a real HTTP server (werkzeug's, in a thread, on a free port of
127.0.0.1) and called by Authlib's and requests-oauthlib's ``OAuth2Session`` over TCP. Both
clients decide on their own that the access token expired and refresh at the token
endpoint. The server and the clients share this process's ``time.time()``, which the
``clock`` fixture controls: expiry is reached by moving the clock, not by sleeping.
"""

from __future__ import annotations

import threading
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from authlib.integrations.requests_client import OAuthError
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError
from requests_oauthlib import OAuth2Session as OAuthlibSession
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server

from example_app.app import create_app

from .conftest import Clock

ACCESS_TTL = 900
TIMEOUT = 10  # seconds, for every HTTP call: a hung server fails the test instead of the run


class Served:
    def __init__(self, server: BaseWSGIServer) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        self.token_url = self.url + "/auth/refresh"

    def login(self) -> dict[str, t.Any]:
        r = requests.post(
            self.url + "/auth/login", json={"username": "alice", "password": "wonderland"}, timeout=TIMEOUT
        )
        assert r.status_code == 200, r.text
        return t.cast(dict[str, t.Any], r.json())


@pytest.fixture
def served(tmp_path: Path, clock: Clock) -> Iterator[Served]:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive()


def test_authlib_refreshes_on_expiry_then_reuse_revokes_the_session(served: Served, clock: Clock) -> None:
    updates: list[dict[str, t.Any]] = []

    def update_token(token: dict[str, t.Any], refresh_token: str | None = None, **_: t.Any) -> None:
        updates.append({"token": dict(token), "old_refresh_token": refresh_token})

    first = served.login()
    session = AuthlibSession(
        client_id="example-cli",
        client_secret="example-cli-secret",
        token=first,
        token_endpoint=served.token_url,
        update_token=update_token,
    )
    assert session.get(served.url + "/api/me", timeout=TIMEOUT).json()["sub"] == "alice"
    assert updates == []  # a fresh token is not refreshed

    refresh_tokens = [first["refresh_token"]]
    for n in range(1, 4):
        clock.advance(ACCESS_TTL + 1)
        me = session.get(served.url + "/api/me", timeout=TIMEOUT)  # Authlib refreshes first, unasked
        assert me.status_code == 200, me.text
        assert len(updates) == n
        assert updates[-1]["old_refresh_token"] == refresh_tokens[-1]
        refresh_tokens.append(updates[-1]["token"]["refresh_token"])
        assert me.json()["sid"] == served_sid(served, session)
    assert len(set(refresh_tokens)) == 4  # rotated every time

    # A thief replays a copy of a spent refresh token with the same client library.
    clock.advance(10)  # past the example's 5 s reuse grace
    copy = {**first, "refresh_token": refresh_tokens[2]}
    thief = AuthlibSession(client_id="example-cli", client_secret="example-cli-secret", token=copy)
    with pytest.raises(OAuthError) as caught:
        thief.refresh_token(served.token_url)
    assert caught.value.error == "invalid_grant"

    # The whole session is revoked: the honest client's current tokens no longer work.
    assert session.get(served.url + "/api/me", timeout=TIMEOUT).status_code == 401
    clock.advance(ACCESS_TTL + 1)
    with pytest.raises(OAuthError) as caught:
        session.get(served.url + "/api/me", timeout=TIMEOUT)
    assert caught.value.error == "invalid_grant"


def served_sid(served: Served, session: AuthlibSession) -> str:
    sessions = session.get(served.url + "/api/sessions", timeout=TIMEOUT).json()["sessions"]
    assert len(sessions) == 1
    return t.cast(str, sessions[0]["sid"])


def test_authlib_with_a_wrong_client_secret_gets_invalid_client(served: Served, clock: Clock) -> None:
    session = AuthlibSession(
        client_id="example-cli", client_secret="wrong", token=served.login(), token_endpoint=served.token_url
    )
    clock.advance(ACCESS_TTL + 1)
    with pytest.raises(OAuthError) as caught:
        session.get(served.url + "/api/me", timeout=TIMEOUT)
    assert caught.value.error == "invalid_client"


@pytest.mark.parametrize(
    "refresh_kwargs",
    [
        pytest.param({"client_id": "example-spa"}, id="public-client"),
        pytest.param({"client_id": "example-cli", "client_secret": "example-cli-secret"}, id="client_secret_post"),
    ],
)
def test_requests_oauthlib_auto_refresh_then_reuse_revokes_the_session(
    served: Served, clock: Clock, monkeypatch: pytest.MonkeyPatch, refresh_kwargs: dict[str, str]
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on 127.0.0.1 for the test
    saved: list[dict[str, t.Any]] = []
    first = served.login()
    session = OAuthlibSession(
        refresh_kwargs["client_id"],
        token=first,
        auto_refresh_url=served.token_url,
        auto_refresh_kwargs=refresh_kwargs,
        token_updater=saved.append,
    )
    assert session.get(served.url + "/api/me", timeout=TIMEOUT).status_code == 200
    assert saved == []

    for n in range(1, 4):
        clock.advance(ACCESS_TTL + 1)
        me = session.get(served.url + "/api/me", timeout=TIMEOUT)
        assert me.status_code == 200, me.text
        assert len(saved) == n
        assert saved[-1]["token_type"] == "Bearer" and saved[-1]["expires_in"] == ACCESS_TTL
    refresh_tokens = [first["refresh_token"]] + [tok["refresh_token"] for tok in saved]
    assert len(set(refresh_tokens)) == 4

    # A thief replays a copy of a spent refresh token, past the example's 5 s reuse grace.
    clock.advance(10)
    thief = OAuthlibSession(refresh_kwargs["client_id"], token={**first, "refresh_token": refresh_tokens[2]})
    with pytest.raises(InvalidGrantError):
        thief.refresh_token(served.token_url, timeout=TIMEOUT, **refresh_kwargs)
    assert session.get(served.url + "/api/me", timeout=TIMEOUT).status_code == 401
    clock.advance(ACCESS_TTL + 1)
    with pytest.raises(InvalidGrantError):
        session.get(served.url + "/api/me", timeout=TIMEOUT)


def test_requests_oauthlib_refresh_token_call(served: Served, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The explicit call, as apps that refresh ahead of expiry use it."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    session = OAuthlibSession("example-cli", token=served.login())
    token = session.refresh_token(served.token_url, auth=("example-cli", "example-cli-secret"), timeout=TIMEOUT)
    assert set(token) >= {"access_token", "refresh_token", "token_type", "expires_in"}
    assert session.get(served.url + "/api/me", timeout=TIMEOUT).status_code == 200
