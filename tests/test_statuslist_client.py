"""Resource-server mode consuming Token Status Lists (draft-ietf-oauth-status-list,
"Validation Rules"), against a real Status Issuer on 127.0.0.1 (tests/statuslist_util.py).

Requests go through the real Flask app. Time is the ``clock`` fixture's (cache lifetimes are
crossed by moving the clock); network deadlines are real.
"""

from __future__ import annotations

import statistics
import threading
import time
import typing as t
from collections.abc import Iterator

import pytest
from flask import Flask

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.config import ShieldConfig
from flask_jwt_shield.jwks import JWKSClient
from flask_jwt_shield.statuslist.client import StatusListClient
from flask_jwt_shield.statuslist.codec import StatusList
from tests.conftest import AppFactory
from tests.conftest import Clock
from tests.conftest import bearer
from tests.conftest import json_of
from tests.statuslist_util import LIST_PATH
from tests.statuslist_util import StatusIssuer
from tests.statuslist_util import bomb
from tests.statuslist_util import signer


@pytest.fixture
def issuer() -> Iterator[StatusIssuer]:
    server = StatusIssuer()
    try:
        yield server
    finally:
        server.stop()


RSApp = t.Callable[..., tuple[Flask, JWTShield]]


@pytest.fixture
def rs_app(make_app: AppFactory, issuer: StatusIssuer, clock: Clock) -> RSApp:
    def factory(**settings: t.Any) -> tuple[Flask, JWTShield]:
        settings.setdefault("JWKS_TIMEOUT", 1.0)
        return make_app(issuer.rs_config(**settings))

    return factory


def get(app: Flask, token: str) -> t.Any:
    return app.test_client().get("/api/me", headers=bearer(token))


def client_of(app: Flask) -> StatusListClient:
    status_lists = app.extensions["jwt_shield"].status_list_client
    assert status_lists is not None
    return t.cast(StatusListClient, status_lists)


def events(app: Flask, shield: JWTShield, kind: str) -> list[t.Any]:
    with app.app_context():
        return [e for e in shield.events(limit=1000) if e.kind == kind]


# -- the warm path and revocation -------------------------------------------------------------


def test_a_valid_token_passes_and_the_list_is_fetched_once(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app()
    tokens = [issuer.access_token(idx) for idx in range(20)]
    for token in tokens * 5:
        assert get(app, token).status_code == 200
    assert issuer.list_hits() == 1
    assert client_of(app).fetches == 1


def test_a_token_without_status_is_not_checked(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app()
    assert get(app, issuer.access_token(None)).status_code == 200
    assert issuer.list_hits() == 0


def test_the_token_itself_is_checked_first_and_an_expired_one_fetches_nothing(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    # Draft, "Validation Rules": the Referenced Token's own checks precede its status.
    app, _ = rs_app()
    token = issuer.access_token(0)
    clock.advance(901)
    response = get(app, token)
    assert response.status_code == 401
    assert json_of(response)["error_description"] == "The access token expired."
    assert issuer.list_hits() == 0


def test_revoked_is_refused_after_the_next_fetch_with_an_event_naming_the_jti(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    app, shield = rs_app(STATUS_LIST_MIN_TTL=10)
    issuer.ttl = 60
    token = issuer.access_token(7)
    assert get(app, token).status_code == 200
    issuer.revoke(7)
    clock.advance(59)
    assert get(app, token).status_code == 200  # the cached list: revocations arrive per ttl
    assert issuer.list_hits() == 1
    clock.advance(2)
    response = get(app, token)
    assert response.status_code == 401
    assert json_of(response) == {
        "error": "invalid_token",
        "error_description": "The access token was revoked by its issuer (status list).",
    }
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert issuer.list_hits() == 2
    assert get(app, issuer.access_token(8)).status_code == 200  # its neighbour is fine
    (event,) = [e for e in events(app, shield, "token-rejected") if e.detail["reason"] == "revoked-status-list"]
    assert event.jti.startswith("jti-7-") and event.subject == "user-1"
    assert event.detail["idx"] == 7 and event.detail["status_value"] == 1
    assert event.detail["status_list"] == issuer.list_url
    assert token not in repr(event.to_dict())


@pytest.mark.parametrize(
    ("value", "description", "reason"),
    [
        (2, "The access token was suspended by its issuer (status list).", "suspended-status-list"),
        (3, "The access token's status is not valid (status list, status 0x03).", "status-list-status"),
    ],
)
def test_every_status_but_valid_is_refused(
    rs_app: RSApp, issuer: StatusIssuer, value: int, description: str, reason: str
) -> None:
    issuer.lists[LIST_PATH] = StatusList.new(64, bits=2)
    issuer.revoke(5, value)
    app, shield = rs_app()
    response = get(app, issuer.access_token(5))
    assert response.status_code == 401
    assert json_of(response)["error_description"] == description
    assert get(app, issuer.access_token(4)).status_code == 200
    assert [e.detail["reason"] for e in events(app, shield, "token-rejected")] == [reason]


def test_an_index_outside_the_list_is_refused(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app()
    size = len(issuer.lists[LIST_PATH])
    assert get(app, issuer.access_token(size - 1)).status_code == 200
    response = get(app, issuer.access_token(size))
    assert response.status_code == 401
    assert json_of(response)["error_description"] == "The token's status list index is outside its status list."
    assert get(app, issuer.access_token(2**62)).status_code == 401


@pytest.mark.parametrize(
    "status",
    [
        "revoked",
        [],
        {"status_list": "https://x"},
        {"status_list": {"uri": "URI"}},
        {"status_list": {"idx": 0}},
        {"status_list": {"idx": -1, "uri": "URI"}},
        {"status_list": {"idx": True, "uri": "URI"}},
        {"status_list": {"idx": 1.0, "uri": "URI"}},
        {"status_list": {"idx": "1", "uri": "URI"}},
        {"status_list": {"idx": 0, "uri": 7}},
        {"status_list": {"idx": 0, "uri": ["URI"]}},
        {"status_list": None},
    ],
)
def test_a_malformed_status_claim_is_a_401_never_a_500(rs_app: RSApp, issuer: StatusIssuer, status: t.Any) -> None:
    app, _ = rs_app()
    if isinstance(status, dict) and isinstance(status.get("status_list"), dict):
        status = {"status_list": {k: issuer.list_url if v == "URI" else v for k, v in status["status_list"].items()}}
    response = get(app, issuer.access_token(status=status))
    assert response.status_code == 401
    assert json_of(response) == {
        "error": "invalid_token",
        "error_description": "The token's status claim is malformed.",
    }
    assert issuer.list_hits() == 0


def test_a_status_mechanism_this_server_cannot_check_is_refused(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app()
    response = get(app, issuer.access_token(status={"other_mechanism": {"id": 1}}))
    assert response.status_code == 401
    assert "names no status list this server can check" in json_of(response)["error_description"]


# -- which URIs may be fetched ---------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://elsewhere.example/statuslists/1",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/statuslists/1",
        "http://127.0.0.1:1/statuslists/1",
        "http://127.0.0.1:{port}/statuslists/../jwks.json",
        "http://127.0.0.1:{port}/statuslists/%2e%2e/admin",
        "http://user@127.0.0.1:{port}/statuslists/1",
        "http://127.0.0.1:{port}/statuslists/1#frag",
        "file:///etc/passwd",
        "not a uri",
        "",
    ],
)
def test_a_uri_outside_the_allowed_prefixes_is_refused_and_never_fetched(
    rs_app: RSApp, issuer: StatusIssuer, uri: str
) -> None:
    app, _ = rs_app(STATUS_LIST_ALLOWED_URIS=[issuer.url + "/statuslists/"])
    uri = uri.format(port=issuer.url.rsplit(":", 1)[1])
    response = get(app, issuer.access_token(0, uri=uri))
    assert response.status_code == 401
    assert json_of(response)["error_description"] == "The token names a status list this server does not fetch."
    assert set(issuer.hits) == {"/jwks.json"}  # the token's key; no status list, nothing else
    assert client_of(app).fetches == 0


def test_by_default_only_the_issuers_origin_is_allowed(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app()
    assert client_of(app).prefixes == (issuer.url + "/",)
    assert get(app, issuer.access_token(0)).status_code == 200
    assert get(app, issuer.access_token(0, uri="https://cdn.example/statuslists/1")).status_code == 401


def test_a_prefix_does_not_match_a_longer_host_or_a_sibling_path(issuer: StatusIssuer) -> None:
    keys = JWKSClient(issuer.jwks_url, allowed=frozenset({"ES256"}))
    client = StatusListClient(keys, prefixes=["https://idp.example.com/lists", "https://idp.example.com:8443/sl/"])
    allowed = client._allowed  # the rule itself, table-tested
    assert allowed("https://idp.example.com/lists")
    assert allowed("https://idp.example.com/lists/1")
    assert allowed("https://IDP.example.com/lists/1?v=2")
    assert allowed("https://idp.example.com:8443/sl/1")
    assert not allowed("https://idp.example.com/lists2/1")
    assert not allowed("https://idp.example.com.evil.example/lists/1")
    assert not allowed("https://idp.example.com:8443/lists/1")
    assert not allowed("http://idp.example.com/lists/1")
    assert not allowed("https://idp.example.com/lists/./1")
    assert not allowed("https://idp.example.com/lists/..%2F..%2Fadmin")
    assert not allowed("https://idp.example.com:99999/lists/1")
    assert not allowed("https://idp.example.com/lists/" + "a" * 3000)


# -- caching per ttl ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "exp_in", "refetch_after"),
    [
        (60, 3600, 60),  # the list's ttl
        (1, 3600, 10),  # raised to MIN_TTL
        (86_400, 100_000, 300),  # cut to MAX_TTL
        (None, 3600, 300),  # no ttl: MAX_TTL
        (60, 30, 30),  # never past exp
    ],
)
def test_the_list_is_fetched_again_at_its_ttl_within_the_configured_bounds(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock, ttl: float | None, exp_in: float, refetch_after: float
) -> None:
    issuer.ttl, issuer.exp_in = ttl, exp_in
    app, _ = rs_app(STATUS_LIST_MIN_TTL=10, STATUS_LIST_MAX_TTL=300)
    token = issuer.access_token(1)
    assert get(app, token).status_code == 200
    clock.advance(refetch_after - 0.5)
    assert get(app, token).status_code == 200
    assert issuer.list_hits() == 1
    clock.advance(1)
    assert get(app, token).status_code == 200
    assert issuer.list_hits() == 2


# -- the issuer unreachable, slow, or serving something else ---------------------------------


def test_issuer_down_serves_the_stale_list_within_the_bound_then_the_fail_mode(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    issuer.ttl = 60
    app, shield = rs_app(STATUS_LIST_MAX_STALE=30, FAIL_MODE="closed")
    token = issuer.access_token(3)
    assert get(app, token).status_code == 200
    issuer.status = 500
    clock.advance(61)
    assert get(app, token).status_code == 200  # stale, within the bound
    assert client_of(app).last_error(issuer.list_url) == "HTTP 500"
    clock.advance(28)
    assert get(app, token).status_code == 200
    clock.advance(2)  # 91 s after the fetch: ttl 60 + stale 30 passed
    response = get(app, token)
    assert response.status_code == 503
    assert json_of(response)["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    (event,) = events(app, shield, "status-list-unavailable")
    assert event.action == "deny" and event.detail["fail_mode"] == "closed"
    assert event.detail["status_list"] == issuer.list_url and "HTTP 500" in event.detail["error"]
    assert event.jti.startswith("jti-3-")
    # The issuer is back: the next attempt (after the backoff) brings the list back.
    issuer.status = 200
    clock.advance(11)
    assert get(app, token).status_code == 200


def test_issuer_down_with_fail_mode_open_lets_requests_through_and_records_it(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    issuer.status = 503
    app, shield = rs_app(STATUS_LIST_FAIL_MODE="open")
    token = issuer.access_token(3)
    for _ in range(5):
        assert get(app, token).status_code == 200
    (event,) = events(app, shield, "status-list-unavailable")  # one per outage interval
    assert event.action == "flag" and event.detail["fail_mode"] == "open"


def test_the_fail_mode_follows_the_store_setting_unless_set(issuer: StatusIssuer) -> None:
    def mode(**settings: t.Any) -> str:
        config = ShieldConfig.from_mapping(issuer.rs_config(**settings), warn=False)
        return config.remote.status_list_fail_mode

    assert mode() == "closed"
    assert mode(FAIL_MODE="open") == "open"
    assert mode(FAIL_MODE="open", STATUS_LIST_FAIL_MODE="closed") == "closed"
    assert mode(FAIL_MODE="closed", STATUS_LIST_FAIL_MODE="open") == "open"


def test_no_list_yet_and_the_issuer_down_is_a_503_with_backoff(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    issuer.status = 500
    app, _ = rs_app()
    token = issuer.access_token(0)
    assert get(app, token).status_code == 503
    assert get(app, token).status_code == 503
    assert issuer.list_hits() == 1  # retried after 1 s, not at every request
    clock.advance(1.1)
    assert get(app, token).status_code == 503
    assert issuer.list_hits() == 2
    clock.advance(1.1)  # the second retry waits 2 s
    assert get(app, token).status_code == 503
    assert issuer.list_hits() == 2


def test_a_slow_issuer_is_cut_off_at_the_deadline_and_the_stale_list_serves(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    issuer.ttl = 60
    app, _ = rs_app(JWKS_TIMEOUT=0.3)
    token = issuer.access_token(2)
    assert get(app, token).status_code == 200
    clock.advance(61)
    issuer.delay = 5.0
    started = time.monotonic()
    assert get(app, token).status_code == 200
    took = time.monotonic() - started
    assert took < 1.5, took  # the whole fetch is bounded by twice the timeout
    error = client_of(app).last_error(issuer.list_url) or ""
    assert "timed out" in error or "longer than 0.6 s" in error, error


def test_an_oversized_response_is_refused(rs_app: RSApp, issuer: StatusIssuer) -> None:
    issuer.raw[LIST_PATH] = b"e" * 5000
    app, _ = rs_app(STATUS_LIST_MAX_BYTES=4096)
    assert get(app, issuer.access_token(0)).status_code == 503
    assert client_of(app).last_error(issuer.list_url) == "the response is larger than 4096 bytes"


def test_a_compression_bomb_is_refused_without_inflating_it(rs_app: RSApp, issuer: StatusIssuer) -> None:
    issuer.claims = {"status_list": bomb(64 * 1024 * 1024)}  # 64 MiB of zeros, ~65 KB compressed
    app, _ = rs_app(STATUS_LIST_MAX_BYTES=256 * 1024)
    started = time.monotonic()
    assert get(app, issuer.access_token(0)).status_code == 503
    assert time.monotonic() - started < 2
    assert client_of(app).last_error(issuer.list_url) == f"status_list.lst holds more than {256 * 1024} bytes"


def _other_key() -> t.Any:
    return signer("not-the-issuer", "issuer-es256")  # the issuer's kid, another key


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"typ": "JWT"}, "header typ is 'JWT', not 'statuslist+jwt'"),
        ({"typ": "at+jwt"}, "header typ is 'at+jwt', not 'statuslist+jwt'"),
        (
            {"claims": {"sub": "https://elsewhere.example/statuslists/1"}},
            "its 'sub' is not the URI it was fetched from",
        ),
        ({"claims": {"sub": None}}, "its 'sub' is not the URI it was fetched from"),
        ({"claims": {"iss": "https://other-issuer.example/"}}, "its 'iss' is not the configured issuer"),
        ({"claims": {"iat": None}}, "its 'iat' claim is missing or not a number"),
        ({"claims": {"iat": 4_000_000_000}}, "it was issued in the future"),
        ({"claims": {"exp": 1_000_000_000}}, "it expired"),
        ({"claims": {"ttl": 0}}, "its 'ttl' is not a positive number"),
        ({"claims": {"ttl": "60"}}, "its 'ttl' claim is missing or not a number"),
        ({"claims": {"status_list": None}}, "status_list is not a JSON object"),
        ({"claims": {"status_list": {"bits": 3, "lst": "eNrbuRgAAhcBXQ"}}}, "status_list.bits must be 1, 2, 4 or 8"),
        ({"sign_with": "other"}, "the signature is invalid"),
        ({"raw": b"not a token"}, "the response is not a JWT"),
    ],
)
def test_a_status_list_token_that_does_not_verify_is_refused(
    rs_app: RSApp, issuer: StatusIssuer, fault: dict[str, t.Any], error: str
) -> None:
    if "typ" in fault:
        issuer.typ = fault["typ"]
    issuer.claims = fault.get("claims", {})
    if fault.get("sign_with"):
        issuer.sign_with = _other_key()
    if "raw" in fault:
        issuer.raw[LIST_PATH] = fault["raw"]
    app, _ = rs_app()
    response = get(app, issuer.access_token(0))
    assert response.status_code == 503
    assert client_of(app).last_error(issuer.list_url) == error


def test_the_media_type_spelling_of_typ_is_accepted(rs_app: RSApp, issuer: StatusIssuer) -> None:
    issuer.typ = "application/StatusList+JWT"
    app, _ = rs_app()
    assert get(app, issuer.access_token(0)).status_code == 200


def test_an_older_list_cannot_replace_the_one_in_hand(rs_app: RSApp, issuer: StatusIssuer, clock: Clock) -> None:
    issuer.ttl = 60
    app, _ = rs_app()
    token = issuer.access_token(4)
    issuer.revoke(4)
    assert get(app, token).status_code == 401
    # A cache replays a list signed before the revocation.
    issuer.lists[LIST_PATH] = StatusList.new(1024)
    issuer.claims = {"iat": int(time.time()) - 3600}
    clock.advance(61)
    assert get(app, token).status_code == 401  # the list in hand, stale, still says revoked
    assert client_of(app).last_error(issuer.list_url) == "it is older than the list in hand"


# -- redirects -------------------------------------------------------------------------------


def test_a_redirect_within_the_allowed_prefixes_is_followed(rs_app: RSApp, issuer: StatusIssuer) -> None:
    issuer.lists["/statuslists/2"] = StatusList.new(64)
    issuer.redirect["/statuslists/1"] = issuer.url + "/statuslists/2"
    # The signed list must still name the URI the token names (sub == uri), wherever it is served.
    issuer.claims = {"sub": issuer.list_url}
    app, _ = rs_app()
    assert get(app, issuer.access_token(0)).status_code == 200
    assert issuer.hits.count("/statuslists/2") == 1


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("http://169.254.169.254/latest/meta-data/", "must use https://"),
        ("https://elsewhere.example/statuslists/1", "outside the allowed status list URIs"),
        ("{url}/statuslists/1", "redirect"),  # a loop (urllib sees the repeat, or the count runs out)
    ],
)
def test_a_redirect_elsewhere_or_in_a_loop_is_refused(
    rs_app: RSApp, issuer: StatusIssuer, target: str, error: str
) -> None:
    issuer.redirect[LIST_PATH] = target.format(url=issuer.url)
    app, _ = rs_app()
    assert get(app, issuer.access_token(0)).status_code == 503
    assert error in (client_of(app).last_error(issuer.list_url) or "")
    assert issuer.list_hits() <= 6


def test_a_chain_of_more_than_five_redirects_is_cut_off(rs_app: RSApp, issuer: StatusIssuer) -> None:
    for hop in range(1, 9):  # /statuslists/1 -> /statuslists/hop2 -> ... each URL new
        source = LIST_PATH if hop == 1 else f"/statuslists/hop{hop}"
        issuer.redirect[source] = f"{issuer.url}/statuslists/hop{hop + 1}"
    app, _ = rs_app()
    assert get(app, issuer.access_token(0)).status_code == 503
    assert client_of(app).last_error(issuer.list_url) == "more than 5 redirects"
    assert len([p for p in issuer.hits if p.startswith("/statuslists/")]) == 6


# -- one fetch at a time --------------------------------------------------------------------


def test_one_fetch_at_a_time_and_no_other_thread_waits_for_it(
    rs_app: RSApp, issuer: StatusIssuer, clock: Clock
) -> None:
    issuer.ttl = 60
    app, _ = rs_app(JWKS_TIMEOUT=5.0)
    tokens = [issuer.access_token(i) for i in range(40)]
    assert get(app, tokens[0]).status_code == 200
    clock.advance(61)  # due: the next requests want a fresh list
    issuer.hold = threading.Event()
    fetcher = threading.Thread(target=lambda: get(app, tokens[0]))
    fetcher.start()
    assert issuer.waiting.acquire(timeout=5)  # the one fetch is in flight, held by the issuer
    codes: list[int] = []
    lock = threading.Lock()

    def request(token: str) -> None:
        code = get(app, token).status_code
        with lock:
            codes.append(code)

    started = time.monotonic()
    threads = [threading.Thread(target=request, args=(token,)) for token in tokens[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    took = time.monotonic() - started
    assert codes == [200] * 39  # served from the list in hand, at once
    assert took < 3, took
    issuer.hold.set()
    fetcher.join(10)
    assert issuer.list_hits() == 2
    assert client_of(app).fetches == 2


def test_a_cold_list_under_many_threads_is_fetched_once(rs_app: RSApp, issuer: StatusIssuer) -> None:
    app, _ = rs_app(STATUS_LIST_FAIL_MODE="open")
    assert get(app, issuer.access_token(None)).status_code == 200  # the JWK Set is in hand
    tokens = [issuer.access_token(i) for i in range(30)]
    barrier = threading.Barrier(len(tokens))
    codes: list[int] = []

    def request(token: str) -> None:
        barrier.wait(5)
        codes.append(get(app, token).status_code)

    threads = [threading.Thread(target=request, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(set(codes)) == [200]
    assert issuer.list_hits() == 1


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"STATUS_LIST_MIN_TTL": 60, "STATUS_LIST_MAX_TTL": 30}, "JWT_SHIELD_STATUS_LIST_MAX_TTL .* is below"),
        ({"STATUS_LIST_MIN_TTL": 0}, "JWT_SHIELD_STATUS_LIST_MIN_TTL must be at least 1"),
        ({"STATUS_LIST_MAX_STALE": -1}, "JWT_SHIELD_STATUS_LIST_MAX_STALE must be at least 0"),
        ({"STATUS_LIST_MAX_BYTES": 10}, "JWT_SHIELD_STATUS_LIST_MAX_BYTES must be at least 1024"),
        ({"STATUS_LIST_FAIL_MODE": "maybe"}, "JWT_SHIELD_STATUS_LIST_FAIL_MODE is 'maybe'; it must be one of"),
        (
            {"STATUS_LIST_ALLOWED_URIS": "https://idp.example.com/"},
            "JWT_SHIELD_STATUS_LIST_ALLOWED_URIS must be a list of strings",
        ),
        ({"STATUS_LIST_ALLOWED_URIS": ["http://idp.example.com/sl/"]}, "must use https://"),
        ({"STATUS_LIST_ALLOWED_URIS": ["https://idp.example.com/sl/?a=1"]}, "scheme, host and path only"),
        ({"STATUS_LIST_ALLOWED_URIS": ["https://u:p@idp.example.com/sl/"]}, "scheme, host and path only"),
    ],
)
def test_bad_settings_are_refused_at_init_app_saying_how_to_fix_them(
    issuer: StatusIssuer, settings: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ShieldConfig.from_mapping(issuer.rs_config(**settings), warn=False)


def test_status_list_settings_outside_resource_server_mode_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_STATUS_LIST_MAX_TTL applies to resource-server mode"):
        ShieldConfig.from_mapping({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_STATUS_LIST_MAX_TTL": 60})


def test_a_bare_origin_prefix_gets_its_slash(issuer: StatusIssuer) -> None:
    config = ShieldConfig.from_mapping(issuer.rs_config(STATUS_LIST_ALLOWED_URIS=["https://cdn.example"]), warn=False)
    assert config.remote.status_list_allowed_uris == ("https://cdn.example/",)


# -- propagation, measured ------------------------------------------------------------------


def test_a_revocation_at_the_issuer_is_refused_within_ttl_plus_one_fetch(
    make_app: AppFactory, issuer: StatusIssuer
) -> None:
    """Real time: revoke at the issuer, then poll the resource server until it refuses."""
    ttl = 1.0
    issuer.ttl = ttl
    app, _ = make_app(issuer.rs_config(STATUS_LIST_MIN_TTL=1, JWKS_TIMEOUT=1.0))
    delays = []
    for idx in range(12):
        token = issuer.access_token(idx)
        assert get(app, token).status_code == 200
        time.sleep(idx * 0.083 % ttl)  # revoke at spread-out points of the cache's life
        issuer.revoke(idx)
        revoked_at = time.monotonic()
        while get(app, token).status_code == 200:
            assert time.monotonic() - revoked_at < ttl + 2.0, "not refused within ttl + one fetch"
            time.sleep(0.005)
        delays.append(time.monotonic() - revoked_at)
    fetch_bound = 2 * 1.0  # one fetch: twice JWT_SHIELD_JWKS_TIMEOUT at most
    assert max(delays) <= ttl + fetch_bound
    p50, worst = statistics.median(delays) * 1000, max(delays) * 1000
    print(f"\nstatus list propagation, {len(delays)} revocations, ttl {ttl:g} s: p50 {p50:.0f} ms, max {worst:.0f} ms")
