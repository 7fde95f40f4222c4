"""DPoP proofs (RFC 9449): the verifier on its own, the client helper, thumbprints, nonces.

Attack proofs are made by hand (base64url JSON segments signed with ``cryptography`` or
``hmac`` directly), never by :class:`DPoPKey`, so a bug in the helper cannot hide one in the
verifier. Time is the test's own (``now=``); nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import typing as t
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from flask_jwt_shield import InvalidDPoPProof
from flask_jwt_shield import JWTShield
from flask_jwt_shield import UseDPoPNonce
from flask_jwt_shield.dpop import DPoPKey
from flask_jwt_shield.dpop import Nonces
from flask_jwt_shield.dpop import ProofVerifier
from flask_jwt_shield.dpop import jwk_thumbprint
from flask_jwt_shield.dpop import normalize_htu
from flask_jwt_shield.dpop import token_hash
from flask_jwt_shield.stores import MemoryStore
from flask_jwt_shield.stores import SQLiteStore

from .conftest import AppFactory
from .conftest import Clock
from .conftest import json_of
from .dpop_util import NOW
from .dpop_util import TOKEN
from .dpop_util import URL
from .dpop_util import HandKey
from .dpop_util import b64u
from .dpop_util import ec_jwk
from .dpop_util import es256
from .dpop_util import seg


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def verifier(store: MemoryStore) -> ProofVerifier:
    return ProofVerifier(store=store, max_age=60, leeway=0)


@pytest.fixture
def hand() -> HandKey:
    return HandKey()


def verify(
    verifier: ProofVerifier,
    proof: str | None,
    *,
    method: str = "GET",
    url: str = URL,
    token: str | None = TOKEN,
    now: float = NOW,
) -> t.Any:
    return verifier.verify(proof, method=method, url=url, access_token=token, now=now)


def refused(verifier: ProofVerifier, proof: str | None, reason: str, **kwargs: t.Any) -> InvalidDPoPProof:
    with pytest.raises(InvalidDPoPProof) as info:
        verify(verifier, proof, **kwargs)
    assert info.value.reason == reason, info.value.reason
    assert info.value.code == 401
    return info.value


# -- the good path -----------------------------------------------------------------------------


def test_a_hand_made_proof_verifies(verifier: ProofVerifier, hand: HandKey) -> None:
    proof = verify(verifier, hand.proof())
    assert proof.jkt == jwk_thumbprint(hand.jwk)
    assert (proof.htm, proof.htu, proof.iat) == ("GET", URL, NOW)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "PS256", "RS256"])
def test_client_helper_proofs_verify(store: MemoryStore, alg: str) -> None:
    key = DPoPKey.generate(alg)
    verifier = ProofVerifier(store=store, algorithms=[alg])
    proof = verifier.verify(key.proof("POST", URL, TOKEN), method="POST", url=URL, access_token=TOKEN)
    assert proof.jkt == key.thumbprint
    assert DPoPKey.from_pem(key.private_pem(), alg).thumbprint == key.thumbprint


def test_client_helper_headers(verifier: ProofVerifier) -> None:
    key = DPoPKey.generate()
    headers = key.headers("GET", URL + "?page=2#top", TOKEN)
    assert headers["Authorization"] == f"DPoP {TOKEN}"
    verifier.verify(headers["DPoP"], method="GET", url=URL, access_token=TOKEN)


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1: the example RSA key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
        "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
        "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xB"
        "niIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_ath_is_base64url_sha256_of_the_token() -> None:
    assert token_hash("abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://API.Example/api/me", URL),
        ("https://api.example:443/api/me", URL),
        ("https://api.example/api/me?x=1#frag", URL),
        ("https://api.example/api/./x/../me", URL),
        ("https://api.example/%7Euser", "https://api.example/~user"),
        ("https://api.example/caf%c3%a9", "https://api.example/café"),
        ("http://api.example:80", "http://api.example/"),
    ],
)
def test_htu_normalisation(a: str, b: str) -> None:
    assert normalize_htu(a) == normalize_htu(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://api.example/api/me", URL),
        ("https://api.example:8443/api/me", URL),
        ("https://api.example/api/me/", URL),
        ("https://evil.example/api/me", URL),
        ("https://api.example/api/ME", URL),
    ],
)
def test_htu_normalisation_keeps_what_differs(a: str, b: str) -> None:
    assert normalize_htu(a) != normalize_htu(b)


@pytest.mark.parametrize(
    "url",
    [
        "/api/me",
        "ftp://api.example/x",
        "https://user@api.example/x",
        "https://api.example:port/x",
        "https:///x",
        "https://api.example/%ff",
    ],
)
def test_htu_that_is_no_http_url_is_refused(verifier: ProofVerifier, hand: HandKey, url: str) -> None:
    refused(verifier, hand.proof(claims={"htu": url}), "dpop-wrong-url")


# -- refusals ---------------------------------------------------------------------------------


def test_missing_proof(verifier: ProofVerifier) -> None:
    error = refused(verifier, None, "dpop-missing")
    assert error.error == "invalid_dpop_proof"
    assert (
        error.challenges()[0] == 'DPoP realm="api", error="invalid_dpop_proof", '
        'error_description="A DPoP proof is required (the DPoP header)."'
    )


def test_dpop_challenge_names_the_algorithms(verifier: ProofVerifier) -> None:
    error = refused(verifier, None, "dpop-missing")
    error.dpop = ("optional", verifier.algs)
    assert error.challenges() == [
        'DPoP realm="api", error="invalid_dpop_proof", error_description="A DPoP proof is required (the DPoP'
        ' header).", algs="ES256 ES384 EdDSA PS256 RS256"'
    ]


def test_replayed_proof(verifier: ProofVerifier, hand: HandKey) -> None:
    proof = hand.proof()
    verify(verifier, proof)
    refused(verifier, proof, "dpop-replayed")
    refused(verifier, proof, "dpop-replayed", now=NOW + 59)


def test_replay_cache_is_per_key_and_jti(verifier: ProofVerifier, hand: HandKey) -> None:
    verify(verifier, hand.proof(claims={"jti": "same"}))
    verify(verifier, HandKey().proof(claims={"jti": "same"}))  # another client's jti is its own
    refused(verifier, hand.proof(claims={"jti": "same", "iat": NOW + 1}), "dpop-replayed", now=NOW + 1)


def test_replayed_proof_across_processes_sharing_a_sqlite_store(tmp_path: Path, hand: HandKey) -> None:
    # Two verifiers with their own connections stand for two worker processes.
    path = str(tmp_path / "shield.db")
    first = ProofVerifier(store=SQLiteStore(path))
    second = ProofVerifier(store=SQLiteStore(path))
    proof = hand.proof()
    verify(first, proof)
    refused(second, proof, "dpop-replayed")


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", URL), ("get", URL), ("GET", "https://api.example/api/admin"), ("GET", "https://other.example/api/me")],
)
def test_proof_for_another_url_or_method(verifier: ProofVerifier, hand: HandKey, method: str, url: str) -> None:
    reason = "dpop-wrong-method" if method != "GET" else "dpop-wrong-url"
    refused(verifier, hand.proof(), reason, method=method, url=url)


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_proof_whose_jwk_holds_a_private_key(verifier: ProofVerifier, hand: HandKey, member: str) -> None:
    jwk = ec_jwk(hand.key, private=True) if member == "d" else {**hand.jwk, member: "AAAA"}
    refused(verifier, hand.proof(header={"jwk": jwk}), "dpop-private-jwk")


def test_proof_whose_rsa_jwk_holds_a_private_key(verifier: ProofVerifier) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.private_numbers()

    def i2b(value: int) -> str:
        return b64u(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    jwk = {
        "kty": "RSA",
        "n": i2b(n.public_numbers.n),
        "e": i2b(n.public_numbers.e),
        "d": i2b(n.d),
        "p": i2b(n.p),
        "q": i2b(n.q),
        "dp": i2b(n.dmp1),
        "dq": i2b(n.dmq1),
        "qi": i2b(n.iqmp),
    }
    hand = HandKey()
    proof = hand.proof(
        header={"alg": "RS256", "jwk": jwk}, sign=lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    )
    refused(verifier, proof, "dpop-private-jwk")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_proof(verifier: ProofVerifier, hand: HandKey, alg: str) -> None:
    # The "key" is a symmetric JWK whose secret the attacker chose, or the public key's bytes.
    secret = b"attacker-chosen-secret-" + b"s" * 20
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for jwk in ({"kty": "oct", "k": b64u(secret)}, hand.jwk):
        proof = hand.proof(header={"alg": alg, "jwk": jwk}, sign=lambda data: hmac.new(secret, data, digest).digest())
        refused(verifier, proof, "dpop-bad-alg")


@pytest.mark.parametrize("alg", ["none", "None", "", None, 7])
def test_unsigned_or_odd_alg_proof(verifier: ProofVerifier, hand: HandKey, alg: t.Any) -> None:
    proof = hand.proof(header={"alg": alg}, sign=lambda data: b"x")
    refused(verifier, proof, "dpop-bad-alg")


def test_algorithm_outside_the_allow_list(store: MemoryStore) -> None:
    verifier = ProofVerifier(store=store, algorithms=["EdDSA"])
    refused(verifier, HandKey().proof(), "dpop-bad-alg")


@pytest.mark.parametrize(
    ("offset", "reason"), [(-61, "dpop-stale"), (-3600, "dpop-stale"), (1, "dpop-future"), (3600, "dpop-future")]
)
def test_stale_or_future_iat(verifier: ProofVerifier, hand: HandKey, offset: int, reason: str) -> None:
    refused(verifier, hand.proof(claims={"iat": NOW + offset}), reason)


def test_iat_window_edges_and_leeway(store: MemoryStore, hand: HandKey) -> None:
    verifier = ProofVerifier(store=store, max_age=60, leeway=5)
    verify(verifier, hand.proof(claims={"iat": NOW - 65, "jti": "a"}))
    verify(verifier, hand.proof(claims={"iat": NOW + 5, "jti": "b"}))
    refused(verifier, hand.proof(claims={"iat": NOW - 65.5, "jti": "c"}), "dpop-stale")
    refused(verifier, hand.proof(claims={"iat": NOW + 5.5, "jti": "d"}), "dpop-future")


@pytest.mark.parametrize("ath", ["wrong", None, 7, "missing", b64u(hashlib.sha256(b"other.token.x").digest())])
def test_wrong_ath(verifier: ProofVerifier, hand: HandKey, ath: t.Any) -> None:
    proof = hand.proof(drop=("ath",)) if ath == "missing" else hand.proof(claims={"ath": ath})
    refused(verifier, proof, "dpop-bad-ath")


def test_no_ath_needed_at_a_token_endpoint(verifier: ProofVerifier, hand: HandKey) -> None:
    verify(verifier, hand.proof(token=None, claims={"htm": "POST"}), method="POST", token=None)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None, "dpop", 1])
def test_wrong_typ(verifier: ProofVerifier, hand: HandKey, typ: t.Any) -> None:
    refused(verifier, hand.proof(header={"typ": typ}), "dpop-bad-typ")


@pytest.mark.parametrize("typ", ["DPoP+JWT", "application/dpop+jwt"])
def test_typ_spellings(verifier: ProofVerifier, hand: HandKey, typ: str) -> None:
    verify(verifier, hand.proof(header={"typ": typ}))


@pytest.mark.parametrize(
    "jwk",
    [
        None,
        "a-string",
        {},
        {"kty": "oct"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
    ],
    ids=["none", "string", "empty", "oct", "rsa-for-es256", "wrong-curve", "not-on-curve"],
)
def test_bad_jwk(verifier: ProofVerifier, hand: HandKey, jwk: t.Any) -> None:
    proof = hand.proof(header={"jwk": jwk}) if jwk is not None else hand.proof(drop=("jwk",))
    refused(verifier, proof, "dpop-bad-jwk")


def test_jwk_of_another_key_than_the_signer(verifier: ProofVerifier, hand: HandKey) -> None:
    refused(verifier, hand.proof(header={"jwk": HandKey().jwk}), "dpop-bad-signature")


def test_weak_rsa_key(verifier: ProofVerifier) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pub = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64u(pub.n.to_bytes(128, "big")), "e": b64u(pub.e.to_bytes(3, "big"))}
    proof = HandKey().proof(
        header={"alg": "RS256", "jwk": jwk}, sign=lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    )
    refused(verifier, proof, "dpop-weak-key")


def test_eddsa_proof_made_by_hand(store: MemoryStore) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    proof = HandKey().proof(header={"alg": "EdDSA", "jwk": jwk}, sign=key.sign)
    assert verify(ProofVerifier(store=store), proof).jkt == jwk_thumbprint(jwk)


@pytest.mark.parametrize("name", ["jti", "htm", "htu", "iat"])
def test_required_claim_missing(verifier: ProofVerifier, hand: HandKey, name: str) -> None:
    reason = {"jti": "dpop-bad-jti", "htm": "dpop-wrong-method", "htu": "dpop-wrong-url", "iat": "dpop-bad-iat"}
    refused(verifier, hand.proof(drop=(name,)), reason[name])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jti", ""),
        ("jti", 5),
        ("jti", "x" * 257),
        ("iat", "1800000000"),
        ("iat", True),
        ("iat", 1e300),
        ("htm", ["GET"]),
        ("htu", 5),
    ],
)
def test_claim_of_wrong_type(verifier: ProofVerifier, hand: HandKey, name: str, value: t.Any) -> None:
    with pytest.raises(InvalidDPoPProof):
        verify(verifier, hand.proof(claims={name: value}))


@pytest.mark.parametrize(
    "proof",
    ["", "a", "a.b", "a.b.c.d", "..", "eyJ9.eyJ9.", "!!!.###.$$$", "a.b.c,d.e.f", "x" * 9000],
)
def test_garbage_proof(verifier: ProofVerifier, proof: str) -> None:
    with pytest.raises(InvalidDPoPProof):
        verify(verifier, proof)


def test_two_proofs_joined_by_a_proxy(verifier: ProofVerifier, hand: HandKey) -> None:
    refused(verifier, f"{hand.proof()}, {hand.proof(claims={'jti': 'other'})}", "dpop-malformed")


def test_duplicate_member_in_proof_header(verifier: ProofVerifier, hand: HandKey) -> None:
    good = hand.proof()
    header = b64u(b'{"typ":"dpop+jwt","alg":"ES256","alg":"HS256","jwk":' + json.dumps(hand.jwk).encode() + b"}")
    payload = good.split(".")[1]
    proof = f"{header}.{payload}.{b64u(es256(hand.key, f'{header}.{payload}'.encode()))}"
    refused(verifier, proof, "dpop-malformed")


def test_crit_header(verifier: ProofVerifier, hand: HandKey) -> None:
    refused(verifier, hand.proof(header={"crit": ["exp"]}), "dpop-crit")


def test_tampered_payload(verifier: ProofVerifier, hand: HandKey) -> None:
    header, _, signature = hand.proof().split(".")
    payload = seg({"jti": "x", "htm": "GET", "htu": URL, "iat": NOW, "ath": token_hash(TOKEN)})
    refused(verifier, f"{header}.{payload}.{signature}", "dpop-bad-signature")


def test_refused_proof_is_not_remembered(verifier: ProofVerifier, hand: HandKey) -> None:
    # A proof refused for its URL must not burn its jti: only accepted proofs are remembered.
    proof = hand.proof()
    refused(verifier, proof, "dpop-wrong-url", url="https://api.example/other")
    verify(verifier, proof)


# -- nonces ----------------------------------------------------------------------------------------


def test_nonce_required_then_accepted(store: MemoryStore, hand: HandKey) -> None:
    nonces = Nonces(b"server-secret", ttl=300)
    verifier = ProofVerifier(store=store, nonces=nonces)
    with pytest.raises(UseDPoPNonce) as info:
        verify(verifier, hand.proof())
    error = info.value
    assert error.error == "use_dpop_nonce" and error.code == 401
    assert ("DPoP-Nonce", error.dpop_nonce) in error.get_headers()
    proof = verify(verifier, hand.proof(claims={"nonce": error.dpop_nonce, "jti": "n1"}))
    assert proof.nonce == error.dpop_nonce and proof.next_nonce is None


def test_nonce_ages_out(store: MemoryStore, hand: HandKey) -> None:
    nonces = Nonces(b"server-secret", ttl=300)
    verifier = ProofVerifier(store=store, nonces=nonces)
    nonce = nonces.current(NOW)
    later = NOW + 300
    proof = verify(verifier, hand.proof(claims={"nonce": nonce, "iat": later, "jti": "a"}), now=later)
    assert proof.next_nonce == nonces.current(later) != nonce  # still good, and a new one is offered
    much_later = NOW + 900
    with pytest.raises(UseDPoPNonce):
        verify(verifier, hand.proof(claims={"nonce": nonce, "iat": much_later, "jti": "b"}), now=much_later)


@pytest.mark.parametrize("nonce", ["", "x" * 32, 5, None])
def test_forged_nonce(store: MemoryStore, hand: HandKey, nonce: t.Any) -> None:
    verifier = ProofVerifier(store=store, nonces=Nonces(b"server-secret", ttl=300))
    with pytest.raises(UseDPoPNonce):
        verify(verifier, hand.proof(claims={"nonce": nonce}))


def test_nonce_of_another_server_secret(store: MemoryStore, hand: HandKey) -> None:
    verifier = ProofVerifier(store=store, nonces=Nonces(b"server-secret", ttl=300))
    foreign = Nonces(b"other-secret", ttl=300).current(NOW)
    with pytest.raises(UseDPoPNonce):
        verify(verifier, hand.proof(claims={"nonce": foreign}))


def test_client_helper_follows_nonces(store: MemoryStore) -> None:
    nonces = Nonces(b"server-secret", ttl=300)
    verifier = ProofVerifier(store=store, nonces=nonces)
    key = DPoPKey.generate()
    with pytest.raises(UseDPoPNonce) as info:
        verifier.verify(key.proof("GET", URL, TOKEN), method="GET", url=URL, access_token=TOKEN)
    assert key.update_nonce(dict(info.value.get_headers())) is True
    assert key.update_nonce(dict(info.value.get_headers())) is False
    verifier.verify(key.proof("GET", URL, TOKEN), method="GET", url=URL, access_token=TOKEN)


# -- in the pipeline: binding at login and refresh, bound requests ------------------------------

API = "http://localhost/api/me"
LOGIN = "http://localhost/login"
REFRESH = "http://localhost/refresh"


def claims_of(token: str) -> dict[str, t.Any]:
    part = token.split(".")[1]
    return t.cast(dict[str, t.Any], json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


@pytest.fixture
def dpop_app(make_app: AppFactory, clock: Clock) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_DPOP": "optional"})


def login(client: FlaskClient, key: DPoPKey | None) -> dict[str, t.Any]:
    headers = {"DPoP": key.proof("POST", LOGIN)} if key is not None else {}
    response = client.post("/login", headers=headers)
    assert response.status_code == 200, response.json
    return t.cast(dict[str, t.Any], response.json)


def test_login_with_a_proof_binds_the_tokens(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, _ = dpop_app
    client = app.test_client()
    key = DPoPKey.generate()
    body = login(client, key)
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.thumbprint}
    assert claims_of(body["refresh_token"])["cnf"] == {"jkt": key.thumbprint}
    r = client.get("/api/me", headers=key.headers("GET", API, body["access_token"]))
    assert r.status_code == 200, r.json
    assert json_of(r)["cnf"] == {"jkt": key.thumbprint}
    # A new proof for every request; each works once.
    for _ in range(3):
        assert client.get("/api/me", headers=key.headers("GET", API, body["access_token"])).status_code == 200


def test_login_without_a_proof_is_a_bearer_session_in_optional_mode(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, _ = dpop_app
    client = app.test_client()
    body = login(client, None)
    assert body["token_type"] == "Bearer" and "cnf" not in claims_of(body["access_token"])
    assert client.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"}).status_code == 200


def test_login_with_a_bad_proof_is_refused_with_400(dpop_app: t.Any) -> None:
    app, shield = dpop_app
    client = app.test_client()
    key = DPoPKey.generate()
    r = client.post("/login", headers={"DPoP": key.proof("POST", "http://localhost/elsewhere")})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_dpop_proof"
    with app.app_context():
        (event,) = shield.events(kind="dpop-rejected")
    assert event.detail["reason"] == "dpop-wrong-url"
    assert not shield_sessions(app, shield)


def shield_sessions(app: t.Any, shield: t.Any, sub: str = "alice") -> list[t.Any]:
    with app.app_context():
        return t.cast(list[t.Any], shield.sessions(sub))


def test_unbound_token_sent_with_the_dpop_scheme_is_refused(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, _ = dpop_app
    client = app.test_client()
    body = login(client, None)
    key = DPoPKey.generate()
    r = client.get("/api/me", headers=key.headers("GET", API, body["access_token"]))
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"


def test_refresh_keeps_the_binding_and_needs_the_same_key(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, _ = dpop_app
    client = app.test_client()
    key = DPoPKey.generate()
    body = login(client, key)
    # No proof, or a proof by another key: refused before anything rotates.
    r = client.post("/refresh", json={"refresh_token": body["refresh_token"]})
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_dpop_proof"
    other = DPoPKey.generate()
    r = client.post(
        "/refresh", json={"refresh_token": body["refresh_token"]}, headers={"DPoP": other.proof("POST", REFRESH)}
    )
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_dpop_proof"
    # The owner's refresh still works: the refusals spent nothing.
    r = client.post(
        "/refresh", json={"refresh_token": body["refresh_token"]}, headers={"DPoP": key.proof("POST", REFRESH)}
    )
    assert r.status_code == 200, r.json
    assert json_of(r)["token_type"] == "DPoP"
    assert claims_of(json_of(r)["access_token"])["cnf"] == {"jkt": key.thumbprint}
    assert client.get("/api/me", headers=key.headers("GET", API, json_of(r)["access_token"])).status_code == 200


def test_required_mode(make_app: AppFactory, clock: Clock) -> None:
    app, shield = make_app({"JWT_SHIELD_DPOP": "required"})
    client = app.test_client()
    r = client.post("/login")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_dpop_proof"
    with app.app_context():
        unbound = shield.create_access_token("alice")
    r = client.get("/api/me", headers={"Authorization": f"Bearer {unbound}"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('DPoP realm="api", error="invalid_token"')
    assert 'algs="ES256 ES384 EdDSA PS256 RS256"' in r.headers["WWW-Authenticate"]
    r = client.get("/api/me")
    assert r.headers.getlist("WWW-Authenticate") == ['DPoP realm="api", algs="ES256 ES384 EdDSA PS256 RS256"']
    key = DPoPKey.generate()
    body = login(client, key)
    assert client.get("/api/me", headers=key.headers("GET", API, body["access_token"])).status_code == 200


def test_optional_mode_offers_both_challenges(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, _ = dpop_app
    r = app.test_client().get("/api/me")
    assert r.headers.getlist("WWW-Authenticate") == [
        'Bearer realm="api"',
        'DPoP realm="api", algs="ES256 ES384 EdDSA PS256 RS256"',
    ]


def test_proof_errors_render_per_rfc9449(dpop_app: t.Any) -> None:
    app, shield = dpop_app
    client = app.test_client()
    key = DPoPKey.generate()
    body = login(client, key)
    r = client.get("/api/me", headers={"Authorization": f"DPoP {body['access_token']}"})  # no DPoP header
    assert r.status_code == 401
    assert json_of(r)["error"] == "invalid_dpop_proof"
    assert r.headers["WWW-Authenticate"].startswith('DPoP realm="api", error="invalid_dpop_proof"')
    assert r.headers["WWW-Authenticate"].endswith('algs="ES256 ES384 EdDSA PS256 RS256"')
    assert body["access_token"] not in r.get_data(as_text=True)
    with app.app_context():
        (event,) = shield.events(kind="dpop-rejected")
    assert event.detail["reason"] == "dpop-missing"
    assert event.jti == claims_of(body["access_token"])["jti"]


def test_bound_token_is_refused_when_dpop_is_switched_off(make_app: AppFactory, clock: Clock) -> None:
    app, _ = make_app({"JWT_SHIELD_DPOP": "optional"})
    key = DPoPKey.generate()
    body = login(app.test_client(), key)
    off, _ = make_app({})
    r = off.test_client().get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert r.status_code == 401 and json_of(r)["error"] == "invalid_token"


def test_nonces_in_the_pipeline(make_app: AppFactory, clock: Clock) -> None:
    app, _ = make_app({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_NONCE_TTL": 300})
    client = app.test_client()
    key = DPoPKey.generate()
    r = client.post("/login", headers={"DPoP": key.proof("POST", LOGIN)})
    assert r.status_code == 400 and json_of(r)["error"] == "use_dpop_nonce"
    # werkzeug's Headers has the .get that update_nonce uses, but is not typed as a Mapping
    assert key.update_nonce(t.cast(t.Mapping[str, str], r.headers))
    body = login(client, key)
    assert client.get("/api/me", headers=key.headers("GET", API, body["access_token"])).status_code == 200
    clock.advance(300)  # the nonce is from the previous period now: still good, a new one is offered
    r = client.get("/api/me", headers=key.headers("GET", API, body["access_token"]))
    assert r.status_code == 200 and r.headers["DPoP-Nonce"] != key.nonce
    old = key.nonce
    assert key.update_nonce(t.cast(t.Mapping[str, str], r.headers))
    clock.advance(300)
    assert client.get("/api/me", headers=key.headers("GET", API, body["access_token"])).status_code == 200
    r = client.get(
        "/api/me",
        headers={
            "Authorization": f"DPoP {body['access_token']}",
            "DPoP": key.proof("GET", API, body["access_token"], nonce=old),
        },
    )
    assert r.status_code == 401 and json_of(r)["error"] == "use_dpop_nonce" and r.headers["DPoP-Nonce"]


def test_replay_cache_outage_follows_the_fail_mode(make_app: AppFactory, clock: Clock) -> None:
    from flask_jwt_shield.errors import StoreError

    store = MemoryStore()
    app, _ = make_app({"JWT_SHIELD_DPOP": "optional"}, store=store)
    client = app.test_client()
    key = DPoPKey.generate()
    body = login(client, key)

    def down(*args: t.Any, **kwargs: t.Any) -> bool:
        raise StoreError("down")

    store.remember_once = down  # type: ignore[method-assign]
    r = client.get("/api/me", headers=key.headers("GET", API, body["access_token"]))
    assert r.status_code == 503
    r = client.post("/login", headers={"DPoP": key.proof("POST", LOGIN)})
    assert r.status_code == 503  # a binding is never issued unproven


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SHIELD_DPOP": "sometimes"}, "JWT_SHIELD_DPOP"),
        ({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_ALGORITHMS": ["HS256"]}, "asymmetric"),
        ({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_ALGORITHMS": ["none"]}, "asymmetric"),
        ({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_ALGORITHMS": []}, "asymmetric"),
        ({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_MAX_AGE": 0}, "JWT_SHIELD_DPOP_MAX_AGE"),
        ({"JWT_SHIELD_DPOP_NONCE_TTL": 300}, "nonces are part of DPoP"),
        ({"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_DPOP_NONCE_TTL": "5m"}, "JWT_SHIELD_DPOP_NONCE_TTL"),
        ({"JWT_SHIELD_DPOP": "required", "JWT_SHIELD_TOKEN_LOCATIONS": ["headers", "cookies"]}, "fingerprint"),
        ({"JWT_SHIELD_TOKEN_LOCATIONS": ["query"]}, "never token locations"),
        ({"JWT_SHIELD_TOKEN_LOCATIONS": []}, "JWT_SHIELD_TOKEN_LOCATIONS"),
        ({"JWT_SHIELD_COOKIE_SAMESITE": "None"}, "JWT_SHIELD_COOKIE_SAMESITE"),
    ],
)
def test_bad_dpop_and_cookie_config_refused_at_init_app(
    make_app: AppFactory, config: dict[str, t.Any], message: str
) -> None:
    from flask_jwt_shield import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        make_app(config)


def test_nonces_need_a_signing_key(make_app: AppFactory) -> None:
    from cryptography.hazmat.primitives import serialization

    from flask_jwt_shield import ConfigurationError

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ConfigurationError, match="signing key"):
        make_app(
            {
                "JWT_SHIELD_ALGORITHM": "ES256",
                "JWT_SHIELD_PUBLIC_KEY": public,
                "JWT_SHIELD_DPOP": "optional",
                "JWT_SHIELD_DPOP_NONCE_TTL": 300,
            }
        )


def test_app_claims_may_not_set_the_binding(dpop_app: tuple[Flask, JWTShield]) -> None:
    app, shield = dpop_app
    with app.test_request_context("/login", method="POST"):
        for name in ("cnf", "fgp"):
            with pytest.raises(ValueError, match=name):
                shield.issue_tokens("alice", claims={name: {"jkt": "attacker"}})
            with pytest.raises(ValueError, match=name):
                shield.create_access_token("alice", claims={name: "x"})


@pytest.mark.parametrize(
    ("path", "base", "htu"),
    [
        ("/api/me", "http://localhost/", "http://localhost/api/me"),
        ("/api/caf%C3%A9", "http://localhost/", "http://localhost/api/café"),
        ("/api/a%2541", "http://localhost/", "http://localhost/api/a%2541"),
        ("/api/me", "https://api.example:443/", "https://API.example/api/me"),
        ("/api/me", "http://localhost:8080/prefix/", "http://localhost:8080/prefix/api/me"),
    ],
)
def test_request_url_matches_what_the_client_signed(store: MemoryStore, path: str, base: str, htu: str) -> None:
    from werkzeug.test import EnvironBuilder

    verifier = ProofVerifier(store=store)
    builder = EnvironBuilder(path=path, base_url=base)
    environ = builder.get_environ()
    builder.close()
    assert verifier.request_url(environ) == normalize_htu(htu)
    assert verifier.request_url(environ) == normalize_htu(htu)  # cached: the same answer


def test_refused_refresh_proofs_are_recorded_once_a_minute(dpop_app: tuple[Flask, JWTShield], clock: Clock) -> None:
    app, shield = dpop_app
    client = app.test_client()
    key = DPoPKey.generate()
    body = login(client, key)
    refresh_jti = claims_of(body["refresh_token"])["jti"]
    for _ in range(5):
        r = client.post("/refresh", json={"refresh_token": body["refresh_token"]})
        assert r.status_code == 400 and json_of(r)["error"] == "invalid_dpop_proof"
    with app.app_context():
        events = shield.events(kind="dpop-rejected")
    assert [(e.jti, e.detail["reason"]) for e in events] == [(refresh_jti, "dpop-missing")]


def test_dpop_required_without_a_request_context(make_app: AppFactory, clock: Clock) -> None:
    from flask_jwt_shield import InvalidGrant

    app, shield = make_app({"JWT_SHIELD_DPOP": "required"})
    with app.app_context(), pytest.raises(InvalidGrant) as info:
        shield.issue_tokens("alice")
    assert info.value.error == "invalid_dpop_proof"
