"""The JOSE leaf on its own: base64url, strict JSON, the compact split, the guarded signature
check, RFC 7638 thumbprints, the algorithm sets; and that it imports nothing of the package."""

from __future__ import annotations

import ast
import hashlib
import hmac
import importlib
import pathlib
import typing as t

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

from flask_jwt_shield import jose
from flask_jwt_shield.cache import bounded_put
from flask_jwt_shield.jose import JOSEError

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
    "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
    "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xB"
    "niIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def reason(call: t.Callable[[], object]) -> str:
    with pytest.raises(JOSEError) as info:
        call()
    assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working
    return info.value.reason


def test_rfc7638_example_thumbprint() -> None:
    assert jose.jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    "jwk",
    [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "e": "AQAB"}, {"kty": "EC", "crv": "P-256", "x": "", "y": "y"}],
)
def test_thumbprint_refuses_unknown_types_and_missing_members(jwk: dict[str, str]) -> None:
    assert reason(lambda: jose.jwk_thumbprint(jwk)) == "thumbprint"


def test_b64url_round_trip_without_padding() -> None:
    for size in range(0, 9):
        data = bytes(range(250, 250 - size, -1))
        encoded = jose.b64url(data)
        assert "=" not in encoded and "+" not in encoded and "/" not in encoded
        assert jose.b64decode(encoded) == data


@pytest.mark.parametrize("segment", ["YQ==", "YQ=", "a+b/", "YW Jj", "YWJj\n", "Y", "YWJjZ", "é"])
def test_b64decode_refuses_padding_foreign_characters_and_impossible_lengths(segment: str) -> None:
    assert reason(lambda: jose.b64decode(segment)) == "malformed"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"alg":"HS256","alg":"none"}', "duplicate member"),
        (b'{"exp":NaN}', "NaN"),
        (b'{"exp":Infinity}', "Infinity"),
        (b'{"exp":-Infinity}', "-Infinity"),
        (b'["alg"]', "not an object"),
        (b'"alg"', "not an object"),
        (b"null", "not an object"),
        (b'{"alg":"HS256"', "truncated"),
        (b'{"alg":"\xff"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "too deep"),
    ],
)
def test_json_object_is_strict(data: bytes, why: str) -> None:
    assert reason(lambda: jose.json_object(data)) == "malformed-json", why


def test_json_object_accepts_one_object() -> None:
    assert jose.json_object(b'{"a":[1,{"b":null}],"c":1.5}') == {"a": [1, {"b": None}], "c": 1.5}


def test_segment_object_tells_base64_from_json() -> None:
    assert jose.segment_object(jose.b64url(b'{"typ":"at+jwt"}')) == {"typ": "at+jwt"}
    assert reason(lambda: jose.segment_object("e30=")) == "malformed"
    assert reason(lambda: jose.segment_object(jose.b64url(b'{"a":1,"a":2}'))) == "malformed-json"


def test_json_document_refuses_constants_but_takes_any_shape() -> None:
    assert jose.json_document(b'{"keys":[]}') == {"keys": []}
    assert jose.json_document(b"[1]") == [1]
    assert reason(lambda: jose.json_document(b'{"keys":NaN}')) == "malformed-json"
    assert reason(lambda: jose.json_document(b"{")) == "malformed-json"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("a.b", "malformed"),
        ("a.b.c.d", "malformed"),
        ("a.b.", "unsigned"),
        (".b.", "unsigned"),  # as tokens have always said: the missing signature first
        (".b.c", "malformed"),
        ("a..c", "malformed"),
        ("a.b=.c", "malformed"),
        ("a.b.c,a.b.c", "malformed"),  # two DPoP headers joined into one
        ("a.b.c\n", "malformed"),
        ("a.é.c", "malformed"),
    ],
)
def test_split_compact_refuses(token: str, expected: str) -> None:
    assert reason(lambda: jose.split_compact(token)) == expected


def test_split_compact_returns_the_three_segments_undecoded() -> None:
    assert jose.split_compact("eyJ9.e30.-_x") == ("eyJ9", "e30", "-_x")


def test_signature_valid_never_raises() -> None:
    hs = get_default_algorithms()["HS256"]
    key = hs.prepare_key(b"k" * 32)
    good = hmac.new(b"k" * 32, b"a.b", hashlib.sha256).digest()
    assert jose.signature_valid(hs, key, b"a.b", good) is True
    assert jose.signature_valid(hs, key, b"a.c", good) is False
    es = get_default_algorithms()["ES256"]
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    for junk in (b"", b"\x00" * 3, b"\xff" * 64, b"\x00" * 64):
        assert jose.signature_valid(es, public, b"a.b", junk) is False
    assert jose.signature_valid(es, "not a key", b"a.b", b"\x01" * 64) is False


def test_algorithm_sets_match_the_configuration() -> None:
    # One source of truth, read by config (keys, resource-server mode, DPoP) as by the verifiers.
    # The configuration checks the algorithms against the JOSE layer's sets, not copies.
    config_settings = vars(importlib.import_module("flask_jwt_shield.config.settings"))
    assert config_settings["SIGNING_ALGORITHMS"] is jose.SIGNING_ALGORITHMS
    assert config_settings["RESOURCE_SERVER_ALGORITHMS"] is jose.RESOURCE_SERVER_ALGORITHMS
    assert config_settings["PROOF_ALGORITHMS"] is jose.PROOF_ALGORITHMS
    assert config_settings["DEFAULT_PROOF_ALGORITHMS"] is jose.DEFAULT_PROOF_ALGORITHMS
    assert jose.SIGNING_ALGORITHMS == jose.RESOURCE_SERVER_ALGORITHMS | {"HS256", "HS384", "HS512"}
    assert not any(alg.startswith("HS") or alg == "none" for alg in jose.PROOF_ALGORITHMS)
    assert set(jose.EC_CURVES) | {"EdDSA"} | {a for a in jose.KEY_TYPES if jose.KEY_TYPES[a] in ("RSA", "oct")} == set(
        jose.KEY_TYPES
    )
    assert jose.RSA_MIN_BITS == 2048 and jose.HMAC_MIN_BYTES == {"HS256": 32, "HS384": 48, "HS512": 64}


def test_the_leaves_import_nothing_from_the_package() -> None:
    package = pathlib.Path(jose.__file__).parent
    for leaf in ("jose.py", "cache.py"):
        tree = ast.parse((package / leaf).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("flask_jwt_shield"), leaf
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("flask_jwt_shield") for alias in node.names), leaf


def test_bounded_put_drops_the_oldest_entry() -> None:
    cache: dict[str, int] = {}
    for i in range(5):
        bounded_put(cache, f"k{i}", i, 3)
    assert list(cache.items()) == [("k2", 2), ("k3", 3), ("k4", 4)]
    bounded_put(cache, "k3", 33, 3)  # a full cache drops its oldest even for a known key
    assert cache == {"k3": 33, "k4": 4}
