"""Known attacks on JWTs, one named regression test each (like pyjwt's ``tests/test_advisory.py``).

Every attack goes through the real Flask app (test client, ``Authorization: Bearer ...``) and
the answer is checked against DESIGN.md's error table: status, JSON ``error`` and the
``WWW-Authenticate`` challenge. Attack tokens are made by hand (base64url JSON segments signed
with ``hmac`` or ``cryptography`` directly), never by the shield's own encoder. Time is frozen
by the ``clock`` fixture for every test in this module; nothing sleeps.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import math
import socket
import time
import typing as t
import urllib.request
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm
from werkzeug.test import TestResponse

from flask_jwt_shield import ClientCredentials
from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims
from flask_jwt_shield import sessions
from flask_jwt_shield.state import current_state
from tests.conftest import SECRET
from tests.conftest import Clock
from tests.conftest import bearer
from tests.conftest import json_of
from tests.dpop_util import HandKey
from tests.idp_util import RawServer
from tests.idp_util import SigningKey
from tests.idp_util import idp_claims
from tests.idp_util import rsa_key as idp_rsa_key
from tests.idp_util import slow_head

AppFactory = Callable[..., tuple[Flask, JWTShield]]

REALM = "api"
# The order n of the P-256 group (SEC 2 §2.4.2): r = s = n is the other "psychic" signature.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ISSUER = "https://issuer.example"
AUDIENCE = "api://shield-tests"
RING_NEW = "ring-secret-new-" + "n" * 40
RING_OLD = "ring-secret-old-" + "o" * 40
_MISSING = object()

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- crafting tokens by hand ---------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(part: t.Mapping[str, t.Any] | bytes | str) -> str:
    """A base64url segment from a dict (compact JSON) or from raw bytes / raw JSON text."""
    if isinstance(part, str):
        part = part.encode("utf-8")
    if isinstance(part, bytes):
        return b64u(part)
    return b64u(json.dumps(part, separators=(",", ":")).encode("utf-8"))


def hs256(signing_input: bytes, secret: str | bytes = SECRET) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def forge(
    header: t.Mapping[str, t.Any] | bytes | str,
    payload: t.Mapping[str, t.Any] | bytes | str,
    *,
    secret: str | bytes = SECRET,
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """``header.payload.signature``; HMAC-SHA256 with ``secret`` unless ``sign`` is given."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = sign(signing_input.encode("ascii")) if sign else hs256(signing_input.encode("ascii"), secret)
    return f"{signing_input}.{b64u(signature)}"


def es256_signer(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants R || S (RFC 7518 §3.4)

    return sign


def decode_segment(token: str, index: int) -> dict[str, t.Any]:
    part = token.split(".")[index]
    return t.cast(dict[str, t.Any], json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def claims(now: float, **overrides: t.Any) -> dict[str, t.Any]:
    """Claims the shield would accept at ``now``; ``name=_MISSING`` drops one."""
    payload: dict[str, t.Any] = {
        "sub": "alice",
        "iat": now,
        "nbf": math.floor(now),
        "exp": math.floor(now) + 900,
        "jti": "attack-" + hashlib.sha256(repr(sorted(overrides.items())).encode()).hexdigest()[:16],
    }
    for name, value in overrides.items():
        if value is _MISSING:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def at_header(kid: t.Any = _MISSING, alg: str = "HS256", **extra: t.Any) -> dict[str, t.Any]:
    header: dict[str, t.Any] = {"alg": alg, "typ": "at+jwt"}
    if kid is not _MISSING:
        header["kid"] = kid
    header.update(extra)
    return header


def raw_payload(now: float, name: str, literal: str) -> str:
    """Claims as JSON text with claim ``name`` set to the JSON ``literal`` verbatim."""
    base = claims(now, **{name: "__LITERAL__"})
    return json.dumps(base, separators=(",", ":")).replace('"__LITERAL__"', literal)


# -- checking answers ------------------------------------------------------------------------


def expect(response: TestResponse, status: int, error: str | None) -> dict[str, t.Any]:
    """Status, JSON body ``error`` and ``WWW-Authenticate`` per DESIGN.md's table.

    ``error=None`` is the "no token" row: a bare challenge with no error code.
    """
    assert response.status_code != 500
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = t.cast(dict[str, t.Any], response.get_json())
    challenge = response.headers.get("WWW-Authenticate")
    if error is None:
        assert body["error"] == "unauthorized"
        assert challenge == f'Bearer realm="{REALM}"'
    else:
        assert body["error"] == error
        assert challenge is not None
        assert challenge.startswith(f'Bearer realm="{REALM}", error="{error}"'), challenge
    return body


def rejected(response: TestResponse) -> dict[str, t.Any]:
    return expect(response, 401, "invalid_token")


def bad_request(response: TestResponse) -> dict[str, t.Any]:
    return expect(response, 400, "invalid_request")


def accepted(response: TestResponse, sub: str = "alice") -> dict[str, t.Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = t.cast(dict[str, t.Any], response.get_json())
    assert body["sub"] == sub
    return body


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _frozen_time(clock: Clock) -> Clock:
    """Autouse fixtures run first: every app and token of this module lives on the clock."""
    return clock


@pytest.fixture
def now(clock: Clock) -> float:
    return clock.now


@pytest.fixture
def kid(token: str) -> str:
    """The ``kid`` of the default app's HS256 key, read off a genuine token."""
    return t.cast(str, decode_segment(token, 0)["kid"])


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def attacker_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: t.Any) -> str:
    return t.cast(
        str,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii"),
    )


@pytest.fixture
def rs_app(make_app: AppFactory, rsa_key: rsa.RSAPrivateKey) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_ALGORITHM": "RS256", "JWT_SHIELD_PRIVATE_KEY": _pem(rsa_key)})


@pytest.fixture
def es_app(make_app: AppFactory, ec_key: ec.EllipticCurvePrivateKey) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": _pem(ec_key)})


def _only_kid(shield_app: tuple[Flask, JWTShield]) -> str:
    app, shield = shield_app
    with app.app_context():
        return t.cast(str, shield.jwks()["keys"][0]["kid"])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, t.Any]]:
    """Record (and refuse) every attempt to open a connection or resolve a name."""
    attempts: list[tuple[str, t.Any]] = []

    def refuse(name: str) -> Callable[..., t.Any]:
        def blocked(*args: t.Any, **kwargs: t.Any) -> t.Any:
            attempts.append((name, args))
            raise OSError(f"network access attempted in a test: {name}{args!r}")

        return blocked

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    return attempts


# -- alg "none" ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "garbage", "hmac-of-real-key"])
@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "no-kid"])
def test_alg_none_is_refused(
    client: FlaskClient, kid: str, now: float, alg: str, signature: str, with_kid: bool
) -> None:
    """alg "none" (unsecured JWS) in every case variant.

    CVE-2015-9235 (node-jsonwebtoken), CVE-2015-2951 (JWT-simple), the 2015 Auth0 disclosure
    "Critical vulnerabilities in JSON Web Token libraries"; RFC 8725 §2.1 and §3.1/§3.2: the
    algorithm comes from configuration, never from the token.
    """
    header = at_header(kid if with_kid else _MISSING, alg=alg)
    signing_input = f"{segment(header)}.{segment(claims(now))}"
    sig = {"empty": "", "garbage": b64u(b"\x01" * 32), "hmac-of-real-key": b64u(hs256(signing_input.encode()))}
    body = rejected(client.get("/api/me", headers=bearer(f"{signing_input}.{sig[signature]}")))
    assert "alice" not in json.dumps(body)


def test_empty_signature_with_valid_alg(client: FlaskClient, token: str) -> None:
    """A genuine header and payload with the signature cut off ("h.p." and "h.p").

    CVE-2020-28042 (ServiceStack accepted an empty signature), CVE-2022-21449's sibling
    family of "signature not actually checked" bugs; RFC 7515 §5.2 step 7.
    """
    header_segment, payload_segment, _ = token.split(".")
    rejected(client.get("/api/me", headers=bearer(f"{header_segment}.{payload_segment}.")))
    rejected(client.get("/api/me", headers=bearer(f"{header_segment}.{payload_segment}")))
    accepted(client.get("/api/me", headers=bearer(token)))  # the genuine one still works


# -- key confusion -------------------------------------------------------------------------


def _public_forms(key: rsa.RSAPrivateKey) -> dict[str, bytes]:
    public = key.public_key()
    spki = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "spki-pem": spki,
        "spki-pem-no-newline": spki.rstrip(b"\n"),
        "pkcs1-pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "spki-der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "openssh": public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    }


@pytest.mark.parametrize("form", ["spki-pem", "spki-pem-no-newline", "pkcs1-pem", "spki-der", "openssh"])
@pytest.mark.parametrize("alg", ["HS256", "RS256"])
@pytest.mark.parametrize("with_kid", [True, False], ids=["real-kid", "no-kid"])
def test_hs256_signed_with_rsa_public_key(
    rs_app: tuple[Flask, JWTShield], rsa_key: rsa.RSAPrivateKey, now: float, form: str, alg: str, with_kid: bool
) -> None:
    """Algorithm confusion: HMAC keyed with the server's published RSA public key.

    CVE-2016-10555 (jwt-simple), CVE-2015-9235 (node-jsonwebtoken), CVE-2022-29217 (PyJWT),
    CVE-2016-5431 (php-jose); RFC 8725 §2.1, §3.1. Also with the header lying "RS256" over
    an HMAC signature.
    """
    app, _ = rs_app
    client = app.test_client()
    real_kid = _only_kid(rs_app)
    secret = _public_forms(rsa_key)[form]
    token = forge(at_header(real_kid if with_kid else _MISSING, alg=alg), claims(now), secret=secret)
    rejected(client.get("/api/me", headers=bearer(token)))
    # The app itself works: a genuine RS256 token is accepted.
    with app.app_context():
        genuine = rs_app[1].create_access_token("alice")
    assert decode_segment(genuine, 0) == {"alg": "RS256", "kid": real_kid, "typ": "at+jwt"}
    accepted(client.get("/api/me", headers=bearer(genuine)))


# -- kid injection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_kid",
    [
        "../../../../dev/null",
        "../../../../../../../../etc/passwd",
        "' OR 1=1 --",
        "x' UNION SELECT 'secret' --",
        "",
        "\x00",
        0,
        1,
        -1,
        1.5,
        True,
        None,
        ["k"],
        {"kid": "k"},
        _MISSING,
    ],
    ids=[
        "path-traversal-dev-null",
        "path-traversal-passwd",
        "sql-or-1-1",
        "sql-union",
        "empty",
        "nul",
        "int-0",
        "int-1",
        "int-negative",
        "float",
        "bool",
        "null",
        "list",
        "object",
        "missing",
    ],
)
@pytest.mark.parametrize("secret", [b"", b"secret", b"0", SECRET.encode()], ids=["empty", "word", "zero", "real"])
def test_kid_injection(client: FlaskClient, now: float, bad_kid: t.Any, secret: bytes) -> None:
    """kid used as a file path, a SQL fragment, or not a string at all.

    CVE-2017-17405-style path traversal to /dev/null (empty HMAC key, PortSwigger "JWT kid
    header path traversal"), SQL injection in key lookup; RFC 8725 §3.10 (kid is untrusted
    input). Signed with the key the injection would select (empty, "0", a word) and also with
    the real secret: a kid that names no key in the ring is refused either way.
    """
    token = forge(at_header(bad_kid), claims(now), secret=secret)
    rejected(client.get("/api/me", headers=bearer(token)))


# -- keys announced by the token -------------------------------------------------------------


def _self_signed_cert(key: ec.EllipticCurvePrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


@pytest.mark.parametrize("announce", ["jwk", "jku", "x5u", "x5c", "all"])
@pytest.mark.parametrize("which_kid", ["real", "attacker", "none"])
def test_attacker_key_announced_in_header(
    es_app: tuple[Flask, JWTShield],
    attacker_ec_key: ec.EllipticCurvePrivateKey,
    no_network: list[tuple[str, t.Any]],
    now: float,
    announce: str,
    which_kid: str,
) -> None:
    """Keys taken from the token itself: embedded ``jwk``, ``jku``/``x5u`` URLs, ``x5c`` chains.

    CVE-2018-0114 (node-jose trusted an embedded jwk), CVE-2023-51774 (json-jwt), the
    PortSwigger "jku/jwk header injection" labs; RFC 8725 §3.10 and RFC 7515 §4.1.2-§4.1.6:
    keys come from the server's key ring, never from the token, and nothing is fetched.
    """
    app, _ = es_app
    jwk = ECAlgorithm.to_jwk(attacker_ec_key.public_key(), as_dict=True)
    attacker_kid = "attacker-key-1"
    jwk["kid"] = attacker_kid
    announced = {
        "jwk": jwk,
        "jku": "https://attacker.example/.well-known/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [_self_signed_cert(attacker_ec_key)],
    }
    extra = announced if announce == "all" else {announce: announced[announce]}
    kid = {"real": _only_kid(es_app), "attacker": attacker_kid, "none": _MISSING}[which_kid]
    token = forge(at_header(kid, alg="ES256", **extra), claims(now), sign=es256_signer(attacker_ec_key))
    rejected(app.test_client().get("/api/me", headers=bearer(token)))
    assert no_network == []


@pytest.mark.parametrize("announce", ["jwk", "jku", "x5u", "x5c", "all"])
def test_attacker_oct_jwk_announced_in_header(client: FlaskClient, kid: str, now: float, announce: str) -> None:
    """An HMAC variant of the embedded-key attack: ``jwk`` of kty ``oct`` carrying the attacker's secret.

    CVE-2018-0114 family; RFC 8725 §3.10.
    """
    attacker_secret = b"attacker-chosen-secret-" + b"a" * 20
    extra: dict[str, t.Any] = {"jwk": {"kty": "oct", "k": b64u(attacker_secret), "kid": kid}}
    if announce != "jwk":
        extra = {"jku": "https://attacker.example/jwks", "x5u": "https://attacker.example/c", "x5c": ["AAAA"]}
        if announce != "all":
            extra = {announce: extra[announce]}
    token = forge(at_header(kid, **extra), claims(now), secret=attacker_secret)
    rejected(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "all"])
def test_key_location_headers_on_genuine_token_are_ignored(
    client: FlaskClient, kid: str, now: float, no_network: list[tuple[str, t.Any]], member: str
) -> None:
    """A correctly signed token that also carries ``jku``/``x5u``/``jwk``/``x5c``.

    Decision (tokens.py docstring): these members are ignored, not refused; the key comes from
    the ring by ``kid``, so the token is treated like any other genuine token (200), and no
    URL is fetched. RFC 8725 §3.10; RFC 7515 §4.1.2-§4.1.6 (their use is optional).
    """
    values: dict[str, t.Any] = {
        "jku": "http://169.254.169.254/latest/meta-data/",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": {"kty": "oct", "k": b64u(b"attacker" * 4)},
        "x5c": ["AAAA"],
        "x5t": b64u(b"\x00" * 20),
        "x5t#S256": b64u(b"\x00" * 32),
    }
    extra = values if member == "all" else {member: values[member]}
    token = forge(at_header(kid, **extra), claims(now))
    accepted(client.get("/api/me", headers=bearer(token)))
    assert no_network == []


# -- crit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crit",
    [["x-unknown"], ["exp"], ["b64"], [], "x-unknown", None],
    ids=["unknown", "registered-name", "b64", "empty-list", "string", "null"],
)
def test_crit_header_with_unknown_extension(client: FlaskClient, kid: str, now: float, crit: t.Any) -> None:
    """``crit`` names an extension the recipient does not understand: the JWS must be rejected.

    RFC 7515 §4.1.11 (and RFC 8725 §3.1): even when correctly signed by the real key.
    """
    header = at_header(kid, crit=crit)
    if isinstance(crit, list):
        for name in crit:
            header.setdefault(name, False)
    token = forge(header, claims(now))
    rejected(client.get("/api/me", headers=bearer(token)))


# -- ECDSA psychic signatures ----------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        b"\x00" * 64,
        P256_ORDER.to_bytes(32, "big") * 2,
        b"\x00" * 32 + P256_ORDER.to_bytes(32, "big"),
        P256_ORDER.to_bytes(32, "big") + b"\x00" * 32,
        (P256_ORDER + 1).to_bytes(32, "big") * 2,
        b"\x00" * 63 + b"\x01",
        b"\x00",
        b"",
        bytes.fromhex("3006020100020100"),  # DER SEQUENCE { INTEGER 0, INTEGER 0 }
    ],
    ids=["r=s=0", "r=s=n", "r=0,s=n", "r=n,s=0", "r=s=n+1", "r=0,s=1", "one-zero-byte", "empty", "der-zeros"],
)
def test_ecdsa_psychic_signature(es_app: tuple[Flask, JWTShield], now: float, signature: bytes) -> None:
    """ "Psychic signatures": ECDSA with r = s = 0 (or r = s = n) verifies against any key.

    CVE-2022-21449 (Java 15-18 ECDSA); the range check 0 < r, s < n of FIPS 186-4 §6.4.2.
    """
    app, _ = es_app
    header_and_payload = f"{segment(at_header(_only_kid(es_app), alg='ES256'))}.{segment(claims(now))}"
    response = app.test_client().get("/api/me", headers=bearer(f"{header_and_payload}.{b64u(signature)}"))
    rejected(response)


def test_ecdsa_forging_helper_is_sound(
    es_app: tuple[Flask, JWTShield], ec_key: ec.EllipticCurvePrivateKey, now: float
) -> None:
    """Control for the ES256 attacks: the same hand-made token signed by the real key passes."""
    app, _ = es_app
    token = forge(at_header(_only_kid(es_app), alg="ES256"), claims(now), sign=es256_signer(ec_key))
    accepted(app.test_client().get("/api/me", headers=bearer(token)))


# -- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-1, 0, -86_400])
def test_expired_token(client: FlaskClient, kid: str, now: float, offset: int) -> None:
    """``exp`` now or in the past. RFC 7519 §4.1.4 ("on or after" exp: reject); RFC 8725 §3.10."""
    issued = now + offset - 900
    token = forge(at_header(kid), claims(now, iat=issued, nbf=math.floor(issued), exp=now + offset))
    body = rejected(client.get("/api/me", headers=bearer(token)))
    assert "expired" in body["error_description"]


def test_expired_token_after_it_was_cached(client: FlaskClient, token: str, clock: Clock) -> None:
    """A token accepted once (now in the verified-token cache) still expires on time.

    DESIGN.md step 3: "expiry is still checked every time"; RFC 7519 §4.1.4.
    """
    accepted(client.get("/api/me", headers=bearer(token)))
    clock.advance(900)
    body = rejected(client.get("/api/me", headers=bearer(token)))
    assert "expired" in body["error_description"]


def test_nbf_in_the_future(client: FlaskClient, kid: str, now: float, clock: Clock) -> None:
    """``nbf`` after now: not yet valid. RFC 7519 §4.1.5."""
    token = forge(at_header(kid), claims(now, nbf=now + 60))
    body = rejected(client.get("/api/me", headers=bearer(token)))
    assert "valid" in body["error_description"]
    clock.advance(61)
    accepted(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize("leeway, ahead", [(0, 60), (0, 3600), (30, 120)])
def test_iat_in_the_future(make_app: AppFactory, now: float, leeway: int, ahead: int) -> None:
    """``iat`` beyond the leeway in the future: a token minted for later use (pre-dated theft).

    RFC 7519 §4.1.6; RFC 8725 §3.10; DESIGN.md "leeway".
    """
    app, _ = make_app({"JWT_SHIELD_LEEWAY": leeway})
    kid = decode_segment(_issue(app), 0)["kid"]
    token = forge(at_header(kid), claims(now, iat=now + ahead, nbf=math.floor(now), exp=math.floor(now) + 9000))
    rejected(app.test_client().get("/api/me", headers=bearer(token)))


def _issue(app: Flask, sub: str = "alice") -> str:
    with app.app_context():
        return sessions.create_access_token(current_state(), sub, None, None)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "literal",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        '"1900000000"',
        "true",
        "false",
        "null",
        "[1900000000]",
        "{}",
        "1e999",
        "1" + "0" * 400,
        "9" * 5000,
        "-" + "1" + "0" * 400,
    ],
    ids=[
        "nan",
        "infinity",
        "-infinity",
        "string",
        "true",
        "false",
        "null",
        "list",
        "object",
        "float-overflow",
        "int-10e400",
        "int-5000-digits",
        "int-minus-10e400",
    ],
)
def test_time_claim_of_wrong_type(client: FlaskClient, kid: str, now: float, name: str, literal: str) -> None:
    """``exp``/``iat``/``nbf`` that is NaN, a string, a bool, null or a number too large for a float.

    RFC 7519 §2 (NumericDate is a JSON number), §4.1.4; the "NaN expiry means never" class of
    bugs (comparisons with NaN are always false), and CVE-2020-10735 (huge int parsing).
    Signed by the real key: only the claim is wrong.
    """
    token = forge(at_header(kid), raw_payload(now, name, literal))
    rejected(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize(
    "name, how",
    [
        (name, how)
        for name in ("jti", "sub", "exp", "iat")
        for how in ("missing", "empty", "null", "number")
        if not (name in ("exp", "iat") and how == "number")
    ],  # a number is a valid NumericDate
)
def test_required_claim_missing_or_invalid(client: FlaskClient, kid: str, now: float, name: str, how: str) -> None:
    """Required claims absent or unusable (RFC 9068 §2.2 makes iss/exp/aud/sub/iat/jti required).

    RFC 8725 §3.9/§3.10; pyjwt's ``options={"require": [...]}`` lesson.
    """
    value = {"missing": _MISSING, "empty": "", "null": None, "number": 12345}[how]
    token = forge(at_header(kid), claims(now, **{name: value}))
    rejected(client.get("/api/me", headers=bearer(token)))


# -- issuer and audience ---------------------------------------------------------------------


@pytest.fixture
def iss_aud_app(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_ISSUER": ISSUER, "JWT_SHIELD_AUDIENCE": AUDIENCE})


@pytest.mark.parametrize(
    "iss, aud",
    [
        ("https://evil.example", AUDIENCE),
        (_MISSING, AUDIENCE),
        (ISSUER + "/", AUDIENCE),
        ([ISSUER], AUDIENCE),
        (ISSUER, "api://other"),
        (ISSUER, _MISSING),
        (ISSUER, ["api://other", "api://third"]),
        (ISSUER, []),
        (ISSUER, [[AUDIENCE]]),
        (ISSUER, AUDIENCE.upper()),
        (ISSUER, {"aud": AUDIENCE}),
    ],
    ids=[
        "wrong-iss",
        "no-iss",
        "iss-trailing-slash",
        "iss-list",
        "wrong-aud",
        "no-aud",
        "aud-list-without-ours",
        "aud-empty-list",
        "aud-nested-list",
        "aud-case",
        "aud-object",
    ],
)
def test_wrong_issuer_or_audience(iss_aud_app: tuple[Flask, JWTShield], now: float, iss: t.Any, aud: t.Any) -> None:
    """A genuine signature on a token meant for another issuer or audience (token substitution).

    RFC 8725 §3.8 (issuer) and §3.9 (audience); RFC 7519 §4.1.1, §4.1.3; RFC 9068 §4.
    """
    app, _ = iss_aud_app
    genuine = _issue(app)
    assert decode_segment(genuine, 1)["aud"] == AUDIENCE
    kid = decode_segment(genuine, 0)["kid"]
    token = forge(at_header(kid), claims(now, iss=iss, aud=aud))
    client = app.test_client()
    rejected(client.get("/api/me", headers=bearer(token)))
    accepted(client.get("/api/me", headers=bearer(genuine)))
    ours = forge(at_header(kid), claims(now, iss=ISSUER, aud=["api://other", AUDIENCE]))
    accepted(client.get("/api/me", headers=bearer(ours)))  # a list with ours in it is fine


@pytest.mark.parametrize("aud", ["api://other", ["api://other"], [], ""], ids=["string", "list", "empty-list", "empty"])
def test_audience_present_while_app_expects_none(client: FlaskClient, kid: str, now: float, aud: t.Any) -> None:
    """A token restricted to an audience, sent to an app that names none.

    RFC 7519 §4.1.3: a principal not identified in ``aud`` must reject it; RFC 8725 §3.9.
    """
    token = forge(at_header(kid), claims(now, aud=aud))
    rejected(client.get("/api/me", headers=bearer(token)))


# -- token types -----------------------------------------------------------------------------


def test_refresh_token_presented_as_access_token(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    """Cross-JWT confusion: a refresh token (``typ: refresh+jwt``) used at a resource.

    RFC 8725 §2.8 and §3.11 (explicit typing); RFC 9068 §4.
    """
    with app.app_context():
        pair = shield.issue_tokens("alice")
    assert decode_segment(pair.refresh_token, 0)["typ"] == "refresh+jwt"
    body = rejected(client.get("/api/me", headers=bearer(pair.refresh_token)))
    assert "access token" in body["error_description"]
    accepted(client.get("/api/me", headers=bearer(pair.access_token)))
    via_login = client.post("/login?sub=bob").get_json()
    rejected(client.get("/api/me", headers=bearer(via_login["refresh_token"])))


@pytest.mark.parametrize(
    "typ",
    [
        "JWT",
        "jwt",
        _MISSING,
        None,
        "",
        "id_token+jwt",
        "refresh+jwt",
        "application/refresh+jwt",
        "at+jwt ",
        "at+jwt; charset=utf-8",
        "dpop+jwt",
        ["at+jwt"],
        1,
    ],
    ids=[
        "JWT",
        "jwt",
        "missing",
        "null",
        "empty",
        "id-token",
        "refresh",
        "application-refresh",
        "trailing-space",
        "parameters",
        "dpop",
        "list",
        "number",
    ],
)
def test_token_of_another_type_signed_with_real_key(client: FlaskClient, kid: str, now: float, typ: t.Any) -> None:
    """An ID-token-like token (``typ: JWT`` or none) or another profile, signed with the real key.

    RFC 8725 §3.11 (explicit typing), RFC 9068 §4 (``at+jwt``), OpenID Connect ID tokens
    replayed as access tokens ("cross-JWT confusion", RFC 8725 §2.8).
    """
    header: dict[str, t.Any] = {"alg": "HS256", "kid": kid}
    if typ is not _MISSING:
        header["typ"] = typ
    token = forge(header, claims(now, sid="some-session"))
    rejected(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_access_token_type_spellings_are_accepted(client: FlaskClient, kid: str, now: float, typ: str) -> None:
    """Control: the RFC 9068 §4 spellings of ``at+jwt`` (case-insensitive) are access tokens."""
    token = forge({"alg": "HS256", "kid": kid, "typ": typ}, claims(now))
    accepted(client.get("/api/me", headers=bearer(token)))


# -- size ------------------------------------------------------------------------------------


def _token_of_size(kid: str, now: float, size: int) -> str:
    """A correctly signed token of ``size`` bytes (or one or two more: base64url skips lengths)."""
    for n in range(max(0, (size * 3) // 4 - 400), size):
        token = forge(at_header(kid), claims(now, pad="p" * n))
        if len(token) >= size:
            assert len(token) <= size + 2
            return token
    raise AssertionError("unreachable")


@pytest.mark.parametrize("size", [8193, 8200, 8256, 8300, 20_000])
def test_oversized_token(client: FlaskClient, kid: str, now: float, size: int) -> None:
    """A token larger than ``JWT_SHIELD_MAX_TOKEN_BYTES`` (8192), correctly signed.

    Resource exhaustion before authentication (the "JWT bomb" class: CVE-2024-33663 /
    CVE-2023-51775 in python-jose / jose4j); RFC 8725 §3.1; DESIGN.md "size limit before any
    parsing".
    """
    token = _token_of_size(kid, now, size)
    assert len(token) > 8192
    body = rejected(client.get("/api/me", headers=bearer(token)))
    assert "large" in body["error_description"]


def test_token_at_the_size_limit_is_accepted(client: FlaskClient, kid: str, now: float) -> None:
    """Control for the size limit: a token of (just under) 8192 bytes is allowed."""
    token = _token_of_size(kid, now, 8190)
    assert 8190 <= len(token) <= 8192
    accepted(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + "A" * 100_000,
        "Bearer " + "A.B." * 25_000,
        "Bearer " + "a, Bearer " * 10_000 + "a",
        "Basic " + "A" * 100_000,
        "B" * 100_000,
        " " * 100_000,
        "Bearer " + " " * 100_000 + "abc",
    ],
    ids=["bearer-A", "bearer-dots", "many-bearers", "basic", "no-scheme", "spaces", "bearer-spaces"],
)
def test_huge_authorization_header(client: FlaskClient, value: str) -> None:
    """A 100 KB ``Authorization`` header: refused cheaply as a client error, never a 500.

    RFC 8725 §3.1 (input validation before work); resource exhaustion.
    """
    response = client.get("/api/me", headers={"Authorization": value})
    assert response.status_code in (400, 401)
    assert response.is_json
    assert response.get_json()["error"] in ("invalid_request", "invalid_token", "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith(f'Bearer realm="{REALM}"')


# -- malformed documents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00garbage",
        b"not json at all",
        b"",
        b"[1,2,3]",
        b'["sub","alice"]',
        b'"alice"',
        b"42",
        b"null",
        b"true",
        b'{"sub":"alice"',
        b"\xef\xbb\xbf{}",
        b"[" * 100_00 + b"]" * 100_00,
    ],
    ids=[
        "binary",
        "text",
        "empty",
        "array",
        "array-of-strings",
        "string",
        "number",
        "null",
        "true",
        "truncated",
        "bom",
        "deeply-nested",
    ],
)
def test_validly_signed_non_object_payload(make_app: AppFactory, now: float, payload: bytes) -> None:
    """A correct signature over bytes that are not a JSON object (RFC 7519 §7.2 step 10).

    Parsers that accept arrays or garbage then index into them crash (the 500 class of
    bugs, e.g. CVE-2022-23540 siblings); RFC 8725 §3.1.
    """
    app, _ = make_app({"JWT_SHIELD_MAX_TOKEN_BYTES": 65_536})
    kid = decode_segment(_issue(app), 0)["kid"]
    rejected(app.test_client().get("/api/me", headers=bearer(forge(at_header(kid), payload))))


@pytest.mark.parametrize(
    "header_json",
    [
        '{"alg":"none","kid":"%s","typ":"at+jwt","alg":"HS256"}',
        '{"alg":"HS256","kid":"unknown","typ":"at+jwt","kid":"%s"}',
        '{"alg":"HS256","kid":"%s","typ":"JWT","typ":"at+jwt"}',
        '{"alg":"HS256","kid":"%s","typ":"at+jwt","x":NaN}',
        '{"alg":"HS256","kid":"%s","typ":"at+jwt","x":Infinity}',
        '["HS256","%s","at+jwt"]',
        '{"alg":"HS256","kid":"%s","typ":"at+jwt"',
    ],
    ids=["dup-alg", "dup-kid", "dup-typ", "nan", "infinity", "array", "truncated"],
)
def test_ambiguous_or_invalid_header_json(client: FlaskClient, kid: str, now: float, header_json: str) -> None:
    """Duplicate member names (parser differential: first-wins vs last-wins) and non-JSON constants in the header.

    RFC 7515 §5.2 / RFC 7519 §4 ("MUST either reject ... duplicate Header Parameter names"),
    RFC 8725 §3.8 / §3.10; RFC 8259 has no NaN/Infinity. Signed by the real key.
    """
    token = forge(header_json % kid, claims(now))
    rejected(client.get("/api/me", headers=bearer(token)))


@pytest.mark.parametrize(
    "payload_text",
    [
        '{"sub":"alice","sub":"admin","iat":%(iat)s,"exp":%(exp)s,"jti":"j1"}',
        '{"sub":"alice","iat":%(iat)s,"exp":%(exp)s,"exp":99999999999,"jti":"j2"}',
        '{"sub":"alice","iat":%(iat)s,"exp":%(exp)s,"jti":"j3","role":"user","role":"admin"}',
        '{"sub":"alice","iat":%(iat)s,"exp":%(exp)s,"jti":"j4","x":NaN}',
        '{"sub":"alice","iat":%(iat)s,"exp":%(exp)s,"jti":"j5","x":{"y":-Infinity}}',
        '{"sub":"alice","iat":%(iat)s,"exp":NaN,"jti":"j6"}',
    ],
    ids=["dup-sub", "dup-exp", "dup-custom", "nan-custom", "nested-infinity", "nan-exp"],
)
def test_ambiguous_or_invalid_payload_json(client: FlaskClient, kid: str, now: float, payload_text: str) -> None:
    """Duplicate claim names and NaN/Infinity constants in the payload, correctly signed.

    RFC 7519 §4 (duplicate claim names: reject), RFC 8725 §3.8; RFC 8259 §6 (no NaN).
    """
    payload = payload_text % {"iat": now, "exp": math.floor(now) + 900}
    token = forge(at_header(kid), payload)
    rejected(client.get("/api/me", headers=bearer(token)))


# -- where the token travels -----------------------------------------------------------------


def test_two_tokens_joined_by_a_proxy(client: FlaskClient, token: str, app: Flask, shield: JWTShield) -> None:
    """Two ``Authorization`` headers, joined by a proxy into "Bearer a, Bearer b".

    RFC 7230 §3.2.2 (joining repeated fields); RFC 6750 §2 ("MUST NOT use more than one
    method"); DESIGN.md "two credentials in one request → 400".
    """
    with app.app_context():
        other = shield.create_access_token("mallory")
    bad_request(client.get("/api/me", headers={"Authorization": f"Bearer {token}, Bearer {other}"}))
    two_headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {other}")]
    bad_request(client.get("/api/me", headers=two_headers))
    bad_request(client.get("/api/me", headers={"Authorization": f"Bearer {token} Bearer {other}"}))
    bad_request(client.get("/api/me", headers={"Authorization": f"Bearer {token},{other}"}))
    bad_request(client.get("/api/me", headers={"Authorization": f"Basic dXNlcjpwYXNz, Bearer {token}"}))


@pytest.mark.parametrize(
    "query",
    [
        "access_token={t}",
        "a=1&access_token={t}",
        "access_token=",
        "access%5Ftoken={t}",
        "access_token={t}&access_token=x",
    ],
    ids=["plain", "second-param", "empty-value", "percent-encoded-name", "repeated"],
)
@pytest.mark.parametrize("seen", [False, True], ids=["header-new", "header-seen-before"])
def test_header_plus_query_parameter(client: FlaskClient, token: str, query: str, seen: bool) -> None:
    """A token in the header and another (or the same) in ``?access_token=``.

    RFC 6750 §2 (one method only) and §2.3 / §5.3 (URLs leak through logs and Referer);
    DESIGN.md "Token locations". ``header-seen-before``: the same header was just accepted
    alone, twice, so the pipeline remembers what it holds; the query parameter is still refused.
    """
    if seen:
        for _ in range(2):  # verified, then remembered
            accepted(client.get("/api/me", headers=bearer(token)))
    response = client.get("/api/me?" + query.format(t=token), headers=bearer(token))
    bad_request(response)


@pytest.mark.parametrize(
    "query",
    ["access_token={t}", "access%5Ftoken={t}", "access_token={t}&x=1"],
    ids=["plain", "percent-encoded-name", "first-param"],
)
def test_token_in_query_string_alone(client: FlaskClient, token: str, query: str) -> None:
    """The token in the URL only (RFC 6750 §2.3): not supported, refused with 400, never used.

    RFC 6750 §5.3 ("Don't pass bearer tokens in page URLs"); RFC 9700 §4.3.2 (OAuth 2.0
    Security BCP: access tokens in query strings leak).
    """
    body = bad_request(client.get("/api/me?" + query.format(t=token)))
    assert token not in json.dumps(body)


@pytest.fixture
def post_client(make_app: AppFactory) -> t.Any:
    """A client of an app with a protected ``POST /api/echo`` (the conftest routes are GET)."""
    app, _ = make_app()

    @app.post("/api/echo")
    def echo() -> t.Any:
        return {"sub": current_claims["sub"]}

    return app.test_client()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "Application/X-WWW-Form-URLEncoded",
        "multipart/form-data",
    ],
    ids=["urlencoded", "urlencoded-charset", "urlencoded-mixed-case", "multipart"],
)
@pytest.mark.parametrize(
    "with_header", ["seen-before", True, False], ids=["header-seen-before-and-body", "header-and-body", "body-only"]
)
def test_token_in_form_body(post_client: FlaskClient, content_type: str, with_header: bool | str) -> None:
    """A token in the form body (RFC 6750 §2.2), alone or beside the header: 400.

    RFC 6750 §2 (one method only); DESIGN.md: the form body is never a token location.
    Media types compare case-insensitively (RFC 9110 §8.3.1). ``header-seen-before``: the
    same header was just accepted without a body, twice (the pipeline remembers what it holds).
    """
    app = post_client.application
    token = _issue(app)
    headers = bearer(token) if with_header else {}
    if with_header == "seen-before":
        for _ in range(2):  # verified, then remembered
            accepted(post_client.post("/api/echo", headers=headers))
    if content_type == "multipart/form-data":
        response = post_client.post(
            "/api/echo", headers=headers, data={"access_token": token}, content_type="multipart/form-data"
        )
        assert response.request.content_type.startswith("multipart/form-data; boundary=")
    else:
        response = post_client.post(
            "/api/echo", headers=headers, data=f"access_token={token}", content_type=content_type
        )
    bad_request(response)


# -- signature re-use ------------------------------------------------------------------------


def test_signature_reused_on_another_payload(client: FlaskClient, token: str, app: Flask, shield: JWTShield) -> None:
    """Payload swap: a genuine signature glued onto a different payload (or header).

    RFC 7515 §5.2 (the signature covers header and payload); CVE-2022-39227 (python-jwt
    mixed JSON/compact forms let claims be swapped under a valid signature).
    """
    header_segment, payload_segment, signature = token.split(".")
    payload = decode_segment(token, 1)
    payload["sub"] = "admin"
    forged = f"{header_segment}.{segment(payload)}.{signature}"
    rejected(client.get("/api/me", headers=bearer(forged)))
    with app.app_context():
        pair = shield.issue_tokens("alice")
    # The refresh token's payload under the access token's signature and header, and vice versa.
    r_header, r_payload, r_signature = pair.refresh_token.split(".")
    rejected(client.get("/api/me", headers=bearer(f"{header_segment}.{r_payload}.{signature}")))
    rejected(client.get("/api/me", headers=bearer(f"{header_segment}.{payload_segment}.{r_signature}")))
    rejected(client.get("/api/me", headers=bearer(f"{r_header}.{payload_segment}.{signature}")))
    # Re-encoding the same header JSON differently (whitespace) breaks the signature too.
    spaced = segment(json.dumps(decode_segment(token, 0), indent=1))
    rejected(client.get("/api/me", headers=bearer(f"{spaced}.{payload_segment}.{signature}")))
    accepted(client.get("/api/me", headers=bearer(token)))


def _noncanonical_variants(token: str) -> list[str]:
    """The same token with the unused low bits of the signature's last base64url character set.

    32 signature bytes are 43 characters; the last one carries 4 bits, so 3 other spellings
    decode to the same bytes (RFC 4648 §3.5: such encodings are non-canonical).
    """
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head, last = token[:-1], token[-1]
    index = alphabet.index(last)
    return [head + alphabet[(index & ~3) | low] for low in range(4) if (index & ~3) | low != index]


def test_noncanonical_signature_encoding_is_the_same_token(app: Flask, shield: JWTShield, client: FlaskClient) -> None:
    """Signature malleability through non-canonical base64url (RFC 4648 §3.5, RFC 7515 §2).

    Whether the lenient spellings are accepted or refused, they must never be a *different*
    token: revoking the original revokes them (revocation is by ``jti``, not by the string),
    and an accepted variant carries exactly the original claims.
    """
    with app.app_context():
        token = shield.create_access_token("alice")
    original = accepted(client.get("/api/me", headers=bearer(token)))
    variants = _noncanonical_variants(token)
    assert len(variants) == 3
    for variant in variants:
        response = client.get("/api/me", headers=bearer(variant))
        if response.status_code == 200:
            assert response.get_json() == original
        else:
            rejected(response)
    with app.app_context():
        shield.revoke_token(token)
    for variant in [token, *variants]:
        rejected(client.get("/api/me", headers=bearer(variant)))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(client: FlaskClient, token: str, scheme: str) -> None:
    """Control: the auth-scheme compares case-insensitively (RFC 9110 §11.1, DESIGN.md)."""
    accepted(client.get("/api/me", headers={"Authorization": f"{scheme} {token}"}))


# -- key ring --------------------------------------------------------------------------------


def _ring_app(make_app: AppFactory, *entries: tuple[str, str]) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_KEYS": [{"kid": k, "alg": "HS256", "key": s} for k, s in entries]})


def test_token_signed_with_revoked_key(make_app: AppFactory, now: float) -> None:
    """Every token signed by a compromised (revoked) key is refused, also when cached.

    RFC 8725 §3.1 (key management), DESIGN.md "revoke_key"; the PyJWT/JOSE practice of
    rotating keys while verifying with the old one until revoked.
    """
    app, shield = _ring_app(make_app, ("new", RING_NEW), ("old", RING_OLD))
    client = app.test_client()
    old_token = forge(at_header("old"), claims(now), secret=RING_OLD)
    accepted(client.get("/api/me", headers=bearer(old_token)))  # verify-only key: accepted, now cached
    new_token = _issue(app)
    assert decode_segment(new_token, 0)["kid"] == "new"
    with app.app_context():
        shield.revoke_key("old")
    body = rejected(client.get("/api/me", headers=bearer(old_token)))
    assert "revoked" in body["error_description"]
    challenge = client.get("/api/me", headers=bearer(old_token)).headers["WWW-Authenticate"]
    assert "revoked" in challenge
    fresh_old = forge(at_header("old"), claims(now, jti="never-seen-before"), secret=RING_OLD)
    assert "revoked" in rejected(client.get("/api/me", headers=bearer(fresh_old)))["error_description"]
    accepted(client.get("/api/me", headers=bearer(new_token)))  # nobody else is touched


def test_token_signed_with_key_removed_from_ring(make_app: AppFactory, now: float) -> None:
    """A key taken out of ``JWT_SHIELD_KEYS`` verifies nothing any more.

    RFC 8725 §3.1; RFC 7517 §4.5 (kid selects among the keys the recipient holds).
    """
    before, _ = _ring_app(make_app, ("new", RING_NEW), ("old", RING_OLD))
    old_token = forge(at_header("old"), claims(now), secret=RING_OLD)
    accepted(before.test_client().get("/api/me", headers=bearer(old_token)))
    after, _ = _ring_app(make_app, ("new", RING_NEW))
    rejected(after.test_client().get("/api/me", headers=bearer(old_token)))
    # Also with the kid pointing at the remaining key: the signature does not match it.
    rejected(after.test_client().get("/api/me", headers=bearer(forge(at_header("new"), claims(now), secret=RING_OLD))))


# -- fuzzing ---------------------------------------------------------------------------------


def _sendable(value: str) -> bool:
    # werkzeug's test client refuses newlines in header values (header injection guard).
    return "\n" not in value and "\r" not in value


def _fuzz_answer(response: TestResponse) -> None:
    assert response.status_code in (400, 401), (response.status_code, response.get_data(as_text=True))
    assert response.is_json
    body = response.get_json()
    assert body["error"] in ("invalid_request", "invalid_token", "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith(f'Bearer realm="{REALM}"')


@FUZZ
@given(value=st.text())
def test_fuzz_authorization_header_text(client: FlaskClient, value: str) -> None:
    """Arbitrary text as the ``Authorization`` value: always 400/401 with a JSON body, never 500."""
    assume(_sendable(value))
    _fuzz_answer(client.get("/api/me", headers={"Authorization": value}))


@FUZZ
@given(value=st.binary())
def test_fuzz_authorization_header_bytes(client: FlaskClient, value: bytes) -> None:
    """Arbitrary bytes (as latin-1, the way WSGI hands them over) as the ``Authorization`` value."""
    text = value.decode("latin-1")
    assume(_sendable(text))
    _fuzz_answer(client.get("/api/me", headers={"Authorization": text}))


@FUZZ
@given(value=st.text())
def test_fuzz_bearer_token_text(client: FlaskClient, value: str) -> None:
    """Arbitrary text after "Bearer ": always 400/401 with a JSON body, never 500."""
    assume(_sendable(value))
    _fuzz_answer(client.get("/api/me", headers={"Authorization": "Bearer " + value}))


@FUZZ
@given(value=st.binary())
def test_fuzz_bearer_token_bytes(client: FlaskClient, value: bytes) -> None:
    """Arbitrary bytes (latin-1) after "Bearer "."""
    text = value.decode("latin-1")
    assume(_sendable(text))
    _fuzz_answer(client.get("/api/me", headers={"Authorization": "Bearer " + text}))


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@FUZZ
@given(parts=st.lists(st.text(alphabet=_B64URL_ALPHABET, max_size=200), min_size=1, max_size=5))
def test_fuzz_jwt_shaped_garbage(client: FlaskClient, parts: list[str]) -> None:
    """Dot-separated base64url garbage (passes the header syntax check): always 401 invalid_token."""
    response = client.get("/api/me", headers=bearer(".".join(parts)))
    if not "".join(parts):  # nothing but dots or empty: not a b64token at all
        _fuzz_answer(response)
    else:
        rejected(response)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(name=st.sampled_from(["exp", "iat", "nbf", "sub", "jti", "sid", "iss", "aud"]), value=_json_values)
def test_fuzz_claim_values_signed_with_real_key(
    client: FlaskClient, kid: str, now: float, name: str, value: t.Any
) -> None:
    """Any JSON value in a registered claim, correctly signed: 200 or 401 invalid_token, never 500."""
    token = forge(at_header(kid), claims(now, **{name: value}))
    response = client.get("/api/me", headers=bearer(token))
    if response.status_code != 200:
        rejected(response)


# -- no token in responses, logs or events ---------------------------------------------------


def _failure_samples(app: Flask, shield: JWTShield, kid: str, now: float) -> dict[str, tuple[str, dict[str, t.Any]]]:
    """name -> (secret token, request kwargs) for a sample of failures."""
    with app.app_context():
        revoked = shield.create_access_token("alice")
        shield.revoke_token(revoked)
        refresh = shield.issue_tokens("alice").refresh_token
    wrong_key = forge(at_header(kid), claims(now), secret=b"not-the-real-secret-" + b"x" * 20)
    expired = forge(at_header(kid), claims(now, iat=now - 2000, nbf=math.floor(now) - 2000, exp=now - 1))
    none_alg = f"{segment(at_header(kid, alg='none'))}.{segment(claims(now))}."
    wrong_aud = forge(at_header(kid), claims(now, aud="api://other"))
    crit = forge(at_header(kid, crit=["x"], x=1), claims(now))
    oversized = forge(at_header(kid), claims(now, pad="p" * 9000))
    return {
        "bad-signature": (wrong_key, {"headers": bearer(wrong_key)}),
        "expired": (expired, {"headers": bearer(expired)}),
        "revoked": (revoked, {"headers": bearer(revoked)}),
        "refresh-as-access": (refresh, {"headers": bearer(refresh)}),
        "alg-none": (none_alg, {"headers": bearer(none_alg)}),
        "wrong-aud": (wrong_aud, {"headers": bearer(wrong_aud)}),
        "crit": (crit, {"headers": bearer(crit)}),
        "oversized": (oversized, {"headers": bearer(oversized)}),
        "two-tokens": (wrong_key, {"headers": {"Authorization": f"Bearer {wrong_key}, Bearer {expired}"}}),
        "query": (wrong_key, {"query_string": {"access_token": wrong_key}}),
        "query-and-header": (wrong_key, {"query_string": {"access_token": wrong_key}, "headers": bearer(expired)}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad-signature",
        "expired",
        "revoked",
        "refresh-as-access",
        "alg-none",
        "wrong-aud",
        "crit",
        "oversized",
        "two-tokens",
        "query",
        "query-and-header",
    ],
)
def test_raw_token_never_in_response_logs_or_events(
    app: Flask,
    shield: JWTShield,
    client: FlaskClient,
    kid: str,
    now: float,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    """No response, log line or stored event contains a raw token (DESIGN.md; RFC 6750 §5.3).

    A token echoed in an error page or an audit log is a token stolen from the log
    (OWASP ASVS V7.1.1 "the application does not log ... session tokens").
    """
    secret_token, kwargs = _failure_samples(app, shield, kid, now)[case]
    caplog.set_level(logging.DEBUG)
    response = client.get("/api/me", **kwargs)
    assert response.status_code in (400, 401)
    secrets_to_hide = {secret_token, secret_token.split(".")[2]} - {""}
    if case == "alg-none":
        secrets_to_hide = {secret_token}
    body = response.get_data(as_text=True)
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    with app.app_context():
        events = json.dumps([e.to_dict() for e in shield.events(limit=1000)], default=str)
    assert json.loads(events), "the failure was recorded as an event"
    logged = caplog.text + "\n".join(repr(r.args) + str(r.__dict__) for r in caplog.records)
    for secret in secrets_to_hide:
        assert secret not in body
        assert secret not in headers
        assert secret not in logged
        assert secret not in events


# -- sender-constrained tokens: DPoP (RFC 9449) and browser cookies ---------------------------------
#
# The thief here holds a copy of the victim's token (and proofs it has seen), but not the
# victim's private key or its HttpOnly fingerprint cookie. Proofs are made by hand.

API_URL = "http://localhost/api/me"


def dpop_refused(
    response: TestResponse, reason: str | None = None, shield: JWTShield | None = None, app: Flask | None = None
) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_dpop_proof"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'DPoP realm="{REALM}", error="invalid_dpop_proof"'), challenge
    assert 'algs="' in challenge
    if reason is not None and shield is not None and app is not None:
        with app.app_context():
            assert reason in [e.detail.get("reason") for e in shield.events(kind="dpop-rejected")]


@pytest.fixture
def dpop_app(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    return make_app({"JWT_SHIELD_DPOP": "optional"})


@pytest.fixture
def victim(now: float) -> HandKey:
    return HandKey(url=API_URL, now=now)


@pytest.fixture
def bound_token(dpop_app: tuple[Flask, JWTShield], victim: HandKey, now: float) -> str:
    app, _ = dpop_app
    login_key = HandKey(url="http://localhost/login", now=now, method="POST")
    login_key.key, login_key.jwk, login_key.jkt = victim.key, victim.jwk, victim.jkt  # the victim's key
    r = app.test_client().post("/login", headers={"DPoP": login_key.proof(token=None)})
    assert r.status_code == 200 and json_of(r)["token_type"] == "DPoP", r.json
    token = t.cast(str, json_of(r)["access_token"])
    assert decode_segment(token, 1)["cnf"] == {"jkt": victim.jkt}
    return token


def dpop_headers(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def test_dpop_bound_token_works_with_the_victims_proof(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey
) -> None:
    headers = dpop_headers(bound_token, victim.proof(token=bound_token))
    accepted(dpop_app[0].test_client().get("/api/me", headers=headers))


def test_dpop_replayed_proof(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, clock: Clock
) -> None:
    app, shield = dpop_app
    client = app.test_client()
    proof = victim.proof(token=bound_token)
    accepted(client.get("/api/me", headers=dpop_headers(bound_token, proof)))
    dpop_refused(client.get("/api/me", headers=dpop_headers(bound_token, proof)), "dpop-replayed", shield, app)
    clock.advance(59)  # still inside the proof's window: still remembered
    dpop_refused(client.get("/api/me", headers=dpop_headers(bound_token, proof)))
    clock.advance(2)  # outside it: refused as stale, whatever the cache holds
    dpop_refused(client.get("/api/me", headers=dpop_headers(bound_token, proof)), "dpop-stale", shield, app)


def test_dpop_replayed_proof_on_another_worker(make_app: AppFactory, now: float) -> None:
    # Two apps on one SQLite file stand for two worker processes: the replay cache is the store.
    config = {"JWT_SHIELD_DPOP": "optional", "JWT_SHIELD_STORE_URI": "sqlite:///shared.db"}
    worker_a, _ = make_app(config)
    worker_b, _ = make_app(config)
    key = HandKey(url=API_URL, now=now)
    login_key = HandKey(url="http://localhost/login", now=now, method="POST")
    login_key.key, login_key.jwk = key.key, key.jwk
    login = worker_a.test_client().post("/login", headers={"DPoP": login_key.proof(token=None)})
    token = json_of(login)["access_token"]
    proof = key.proof(token=token)
    accepted(worker_a.test_client().get("/api/me", headers=dpop_headers(token, proof)))
    dpop_refused(worker_b.test_client().get("/api/me", headers=dpop_headers(token, proof)))


@pytest.mark.parametrize(
    ("method", "htu"),
    [
        ("POST", API_URL),
        ("GET", "http://localhost/api/admin"),
        ("GET", "https://localhost/api/me"),
        ("GET", "http://evil.example/api/me"),
        ("GET", "http://localhost:8080/api/me"),
        ("get", API_URL),
    ],
)
def test_dpop_proof_for_another_url_or_method(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, method: str, htu: str
) -> None:
    app, shield = dpop_app
    proof = victim.proof(token=bound_token, claims={"htm": method, "htu": htu})
    reason = "dpop-wrong-method" if method != "GET" else "dpop-wrong-url"
    dpop_refused(app.test_client().get("/api/me", headers=dpop_headers(bound_token, proof)), reason, shield, app)


def test_dpop_proof_with_query_and_fragment_is_the_same_url(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey
) -> None:
    # RFC 9449 §4.3: htu is compared without query and fragment, after normalisation.
    proof = victim.proof(token=bound_token, claims={"htu": "HTTP://LOCALHOST:80/api/me?page=2#x"})
    accepted(dpop_app[0].test_client().get("/api/me?page=2", headers=dpop_headers(bound_token, proof)))


def test_dpop_proof_whose_jwk_holds_a_private_key(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey
) -> None:
    app, shield = dpop_app
    private_jwk = ec_jwk_private(victim)
    proof = victim.proof(token=bound_token, header={"jwk": private_jwk})
    dpop_refused(
        app.test_client().get("/api/me", headers=dpop_headers(bound_token, proof)), "dpop-private-jwk", shield, app
    )


def ec_jwk_private(key: HandKey) -> dict[str, str]:
    from tests.dpop_util import ec_jwk

    return ec_jwk(key.key, private=True)


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none"])
def test_dpop_hmac_signed_proof(dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, alg: str) -> None:
    # With a MAC the "key" would be a secret the attacker picks (or the public key's bytes).
    app, shield = dpop_app
    secret = json.dumps(victim.jwk).encode()
    for jwk in (victim.jwk, {"kty": "oct", "k": b64u(secret)}):
        proof = victim.proof(
            token=bound_token,
            header={"alg": alg, "jwk": jwk},
            sign=lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
        )
        dpop_refused(
            app.test_client().get("/api/me", headers=dpop_headers(bound_token, proof)), "dpop-bad-alg", shield, app
        )


@pytest.mark.parametrize(
    ("offset", "reason"), [(-61, "dpop-stale"), (-86_400, "dpop-stale"), (1, "dpop-future"), (86_400, "dpop-future")]
)
def test_dpop_stale_or_future_iat(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, now: float, offset: int, reason: str
) -> None:
    # A proof made in advance (a stolen key used later) or kept from long ago.
    app, shield = dpop_app
    proof = victim.proof(token=bound_token, claims={"iat": now + offset})
    dpop_refused(app.test_client().get("/api/me", headers=dpop_headers(bound_token, proof)), reason, shield, app)


def test_dpop_wrong_ath(dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, now: float) -> None:
    # A proof seen with one token (say, an older one) does not vouch for another.
    app, shield = dpop_app
    login_key = HandKey(url="http://localhost/login", now=now, method="POST")
    login_key.key, login_key.jwk = victim.key, victim.jwk
    other = json_of(app.test_client().post("/login", headers={"DPoP": login_key.proof(token=None)}))["access_token"]
    for proof in (victim.proof(token=other), victim.proof(token=bound_token, drop=("ath",))):
        dpop_refused(
            app.test_client().get("/api/me", headers=dpop_headers(bound_token, proof)), "dpop-bad-ath", shield, app
        )


def test_dpop_token_bound_to_key_a_with_proof_from_key_b(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, now: float
) -> None:
    # The thief signs a perfect proof with a key of its own.
    app, shield = dpop_app
    thief = HandKey(url=API_URL, now=now)
    response = app.test_client().get("/api/me", headers=dpop_headers(bound_token, thief.proof(token=bound_token)))
    dpop_refused(response, "dpop-wrong-key", shield, app)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_dpop_bound_token_sent_as_bearer(
    dpop_app: tuple[Flask, JWTShield], bound_token: str, victim: HandKey, scheme: str
) -> None:
    # RFC 9449 §7.2: a bound token is never a bearer token, even with a valid proof beside it.
    app, _ = dpop_app
    for headers in (
        {"Authorization": f"{scheme} {bound_token}"},
        {"Authorization": f"{scheme} {bound_token}", "DPoP": victim.proof(token=bound_token)},
    ):
        body = rejected(app.test_client().get("/api/me", headers=headers))
        assert "DPoP" in body["error_description"]


def test_dpop_bound_refresh_token_stolen(dpop_app: tuple[Flask, JWTShield], victim: HandKey, now: float) -> None:
    app, _ = dpop_app
    client = app.test_client()
    login_key = HandKey(url="http://localhost/login", now=now, method="POST")
    login_key.key, login_key.jwk = victim.key, victim.jwk
    refresh_token = json_of(client.post("/login", headers={"DPoP": login_key.proof(token=None)}))["refresh_token"]
    thief = HandKey(url="http://localhost/refresh", now=now, method="POST")
    for headers in ({}, {"DPoP": thief.proof(token=None)}):
        r = client.post("/refresh", json={"refresh_token": refresh_token}, headers=headers)
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_dpop_proof"
    owner = HandKey(url="http://localhost/refresh", now=now, method="POST")
    owner.key, owner.jwk = victim.key, victim.jwk
    r = client.post("/refresh", json={"refresh_token": refresh_token}, headers={"DPoP": owner.proof(token=None)})
    assert r.status_code == 200  # the thief's attempts spent nothing


def test_cookie_request_without_csrf_header_on_post() -> None:
    # A page on another site submits a form to the API: the browser adds the cookies, but
    # the page can neither read jws_csrf nor set X-CSRF-Token.
    from tests.test_cookies import cookie
    from tests.test_cookies import make_cookie_app

    app, _ = make_cookie_app()
    browser = app.test_client()
    browser.post("https://app.example/login")
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "guess"}):
        bad_request(browser.post("https://app.example/api/items", headers=headers))
    r = browser.post("https://app.example/api/items", data={"x": "1"}, content_type="application/x-www-form-urlencoded")
    bad_request(r)
    csrf = cookie(browser, "jws_csrf")
    assert browser.post("https://app.example/api/items", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_cookie_fingerprint_mismatch() -> None:
    # The thief copies the access cookie (and the readable CSRF value) into its own browser,
    # which has a fingerprint cookie of its own session or none at all.
    from tests.test_cookies import cookie
    from tests.test_cookies import make_cookie_app

    app, _ = make_cookie_app()
    victim_browser, thief_browser = app.test_client(), app.test_client()
    victim_browser.post("https://app.example/login")
    thief_browser.post("https://app.example/login?sub=mallory")
    stolen = cookie(victim_browser, "__Host-jws_access")
    thief_browser.set_cookie("__Host-jws_access", stolen, domain="app.example")
    rejected(thief_browser.get("https://app.example/api/me"))
    thief_browser.delete_cookie("__Host-jws_fgp", domain="app.example")
    rejected(thief_browser.get("https://app.example/api/me"))
    rejected(app.test_client().get("https://app.example/api/me", headers=bearer(stolen)))


# -- the token endpoint (RFC 6749 §6, shield.token_view) ------------------------------------


@pytest.fixture
def token_endpoint(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    app, shield = make_app()
    clients = {"good-client": "good-secret", "other-client": "other-secret"}

    def authenticate(client: ClientCredentials) -> bool:
        registered = clients.get(client.client_id or "")
        return client.client_secret is None if registered is None else client.client_secret == registered

    app.add_url_rule("/token", view_func=shield.token_view(authenticate_client=authenticate), methods=["POST"])
    return app, shield


def _grant(refresh_token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}


def test_refresh_token_in_url_is_refused_and_not_spent(token_endpoint: tuple[Flask, JWTShield]) -> None:
    """RFC 6749 §3.2 / RFC 6819 §5.4.3: a secret in the URL ends up in proxy and server logs."""
    app, shield = token_endpoint
    with app.app_context():
        pair = shield.issue_tokens("alice")
    r = app.test_client().post(
        "/token", query_string={"refresh_token": pair.refresh_token}, data={"grant_type": "refresh_token"}
    )
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    assert app.test_client().post("/token", data=_grant(pair.refresh_token)).status_code == 200


def test_parameter_pollution_at_the_token_endpoint(token_endpoint: tuple[Flask, JWTShield]) -> None:
    """HTTP parameter pollution: two refresh_token values, one stolen, one the attacker's.

    A server that picks the first or the last can be steered; RFC 6749 §3.1 forbids
    repeated parameters, so both are refused and neither is spent.
    """
    app, shield = token_endpoint
    with app.app_context():
        victim, attacker = shield.issue_tokens("alice"), shield.issue_tokens("mallory")
    body = urlencode(
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", attacker.refresh_token),
            ("refresh_token", victim.refresh_token),
        ]
    )
    r = app.test_client().post("/token", data=body, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    doubled_json = f'{{"refresh_token": "{attacker.refresh_token}", "refresh_token": "{victim.refresh_token}"}}'
    r = app.test_client().post("/token", data=doubled_json, content_type="application/json")
    assert r.status_code == 400 and json_of(r)["error"] == "invalid_request"
    for pair in (victim, attacker):
        assert app.test_client().post("/token", data=_grant(pair.refresh_token)).status_code == 200


def test_stolen_refresh_token_used_by_another_client(token_endpoint: tuple[Flask, JWTShield]) -> None:
    """RFC 6749 §6 / RFC 6819 §5.2.2.2: a refresh token is bound to the client it was issued to."""
    app, shield = token_endpoint
    with app.app_context():
        pair = shield.issue_tokens("alice", claims={"client_id": "good-client"})
    client = app.test_client()
    stolen = client.post(
        "/token", data=_grant(pair.refresh_token, client_id="other-client", client_secret="other-secret")
    )
    assert stolen.status_code == 400 and json_of(stolen)["error"] == "invalid_grant"
    public = client.post("/token", data=_grant(pair.refresh_token))  # posing as a public client
    assert public.status_code == 400 and json_of(public)["error"] == "invalid_grant"
    own = client.post("/token", data=_grant(pair.refresh_token, client_id="good-client", client_secret="good-secret"))
    assert own.status_code == 200


def test_client_secret_guessing(token_endpoint: tuple[Flask, JWTShield], caplog: pytest.LogCaptureFixture) -> None:
    """Guessed client secrets get 401 invalid_client; the guesses never reach logs or events."""
    app, shield = token_endpoint
    caplog.set_level(logging.DEBUG)
    with app.app_context():
        pair = shield.issue_tokens("alice", claims={"client_id": "good-client"})
    for guess in ("guess-1", "guess-2", "good-secre"):
        r = app.test_client().post(
            "/token", data=_grant(pair.refresh_token, client_id="good-client", client_secret=guess)
        )
        assert r.status_code == 401 and json_of(r)["error"] == "invalid_client"
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
    with app.app_context():
        events = json.dumps([e.to_dict() for e in shield.events(limit=100)])
    assert "invalid-client" in events
    for secret in ("guess-1", "guess-2", "good-secre", pair.refresh_token):
        assert secret not in events and secret not in caplog.text
    # The session was not touched by the guesses.
    ok = app.test_client().post(
        "/token", data=_grant(pair.refresh_token, client_id="good-client", client_secret="good-secret")
    )
    assert ok.status_code == 200


def test_refresh_token_replayed_at_the_token_endpoint(token_endpoint: tuple[Flask, JWTShield], clock: Clock) -> None:
    """RFC 6819 §5.2.2.3 / OAuth 2.0 Security BCP §4.14: rotation with reuse detection."""
    app, shield = token_endpoint
    with app.app_context():
        pair = shield.issue_tokens("alice")
    client = app.test_client()
    honest = json_of(client.post("/token", data=_grant(pair.refresh_token)))
    clock.advance(30)
    replay = client.post("/token", data=_grant(pair.refresh_token))
    assert replay.status_code == 400 and json_of(replay)["error"] == "invalid_grant"
    assert json_of(client.post("/token", data=_grant(honest["refresh_token"])))["error"] == "invalid_grant"
    assert client.get("/api/me", headers=bearer(honest["access_token"])).status_code == 401


@pytest.mark.parametrize(
    "cnf",
    [{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, {"jkt": 5}, {}, "jkt"],
    ids=["mtls-bound", "jkt-not-a-string", "empty", "not-an-object"],
)
def test_token_bound_by_a_confirmation_this_server_cannot_check(make_app: AppFactory, now: float, cnf: t.Any) -> None:
    # RFC 7800: an mTLS-bound token (RFC 8705) stolen and replayed as Bearer must not pass
    # just because the server understands only DPoP.
    app, _ = make_app({"JWT_SHIELD_DPOP": "optional"})
    client = app.test_client()
    kid = decode_segment(json_of(client.post("/login"))["access_token"], 0)["kid"]
    token = forge(at_header(kid), claims(now, cnf=cnf))
    rejected(client.get("/api/me", headers=bearer(token)))


# -- the admin dashboard (shield.dashboard_blueprint) ---------------------------------------


@pytest.fixture
def dashboard(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    """An app whose admins log in with Flask's session cookie; the dashboard at /shield."""
    from flask import session
    from werkzeug.middleware.proxy_fix import ProxyFix

    app, shield = make_app()
    app.secret_key = "dashboard-attack-tests-" + "k" * 32
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    @app.post("/admin-login")
    @shield.exempt
    def admin_login() -> t.Any:
        session["admin"] = True
        return {"ok": True}

    app.register_blueprint(
        shield.dashboard_blueprint(authorize=lambda: session.get("admin") is True), url_prefix="/shield"
    )
    return app, shield


def _sid(token: str) -> str:
    return t.cast(str, decode_segment(token, 1)["sid"])


def test_dashboard_cross_site_request_forgery(dashboard: tuple[Flask, JWTShield]) -> None:
    # The admin is logged in; a page elsewhere posts "revoke every token of alice" to the
    # dashboard. It cannot read the admin's CSRF cookie or a page's token, so it guesses,
    # or sends a valid token of its own (from its own visit, with its own cookie).
    app, _ = dashboard
    admin = app.test_client()
    victim = json_of(admin.post("/login?sub=alice"))
    admin.post("/admin-login")
    attacker = app.test_client()
    attacker.post("/admin-login")  # even an attacker with a dashboard login of their own
    page = attacker.get("/shield/subject?sub=alice").get_data(as_text=True)
    own_token = page.split('name="csrf_token" value="')[1].split('"')[0]
    for token in (None, "", "guess", own_token):
        data = {"sub": "alice"} if token is None else {"sub": "alice", "csrf_token": token}
        r = admin.post("/shield/revoke/subject", data=data)
        assert r.status_code == 400, token
    assert admin.get("/api/me", headers=bearer(victim["access_token"])).status_code == 200


def test_dashboard_clickjacking(dashboard: tuple[Flask, JWTShield]) -> None:
    # A page elsewhere frames the dashboard under a fake button to steal the admin's click.
    app, _ = dashboard
    client = app.test_client()
    client.post("/admin-login")
    for path in ("/shield/", "/shield/keys"):
        r = client.get(path)
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_dashboard_stored_xss_through_the_client_address(dashboard: tuple[Flask, JWTShield]) -> None:
    # Behind ProxyFix, X-Forwarded-For is whatever the client says; a rejected request is
    # recorded with it, and the dashboard shows it to the admin.
    app, _ = dashboard
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    client = app.test_client()
    client.get("/api/me", headers={"Authorization": "Bearer x.y.z", "X-Forwarded-For": payload})
    client.post("/admin-login")
    html = client.get("/shield/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html and "<img" not in html  # shown as text, never as markup
    assert "script-src" not in client.get("/shield/").headers["Content-Security-Policy"]  # default-src 'none'


def test_dashboard_revoke_redirects_only_to_its_own_pages(dashboard: tuple[Flask, JWTShield]) -> None:
    # An open redirect after the revoke form would send the admin anywhere.
    app, _ = dashboard
    client = app.test_client()
    pair = json_of(client.post("/login"))
    client.post("/admin-login")
    page = client.get("/shield/subject?sub=alice").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    evil = "https://evil.example/"
    r = client.post(
        f"/shield/revoke/session?next={evil}",
        data={"sid": _sid(pair["access_token"]), "csrf_token": token, "next": evil},
    )
    assert r.status_code == 303 and r.headers["Location"].startswith("/shield/subject?sub=alice")


# -- exemptions that let a protected view run without a token (adversarial review, finding 6) --


def test_a_blueprint_view_named_static_is_not_exempt(make_app: AppFactory) -> None:
    """A view the app named ``static`` is protected like any other: only the static-file
    views Flask itself registers are exempt, recognised by the view, not by the name."""
    from flask import Blueprint

    app, shield = make_app(defer_init=True)
    reports = Blueprint("reports", __name__)

    @reports.get("/reports/static")
    def static() -> t.Any:
        return {"claims": dict(current_claims)}

    assets = Blueprint("assets", __name__, static_folder=".", static_url_path="/assets")
    app.register_blueprint(reports)
    app.register_blueprint(assets)
    shield.init_app(app)
    client = app.test_client()
    assert client.get("/reports/static").status_code == 401
    assert client.get("/assets/no-such-file.css").status_code == 404  # Flask's own static view: exempt
    assert client.get("/static/no-such-file.css").status_code == 404


def test_cors_preflight_to_a_route_that_answers_options_itself(make_app: AppFactory) -> None:
    """A preflight skips the pipeline only where Flask answers OPTIONS without running the view."""
    app, shield = make_app(defer_init=True)
    ran = []

    @app.route("/api/options-aware", methods=["GET", "OPTIONS"])
    def options_aware() -> t.Any:
        ran.append(True)
        return {"sub": current_claims["sub"]}

    shield.init_app(app)
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    r = app.test_client().options("/api/options-aware", headers=preflight)
    assert r.status_code == 401
    assert ran == []
    assert app.test_client().options("/api/me", headers=preflight).status_code == 200  # Flask's answer: fine


# -- the provider's JWK Set server (resource-server mode) ------------------------------------


def _resource_server(make_app: AppFactory, jwks_url: str) -> Flask:
    app, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": jwks_url,
            "JWT_SHIELD_ISSUER": ISSUER,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_JWKS_TIMEOUT": 0.5,
            "JWT_SHIELD_FAIL_MODE": "open",
        }
    )
    return app


def _idp_token() -> str:
    key = SigningKey("idp-1", "RS256", idp_rsa_key("idp-1"))
    return key.sign(idp_claims(ISSUER, AUDIENCE, jti="j-1"))


def test_jwks_server_dribbling_its_headers_holds_the_fetch_only_until_the_deadline(make_app: AppFactory) -> None:
    # Finding 7 of the adversarial review: a server sending its status line and headers one
    # byte at a time (each byte within the read timeout) held a fetch for 26 s against the
    # documented bound, twice JWT_SHIELD_JWKS_TIMEOUT. The request answers 503 in time.
    body = json.dumps({"keys": [SigningKey("idp-1", "RS256", idp_rsa_key("idp-1")).jwk()]}).encode()
    server = RawServer(slow_head(body), interval=0.3)
    try:
        app = _resource_server(make_app, server.url)
        started = time.monotonic()
        response = app.test_client().get("/api/me", headers=bearer(_idp_token()))
        took = time.monotonic() - started
    finally:
        server.stop()
    assert response.status_code == 503 and json_of(response)["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert took < 1.0 + 1.5  # the deadline (2 x 0.5 s), and a margin for a busy machine


def test_jwks_server_with_a_malformed_status_line_is_a_503_not_a_500(make_app: AppFactory) -> None:
    # http.client.BadStatusLine used to escape the fetch: the request raised (500) instead
    # of answering "keys unavailable" (503), whatever the fail mode.
    server = RawServer(b"HELLO\r\n\r\n")
    try:
        app = _resource_server(make_app, server.url)
        response = app.test_client().get("/api/me", headers=bearer(_idp_token()))
    finally:
        server.stop()
    assert response.status_code == 503 and json_of(response)["error"] == "temporarily_unavailable"
    assert "WWW-Authenticate" not in response.headers


# -- DPoP htu and the Host header --------------------------------------------------------------


@pytest.mark.skipif(
    not hasattr(Flask, "create_url_adapter") or "TRUSTED_HOSTS" not in Flask.default_config,
    reason="TRUSTED_HOSTS is Flask 3.1+",
)
def test_dpop_proof_for_another_host_with_a_forged_host_header(make_app: AppFactory, now: float) -> None:
    # htu is compared with the URL the request claims, Host header included: a proof made for
    # another origin is accepted by an app that answers any Host. The docs (sender-constrained,
    # production) say to fix the host: Flask's TRUSTED_HOSTS (or a proxy that does), which
    # refuses the forged Host before the view runs. This pins that advice.
    app, _ = make_app({"JWT_SHIELD_DPOP": "optional", "TRUSTED_HOSTS": ["localhost"]})
    key = HandKey(url=API_URL, now=now)
    login_key = HandKey(url="http://localhost/login", now=now, method="POST")
    login_key.key, login_key.jwk = key.key, key.jwk
    token = json_of(app.test_client().post("/login", headers={"DPoP": login_key.proof(token=None)}))["access_token"]
    client = app.test_client()
    elsewhere = key.proof(token=token, claims={"htu": "http://other.example/api/me"})
    forged = client.get("/api/me", headers={**dpop_headers(token, elsewhere), "Host": "other.example"})
    assert forged.status_code == 400  # the view never ran
    accepted(client.get("/api/me", headers=dpop_headers(token, key.proof(token=token))))


# -- refreshing to multiply a thief's budget (adversarial review, finding 2) -------------------


def test_refreshing_brings_no_fresh_rate_budget(make_app: AppFactory, clock: Clock) -> None:
    """Each refresh used to bring a fresh per-token budget and spike counter: 20 refreshes
    carried 6,000 requests in a minute with no 429. The budget is the session's now."""
    app, _ = make_app({"JWT_SHIELD_RATE_LIMIT": "50/minute"})
    client = app.test_client()
    pair = json_of(client.post("/login"))
    statuses = []
    for _ in range(6):  # 6 refreshed tokens x 10 requests, within one minute
        pair = json_of(client.post("/refresh", json={"refresh_token": pair["refresh_token"]}))
        statuses += [client.get("/api/me", headers=bearer(pair["access_token"])).status_code for _ in range(10)]
    assert statuses[:50] == [200] * 50
    assert set(statuses[50:]) == {429}


def test_a_spent_refresh_token_in_the_grace_mints_nothing_new(make_app: AppFactory, clock: Clock) -> None:
    """Presented 40 times inside the reuse grace, a spent refresh token minted 40 access
    tokens with 40 budgets. Every grace answer is now the generation the rotation made."""
    app, _ = make_app(
        {
            "JWT_SHIELD_REFRESH_REUSE_GRACE": 10,
            "JWT_SHIELD_RATE_LIMIT": "30/second",
            "JWT_SHIELD_REFRESH_RATE_LIMIT": None,
        }
    )  # the token endpoint's own limit: below
    client = app.test_client()
    spent = json_of(client.post("/login"))["refresh_token"]
    first = json_of(client.post("/refresh", json={"refresh_token": spent}))
    minted = [json_of(client.post("/refresh", json={"refresh_token": spent})) for _ in range(40)]
    jtis = {decode_segment(m["access_token"], 1)["jti"] for m in minted}
    assert jtis == {decode_segment(first["access_token"], 1)["jti"]}
    assert {m["refresh_token"] for m in minted} == {first["refresh_token"]}
    statuses = [client.get("/api/me", headers=bearer(m["access_token"])).status_code for m in minted]
    assert statuses.count(200) == 30 and set(statuses[30:]) == {429}


def test_the_token_endpoint_has_limits_of_its_own(make_app: AppFactory, clock: Clock) -> None:
    """Per session (a thief minting or hammering one session) and per client address
    (guessing with junk, checked before any signature work): 429 with Retry-After."""
    app, _ = make_app(
        {
            "JWT_SHIELD_REFRESH_REUSE_GRACE": 10,
            "JWT_SHIELD_REFRESH_RATE_LIMIT": "5/minute",
            "JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT": "20/minute",
        }
    )
    client = app.test_client()
    spent = json_of(client.post("/login"))["refresh_token"]
    statuses = [client.post("/refresh", json={"refresh_token": spent}).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    r = client.post("/refresh", json={"refresh_token": spent})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    other = json_of(client.post("/login?sub=bob"))["refresh_token"]  # another session is not affected
    r = client.post("/refresh", json={"refresh_token": other})
    assert r.status_code == 200
    other = json_of(r)["refresh_token"]
    junk = [client.post("/refresh", json={"refresh_token": "x.y.z"}).status_code for _ in range(12)]
    assert junk[-1] == 429 and 400 in junk  # the address's 20 were spent: junk first, then 429
    clock.advance(61)
    assert client.post("/refresh", json={"refresh_token": other}).status_code == 200
