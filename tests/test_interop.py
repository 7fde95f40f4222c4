"""Other services verify the shield's tokens with standard libraries (newcomer's list, bug 2).

A downstream service verifies the shield's access tokens with the published JWK Set, as
keys.rst invites. joserfc (under Authlib's RFC 9068 validator) and jwcrypto expect integer
NumericDates: a fractional ``iat`` is "issued in the future" to joserfc with no leeway until
the next whole second. The shield writes integer
``iat``, ``nbf`` and ``exp``; its sub-second order lives in its own claim.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from flask_jwt_shield import JWTShield

from .conftest import Clock
from .conftest import bearer

ISSUER = "https://shield.example"
AUDIENCE = "https://api.example"
# Within a second, past its middle: a fractional iat would lie 0.57 s in the verifier's future.
INSTANT = 1_800_000_000.57


@pytest.fixture
def issued(make_app: t.Any, clock: Clock) -> tuple[Flask, JWTShield, str, dict[str, t.Any]]:
    clock.now = INSTANT
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    app, shield = make_app(
        {
            "JWT_SHIELD_ALGORITHM": "ES256",
            "JWT_SHIELD_PRIVATE_KEY": pem,
            "JWT_SHIELD_ISSUER": ISSUER,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    with app.test_request_context("/login", method="POST"):
        # RFC 9068 §2.2 requires client_id; Authlib's validator insists on it.
        token = shield.issue_tokens("alice", claims={"scope": "read", "client_id": "web"}).access_token
        jwks = shield.jwks()
    return app, shield, token, jwks


def test_joserfc_verifies_a_token_in_the_second_it_was_issued(
    issued: tuple[Flask, JWTShield, str, dict[str, t.Any]],
) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet
    from joserfc.jwk import KeySetSerialization

    _, _, token, jwks = issued
    # shield.jwks() is an RFC 7517 JWK Set, which is what joserfc's TypedDict describes
    decoded = jwt.decode(token, KeySet.import_key_set(t.cast(KeySetSerialization, jwks)), algorithms=["ES256"])
    registry = jwt.JWTClaimsRegistry(
        leeway=0, iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )
    registry.validate(decoded.claims)  # raises InvalidTokenError "issued in the future" on a fractional iat
    assert decoded.header["typ"] == "at+jwt"
    assert all(type(decoded.claims[name]) is int for name in ("iat", "nbf", "exp"))


def test_authlib_rfc9068_validator_accepts_it(issued: tuple[Flask, JWTShield, str, dict[str, t.Any]]) -> None:
    from authlib.oauth2.rfc9068 import JWTBearerTokenValidator

    _, _, token, jwks = issued

    class Validator(JWTBearerTokenValidator):  # type: ignore[misc]
        def get_jwks(self) -> dict[str, t.Any]:
            return jwks

    claims = Validator(issuer=ISSUER, resource_server=AUDIENCE).authenticate_token(token)
    claims.validate(leeway=0)
    assert claims["sub"] == "alice"


def test_jwcrypto_verifies_it(issued: tuple[Flask, JWTShield, str, dict[str, t.Any]]) -> None:
    from jwcrypto import jwk
    from jwcrypto import jwt

    _, _, token, jwks = issued
    keys = jwk.JWKSet.from_json(json.dumps(jwks))
    verified = jwt.JWT(jwt=token, key=keys, algs=["ES256"], expected_type="JWS")
    assert json.loads(verified.claims)["sub"] == "alice"


def test_log_out_everywhere_still_separates_tokens_within_one_second(
    issued: tuple[Flask, JWTShield, str, dict[str, t.Any]], clock: Clock
) -> None:
    """With integer ``iat`` the sub-second order comes from the shield's own claim: a token
    issued just before ``revoke_subject`` in the same second is refused, one just after works."""
    app, shield, before, _ = issued
    clock.now = INSTANT + 0.1
    with app.app_context():
        shield.revoke_subject("alice")
    clock.now = INSTANT + 0.2
    with app.test_request_context("/login", method="POST"):
        after = shield.issue_tokens("alice").access_token
    client = app.test_client()
    assert client.get("/api/me", headers=bearer(before)).status_code == 401
    assert client.get("/api/me", headers=bearer(after)).status_code == 200
