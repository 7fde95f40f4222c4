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

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from flask_jwt_shield import InvalidDPoPProof
from flask_jwt_shield import UseDPoPNonce
from flask_jwt_shield.dpop import DPoPKey
from flask_jwt_shield.dpop import Nonces
from flask_jwt_shield.dpop import ProofVerifier
from flask_jwt_shield.dpop import jwk_thumbprint
from flask_jwt_shield.dpop import normalize_htu
from flask_jwt_shield.dpop import token_hash
from flask_jwt_shield.stores import MemoryStore
from flask_jwt_shield.stores import SQLiteStore

NOW = 1_800_000_000.0
URL = "https://api.example/api/me"
TOKEN = "header.payload.signature"


# -- crafting proofs by hand -------------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seg(obj: t.Any) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def ec_jwk(key: ec.EllipticCurvePrivateKey, *, private: bool = False) -> dict[str, str]:
    numbers = key.private_numbers()
    size = (key.curve.key_size + 7) // 8
    jwk = {
        "kty": "EC",
        "crv": {256: "P-256", 384: "P-384"}[key.curve.key_size],
        "x": b64u(numbers.public_numbers.x.to_bytes(size, "big")),
        "y": b64u(numbers.public_numbers.y.to_bytes(size, "big")),
    }
    if private:
        jwk["d"] = b64u(numbers.private_value.to_bytes(size, "big"))
    return jwk


def es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class HandKey:
    """An ES256 key and proofs made by hand around it."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = ec_jwk(self.key)

    def proof(
        self,
        *,
        header: dict[str, t.Any] | None = None,
        claims: dict[str, t.Any] | None = None,
        drop: tuple[str, ...] = (),
        sign: t.Callable[[bytes], bytes] | None = None,
        token: str | None = TOKEN,
    ) -> str:
        h: dict[str, t.Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        h.update(header or {})
        c: dict[str, t.Any] = {"jti": "j-" + b64u(hashlib.sha256(repr((claims, drop)).encode()).digest()[:9]),
                               "htm": "GET", "htu": URL, "iat": NOW}  # fmt: skip
        if token is not None:
            c["ath"] = b64u(hashlib.sha256(token.encode()).digest())
        c.update(claims or {})
        for name in drop:
            h.pop(name, None)
            c.pop(name, None)
        signing_input = f"{seg(h)}.{seg(c)}".encode()
        signature = (sign or (lambda data: es256(self.key, data)))(signing_input)
        return f"{signing_input.decode()}.{b64u(signature)}"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def verifier(store: MemoryStore) -> ProofVerifier:
    return ProofVerifier(store=store, max_age=60, leeway=0)


@pytest.fixture
def hand() -> HandKey:
    return HandKey()


def verify(verifier: ProofVerifier, proof: str | None, *, method: str = "GET", url: str = URL,
           token: str | None = TOKEN, now: float = NOW) -> t.Any:  # fmt: skip
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


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "PS256", "RS256"])
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


@pytest.mark.parametrize("url", ["/api/me", "ftp://api.example/x", "https://user@api.example/x",
                                 "https://api.example:port/x", "https:///x", "https://api.example/%ff"])  # fmt: skip
def test_htu_that_is_no_http_url_is_refused(verifier: ProofVerifier, hand: HandKey, url: str) -> None:
    refused(verifier, hand.proof(claims={"htu": url}), "dpop-wrong-url")


# -- refusals ---------------------------------------------------------------------------------


def test_missing_proof(verifier: ProofVerifier) -> None:
    error = refused(verifier, None, "dpop-missing")
    assert error.error == "invalid_dpop_proof"
    assert error.challenge() == 'DPoP realm="api", error="invalid_dpop_proof", ' \
        'error_description="A DPoP proof is required (the DPoP header)."'


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


def test_replayed_proof_across_processes_sharing_a_sqlite_store(tmp_path: t.Any, hand: HandKey) -> None:
    # Two verifiers with their own connections stand for two worker processes.
    path = str(tmp_path / "shield.db")
    first = ProofVerifier(store=SQLiteStore(path))
    second = ProofVerifier(store=SQLiteStore(path))
    proof = hand.proof()
    verify(first, proof)
    refused(second, proof, "dpop-replayed")


@pytest.mark.parametrize(("method", "url"), [("POST", URL), ("get", URL), ("GET", "https://api.example/api/admin"),
                                             ("GET", "https://other.example/api/me")])  # fmt: skip
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

    jwk = {"kty": "RSA", "n": i2b(n.public_numbers.n), "e": i2b(n.public_numbers.e), "d": i2b(n.d),
           "p": i2b(n.p), "q": i2b(n.q), "dp": i2b(n.dmp1), "dq": i2b(n.dmq1), "qi": i2b(n.iqmp)}  # fmt: skip
    hand = HandKey()
    proof = hand.proof(header={"alg": "RS256", "jwk": jwk},
                       sign=lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()))  # fmt: skip
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


@pytest.mark.parametrize(("offset", "reason"), [(-61, "dpop-stale"), (-3600, "dpop-stale"), (1, "dpop-future"),
                                                (3600, "dpop-future")])  # fmt: skip
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
    [None, "a-string", {}, {"kty": "oct"}, {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
     {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}],
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
    proof = HandKey().proof(header={"alg": "RS256", "jwk": jwk},
                            sign=lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()))  # fmt: skip
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


@pytest.mark.parametrize(("name", "value"), [("jti", ""), ("jti", 5), ("jti", "x" * 257), ("iat", "1800000000"),
                                             ("iat", True), ("iat", 1e300), ("htm", ["GET"]), ("htu", 5)])  # fmt: skip
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
