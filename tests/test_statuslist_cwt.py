"""The Status List Token in CWT form (draft-ietf-oauth-status-list, "Status List Token in
CWT Format"), served by content negotiation beside the JWT.

Every CWT is read the way another implementation would: decoded with ``cbor2`` and its
COSE signature (or MAC) checked with ``pycose`` against the key the app signs with; its
shape is compared with the draft's own example.
"""

from __future__ import annotations

import gzip
import random
import secrets
import typing as t
import uuid

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from pycose.keys.cosekey import CoseKey
from pycose.keys.symmetric import SymmetricKey
from pycose.messages.cosemessage import CoseMessage
from pycose.messages.mac0message import Mac0Message
from pycose.messages.sign1message import Sign1Message

from flask_jwt_shield import JWTShield
from flask_jwt_shield import cbor
from flask_jwt_shield.cose import ALGORITHMS
from flask_jwt_shield.statuslist.codec import StatusList

from .conftest import AppFactory
from .test_statuslist_issuer import URI
from .test_statuslist_issuer import PresetBits
from .test_statuslist_issuer import config
from .test_statuslist_issuer import mount

CWT = "application/statuslist+cwt"
JWT = "application/statuslist+jwt"

#: The draft's example Status List Token in CWT form (examples/status_list_cwt.md).
DRAFT_EXAMPLE = bytes.fromhex(
    "d2845820a2012610781a6170706c69636174696f6e2f7374617475736c6973742b63"
    "7774a1044231325850a502782168747470733a2f2f6578616d706c652e636f6d2f73"
    "74617475736c697374732f31061a648c5bea041a8898dfea19fffe19a8c019fffda2"
    "646269747301636c73744a78dadbb918000217015d584093fa4d01032b18c35e2fe1"
    "101b77fd6cc9440022caa4694450c4e4e9feab4e99d1fa6d9772ce2bf3a12e0323de"
    "d7c982c5e101a5e67f0cbc1e2b6f57ce99c279d2"
)


def _pem(key: t.Any) -> str:
    return t.cast(
        str,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


#: One key per algorithm family the ring can sign with: (alg, private key PEM or secret).
KEYS: dict[str, str] = {
    "ES256": _pem(ec.generate_private_key(ec.SECP256R1())),
    "ES384": _pem(ec.generate_private_key(ec.SECP384R1())),
    "EdDSA": _pem(ed25519.Ed25519PrivateKey.generate()),
    "RS256": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "PS256": "",  # the RS256 key, used with PSS
    # 32 bytes: pycose takes HMAC keys of 16, 24 or 32 bytes only.
    "HS256": secrets.token_hex(16),
}
KEYS["PS256"] = KEYS["RS256"]


def cose_key(alg: str) -> CoseKey:
    """What a relying party checks the CWT with: the public key (the secret for HMAC)."""
    if alg.startswith("HS"):
        return SymmetricKey(k=KEYS[alg].encode())
    private = serialization.load_pem_private_key(KEYS[alg].encode(), password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CoseKey.from_pem_public_key(public.decode())


def app_for(make_app: AppFactory, alg: str = "ES256", **extra: t.Any) -> tuple[Flask, JWTShield]:
    app, shield = make_app(config(JWT_SHIELD_KEYS=[{"kid": "a", "alg": alg, "key": KEYS[alg]}], **extra))
    return mount(app, shield), shield


def read_cwt(body: bytes, alg: str = "ES256") -> tuple[dict[int, t.Any], dict[t.Any, t.Any], dict[t.Any, t.Any]]:
    """Decode and verify a Status List Token in CWT form: (claims, protected, unprotected)."""
    outer = cbor2.loads(body)
    # Tagged COSE_Sign1 (18) or COSE_Mac0 (17), and no CWT tag (61) around it.
    assert isinstance(outer, cbor2.CBORTag) and outer.tag == (17 if alg.startswith("HS") else 18)
    protected_bytes, unprotected, payload, _ = outer.value
    protected = cbor2.loads(protected_bytes)
    message = CoseMessage.decode(body)
    message.key = cose_key(alg)
    if alg.startswith("HS"):
        assert isinstance(message, Mac0Message) and message.verify_tag()
    else:
        assert isinstance(message, Sign1Message) and message.verify_signature()
    assert message.payload == payload
    return cbor2.loads(payload), protected, unprotected


def fetch_cwt(client: FlaskClient, alg: str = "ES256", **headers: str) -> tuple[dict[int, t.Any], StatusList]:
    response = client.get("/statuslists/1", headers={"Accept": CWT, **headers})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CWT
    claims, protected, unprotected = read_cwt(response.get_data(), alg)
    assert protected == {1: ALGORITHMS[alg], 16: CWT}
    assert unprotected == {4: b"a"}
    assert claims[2] == URI
    assert claims[65534] == 30 and claims[4] == claims[6] + 60
    assert claims[1] == "https://issuer.example"
    status_list = claims[65533]
    assert isinstance(status_list["lst"], bytes)  # raw bytes: no base64 anywhere
    return claims, StatusList.from_json(
        {"bits": status_list["bits"], "lst": _b64(status_list["lst"])}, max_bytes=1 << 20
    )


def _b64(data: bytes) -> str:
    from flask_jwt_shield.jose import b64url

    return b64url(data)


# -- the token -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_every_algorithm_of_the_ring_signs_a_cwt_others_verify(make_app: AppFactory, alg: str) -> None:
    app, shield = app_for(make_app, alg)
    with app.app_context():
        revoked = shield.create_access_token("alice")
        shield.create_access_token("bob")
        shield.revoke_token(revoked)
    with app.test_client() as client:
        _, lst = fetch_cwt(client, alg)
        jwt_list = client.get("/statuslists/1").get_data()
    assert jwt_list.count(b".") == 2  # the JWT is still the default
    assert sum(lst[i] for i in range(len(lst))) == 1  # the one revoked token, the same list


def test_the_shape_is_the_drafts_example(make_app: AppFactory) -> None:
    example_claims, example_protected, example_unprotected = _parts(DRAFT_EXAMPLE)
    app, _ = app_for(make_app)
    with app.test_client() as client:
        body = client.get("/statuslists/1", headers={"Accept": CWT}).get_data()
    claims, protected, unprotected = _parts(body)
    assert cbor2.loads(body).tag == cbor2.loads(DRAFT_EXAMPLE).tag == 18
    assert protected.keys() == example_protected.keys() == {1, 16}
    assert protected[16] == example_protected[16] == CWT
    assert unprotected.keys() == example_unprotected.keys() == {4}
    # The example has no issuer; ours names the configured one (the draft: MAY).
    assert set(claims) - {1} == set(example_claims) == {2, 4, 6, 65533, 65534}
    assert claims[65533].keys() == example_claims[65533].keys() == {"bits", "lst"}
    for key in (2, 4, 6, 65534):
        assert type(claims[key]) is type(example_claims[key])


def _parts(body: bytes) -> tuple[dict[int, t.Any], dict[int, t.Any], dict[int, t.Any]]:
    protected, unprotected, payload, _ = cbor2.loads(body).value
    return cbor2.loads(payload), cbor2.loads(protected), unprotected


def test_the_encoding_is_deterministic(make_app: AppFactory) -> None:
    # RFC 8949 §4.2.1: shortest heads, map keys in bytewise order of their encoding.
    app, _ = app_for(make_app)
    with app.test_client() as client:
        body = client.get("/statuslists/1", headers={"Accept": CWT}).get_data()
    protected, _, payload, _ = cbor2.loads(body).value
    assert cbor.encode(cbor2.loads(payload)) == payload
    assert cbor.encode(cbor2.loads(protected)) == protected
    assert list(cbor2.loads(payload)) == [1, 2, 4, 6, 65533, 65534]
    assert list(cbor2.loads(payload)[65533]) == ["lst", "bits"]  # 0x63… before 0x64…


@pytest.mark.parametrize(
    "value",
    [
        0,
        23,
        24,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**64 - 1,
        -1,
        -24,
        -25,
        -256,
        -257,
        -(2**64),
        b"",
        b"x" * 70_000,
        "",
        "é" * 200,
        [1, [2, b"3"]],
        {"b": 1, "a": 2, 10: 3, -1: 4},
    ],
)
def test_the_encoder_round_trips_through_a_third_party_decoder(value: t.Any) -> None:
    assert cbor2.loads(cbor.encode(value)) == value


@pytest.mark.parametrize("value", [True, None, 1.5, 2**64, -(2**64) - 1, {1, 2}])
def test_the_encoder_refuses_what_it_does_not_write(value: t.Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        cbor.encode(value)


def test_the_encoders_examples() -> None:
    # RFC 8949 Appendix A.
    assert cbor.encode(1000000).hex() == "1a000f4240"
    assert cbor.encode(-1000).hex() == "3903e7"
    assert cbor.encode(18446744073709551615).hex() == "1bffffffffffffffff"
    assert cbor.encode({1: 2, 3: 4}).hex() == "a201020304"
    assert cbor.encode(cbor.Tag(1, 1363896240)).hex() == "c11a514b67b0"


# -- the endpoint --------------------------------------------------------------------------


def test_negotiation_vary_and_one_etag_per_form(make_app: AppFactory) -> None:
    app, _ = app_for(make_app)
    with app.test_client() as client:
        cwt = client.get("/statuslists/1", headers={"Accept": CWT, "Accept-Encoding": "gzip"})
        jwt = client.get("/statuslists/1", headers={"Accept-Encoding": "gzip"})
        assert {"Accept", "Accept-Encoding"} <= {v.strip() for v in cwt.headers["Vary"].split(",")}
        assert "Accept" in jwt.headers["Vary"]
        assert jwt.headers["Content-Encoding"] == "gzip"
        plain = client.get("/statuslists/1", headers={"Accept": CWT})
        assert "Content-Encoding" not in plain.headers
        # A small list's CWT still gains from gzip (its header and claims); a large one does
        # not, and goes out as it is (see the size test).
        assert cwt.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(cwt.get_data()) == plain.get_data()
        assert plain.headers["ETag"] != cwt.headers["ETag"]
        assert cwt.headers["ETag"] not in (jwt.headers["ETag"], client.get("/statuslists/1").headers["ETag"])
        again = client.get("/statuslists/1", headers={"Accept": CWT, "If-None-Match": plain.headers["ETag"]})
        assert again.status_code == 304
        # The JWT's validator does not stand for the CWT.
        other = client.get("/statuslists/1", headers={"Accept": CWT, "If-None-Match": jwt.headers["ETag"]})
        assert other.status_code == 200 and other.get_data() == plain.get_data()
        head = client.head("/statuslists/1", headers={"Accept": CWT})
        assert head.status_code == 200 and head.headers["Content-Type"] == CWT and head.get_data() == b""
        assert cwt.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        (None, JWT),
        ("*/*", JWT),
        ("application/*", JWT),
        (JWT, JWT),
        (CWT, CWT),
        (f"{CWT}, */*;q=0.1", CWT),
        (f"{JWT};q=0.5, {CWT}", CWT),
        (f"{CWT};q=0.5, {JWT}", JWT),
        (f"{JWT};q=0, */*", CWT),
        ("text/html", None),
        (f"{CWT};q=0, {JWT};q=0", None),
        ("\x00garbage;;;q=zz", None),
    ],
)
def test_accept_picks_the_form(make_app: AppFactory, accept: str | None, served: str | None) -> None:
    app, _ = app_for(make_app)
    with app.test_client() as client:
        response = client.get("/statuslists/1", headers={"Accept": accept} if accept is not None else {})
    if served is None:
        assert response.status_code == 406
        assert JWT in response.get_data(as_text=True) and CWT in response.get_data(as_text=True)
    else:
        assert response.status_code == 200 and response.headers["Content-Type"] == served


def test_each_form_is_rendered_once_per_change(make_app: AppFactory) -> None:
    app, shield = app_for(make_app)
    with app.test_client() as client:
        first = client.get("/statuslists/1", headers={"Accept": CWT}).get_data()
        client.get("/statuslists/1")
        assert client.get("/statuslists/1", headers={"Accept": CWT}).get_data() == first
        with app.app_context():
            shield.revoke_token(shield.create_access_token("alice"))
        changed = client.get("/statuslists/1", headers={"Accept": CWT}).get_data()
        assert changed != first
        _, lst = fetch_cwt(client)
    assert sum(lst[i] for i in range(len(lst))) == 1


# -- size on the wire ----------------------------------------------------------------------


@pytest.mark.parametrize(("revoked", "limit"), [(0.001, 2.6 * 1024), (0.01, 16 * 1024), (0.10, 70 * 1024)])
def test_a_million_tokens_fit_the_goal_as_a_cwt(make_app: AppFactory, revoked: float, limit: float) -> None:
    # Issue 21: a list of 1,000,000 tokens, 1 % revoked, at most 16 KB on the wire. The JWT
    # cannot (its base64 inside base64 stays after gzip); the CWT carries the bytes raw.
    size = 1_000_000
    lst = StatusList.new(size)
    for idx in random.Random(uuid.uuid4().int).sample(range(size), int(size * revoked)):
        lst[idx] = 1
    app, shield = make_app(
        config(JWT_SHIELD_STATUS_LIST_SIZE=size, JWT_SHIELD_KEYS=[{"kid": "a", "alg": "ES256", "key": KEYS["ES256"]}]),
        store=PresetBits(bytes(lst.data)),
    )
    mount(app, shield)
    with app.test_client() as client:
        response = client.get("/statuslists/1", headers={"Accept": CWT, "Accept-Encoding": "gzip, br"})
        _, served = fetch_cwt(client)
    assert served.data == lst.data
    assert len(response.get_data()) <= limit
    # The list is DEFLATE already: gzip would add bytes, so the body goes out as it is.
    assert "Content-Encoding" not in response.headers
