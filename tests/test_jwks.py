"""The JWK Set client against a real HTTP server on 127.0.0.1 (tests/idp_util.py).

Time is the ``clock`` fixture's: cache lifetimes and refetch limits are crossed by moving the
clock, never by sleeping.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import typing as t

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from flask_jwt_shield.config import check_url
from flask_jwt_shield.errors import InvalidToken
from flask_jwt_shield.errors import KeysUnavailable
from flask_jwt_shield.jwks import JWKSClient
from flask_jwt_shield.jwks import parse_jwks
from tests.conftest import Clock
from tests.idp_util import IdPServer
from tests.idp_util import RawServer
from tests.idp_util import SigningKey
from tests.idp_util import down_url
from tests.idp_util import rsa_jwk
from tests.idp_util import rsa_key
from tests.idp_util import slow_head

ALLOWED = frozenset({"RS256", "ES256"})


@pytest.fixture
def k1() -> SigningKey:
    return SigningKey("k1", "RS256", rsa_key("k1"))


@pytest.fixture
def k2() -> SigningKey:
    return SigningKey("k2", "RS256", rsa_key("k2"))


def client(url: str, **kwargs: t.Any) -> JWKSClient:
    kwargs.setdefault("allowed", ALLOWED)
    kwargs.setdefault("timeout", 2.0)
    return JWKSClient(url, **kwargs)


# -- fetching and caching -------------------------------------------------------------------


def test_keys_are_fetched_once_and_served_from_the_cache(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url)
    key = jwks.key("k1", "RS256")
    assert key.kid == "k1" and key.alg == "RS256" and key.signing is None
    for _ in range(50):
        assert jwks.key("k1", "RS256") is key
    assert idp.jwks_hits == 1


def test_no_cache_control_means_the_configured_ttl(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30)
    jwks.key("k1", "RS256")
    clock.advance(299)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 1
    clock.advance(2)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 2


def test_cache_control_max_age_is_respected(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    idp.cache_control = "public, max-age=3600, must-revalidate"
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30)
    jwks.key("k1", "RS256")
    clock.advance(3599)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 1
    clock.advance(2)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 2


@pytest.mark.parametrize("header", ["no-cache", "no-store", "max-age=0", "max-age=5"])
def test_a_short_cache_lifetime_never_means_a_fetch_per_request(
    clock: Clock, idp: IdPServer, k1: SigningKey, header: str
) -> None:
    idp.publish(k1)
    idp.cache_control = header
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30)
    for _ in range(20):
        jwks.key("k1", "RS256")
        clock.advance(1)
    assert idp.jwks_hits == 1  # 20 s < MIN_REFETCH
    clock.advance(11)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 2


def test_a_year_long_max_age_is_capped_at_a_day(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    idp.cache_control = "max-age=31536000"
    jwks = client(idp.jwks_url)
    jwks.key("k1", "RS256")
    clock.advance(86_401)
    jwks.key("k1", "RS256")
    assert idp.jwks_hits == 2


# -- rotation at the provider ---------------------------------------------------------------


def test_rotation_new_kid_appears_and_old_kid_disappears_without_restart(
    clock: Clock, idp: IdPServer, k1: SigningKey, k2: SigningKey
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30)
    jwks.key("k1", "RS256")
    generation = jwks.generation
    # The provider publishes k2 next to k1 and starts signing with it.
    idp.publish(k1, k2)
    clock.advance(31)
    assert jwks.key("k2", "RS256").kid == "k2"  # unknown kid -> one refetch
    assert idp.jwks_hits == 2
    assert jwks.generation == generation + 1
    # Then k1 is retired; at the next scheduled refresh it stops being accepted.
    idp.publish(k2)
    clock.advance(301)
    with pytest.raises(InvalidToken) as info:
        jwks.key("k1", "RS256")
    assert info.value.reason == "unknown-kid"
    assert jwks.key("k2", "RS256").kid == "k2"
    assert jwks.generation == generation + 2


def test_the_same_set_fetched_again_keeps_the_generation(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=300)
    jwks.key("k1", "RS256")
    generation = jwks.generation
    for _ in range(3):
        clock.advance(301)
        jwks.key("k1", "RS256")
    assert idp.jwks_hits == 4
    assert jwks.generation == generation  # verified-token caches survive a routine refresh


def test_unknown_kid_right_after_a_fetch_waits_for_min_refetch(
    clock: Clock, idp: IdPServer, k1: SigningKey, k2: SigningKey
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, min_refetch=30)
    jwks.key("k1", "RS256")
    idp.publish(k1, k2)
    clock.advance(10)
    with pytest.raises(InvalidToken):
        jwks.key("k2", "RS256")
    assert idp.jwks_hits == 1
    clock.advance(20)
    assert jwks.key("k2", "RS256").kid == "k2"
    assert idp.jwks_hits == 2


def test_burst_of_random_kid_tokens_causes_at_most_the_allowed_refetches(
    clock: Clock, idp: IdPServer, k1: SigningKey
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=3600, min_refetch=30)
    jwks.key("k1", "RS256")
    refused = 0
    # 3000 forged tokens over 100 seconds, each naming a kid of its own.
    for _ in range(3000):
        try:
            jwks.key(secrets.token_urlsafe(8), "RS256")
        except InvalidToken:
            refused += 1
        clock.advance(100 / 3000)
    assert refused == 3000
    # The first fetch plus one refetch per 30 s at most: t=30, 60, 90.
    assert idp.jwks_hits <= 4
    assert jwks.key("k1", "RS256").kid == "k1"


def test_a_known_kid_with_another_alg_is_refused_without_a_refetch(
    clock: Clock, idp: IdPServer, k1: SigningKey
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, min_refetch=0)
    jwks.key("k1", "RS256")
    with pytest.raises(InvalidToken) as info:
        jwks.key("k1", "ES256")
    assert info.value.reason == "bad-alg"
    assert idp.jwks_hits == 1


# -- the provider down -------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["http-500", "garbage", "not-a-set", "stopped"])
def test_idp_down_keeps_the_cached_keys(
    clock: Clock, idp: IdPServer, k1: SigningKey, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30)
    key = jwks.key("k1", "RS256")
    if failure == "http-500":
        idp.status = 500
    elif failure == "garbage":
        idp.raw_body = b"<html>maintenance</html>"
    elif failure == "not-a-set":
        idp.raw_body = b'{"error": "down"}'
    else:
        idp.stop()
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        for _ in range(10):
            clock.advance(400)
            assert jwks.key("k1", "RS256") is key
    assert "keeping the cached keys" in caplog.text


def test_no_keys_yet_and_idp_down_is_a_503_with_backoff(clock: Clock) -> None:
    url = down_url()
    jwks = client(url, min_refetch=30)
    with pytest.raises(KeysUnavailable) as info:
        jwks.key("k1", "RS256")
    assert info.value.code == 503 and t.cast(int, info.value.retry_after) >= 1
    assert jwks.fetches == 1
    for _ in range(100):  # the same instant: no second attempt
        with pytest.raises(KeysUnavailable):
            jwks.key("k1", "RS256")
    assert jwks.fetches == 1
    # Retries back off 1 s, 2 s, 4 s ... capped at MIN_REFETCH.
    for _ in range(120):
        clock.advance(1)
        with pytest.raises(KeysUnavailable):
            jwks.key("k1", "RS256")
    assert jwks.fetches <= 1 + 5 + 120 // 30 + 1


def test_the_provider_comes_back(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.status = 503
    jwks = client(idp.jwks_url, min_refetch=30)
    with pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    idp.status = 200
    idp.publish(k1)
    clock.advance(1)
    assert jwks.key("k1", "RS256").kid == "k1"


def test_a_set_with_no_usable_key_is_a_503(clock: Clock, idp: IdPServer) -> None:
    idp.publish({"kty": "oct", "kid": "s", "k": "c2VjcmV0"})
    jwks = client(idp.jwks_url)
    with pytest.raises(KeysUnavailable):
        jwks.key("s", "RS256")


# -- never more than one thread waits -------------------------------------------------------


def test_only_one_thread_waits_on_a_refresh_the_others_use_cached_keys(
    clock: Clock, idp: IdPServer, k1: SigningKey
) -> None:
    idp.publish(k1)
    jwks = client(idp.jwks_url, cache_ttl=300, min_refetch=30, timeout=10)
    key = jwks.key("k1", "RS256")
    clock.advance(301)  # due for a refresh
    idp.hold = threading.Event()
    results: list[t.Any] = []
    done = threading.Semaphore(0)

    def use() -> None:
        try:
            results.append(jwks.key("k1", "RS256"))
        finally:
            done.release()

    fetcher = threading.Thread(target=use)
    fetcher.start()
    assert idp.waiting.acquire(timeout=10)  # the fetcher's request is now held at the server
    others = [threading.Thread(target=use) for _ in range(8)]
    for thread in others:
        thread.start()
    for _ in others:  # all eight finish while the fetch is still held
        assert done.acquire(timeout=10)
    assert results == [key] * 8
    assert idp.jwks_hits == 2
    idp.hold.set()
    fetcher.join(10)
    assert len(results) == 9
    assert not idp.waiting.acquire(timeout=0)  # nobody else ever reached the server


def test_first_fetch_in_flight_other_threads_get_503_at_once(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    idp.hold = threading.Event()
    jwks = client(idp.jwks_url, timeout=10)
    fetcher = threading.Thread(target=jwks.key, args=("k1", "RS256"))
    fetcher.start()
    assert idp.waiting.acquire(timeout=10)
    with pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    idp.hold.set()
    fetcher.join(10)
    assert jwks.key("k1", "RS256").kid == "k1"
    assert idp.jwks_hits == 1


def test_timeouts_are_short_and_configurable(
    clock: Clock, idp: IdPServer, k1: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    idp.publish(k1)
    idp.hold = threading.Event()  # the server never answers until released
    jwks = client(idp.jwks_url, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    assert "timed out" in caplog.text


def test_a_trickling_server_cannot_hold_the_fetch_for_long(
    clock: Clock, idp: IdPServer, k1: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    idp.publish(k1)
    idp.trickle = 0.05  # each byte within the socket timeout; the whole body would take minutes
    jwks = client(idp.jwks_url, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    assert "took longer than 0.4 s" in caplog.text


def test_a_server_dribbling_its_status_line_and_headers_is_cut_off_at_the_deadline(
    clock: Clock, k1: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Each byte of the head comes well within the per-read timeout; the head alone would
    # take about 20 s. One deadline (twice the timeout) covers connect, head and body.
    body = json.dumps({"keys": [k1.jwk()]}).encode()
    server = RawServer(slow_head(body), interval=0.3)
    try:
        jwks = client(server.url, timeout=0.5)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
            jwks.key("k1", "RS256")
        took = time.monotonic() - started
    finally:
        server.stop()
    assert took < 1.0 + 1.5  # the 1 s deadline, and a margin for a busy machine
    assert "took longer than 1 s" in caplog.text
    assert jwks.fetches == 1 and server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HELLO\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 two hundred OK\r\n\r\n", id="status-not-a-number"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", id="header-too-long"),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-H: h\r\n" * 101 + b"\r\n", id="too-many-headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", id="cut-short"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_a_malformed_response_is_a_failed_fetch_not_an_exception(
    clock: Clock, answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = RawServer(answer)
    try:
        jwks = client(server.url, timeout=2.0)
        with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
            jwks.key("k1", "RS256")
    finally:
        server.stop()
    assert "JWK Set fetch from" in caplog.text and "no keys yet" in caplog.text
    assert jwks.fetches == 1 and jwks.last_error


# -- transport rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://tenant.auth0.com/.well-known/jwks.json", True),
        ("http://127.0.0.1:8080/jwks.json", True),
        ("http://localhost/jwks", True),
        ("http://[::1]:9/jwks", True),
        ("http://tenant.auth0.com/.well-known/jwks.json", False),
        ("http://127.0.0.1.nip.io/jwks", False),
        ("ftp://idp.example/jwks", False),
        ("file:///etc/passwd", False),
        ("https:///jwks", False),
        ("jwks.json", False),
    ],
)
def test_https_only_except_for_this_host(url: str, ok: bool) -> None:
    if ok:
        assert check_url(url, "x") == url
    else:
        with pytest.raises(ValueError, match=r"https|host|URL"):
            check_url(url, "x")


def test_a_redirect_to_plain_http_elsewhere_is_not_followed(
    clock: Clock, idp: IdPServer, caplog: pytest.LogCaptureFixture
) -> None:
    idp.redirect_to = "http://idp.example.invalid/jwks.json"
    jwks = client(idp.jwks_url)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    assert "must use https" in caplog.text


def test_an_oversized_response_is_refused(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.raw_body = b'{"keys": [' + b'{"kty": "RSA"},' * 60_000 + b"{}]}"
    jwks = client(idp.jwks_url)
    with pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")


# -- discovery -----------------------------------------------------------------------------------


def test_discovery_finds_the_jwks_uri(clock: Clock, idp: IdPServer, k1: SigningKey) -> None:
    idp.publish(k1)
    jwks = JWKSClient(None, issuer=idp.url, discovery=True, allowed=ALLOWED)
    assert jwks.key("k1", "RS256").kid == "k1"
    assert idp.hits == ["/.well-known/openid-configuration", "/jwks.json"]
    clock.advance(301)
    jwks.key("k1", "RS256")
    assert idp.hits[-1] == "/jwks.json"  # discovery once, the set on every refresh


@pytest.mark.parametrize(
    ("issuer", "jwks_uri", "message"),
    [
        ("https://other-tenant.example", None, "names issuer"),
        (None, "http://idp.example.invalid/jwks.json", "must use https"),
    ],
)
def test_discovery_document_is_checked(
    clock: Clock,
    idp: IdPServer,
    caplog: pytest.LogCaptureFixture,
    issuer: str | None,
    jwks_uri: str | None,
    message: str,
) -> None:
    idp.issuer_override = issuer
    idp.discovery_jwks_uri = jwks_uri
    jwks = JWKSClient(None, issuer=idp.url, discovery=True, allowed=ALLOWED)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"), pytest.raises(KeysUnavailable):
        jwks.key("k1", "RS256")
    assert message in caplog.text
    assert "/jwks.json" not in idp.hits


def test_symmetric_algorithms_are_never_allowed() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        JWKSClient("https://idp.example/jwks", allowed=frozenset({"RS256", "HS256"}))


# -- key hygiene ---------------------------------------------------------------------------------

_GOOD = rsa_jwk(rsa_key("good"), "good")
_EC = ec.generate_private_key(ec.SECP256R1())


def _hygiene_cases() -> list[t.Any]:
    rsa_public = rsa_jwk(rsa_key("bad"), "bad")
    private_numbers = rsa_key("bad").private_numbers()

    def b64int(n: int) -> str:
        from flask_jwt_shield.keys import b64url

        return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return [
        pytest.param(dict(rsa_public, use="enc"), "use is 'enc'", id="use-enc"),
        pytest.param(dict(rsa_public, alg="RSA-OAEP"), "'RSA-OAEP' is not an allowed", id="encryption-alg"),
        pytest.param(dict(rsa_public, alg="RS512"), "'RS512' is not an allowed", id="alg-not-allowed"),
        pytest.param(dict(rsa_public, alg="HS256"), "'HS256' is not an allowed", id="hmac-alg"),
        pytest.param(dict(rsa_public, alg="ES256"), "does not fit kty", id="alg-kty-mismatch"),
        pytest.param(rsa_jwk(rsa_key("weak", 1024), "bad"), "1024 bits", id="rsa-1024"),
        pytest.param({"kty": "oct", "kid": "bad", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}, "oct", id="oct"),
        pytest.param(dict(rsa_public, d=b64int(private_numbers.d)), "private key material (d)", id="private-d"),
        pytest.param(
            dict(rsa_public, p=b64int(private_numbers.p), q=b64int(private_numbers.q)),
            "private key material (p, q)",
            id="private-pq",
        ),
        pytest.param(dict(rsa_public, key_ops=["encrypt"]), "key_ops", id="key-ops-encrypt"),
        pytest.param(dict(rsa_public, n="!!!"), "unparseable", id="garbage-modulus"),
        pytest.param({"kty": "XYZ", "kid": "bad"}, "unsupported kty", id="unknown-kty"),
        pytest.param(dict(rsa_public, kid=None), "no 'kid'", id="no-kid"),
        pytest.param(
            {"kty": "EC", "kid": "bad", "crv": "P-384", "alg": "ES256", "x": "AAAA", "y": "AAAA"},
            "curve 'P-384' does not fit ES256",
            id="ec-wrong-curve",
        ),
    ]


@pytest.mark.parametrize(("entry", "reason"), _hygiene_cases())
def test_unusable_jwk_entries_are_skipped_and_logged_good_keys_keep_working(
    clock: Clock, idp: IdPServer, caplog: pytest.LogCaptureFixture, entry: dict[str, t.Any], reason: str
) -> None:
    idp.publish({k: v for k, v in entry.items() if v is not None}, _GOOD)
    jwks = client(idp.jwks_url)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        assert jwks.key("good", "RS256").kid == "good"
    with pytest.raises(InvalidToken):
        jwks.key("bad", "RS256")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "flask_jwt_shield"]
    assert len(warnings) == 1
    assert reason in warnings[0].getMessage()
    expected_kid = "'bad'" if entry.get("kid") else "None"
    assert f"kid {expected_kid}" in warnings[0].getMessage()


def test_duplicate_kids_are_both_skipped(clock: Clock, idp: IdPServer, caplog: pytest.LogCaptureFixture) -> None:
    first = rsa_jwk(rsa_key("dup-a"), "dup")
    second = rsa_jwk(rsa_key("dup-b"), "dup")
    idp.publish(first, second, _GOOD)
    jwks = client(idp.jwks_url)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        assert jwks.key("good", "RS256").kid == "good"
    with pytest.raises(InvalidToken):
        jwks.key("dup", "RS256")
    assert caplog.text.count("duplicate kid") == 1  # same (kid, reason): logged once
    key_set = jwks.key_set
    assert key_set is not None and [s.kid for s in key_set.skipped] == ["dup", "dup"]


def test_skipped_entries_are_logged_once_not_at_every_refresh(
    clock: Clock, idp: IdPServer, caplog: pytest.LogCaptureFixture
) -> None:
    idp.publish(dict(rsa_jwk(rsa_key("bad"), "bad"), use="enc"), _GOOD)
    jwks = client(idp.jwks_url)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        for _ in range(5):
            jwks.key("good", "RS256")
            clock.advance(301)
    assert idp.jwks_hits == 5
    assert caplog.text.count("use is 'enc'") == 1


def test_a_key_without_alg_serves_the_allowed_algorithms_of_its_kty() -> None:
    rsa_entry = {k: v for k, v in _GOOD.items() if k != "alg"}
    ec_entry = {k: v for k, v in SigningKey("e", "ES256", _EC).jwk().items() if k != "alg"}
    keys = parse_jwks({"keys": [rsa_entry, ec_entry]}, frozenset({"RS256", "PS256", "ES256", "ES384"}))
    assert sorted(keys.keys) == [("e", "ES256"), ("good", "PS256"), ("good", "RS256")]
    assert keys.skipped == ()
    only_ec = parse_jwks({"keys": [rsa_entry]}, frozenset({"ES256"}))
    assert only_ec.keys == {} and "no allowed algorithm" in only_ec.skipped[0].reason


def test_a_key_with_use_sig_and_verify_key_ops_is_used() -> None:
    keys = parse_jwks({"keys": [dict(_GOOD, key_ops=["verify"])]}, ALLOWED)
    assert list(keys.keys) == [("good", "RS256")]


@pytest.mark.parametrize("document", [[], {"keys": "x"}, {"keys": [{}] * 101}, "keys"])
def test_documents_that_are_not_jwk_sets(document: t.Any) -> None:
    from flask_jwt_shield.jwks import JWKSError

    with pytest.raises(JWKSError):
        parse_jwks(document, ALLOWED)
