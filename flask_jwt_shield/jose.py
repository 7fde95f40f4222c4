"""The JOSE layer: what every reader of a JWS in this package needs, written once.

Base64url (RFC 7515 §2), strict JSON objects (RFC 7515 §5.2, RFC 8725 §3.8), the compact
serialization split (RFC 7515 §7.1), the one guarded signature check, RFC 7638 thumbprints,
the key-hygiene rules and the algorithm sets. A leaf: it imports nothing from the package,
so tokens, DPoP proofs, SETs, key rings and JWK Sets all parse alike.

Every refusal is a :class:`JOSEError` with a short ``reason``; each caller turns it into its
own error (an :class:`~flask_jwt_shield.errors.InvalidToken`, an
:class:`~flask_jwt_shield.errors.InvalidDPoPProof`, a refused SET, a skipped JWK).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import typing as t
from collections.abc import Mapping

from jwt.algorithms import Algorithm
from jwt.algorithms import get_default_algorithms

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PROOF_ALGORITHMS",
    "EC_CURVES",
    "EDDSA_CURVES",
    "HMAC_MIN_BYTES",
    "KEY_TYPES",
    "PRIVATE_MEMBERS",
    "PROOF_ALGORITHMS",
    "RESOURCE_SERVER_ALGORITHMS",
    "RSA_MIN_BITS",
    "SIGNING_ALGORITHMS",
    "THUMBPRINT_MEMBERS",
    "JOSEError",
    "b64decode",
    "b64url",
    "json_document",
    "json_object",
    "jwk_thumbprint",
    "segment_object",
    "signature_valid",
    "split_compact",
]


class JOSEError(ValueError):
    """A JOSE object that must not be accepted. ``reason`` says why, in a word:

    ``malformed`` (not a compact JWS, or not base64url), ``unsigned`` (an empty signature
    segment), ``malformed-json`` (not one strict JSON object), ``thumbprint`` (a JWK
    without the members of its thumbprint).
    """

    def __init__(self, reason: str, description: str | None = None) -> None:
        super().__init__(description or reason)
        self.reason = reason


# -- algorithms and key hygiene ---------------------------------------------------------

#: The key type of each algorithm's keys (RFC 7518 §3.1, §6.1; RFC 8037 §3.1), in the
#: order a key without ``alg`` tries them.
KEY_TYPES: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
    "HS256": "oct",
    "HS384": "oct",
    "HS512": "oct",
}
#: The curve of each ECDSA algorithm (RFC 7518 §3.4).
EC_CURVES: dict[str, str] = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
#: The curves of EdDSA (RFC 8037 §3.1).
EDDSA_CURVES = frozenset({"Ed25519", "Ed448"})
#: Every algorithm a token of the shield may be signed with (``JWT_SHIELD_ALGORITHM``,
#: ``JWT_SHIELD_KEYS``).
SIGNING_ALGORITHMS = frozenset(KEY_TYPES) - {"ES512"}
#: What a resource server may verify: asymmetric algorithms only (an HMAC key in a public
#: JWK Set would be a secret known to everyone who can read it).
RESOURCE_SERVER_ALGORITHMS = frozenset(a for a in SIGNING_ALGORITHMS if KEY_TYPES[a] != "oct")
#: Every algorithm a DPoP proof may use: asymmetric only (RFC 9449 §4.2: never ``none``,
#: never a MAC, whose key the server would have to share with the client).
PROOF_ALGORITHMS = frozenset(a for a in KEY_TYPES if KEY_TYPES[a] != "oct")
#: ``JWT_SHIELD_DPOP_ALGORITHMS`` by default.
DEFAULT_PROOF_ALGORITHMS = ("ES256", "ES384", "EdDSA", "PS256", "RS256")
#: PyJWT's implementation of each algorithm, by name (stateless; shared).
ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()

#: RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
#: The smallest RSA modulus accepted anywhere: configured keys, JWK Sets, DPoP proofs.
RSA_MIN_BITS = 2048
#: RFC 7518 §6.3.2, §6.2.2, RFC 8037 §2: private members of RSA, EC and OKP keys; RFC 7517
#: §4 / RFC 7518 §6.4.1: ``k`` is the secret of an ``oct`` key. A published JWK with any
#: of them publishes a private key.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
#: RFC 7638 §3.2: the members that make up a thumbprint, per key type.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


# -- base64url --------------------------------------------------------------------------

# A compact JWS, checked in one pass (a regular expression is about three times faster
# than split plus a set test, measured on a 300-byte token).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(segment: str) -> bytes:
    """Decode base64url without padding (RFC 7515 §2), strictly: padding, whitespace, ``+``
    and ``/`` are refused (``urlsafe_b64decode`` alone would take or skip them).

    :raises JOSEError: ``malformed``.
    """
    if not _SEGMENT.fullmatch(segment):
        raise JOSEError("malformed", "not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # a length of 4n + 1
        raise JOSEError("malformed", "not base64url") from None


# -- strict JSON ------------------------------------------------------------------------


class _Rejected(Exception):
    """A JSON document that must not be accepted (internal to the decoder)."""


def _no_duplicates(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 7515 §5.2 / RFC 8725 §3.8: ambiguous documents are rejected, not resolved.
        raise _Rejected("duplicate member")
    return result


def _no_constants(name: str) -> t.NoReturn:
    raise _Rejected(f"{name} is not JSON")


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def json_object(data: bytes) -> dict[str, t.Any]:
    """``data`` (UTF-8) as one JSON object: duplicate members, ``NaN`` and ``Infinity`` and
    any other top-level value are refused.

    :raises JOSEError: ``malformed-json``.
    """
    try:
        value = _decoder.decode(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, _Rejected, RecursionError):
        raise JOSEError("malformed-json") from None
    if not isinstance(value, dict):
        raise JOSEError("malformed-json")
    return value


def json_document(data: bytes) -> t.Any:
    """``data`` as any JSON value (encoding detected per RFC 8259 §8.1), ``NaN`` and
    ``Infinity`` refused: for fetched documents (JWK Sets, discovery), whose shape the
    caller checks.

    :raises JOSEError: ``malformed-json``.
    """
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, _Rejected, RecursionError):
        raise JOSEError("malformed-json") from None


def segment_object(segment: str) -> dict[str, t.Any]:
    """A JWS header or payload segment as its JSON object.

    :raises JOSEError: ``malformed`` (not base64url) or ``malformed-json``.
    """
    return json_object(b64decode(segment))


# -- the compact serialization ----------------------------------------------------------


def split_compact(token: str) -> tuple[str, str, str]:
    """The header, payload and signature segments of a compact JWS (RFC 7515 §7.1): three
    non-empty base64url segments, nothing else. Nothing is decoded yet, so that each
    caller decodes in its own order (the header first, the payload only once signed).

    :raises JOSEError: ``unsigned`` when the signature segment alone is missing (an
        ``alg: none`` token), ``malformed`` for anything else.
    """
    if _COMPACT.fullmatch(token):
        header, payload, signature = token.split(".")
        return header, payload, signature
    parts = token.split(".")
    if len(parts) == 3 and not parts[2]:
        raise JOSEError("unsigned")
    raise JOSEError("malformed")


def signature_valid(algorithm: Algorithm, key: t.Any, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``signing_input`` verifies with ``key`` (prepared by
    ``algorithm``). A signature that makes the library raise (wrong length, not DER, an
    out-of-range integer) is simply invalid: no exception escapes."""
    try:
        return bool(algorithm.verify(signing_input, key, signature))
    except Exception:  # noqa: BLE001 - a malformed signature may raise instead of returning False
        return False


# -- RFC 7638 ---------------------------------------------------------------------------


def jwk_thumbprint(jwk: Mapping[str, t.Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK: the ``cnf.jkt`` of a bound token,
    the ``kid`` derived for a configured key.

    :raises JOSEError: ``thumbprint``, for a key type other than EC, OKP or RSA or a
        missing member (a :class:`ValueError`).
    """
    members = THUMBPRINT_MEMBERS.get(t.cast(str, jwk.get("kty")))
    if members is None:
        raise JOSEError("thumbprint", f"unsupported key type {jwk.get('kty')!r}")
    required = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise JOSEError("thumbprint", f"the jwk's {name!r} member is missing")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())
