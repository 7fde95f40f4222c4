"""The key ring: the signing key plus verify-only keys, looked up by ``kid``.

The first configured key signs; the others only verify, so a new key can be put in front
while tokens signed by the old one stay valid until they expire (rotation without logging
anyone out). Cryptography is PyJWT's: each key is prepared once by its
:class:`jwt.algorithms.Algorithm` and kept with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed448
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import Algorithm
from jwt.exceptions import InvalidKeyError

from .config import ConfigKey
from .config import KeySpec
from .config import ShieldConfig
from .errors import ConfigurationError
from .jose import ALGORITHMS
from .jose import HMAC_MIN_BYTES
from .jose import RSA_MIN_BITS
from .jose import b64url as b64url  # re-exported: dashboard.csrf and tests import it from here
from .jose import jwk_thumbprint


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Key:
    """One prepared key. ``signing`` is ``None`` for verify-only keys."""

    kid: str
    alg: str
    algorithm: Algorithm
    signing: t.Any
    verifying: t.Any
    symmetric: bool

    def public_jwk(self) -> dict[str, t.Any]:
        """The public key as a JWK (asymmetric keys only)."""
        jwk = dict(self.algorithm.to_jwk(self.verifying, as_dict=True))
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk


class KeyRing:
    """The keys of one app. Build with :meth:`from_config`."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.by_kid: dict[str, Key] = {k.kid: k for k in keys}
        #: The key that signs new tokens, or ``None`` in verify-only and resource-server mode.
        self.signing_key: Key | None = keys[0] if keys and keys[0].signing is not None else None
        self.algorithms: frozenset[str] = frozenset(k.alg for k in keys)

    @classmethod
    def from_config(cls, config: ShieldConfig) -> KeyRing:
        if config.resource_server:
            # No local key: the identity provider's JWK Set (jwks.py) verifies; this ring
            # only carries the accepted algorithms.
            ring = cls([])
            ring.algorithms = frozenset(config.keys.allowed_algorithms or ())
            return ring
        keys = [prepare(spec, i, len(config.keys.keys) > 1) for i, spec in enumerate(config.keys.keys)]
        symmetric = {k.symmetric for k in keys}
        if len(symmetric) > 1:
            # One ring verifying both kinds invites key confusion (an HMAC secret that is
            # also a published public key); nothing legitimate needs it.
            raise ConfigurationError(
                f"{ConfigKey.KEYS} mixes HMAC (HS*) and asymmetric keys. Use one kind per app:"
                " move to asymmetric keys in one step, or keep HMAC secrets only."
            )
        kids = [k.kid for k in keys]
        if len(kids) != len(set(kids)):
            raise ConfigurationError(
                f"{ConfigKey.KEYS} holds the same key twice (equal derived 'kid'); remove the copy."
            )
        ring = cls(keys)
        if config.keys.allowed_algorithms is not None:
            outside = set(config.keys.allowed_algorithms) - ring.algorithms
            if outside:
                raise ConfigurationError(
                    f"{ConfigKey.ALLOWED_ALGORITHMS} names {sorted(outside)}, for which the key"
                    f" ring has no key; the ring has {sorted(ring.algorithms)}."
                )
            ring.algorithms = frozenset(config.keys.allowed_algorithms)
        return ring

    def get(self, kid: str) -> Key | None:
        return self.by_kid.get(kid)

    def jwks(self) -> dict[str, list[dict[str, t.Any]]]:
        """The public keys as a JWK Set (RFC 7517 §5). Empty for HMAC rings."""
        return {"keys": [k.public_jwk() for k in self.keys if not k.symmetric]}


def prepare(spec: KeySpec, index: int, in_ring: bool) -> Key:
    """One configured key, loaded and checked (:class:`ConfigurationError` names ``where``)."""
    where = (
        f"{ConfigKey.KEYS}[{index}]"
        if in_ring
        else (ConfigKey.SECRET_KEY if spec.alg.startswith("HS") else ConfigKey.PRIVATE_KEY)
    )
    algorithm = ALGORITHMS[spec.alg]
    if spec.alg.startswith("HS"):
        secret = spec.key if spec.key is not None else spec.public_key
        assert secret is not None
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        minimum = HMAC_MIN_BYTES[spec.alg]
        if len(raw) < minimum:
            raise ConfigurationError(
                f"{where}: the {spec.alg} secret is {len(raw)} bytes; at least {minimum} random"
                f" bytes are required (RFC 7518 §3.2). Generate one with"
                f" python -c 'import secrets; print(secrets.token_urlsafe({minimum + 16}))'."
            )
        try:
            prepared = algorithm.prepare_key(raw)
        except InvalidKeyError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        kid = spec.kid or b64url(hashlib.sha256(b"flask-jwt-shield kid\x00" + raw).digest())[:16]
        return Key(kid, spec.alg, algorithm, prepared, prepared, symmetric=True)

    signing = verifying = None
    if spec.key is not None:
        signing = _load(algorithm, spec.key, where, spec.alg)
        if not hasattr(signing, "public_key"):
            raise ConfigurationError(
                f"{where}: expected a private key in PEM form for {spec.alg}, got a public key."
                f" Put it in {'public_key' if in_ring else ConfigKey.PUBLIC_KEY} instead."
            )
        verifying = signing.public_key()
    if spec.public_key is not None:
        public = _load(algorithm, spec.public_key, where, spec.alg)
        if hasattr(public, "public_key"):
            raise ConfigurationError(
                f"{where}: the public key setting holds a private key; publish only the public half."
            )
        if verifying is not None and _thumbprint(algorithm, public) != _thumbprint(algorithm, verifying):
            raise ConfigurationError(f"{where}: the public key does not belong to the private key.")
        verifying = public
    _check_strength(verifying, spec.alg, where)
    kid = spec.kid or _thumbprint(algorithm, verifying)
    return Key(kid, spec.alg, algorithm, signing, verifying, symmetric=False)


def _load(algorithm: Algorithm, pem: str | bytes, where: str, alg: str) -> t.Any:
    try:
        return algorithm.prepare_key(pem)
    except (InvalidKeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{where}: could not load a {alg} key from the PEM given ({exc}). Check that it is"
            f" an unencrypted PEM of the right type; 'flask jwt-shield keys generate --alg {alg}'"
            " prints a valid one."
        ) from None
    except Exception as exc:  # noqa: BLE001 - cryptography raises several types on garbage input
        raise ConfigurationError(f"{where}: could not load a {alg} key: {exc}") from None


def _check_strength(key: t.Any, alg: str, where: str) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise ConfigurationError(
                f"{where}: RSA keys need at least {RSA_MIN_BITS} bits; this one has {key.key_size}."
            )
    elif alg.startswith(("RS", "PS")):
        raise ConfigurationError(f"{where}: {alg} needs an RSA key.")
    if alg.startswith("ES") and not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigurationError(f"{where}: {alg} needs an EC key.")
    if alg == "EdDSA" and not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise ConfigurationError(f"{where}: EdDSA needs an Ed25519 or Ed448 key.")


def _thumbprint(algorithm: Algorithm, key: t.Any) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), stable across restarts."""
    return jwk_thumbprint(algorithm.to_jwk(key, as_dict=True))
