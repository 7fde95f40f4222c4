"""Resource-server mode: an API whose tokens come from an external identity provider.

The provider is tests/idp_util.py: real keys, tokens signed the way Auth0 and Keycloak sign
them, its JWK Set served over real HTTP on 127.0.0.1. Requests go through the real Flask app.
Time is the ``clock`` fixture's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import typing as t
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.tokens import signature_name
from tests.conftest import AppFactory
from tests.conftest import Clock
from tests.conftest import bearer
from tests.idp_util import IdPServer
from tests.idp_util import SigningKey
from tests.idp_util import down_url
from tests.idp_util import idp_claims
from tests.idp_util import rsa_key

AUDIENCE = "https://api.example.com"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def rs_key() -> SigningKey:
    return SigningKey("idp-2026-01", "RS256", rsa_key("idp-1"))


@pytest.fixture
def es_key() -> SigningKey:
    return SigningKey("idp-ec", "ES256", _EC_KEY)


@pytest.fixture
def issuer(idp: IdPServer) -> str:
    return idp.url + "/"  # Auth0 writes its issuer with the trailing slash


RSApp = t.Callable[..., tuple[Flask, JWTShield]]


@pytest.fixture
def rs_app(
    make_app: AppFactory, idp: IdPServer, issuer: str, rs_key: SigningKey, es_key: SigningKey, clock: Clock
) -> RSApp:
    idp.publish(rs_key, es_key)

    def factory(**config: t.Any) -> tuple[Flask, JWTShield]:
        base: dict[str, t.Any] = {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": idp.jwks_url,
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
        base.update({f"JWT_SHIELD_{k}": v for k, v in config.items()})
        return make_app(base)

    return factory


def auth0_token(key: SigningKey, issuer: str, **extra: t.Any) -> str:
    """An Auth0 access token with the RFC 9068 profile."""
    claims = idp_claims(
        issuer,
        [AUDIENCE, issuer + "userinfo"],
        sub="auth0|5f7c8ec7c33c6c004bbafe82",
        azp="k5u3o2fiAA8XweXEEX604KCwCjzjtMU6",
        scope="openid profile read:reports",
        client_id="k5u3o2fiAA8XweXEEX604KCwCjzjtMU6",
        jti="a1b2c3d4e5f6",
    )
    claims.update(extra)
    return key.sign({k: v for k, v in claims.items() if v is not None}, typ="at+jwt")


def keycloak_token(key: SigningKey, issuer: str, typ_claim: str = "Bearer", **extra: t.Any) -> str:
    """A Keycloak access token: header typ JWT, claim typ Bearer."""
    claims = idp_claims(
        issuer,
        AUDIENCE,
        sub="f:3b8c5d1e-9c1a-4c2e-8d7e-2a2b3c4d5e6f:alice",
        typ=typ_claim,
        azp="shop-frontend",
        sid="6d1f6a3e-0b5e-4c7a-9b3c-1f2e3d4c5b6a",
        jti="onrtac:9b5f7a3d-1c2e-4f6a-8b9c-0d1e2f3a4b5c",
        scope="openid email",
        realm_access={"roles": ["user"]},
    )
    claims.update(extra)
    return key.sign({k: v for k, v in claims.items() if v is not None}, typ="JWT")


def entra_token(key: SigningKey, issuer: str, **extra: t.Any) -> str:
    """A Microsoft Entra ID v2.0 access token: header typ JWT, no jti (uti instead)."""
    claims = idp_claims(
        issuer,
        AUDIENCE,
        sub="AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        ver="2.0",
        azp="6e74172b-be56-4843-9ff4-e66a39bb12e3",
        azpacr="0",
        scp="reports.read",
        tid="8eaef023-2b34-4da1-9baa-8bc8c9d6a490",
        oid="690222be-ff1a-4d56-abd1-7e4f7d38e474",
        uti="fqiBqXLPj0eQa82S-IYFAA",
        nbf=int(time.time()),
    )
    claims.update(extra)
    return key.sign({k: v for k, v in claims.items() if v is not None}, typ="JWT")


def get(app: Flask, token: str) -> t.Any:
    return app.test_client().get("/api/me", headers=bearer(token))


# -- profiles ---------------------------------------------------------------------------------


def test_auth0_token_verified_under_the_default_profile(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app()
    response = get(app, auth0_token(rs_key, issuer))
    assert response.status_code == 200, response.json
    assert response.json["sub"] == "auth0|5f7c8ec7c33c6c004bbafe82"
    assert response.json["scope"] == "openid profile read:reports"


def test_auth0_token_refused_under_the_keycloak_profile_alone(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app(ACCEPTED_TYPES=["keycloak"])
    response = get(app, auth0_token(rs_key, issuer))
    assert response.status_code == 401 and response.json["error"] == "invalid_token"


def test_keycloak_token_refused_under_the_default_profile(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app()
    response = get(app, keycloak_token(rs_key, issuer))
    assert response.status_code == 401
    assert "not an access token" in response.json["error_description"]


def test_keycloak_token_verified_under_its_profile(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app(ACCEPTED_TYPES=["at+jwt", "keycloak"])
    response = get(app, keycloak_token(rs_key, issuer))
    assert response.status_code == 200, response.json
    assert response.json["realm_access"] == {"roles": ["user"]}
    assert get(app, auth0_token(rs_key, issuer)).status_code == 200  # both profiles


@pytest.mark.parametrize("typ_claim", ["ID", "Refresh", "bearer", "Bearer ", None])
def test_keycloak_id_and_refresh_tokens_are_not_access_tokens(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, typ_claim: str | None
) -> None:
    app, _ = rs_app(ACCEPTED_TYPES=["keycloak"])
    response = get(app, keycloak_token(rs_key, issuer, typ_claim=t.cast(str, typ_claim)))
    assert response.status_code == 401
    assert "not an access token" in response.json["error_description"]


def test_entra_token_verified_under_its_profile_and_refused_under_the_default(
    rs_app: RSApp, rs_key: SigningKey, issuer: str
) -> None:
    token = entra_token(rs_key, issuer)
    app, _ = rs_app()
    assert get(app, token).status_code == 401
    app, _ = rs_app(ACCEPTED_TYPES=["entra"])
    response = get(app, token)
    assert response.status_code == 200, response.json
    assert response.json["scp"] == "reports.read" and len(response.json["jti"]) == 22  # named by signature
    assert get(app, keycloak_token(rs_key, issuer)).status_code == 401  # entra only


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"azp": None, "scp": None}, id="id-token"),  # Entra ID tokens: no azp, no scp
        pytest.param({"ver": "1.0"}, id="v1-token"),
        pytest.param({"scp": None}, id="no-scp-no-roles"),
    ],
)
def test_entra_id_tokens_are_not_access_tokens(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, claims: dict[str, t.Any]
) -> None:
    app, _ = rs_app(ACCEPTED_TYPES=["entra"])
    assert get(app, entra_token(rs_key, issuer, **claims)).status_code == 401
    assert get(app, entra_token(rs_key, issuer, scp=None, roles=["Reports.Read.All"])).status_code == 200


@pytest.mark.parametrize("typ", [None, "JWT", "id+jwt", "secevent+jwt"])
def test_other_types_refused_under_the_default_profile(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, typ: str | None
) -> None:
    app, _ = rs_app()
    claims = idp_claims(issuer, AUDIENCE, jti="x")
    assert get(app, rs_key.sign(claims, typ=typ)).status_code == 401


def test_es256_tokens_verified(rs_app: RSApp, es_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app()
    assert get(app, auth0_token(es_key, issuer)).status_code == 200


# -- required claims, issuer, audience, algorithms --------------------------------------------


@pytest.mark.parametrize("missing", ["iss", "aud", "sub", "exp", "iat"])
def test_required_claims(rs_app: RSApp, rs_key: SigningKey, issuer: str, missing: str) -> None:
    app, _ = rs_app()
    response = get(app, auth0_token(rs_key, issuer, **{missing: None}))
    assert response.status_code == 401 and response.json["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"iss": "https://other-tenant.example/"}, "issuer"),
        ({"aud": "https://another-api.example"}, "audience"),
        ({"aud": ["https://another-api.example"]}, "audience"),
    ],
)
def test_issuer_and_audience_must_match(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, claims: dict[str, t.Any], description: str
) -> None:
    app, _ = rs_app()
    response = get(app, auth0_token(rs_key, issuer, **claims))
    assert response.status_code == 401 and description in response.json["error_description"]


def test_expired_and_not_yet_valid(rs_app: RSApp, rs_key: SigningKey, issuer: str, clock: Clock) -> None:
    app, _ = rs_app()
    token = auth0_token(rs_key, issuer)
    assert get(app, token).status_code == 200
    clock.advance(601)
    response = get(app, token)
    assert response.status_code == 401 and "expired" in response.json["error_description"]
    future = auth0_token(rs_key, issuer, nbf=int(clock.now) + 60, iat=int(clock.now))
    assert get(app, future).status_code == 401


def test_jti_and_nbf_are_optional(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app()
    response = get(app, auth0_token(rs_key, issuer, jti=None))
    assert response.status_code == 200
    assert "nbf" not in response.json


def test_algorithm_not_allowed(rs_app: RSApp, issuer: str, idp: IdPServer) -> None:
    ps = SigningKey("idp-ps", "PS256", rsa_key("idp-ps"))
    idp.publish(ps)
    app, _ = rs_app()  # default: RS256 and ES256
    assert get(app, auth0_token(ps, issuer)).status_code == 401
    app2, _ = rs_app(ALLOWED_ALGORITHMS=["PS256"])
    assert get(app2, auth0_token(ps, issuer)).status_code == 200


def test_a_key_without_alg_verifies_the_allowed_algorithms_of_its_kty(
    rs_app: RSApp, issuer: str, idp: IdPServer
) -> None:
    key = SigningKey("no-alg", "PS256", rsa_key("no-alg"))
    idp.publish(key.jwk(alg=None))
    app, _ = rs_app(ALLOWED_ALGORITHMS=["RS256", "PS256"])
    assert get(app, auth0_token(key, issuer)).status_code == 200
    rs = SigningKey("no-alg", "RS256", rsa_key("no-alg"))
    assert get(app, auth0_token(rs, issuer)).status_code == 200
    app2, _ = rs_app()  # RS256 and ES256 only: the PS256 token is refused
    assert get(app2, auth0_token(key, issuer)).status_code == 401


def test_unknown_kid_refused(rs_app: RSApp, issuer: str) -> None:
    app, _ = rs_app()
    stranger = SigningKey("idp-2026-01", "RS256", rsa_key("stranger"))  # right kid, wrong key
    response = get(app, auth0_token(stranger, issuer))
    assert response.status_code == 401 and "signature" in response.json["error_description"]
    nobody = SigningKey("nobody", "RS256", rsa_key("stranger"))
    assert get(app, auth0_token(nobody, issuer)).status_code == 401


# -- the provider's keys over time --------------------------------------------------------------


def test_rotation_at_the_provider_without_restart(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, idp: IdPServer, clock: Clock
) -> None:
    app, _ = rs_app()
    old_token = auth0_token(rs_key, issuer)
    assert get(app, old_token).status_code == 200
    new_key = SigningKey("idp-2026-02", "RS256", rsa_key("idp-2"))
    idp.publish(rs_key, new_key)
    clock.advance(31)  # past MIN_REFETCH: the unknown kid makes the shield refetch
    assert get(app, auth0_token(new_key, issuer)).status_code == 200
    idp.publish(new_key)  # the old key retired
    clock.advance(301)
    assert get(app, old_token).status_code == 401  # dropped from the verified-token cache too
    assert get(app, auth0_token(new_key, issuer)).status_code == 200


def test_no_usable_key_is_503_whatever_the_fail_mode(
    make_app: AppFactory, rs_key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": down_url(),
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_FAIL_MODE": "open",
        }
    )
    response = get(app, auth0_token(rs_key, issuer))
    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert "WWW-Authenticate" not in response.headers


def test_idp_down_keeps_tokens_working(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, idp: IdPServer, clock: Clock
) -> None:
    app, _ = rs_app()
    assert get(app, auth0_token(rs_key, issuer)).status_code == 200
    idp.stop()
    clock.advance(3600)
    assert get(app, auth0_token(rs_key, issuer)).status_code == 200  # a new token, cached key


def test_init_app_does_not_fetch(rs_app: RSApp, idp: IdPServer) -> None:
    rs_app()
    assert idp.hits == []  # lazily, at the first token: init_app never fails for the network


def test_discovery(make_app: AppFactory, idp: IdPServer, rs_key: SigningKey, clock: Clock) -> None:
    idp.publish(rs_key)
    app, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_OIDC_DISCOVERY": True,
            "JWT_SHIELD_ISSUER": idp.url,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    token = rs_key.sign(idp_claims(idp.url, AUDIENCE, jti="d"))
    assert get(app, token).status_code == 200
    assert idp.hits == ["/.well-known/openid-configuration", "/jwks.json"]


# -- tokens without jti, sessions, subjects, keys ---------------------------------------------------


def _signature(token: str) -> bytes:
    segment = token.rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_a_token_without_jti_is_named_by_its_signature(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, shield = rs_app()
    token = auth0_token(rs_key, issuer, jti=None)
    segment = token.rsplit(".", 1)[1]
    name = base64.urlsafe_b64encode(hashlib.sha256(segment.encode()).digest()).decode().rstrip("=")[:22]
    response = get(app, token)
    assert response.json["jti"] == name
    with app.app_context():
        shield.revoke_token(name)
    response = get(app, token)
    assert response.status_code == 401 and "revoked" in response.json["error_description"]
    other = auth0_token(rs_key, issuer, jti=None, scope="other")
    assert get(app, other).status_code == 200
    with app.app_context():
        assert shield.revoke_token(other) == signature_name("RS256", _signature(other))
    assert get(app, other).status_code == 401


def test_attack_base64_padding_bits_do_not_rename_a_token(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, shield = rs_app()
    token = auth0_token(rs_key, issuer, jti=None)
    head, _, segment = token.rpartition(".")
    # 256 signature bytes end in 4 spare bits in base64url: the last character can change
    # without changing the bytes, so the same signature has several spellings.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(segment[-1])
    twin = f"{head}.{segment[:-1]}{alphabet[index | 0b0011 if index & 0b0011 == 0 else index & ~0b0011]}"
    assert twin != token and _signature(twin) == _signature(token)
    with app.app_context():
        shield.revoke_token(token)
    assert "revoked" in get(app, twin).json["error_description"]


def test_attack_ecdsa_high_s_does_not_rename_a_token(rs_app: RSApp, es_key: SigningKey, issuer: str) -> None:
    app, shield = rs_app()
    token = auth0_token(es_key, issuer, jti=None)
    head, _, _ = token.rpartition(".")
    raw = _signature(token)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    flipped = r + (P256_ORDER - s).to_bytes(32, "big")
    twin = head + "." + base64.urlsafe_b64encode(flipped).decode().rstrip("=")
    assert get(app, twin).status_code == 200  # still a valid signature: ECDSA is malleable
    assert get(app, twin).json["jti"] == get(app, token).json["jti"]
    with app.app_context():
        shield.revoke_token(token)
    assert "revoked" in get(app, twin).json["error_description"]


def test_attack_hs256_signed_with_the_providers_public_key(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, idp: IdPServer
) -> None:
    app, _ = rs_app()
    public_pem = rs_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": rs_key.kid, "typ": "at+jwt"}

    def seg(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = seg(json.dumps(header).encode()) + "." + seg(json.dumps(idp_claims(issuer, AUDIENCE)).encode())
    forged = signing_input + "." + seg(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    response = get(app, forged)
    assert response.status_code == 401 and "algorithm" in response.json["error_description"]


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk"])
def test_attack_keys_named_by_the_token_are_never_fetched_or_used(
    rs_app: RSApp, issuer: str, idp: IdPServer, header: str
) -> None:
    app, _ = rs_app()
    attacker = SigningKey("attacker", "RS256", rsa_key("attacker"))
    value: t.Any = attacker.jwk() if header == "jwk" else idp.url + "/attacker-jwks.json"
    token = attacker.sign(idp_claims(issuer, AUDIENCE, jti="x"), headers={header: value})
    assert get(app, token).status_code == 401
    assert "/attacker-jwks.json" not in idp.hits


def test_revoke_family_revokes_the_idp_session(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, shield = rs_app(ACCEPTED_TYPES=["keycloak"])
    token = keycloak_token(rs_key, issuer)
    other_session = keycloak_token(rs_key, issuer, sid="another-session", jti="j2")
    assert get(app, token).status_code == 200
    with app.app_context():
        shield.revoke_family("6d1f6a3e-0b5e-4c7a-9b3c-1f2e3d4c5b6a")
    assert get(app, token).status_code == 401
    assert get(app, other_session).status_code == 200


def test_revoke_subject_with_integer_iat(rs_app: RSApp, rs_key: SigningKey, issuer: str, clock: Clock) -> None:
    app, shield = rs_app()
    clock.now = 1_800_000_100.0
    before = auth0_token(rs_key, issuer, iat=1_800_000_100, jti="before")
    clock.now = 1_800_000_100.6
    with app.app_context():
        shield.revoke_subject("auth0|5f7c8ec7c33c6c004bbafe82")
    # Issued in the same second as the revocation: an integer iat cannot say "after", so
    # iat <= floor(T) is refused.
    same_second = auth0_token(rs_key, issuer, iat=1_800_000_100, jti="same-second")
    clock.now = 1_800_000_101.0
    after = auth0_token(rs_key, issuer, iat=1_800_000_101, jti="after")
    assert get(app, before).status_code == 401
    assert get(app, same_second).status_code == 401
    assert get(app, after).status_code == 200


def test_revoke_key_revokes_every_token_of_an_idp_key(
    rs_app: RSApp, rs_key: SigningKey, es_key: SigningKey, issuer: str
) -> None:
    app, shield = rs_app()
    with app.app_context():
        shield.revoke_key("idp-2026-01")
    assert get(app, auth0_token(rs_key, issuer)).status_code == 401
    assert get(app, auth0_token(es_key, issuer)).status_code == 200


def test_revocation_checker_and_events(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, shield = rs_app()

    @shield.revocation_checker
    def blocked(claims: t.Any) -> bool:
        return bool(claims.get("scope") == "blocked")

    assert get(app, auth0_token(rs_key, issuer, scope="blocked", jti="jb")).status_code == 401
    with app.app_context():
        events = shield.events(jti="jb")
    assert events and events[0].kind == "token-rejected"
    assert events[0].subject == "auth0|5f7c8ec7c33c6c004bbafe82"


def test_rate_limit_per_token_without_jti(rs_app: RSApp, rs_key: SigningKey, issuer: str) -> None:
    app, _ = rs_app(RATE_LIMIT="3/minute")
    token = auth0_token(rs_key, issuer, jti=None)
    statuses = [get(app, token).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert get(app, auth0_token(rs_key, issuer, jti=None, scope="another")).status_code == 200


# -- issuing is the provider's job -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["create_access_token", "issue_tokens", "refresh"])
def test_issuing_and_refresh_refused(rs_app: RSApp, method: str) -> None:
    app, shield = rs_app()
    with app.app_context(), pytest.raises(RuntimeError, match="resource-server mode"):
        getattr(shield, method)("alice")


def test_cli_revoke_and_check_config(rs_app: RSApp, rs_key: SigningKey, issuer: str, tmp_path: t.Any) -> None:
    # A shared store: the CLI refuses to revoke into a memory store it cannot share.
    app, _ = rs_app(STORE_URI=f"sqlite:///{tmp_path / 'shield.db'}")
    runner = FlaskCliRunner(app)
    token = auth0_token(rs_key, issuer, jti="cli-jti")
    assert get(app, token).status_code == 200
    result = runner.invoke(args=["jwt-shield", "revoke", "--jti", "cli-jti"])
    assert result.exit_code == 0, result.output
    assert get(app, token).status_code == 401
    result = runner.invoke(args=["jwt-shield", "check-config"])
    assert result.exit_code == 0 and "configuration OK" in result.output
    listed = runner.invoke(args=["jwt-shield", "keys", "list"])
    assert listed.exit_code == 0
    assert "idp-2026-01  RS256  provider" in listed.output and "idp-ec  ES256  provider" in listed.output
    assert app.test_client().get("/api/me").status_code == 401


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SHIELD_ISSUER": None}, "JWT_SHIELD_ISSUER is required"),
        ({"JWT_SHIELD_AUDIENCE": None}, "JWT_SHIELD_AUDIENCE is required"),
        ({"JWT_SHIELD_ALLOWED_ALGORITHMS": ["HS256"]}, "HS* is never accepted"),
        ({"JWT_SHIELD_ALLOWED_ALGORITHMS": ["RS256", "none"]}, "only asymmetric"),
        ({"JWT_SHIELD_JWKS_URL": "http://idp.example/jwks.json"}, "must use https"),
        ({"JWT_SHIELD_JWKS_URL": "jwks.json"}, "no host"),
        ({"JWT_SHIELD_SECRET_KEY": "s" * 48}, "remove JWT_SHIELD_SECRET_KEY"),
        ({"JWT_SHIELD_ALGORITHM": "RS256"}, "JWT_SHIELD_ALLOWED_ALGORITHMS"),
        ({"JWT_SHIELD_OIDC_DISCOVERY": True}, "not both"),
        ({"JWT_SHIELD_ACCEPTED_TYPES": ["JWT"]}, "profiles are"),
        ({"JWT_SHIELD_ACCEPTED_TYPES": []}, "no profile"),
        ({"JWT_SHIELD_JWKS_MIN_REFETCH": 0}, "at least 1"),
        ({"JWT_SHIELD_JWKS_TIMEOUT": "3"}, "finite number"),
    ],
)
def test_bad_resource_server_config_refused(config: dict[str, t.Any], message: str) -> None:
    app = Flask("rs_config")
    app.config.update(
        {
            "JWT_SHIELD_JWKS_URL": "https://idp.example/.well-known/jwks.json",
            "JWT_SHIELD_ISSUER": "https://idp.example/",
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=message.replace("*", r"\*")):
        JWTShield(app)


def test_provider_profiles_refused_outside_resource_server_mode(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="external identity"):
        make_app({"JWT_SHIELD_ACCEPTED_TYPES": ["keycloak"]})


# -- GeoIP without ctry, outages as events -------------------------------------------------------

BERLIN, MUNICH, TOKYO = "192.0.2.10", "192.0.2.200", "203.0.113.10"


@pytest.fixture
def country_db(tmp_path: Path) -> str:
    from tests.mmdb_util import write_country_db

    return str(write_country_db(tmp_path / "country.mmdb", {"192.0.2.0/24": "DE", "203.0.113.0/24": "JP"}))


def use(app: Flask, token: str, ip: str) -> t.Any:
    return app.test_client().get("/api/me", headers=bearer(token), environ_base={"REMOTE_ADDR": ip})


def test_country_change_judged_against_the_subjects_history(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, country_db: str, clock: Clock
) -> None:
    app, shield = rs_app(GEOIP_DATABASE=country_db, COUNTRY_CHANGE_ACTION="deny", RATE_LIMIT=None)
    first = auth0_token(rs_key, issuer, jti="first")
    assert use(app, first, BERLIN).status_code == 200  # the first use: history starts with DE
    assert use(app, first, MUNICH).status_code == 200
    second = auth0_token(rs_key, issuer, jti="second")
    assert use(app, second, BERLIN).status_code == 200
    response = use(app, second, TOKYO)  # a country this subject was never seen in
    assert response.status_code == 403 and response.json["error"] == "access_denied"
    with app.app_context():
        events = [e for e in shield.events(kind="country-changed")]
    assert len(events) == 1 and events[0].jti == "second"
    assert events[0].detail["history"] == ["DE"] and events[0].country == "JP"
    clock.advance(61)
    assert use(app, second, TOKYO).status_code == 403  # denied: JP never entered the history


def test_country_change_flag_learns_the_new_country(
    rs_app: RSApp, rs_key: SigningKey, issuer: str, country_db: str, clock: Clock
) -> None:
    app, shield = rs_app(GEOIP_DATABASE=country_db, RATE_LIMIT=None)  # action "flag"
    token = auth0_token(rs_key, issuer, jti="t")
    assert use(app, token, BERLIN).status_code == 200
    assert use(app, token, TOKYO).status_code == 200
    clock.advance(61)
    assert use(app, token, TOKYO).status_code == 200
    with app.app_context():
        assert len(shield.events(kind="country-changed")) == 1


def test_no_usable_key_is_one_event_per_interval(
    make_app: AppFactory, rs_key: SigningKey, issuer: str, clock: Clock
) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": down_url(),
            "JWT_SHIELD_ISSUER": issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
        }
    )
    for _ in range(20):
        assert get(app, auth0_token(rs_key, issuer)).status_code == 503
    with app.app_context():
        events = shield.events()
    assert [e.kind for e in events] == ["jwks-unavailable"]
    assert "ConnectionRefused" in events[0].detail["error"] or "refused" in events[0].detail["error"]


def test_token_endpoint_refused(rs_app: RSApp) -> None:
    """The identity provider refreshes its tokens; a token endpoint here is a mistake, said loudly."""
    app, shield = rs_app()
    view = shield.token_view()
    refused = pytest.raises(RuntimeError, match=r"shield\.token_view\(\) is not available in resource-server mode")
    with app.test_request_context("/token", method="POST", data={"grant_type": "refresh_token"}), refused:
        view()


@pytest.mark.parametrize("path", ["/login", "/refresh", "/oauth/token"])
def test_issuing_routes_left_in_an_app_answer_400_not_500(rs_app: RSApp, path: str) -> None:
    """Newcomer's list, bug 6: a login or refresh route left in a resource-server app."""
    app, shield = rs_app()

    @app.post("/login", endpoint="left_login")
    @shield.exempt
    def left_login() -> t.Any:
        return shield.issue_tokens("alice").as_dict()

    @app.post("/refresh", endpoint="left_refresh")
    @shield.exempt
    def left_refresh() -> t.Any:
        return shield.refresh("x.y.z").as_dict()

    app.add_url_rule("/oauth/token", "left_token", view_func=shield.token_view(), methods=["POST"])
    r = app.test_client().post(path, data={"grant_type": "refresh_token", "refresh_token": "x.y.z"})
    assert r.status_code == 400
    assert r.json is not None and r.json["error"] == "unsupported_grant_type"
    assert "identity provider" in r.json["error_description"]
