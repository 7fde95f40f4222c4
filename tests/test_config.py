"""Configuration: read once, validated at init_app, every documented key read and vice versa."""

from __future__ import annotations

import logging
import pathlib
import re
import typing as t
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from flask import Flask

from flask_jwt_shield import ConfigKey
from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.config import DURATION_KEYS
from flask_jwt_shield.config import WHOLE_SECOND_KEYS
from flask_jwt_shield.config import ShieldConfig
from flask_jwt_shield.config import flask_jwt_extended_warnings

from .conftest import AppFactory
from .conftest import bearer

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "configuration.rst"


def pem(key: PrivateKeyTypes, private: bool = True) -> str:
    if private:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def init(config: dict[str, t.Any]) -> Flask:
    app = Flask("config_test")
    app.testing = True
    app.config.update(config)
    JWTShield(app)
    return app


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "No signing secret"),
        ({"JWT_SHIELD_SECRET_KEY": "short"}, "at least 32"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALGORITHM": "HS512"}, "at least 64"),
        ({"SECRET_KEY": "short"}, "at least 32"),
        ({"JWT_SHIELD_SECRET_KEY": 12345}, "str or bytes"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALGORITHM": "none"}, "'none'"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALGORITHM": "NONE"}, "JWT_SHIELD_ALGORITHM"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALGORITHM": "HS1"}, "not a supported algorithm"),
        ({"JWT_SHIELD_ALGORITHM": "RS256"}, "JWT_SHIELD_PRIVATE_KEY"),
        ({"JWT_SHIELD_ALGORITHM": "RS256", "JWT_SHIELD_PRIVATE_KEY": "-----BEGIN nonsense"}, "could not load"),
        ({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": 7}, "PEM string"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ACCESS_TOKEN_TTL": -5}, "at least 1"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ACCESS_TOKEN_TTL": "900"}, "integer"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_LEEWAY": -1}, "JWT_SHIELD_LEEWAY"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_REFRESH_IDLE_TTL": 10**9}, "longer than"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ACCESS_TOKEN_TTL": 10**7}, "outlive"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_STORE_URI": "mongodb://x"}, "unknown scheme"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_FAIL_MODE": "sometimes"}, "closed"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ENABLED": "yes"}, "True or False"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_RATE_LIMIT": "lots"}, "rate limit string"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_SPIKE_ACTION": "explode"}, "revoke_family"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_NEW_COUNTRY_ACTION": "revoke"}, "'deny'"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALLOWED_COUNTRIES": "DE"}, "list of strings"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_DENIED_COUNTRIES": ["Germany"]}, "ISO 3166"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_EXEMPT_ENDPOINTS": "login"}, "list of strings"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_RATELIMIT": "5/minute"}, "Did you mean JWT_SHIELD_RATE_LIMIT"),
        ({"JWT_SHIELD_KEYS": []}, "non-empty list"),
        ({"JWT_SHIELD_KEYS": ["secret"]}, "must be a dict"),
        ({"JWT_SHIELD_KEYS": [{"kid": "a", "key": "x" * 40, "use": "sig"}]}, "unknown fields"),
        ({"JWT_SHIELD_KEYS": [{"kid": "a", "key": "x" * 40}, {"kid": "a", "key": "y" * 40}]}, "duplicate"),
        ({"JWT_SHIELD_KEYS": [{"kid": "a"}]}, "needs 'key'"),
        ({"JWT_SHIELD_KEYS": [{"kid": "a", "alg": "none", "key": "x" * 40}]}, "'none'"),
        ({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ALLOWED_ALGORITHMS": ["RS256"]}, "no key"),
    ],
)
def test_bad_config_refused_at_init_app(config: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        init(config)


@pytest.mark.parametrize("key", ["JWT_SHIELD_RATE_LIMIT", "JWT_SHIELD_SPIKE_THRESHOLD", "JWT_SHIELD_ADAPTIVE_FLOOR"])
@pytest.mark.parametrize("value", ["0/minute", "10/second;0/minute"])
def test_limit_allowing_no_request_is_refused_by_config(key: str, value: str) -> None:
    # Limit strings are parsed by one parser: what the configuration accepts, the limiter
    # accepts too (a zero amount once passed here and failed only when the limiter was built).
    config = {"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_ADAPTIVE": True, key: value}
    for read in (ShieldConfig.from_mapping, init):
        with pytest.raises(ConfigurationError, match=re.escape(f"{key} is {value!r}")) as info:
            read(config)
        assert "must be at least 1, for example '1/minute'" in str(info.value)


def test_hs_mixed_with_asymmetric_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ring = [{"kid": "ec", "alg": "ES256", "key": pem(ec_key)}, {"kid": "hs", "alg": "HS256", "key": "x" * 40}]
    with pytest.raises(ConfigurationError, match="mixes HMAC"):
        init({"JWT_SHIELD_KEYS": ring})


def test_small_rsa_key_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match="2048"):
        init({"JWT_SHIELD_ALGORITHM": "RS256", "JWT_SHIELD_PRIVATE_KEY": pem(small)})


def test_pem_given_as_hmac_secret_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigurationError, match="asymmetric"):
        init({"JWT_SHIELD_SECRET_KEY": pem(key, private=False) + "x" * 10})


def test_wrong_curve_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigurationError, match="could not load"):
        init({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": pem(p384)})


def test_public_key_not_matching_private_key_refused() -> None:
    a, b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigurationError, match="does not belong"):
        init(
            {"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": pem(a), "JWT_SHIELD_PUBLIC_KEY": pem(b, False)}
        )


@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "EdDSA", "HS384"])
def test_every_algorithm_signs_and_verifies(alg: str, make_app: AppFactory) -> None:
    from flask_jwt_shield.cli import generate_key

    entry = generate_key(alg)
    app, shield = make_app({"JWT_SHIELD_KEYS": [entry]})
    with app.app_context():
        token = shield.create_access_token("alice")
        jwks = shield.jwks()
    assert app.test_client().get("/api/me", headers=bearer(token)).status_code == 200
    if alg.startswith("HS"):
        assert jwks == {"keys": []}  # secrets are never published
    else:
        (jwk,) = jwks["keys"]
        assert jwk["kid"] == entry["kid"] and jwk["alg"] == alg and jwk["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)  # no private members


def test_derived_kid_is_stable_and_bytes_pem_accepted(make_app: AppFactory) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    one = ShieldConfig.from_mapping({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": pem(key)})
    two = ShieldConfig.from_mapping({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": pem(key).encode()})
    from flask_jwt_shield.keys import KeyRing

    kid1, kid2 = KeyRing.from_config(one).keys[0].kid, KeyRing.from_config(two).keys[0].kid
    assert kid1 == kid2 and len(kid1) == 43  # base64url SHA-256: an RFC 7638 thumbprint


def test_verify_only_mode(make_app: AppFactory) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer, signer_shield = make_app({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PRIVATE_KEY": pem(key)})
    with signer.app_context():
        token = signer_shield.create_access_token("alice")
    verifier, shield = make_app({"JWT_SHIELD_ALGORITHM": "ES256", "JWT_SHIELD_PUBLIC_KEY": pem(key, False)})
    assert verifier.test_client().get("/api/me", headers=bearer(token)).status_code == 200
    with verifier.app_context(), pytest.raises(RuntimeError, match="verify-only"):
        shield.create_access_token("alice")


def test_app_secret_key_is_the_default() -> None:
    app = init({"SECRET_KEY": "s" * 40})
    assert app.extensions["jwt_shield"].keys.signing_key is not None


def test_config_read_once(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_ACCESS_TOKEN_TTL": 60})
    app.config["JWT_SHIELD_ACCESS_TOKEN_TTL"] = 5  # changing app.config later has no effect
    assert app.extensions["jwt_shield"].config.sessions.access_token_ttl == 60


def test_every_key_is_read() -> None:
    """Each ConfigKey is consumed by ShieldConfig.from_mapping: a wrong value raises."""
    import flask_jwt_shield.config as config_module

    package = pathlib.Path(config_module.__file__).parent  # the sections read their keys
    source = "\n".join(p.read_text() for p in sorted(package.glob("*.py")))
    for name in [n for n in vars(ConfigKey) if n.isupper()]:
        assert f"K.{name}" in source, f"ConfigKey.{name} is declared but never read"


def test_docs_document_exactly_the_keys() -> None:
    documented = set(re.findall(r"^\.\. data:: (JWT_SHIELD_[A-Z_]+)$", DOCS.read_text(), re.MULTILINE))
    assert documented == set(ConfigKey.all())


# -- durations: a timedelta wherever a number of seconds goes ----------------------------

_HOOK = {"JWT_SHIELD_ALERT_WEBHOOK": "https://alerts.example.com/hook"}
_RS = {
    "JWT_SHIELD_SECRET_KEY": None,
    "JWT_SHIELD_JWKS_URL": "https://idp.example.com/jwks.json",
    "JWT_SHIELD_ISSUER": "https://idp.example.com/",
    "JWT_SHIELD_AUDIENCE": "https://api.example.com",
}

_SSF = {"JWT_SHIELD_SSF_TRANSMIT": True, "JWT_SHIELD_ISSUER": "https://auth.example.com"}

#: key -> (a timedelta, its value in seconds, other settings the key needs, how to read it back)
DURATIONS: dict[str, tuple[timedelta, float, dict[str, t.Any], t.Callable[[ShieldConfig], t.Any]]] = {
    "JWT_SHIELD_ACCESS_TOKEN_TTL": (timedelta(minutes=5), 300, {}, lambda c: c.sessions.access_token_ttl),
    "JWT_SHIELD_REFRESH_TOKEN_TTL": (timedelta(days=60), 5_184_000, {}, lambda c: c.sessions.refresh_token_ttl),
    "JWT_SHIELD_REFRESH_IDLE_TTL": (timedelta(days=1), 86_400, {}, lambda c: c.sessions.refresh_idle_ttl),
    "JWT_SHIELD_REFRESH_REUSE_GRACE": (timedelta(seconds=2.5), 2.5, {}, lambda c: c.sessions.refresh_reuse_grace),
    "JWT_SHIELD_LEEWAY": (timedelta(seconds=30), 30, {}, lambda c: c.keys.leeway),
    "JWT_SHIELD_DPOP_MAX_AGE": (timedelta(minutes=2), 120, {}, lambda c: c.dpop.dpop_max_age),
    "JWT_SHIELD_DPOP_NONCE_TTL": (
        timedelta(minutes=5),
        300,
        {"JWT_SHIELD_DPOP": "optional"},
        lambda c: c.dpop.dpop_nonce_ttl,
    ),
    "JWT_SHIELD_JWKS_CACHE_TTL": (timedelta(hours=1), 3600, _RS, lambda c: c.remote.jwks_cache_ttl),
    "JWT_SHIELD_JWKS_MIN_REFETCH": (timedelta(minutes=1), 60, _RS, lambda c: c.remote.jwks_min_refetch),
    "JWT_SHIELD_JWKS_TIMEOUT": (timedelta(milliseconds=1500), 1.5, _RS, lambda c: c.remote.jwks_timeout),
    "JWT_SHIELD_STATUS_LIST_MIN_TTL": (timedelta(seconds=5), 5, _RS, lambda c: c.remote.status_list_min_ttl),
    "JWT_SHIELD_STATUS_LIST_MAX_TTL": (timedelta(minutes=2), 120, _RS, lambda c: c.remote.status_list_max_ttl),
    "JWT_SHIELD_STATUS_LIST_MAX_STALE": (
        timedelta(minutes=1),
        60,
        _RS,
        lambda c: c.remote.status_list_max_stale,
    ),
    "JWT_SHIELD_REDIS_CONNECT_TIMEOUT": (
        timedelta(milliseconds=250),
        0.25,
        {},
        lambda c: c.store.redis_connect_timeout,
    ),
    "JWT_SHIELD_REDIS_TIMEOUT": (timedelta(seconds=2), 2, {}, lambda c: c.store.redis_timeout),
    "JWT_SHIELD_REVOCATION_MAX_DELAY": (timedelta(milliseconds=100), 0.1, {}, lambda c: c.store.revocation_max_delay),
    "JWT_SHIELD_ALERT_TIMEOUT": (timedelta(seconds=10), 10, _HOOK, lambda c: c.alerts and c.alerts.timeout),
    "JWT_SHIELD_ALERT_RETRY_DELAY": (timedelta(seconds=3), 3, _HOOK, lambda c: c.alerts and c.alerts.retry_delay),
    "JWT_SHIELD_STEP_UP_MAX_AGE": (timedelta(minutes=5), 300, {}, lambda c: c.step_up.max_age),
    "JWT_SHIELD_STATUS_LIST_TTL": (
        timedelta(minutes=2),
        120,
        {"JWT_SHIELD_STATUS_LIST": True, "JWT_SHIELD_ISSUER": "https://auth.example"},
        lambda c: c.status_list.status_list_ttl,
    ),
    "JWT_SHIELD_SSF_RETENTION": (timedelta(days=1), 86_400, _SSF, lambda c: c.ssf.ssf_retention),
    "JWT_SHIELD_SSF_PUSH_TIMEOUT": (timedelta(seconds=2), 2, _SSF, lambda c: c.ssf.ssf_push_timeout),
    "JWT_SHIELD_SSF_PUSH_RETRY_DELAY": (timedelta(seconds=3), 3, _SSF, lambda c: c.ssf.ssf_push_retry_delay),
    "JWT_SHIELD_SSF_POLL_WAIT": (timedelta(seconds=20), 20, _SSF, lambda c: c.ssf.ssf_poll_wait),
    "JWT_SHIELD_SSF_RECEIVE_POLL_INTERVAL": (
        timedelta(milliseconds=500),
        0.5,
        {"JWT_SHIELD_SSF_RECEIVE_FROM": "https://idp.example.com"},
        lambda c: c.ssf.ssf_receive_poll_interval,
    ),
}


def _settings(key: str, value: t.Any) -> dict[str, t.Any]:
    _, _, extra, _ = DURATIONS[key]
    config = {"JWT_SHIELD_SECRET_KEY": "x" * 40, **extra, key: value}
    return {k: v for k, v in config.items() if v is not None}


def test_every_duration_key_is_covered() -> None:
    """A duration key added to config.py without a row here fails: the table is the test."""
    assert set(DURATIONS) == set(DURATION_KEYS)
    assert WHOLE_SECOND_KEYS <= DURATION_KEYS <= set(ConfigKey.all())


@pytest.mark.parametrize("key", sorted(DURATIONS))
def test_timedelta_accepted_for_every_duration(key: str) -> None:
    delta, seconds, _, read = DURATIONS[key]
    config = ShieldConfig.from_mapping(_settings(key, delta))
    assert read(config) == seconds
    assert read(config) == read(ShieldConfig.from_mapping(_settings(key, seconds)))  # same as the number
    if key in WHOLE_SECOND_KEYS:
        assert type(read(config)) is int


@pytest.mark.parametrize("key", sorted(DURATIONS))
def test_negative_timedelta_refused_with_a_fix(key: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{key} is datetime.timedelta\(.*negative duration.*e\.g\."):
        ShieldConfig.from_mapping(_settings(key, -DURATIONS[key][0]))


@pytest.mark.parametrize("key", sorted(WHOLE_SECOND_KEYS))
def test_fraction_of_a_second_refused_where_whole_seconds_are_needed(key: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{key} .* not a whole number of seconds.*timedelta\(seconds=9\)"):
        ShieldConfig.from_mapping(_settings(key, timedelta(seconds=8.6)))


def test_timedelta_refused_for_a_count() -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_MAX_SESSIONS must be an integer"):
        ShieldConfig.from_mapping({"JWT_SHIELD_SECRET_KEY": "x" * 40, "JWT_SHIELD_MAX_SESSIONS": timedelta(1)})


def test_timedelta_ttl_issues_tokens_that_expire_then(make_app: AppFactory, clock: t.Any) -> None:
    app, shield = make_app({"JWT_SHIELD_ACCESS_TOKEN_TTL": timedelta(minutes=2)})
    client = app.test_client()
    body = client.post("/login").get_json()
    assert body["expires_in"] == 120
    with app.app_context():
        short = shield.create_access_token("bob", expires_in=timedelta(seconds=30))
        assert shield.create_access_token("bob", expires_in=timedelta(minutes=1))
    clock.advance(31)
    assert client.get("/api/me", headers=bearer(short)).status_code == 401
    assert client.get("/api/me", headers=bearer(body["access_token"])).status_code == 200
    clock.advance(90)
    assert client.get("/api/me", headers=bearer(body["access_token"])).status_code == 401


@pytest.mark.parametrize(
    ("expires_in", "message"),
    [
        (timedelta(seconds=1.5), "expires_in is .* not a whole number of seconds"),
        (timedelta(seconds=-5), "expires_in is .* negative duration"),
    ],
)
def test_bad_timedelta_expires_in_refused(make_app: AppFactory, expires_in: timedelta, message: str) -> None:
    app, shield = make_app()
    with app.app_context(), pytest.raises(ValueError, match=message):
        shield.create_access_token("bob", expires_in=expires_in)


# -- a migrating user's Flask-JWT-Extended settings ---------------------------------------


def test_flask_jwt_extended_keys_are_named_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    fje = {
        "JWT_SECRET_KEY": "y" * 40,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(hours=1),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=30),
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ALGORITHM": "HS256",
        "JWT_COOKIE_SECURE": False,
        "JWT_IDENTITY_CLAIM": "identity",
    }
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        app = init({"SECRET_KEY": "x" * 40, **fje})
    assert app.extensions["jwt_shield"].config.sessions.access_token_ttl == 900  # the FJE value is not used
    lines = [r.getMessage() for r in caplog.records if "Flask-JWT-Extended" in r.getMessage()]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "Flask-JWT-Extended" in r.getMessage())
    assert len(lines) == len(fje)  # one line per key
    assert (
        "JWT_SECRET_KEY is a Flask-JWT-Extended setting; the shield reads JWT_SHIELD_SECRET_KEY"
        " (it falls back to SECRET_KEY)."
    ) in lines
    for fje_key, shield_key in [
        ("JWT_ACCESS_TOKEN_EXPIRES", "JWT_SHIELD_ACCESS_TOKEN_TTL"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "JWT_SHIELD_REFRESH_TOKEN_TTL"),
        ("JWT_TOKEN_LOCATION", "JWT_SHIELD_TOKEN_LOCATIONS"),
        ("JWT_ALGORITHM", "JWT_SHIELD_ALGORITHM"),
    ]:
        assert any(
            line.startswith(f"{fje_key} is a Flask-JWT-Extended setting; the shield reads {shield_key} (")
            for line in lines
        ), fje_key
    assert any(line.startswith("JWT_COOKIE_SECURE ") and "always Secure" in line for line in lines)
    assert any(line.startswith("JWT_IDENTITY_CLAIM ") and "'sub'" in line for line in lines)
    assert not any("y" * 40 in line for line in lines)  # the secret itself is never logged


def test_flask_jwt_extended_key_quiet_once_the_shield_key_is_set(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        init(
            {
                "JWT_SECRET_KEY": "y" * 40,
                "JWT_SHIELD_SECRET_KEY": "x" * 40,
                "JWT_ACCESS_TOKEN_EXPIRES": 600,
                "JWT_SHIELD_ACCESS_TOKEN_TTL": 600,
                "JWT_COOKIE_SECURE": True,
                "JWT_IDENTITY_CLAIM": "sub",
            }
        )
    assert not [r for r in caplog.records if "Flask-JWT-Extended" in r.getMessage()]


def test_flask_jwt_extended_warnings_for_check_config() -> None:
    """The same sentences, as a list, for ``flask jwt-shield check-config``."""
    found = flask_jwt_extended_warnings({"JWT_PRIVATE_KEY": "pem", "JWT_DECODE_AUDIENCE": "api", "OTHER": 1})
    assert found == [
        "JWT_PRIVATE_KEY is a Flask-JWT-Extended setting; the shield reads JWT_SHIELD_PRIVATE_KEY"
        " (or JWT_SHIELD_KEYS for a key ring).",
        "JWT_DECODE_AUDIENCE is a Flask-JWT-Extended setting; the shield reads JWT_SHIELD_AUDIENCE"
        " (written on issue and required on verify).",
    ]
