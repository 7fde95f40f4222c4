"""Issuing and verifying tokens, and the cache of tokens already verified.

The signature work is PyJWT's (each key prepared once by its ``Algorithm``); the compact
serialization is parsed strictly (by :mod:`.jose`), so that the hot path does no more than
it must:

* the algorithm comes from the key ring, never from the token: the header's ``alg`` must
  match the algorithm of the key its ``kid`` names (RFC 8725 §3.1, §3.2);
* ``typ`` is checked explicitly (RFC 8725 §3.11, RFC 9068 §4), so a refresh or ID token is
  never an access token;
* ``crit`` is refused (RFC 7515 §4.1.11: we understand no extension), ``jku``/``x5u``/
  ``jwk``/``x5c`` are ignored (keys never come from the token);
* registered claims are required, typed and finite (a ``NaN`` ``exp`` is not "never");
* the size limit applies before any decoding.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import secrets
import time
import typing as t
from collections.abc import Mapping

from .cache import bounded_put
from .config import ShieldConfig
from .errors import ExpiredToken
from .errors import InvalidToken
from .jose import JOSEError
from .jose import b64decode
from .jose import b64url
from .jose import segment_object
from .jose import signature_valid
from .jose import split_compact
from .keys import Key
from .keys import KeyRing

if t.TYPE_CHECKING:
    from .jwks import JWKSClient

ACCESS_TYPE = "at+jwt"
REFRESH_TYPE = "refresh+jwt"
# RFC 9068 §4: "application/at+jwt" is the same type; media types compare case-insensitively.
_TYPE_ALIASES = {
    "at+jwt": ACCESS_TYPE,
    "application/at+jwt": ACCESS_TYPE,
    "refresh+jwt": REFRESH_TYPE,
    "application/refresh+jwt": REFRESH_TYPE,
}

#: Claims the shield writes itself; an application's extra claims may not replace them.
#: The issue time with sub-second precision, a private claim beside the integer ``iat``
#: (RFC 7519 NumericDates are integers to standard verifiers): ``revoke_subject`` at T
#: rejects exactly the tokens issued before T, also within T's second.
PRECISE_IAT = "shield_iat"
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "typ", "cnf", "fgp", "dbsc", PRECISE_IAT}
)
#: Claims that bind a session's tokens to a sender: a DPoP key (``cnf``, RFC 9449 §6.1)
#: or a browser's fingerprint cookie (``fgp``), and a browser's DBSC device key (``dbsc``).
#: Written by the shield only.
BINDING_CLAIMS = ("cnf", "fgp", "dbsc")

# How far in the future an ``iat`` may lie beyond the leeway: tokens issued on this host
# may carry an ``iat`` a hair after "now" when a subject was revoked in the same instant.
_IAT_TOLERANCE = 1.0
_MAX_TIME = 2**53  # beyond this, integers lose precision as floats: no real date is there
# Resource-server mode: provider profiles whose header typ is plain "JWT"; a claim rule per
# profile tells their access tokens from their ID and refresh tokens.
_JWT_PROFILE = "jwt-profile"


def _keycloak_access(claims: Mapping[str, t.Any]) -> bool:
    return claims.get("typ") == "Bearer"  # ID tokens say "ID", refresh tokens "Refresh"


def _entra_access(claims: Mapping[str, t.Any]) -> bool:
    # v2.0 access tokens name the client (azp) and carry scp or roles; ID tokens have neither
    # azp nor scp.
    return (
        claims.get("ver") == "2.0"
        and isinstance(claims.get("azp"), str)
        and (isinstance(claims.get("scp"), str) or isinstance(claims.get("roles"), list))
    )


_PROFILE_RULES: dict[str, t.Callable[[Mapping[str, t.Any]], bool]] = {
    "keycloak": _keycloak_access,
    "entra": _entra_access,
}
# The orders of the P-256 and P-384 groups (SEC 2 §2.4.2, §2.5.1), for low-s normalisation.
_EC_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
}

_READ_ONLY = (
    "The claims of a verified token are read-only: the next request with the same token"
    " reuses them. Copy them first to change them: dict(get_claims())."
)


def issued_at(claims: Mapping[str, t.Any]) -> float:
    """When the token was issued, as precisely as it says: its :data:`PRECISE_IAT` when that
    lies within its ``iat``'s second (the shield's own tokens), else ``iat`` (an identity
    provider's token: ``revoke_subject`` at T then rejects ``iat <= floor(T)``)."""
    iat = claims["iat"]
    precise = claims.get(PRECISE_IAT)
    if type(precise) is float and iat <= precise < iat + 1:
        return precise
    return t.cast(float, iat)


class Claims(dict[str, t.Any]):
    """The claims of a verified token: a :class:`dict` to every reader, read-only to writers.

    A view can return it, pass it to :func:`~flask.jsonify` or :func:`json.dumps`, test
    ``isinstance(claims, dict)``, copy it with ``dict(claims)`` or ``claims | {...}`` (both
    give a plain, changeable ``dict``). Changing it in place raises :class:`TypeError`, and
    so does changing a nested object or array (:class:`ClaimsList`), because the
    verified-token cache hands the same object to the token's next request.
    """

    __slots__ = ()

    def __setitem__(self, key: str, value: t.Any) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def __delitem__(self, key: str) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def __ior__(self, other: t.Any) -> t.NoReturn:  # type: ignore[misc]
        raise TypeError(_READ_ONLY)

    def clear(self) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def pop(self, *args: t.Any) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def popitem(self) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def setdefault(self, *args: t.Any) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    def update(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    # copy, deepcopy and pickle rebuild a dict item by item; give them plain dicts instead.
    def __copy__(self) -> dict[str, t.Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, t.Any]) -> dict[str, t.Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[type[dict[str, t.Any]], tuple[dict[str, t.Any]]]:
        return dict, (dict(self),)


class ClaimsList(list[t.Any]):
    """A JSON array inside verified claims: a :class:`list` to readers, read-only to writers."""

    __slots__ = ()

    def _refuse(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise TypeError(_READ_ONLY)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = clear = sort = reverse = pop = _refuse

    def __copy__(self) -> list[t.Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, t.Any]) -> list[t.Any]:
        return copy.deepcopy(list(self), memo)

    def __reduce__(self) -> tuple[type[list[t.Any]], tuple[list[t.Any]]]:
        return list, (list(self),)


def _number(claims: Mapping[str, t.Any], name: str) -> float:
    value: t.Any = claims.get(name)
    kind = type(value)  # not isinstance: bool is an int, and True is no time
    if kind is float:
        valid = math.isfinite(value)
    else:
        # An integer too large for a float would raise in every comparison below.
        valid = kind is int and -_MAX_TIME < value < _MAX_TIME
    if not valid:
        raise InvalidToken(f"The token's '{name}' claim is missing or not a number.", reason=f"bad-{name}")
    return t.cast(float, value)


def _string(claims: Mapping[str, t.Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidToken(f"The token's '{name}' claim is missing or invalid.", reason=f"bad-{name}")
    return value


def signature_name(alg: str, signature: bytes) -> str:
    """The name of a token without ``jti``: SHA-256 of its signature segment, base64url, 22
    characters (DESIGN.md "Resource-server mode").

    The segment is re-encoded canonically first, and an ECDSA signature brought to its low-s
    form: otherwise a thief could rename a token (and escape its revocation and its rate
    limit) by flipping base64 padding bits or replacing ``s`` with ``n - s``, both of which
    leave the signature valid.
    """
    order = _EC_ORDERS.get(alg)
    if order is not None and len(signature) % 2 == 0:
        half = len(signature) // 2
        s_value = int.from_bytes(signature[half:], "big")
        if s_value > order // 2:
            signature = signature[:half] + (order - s_value).to_bytes(half, "big")
    return b64url(hashlib.sha256(b64url(signature).encode("ascii")).digest())[:22]


class TokenCodec:
    """Signs and verifies the tokens of one app.

    :param remote: resource-server mode: the identity provider's JWK Set, which then
        provides every verification key (``keys`` only carries the accepted algorithms).
    """

    def __init__(self, config: ShieldConfig, keys: KeyRing, remote: JWKSClient | None = None) -> None:
        self.config = config
        self.keys = keys
        self.remote = remote
        self._generation = remote.generation if remote is not None else 0
        self._headers: dict[str, tuple[Key, str]] = {}
        # token -> (claims, exp, nbf); bounded, oldest entry dropped first.
        self._verified: dict[str, tuple[Claims, float, float, str]] = {}
        self._cache_size = config.request.token_cache_size
        accepted = config.remote.accepted_types
        self._types = (
            dict(_TYPE_ALIASES)
            if "at+jwt" in accepted
            else {k: v for k, v in _TYPE_ALIASES.items() if v != ACCESS_TYPE}
        )
        self._jwt_rules = tuple(rule for name, rule in _PROFILE_RULES.items() if name in accepted)
        if self._jwt_rules:
            self._types["jwt"] = _JWT_PROFILE

    # -- issuing ---------------------------------------------------------------------

    def encode(self, payload: Mapping[str, t.Any], typ: str) -> str:
        """Sign ``payload`` with the signing key, with ``alg``, ``kid`` and ``typ`` headers."""
        key = self.keys.signing_key
        if key is None:
            if self.remote is not None:
                raise RuntimeError(
                    "This app is a resource server (JWT_SHIELD_JWKS_URL): the identity provider"
                    " issues and refreshes its tokens, so the shield issues none."
                )
            raise RuntimeError(
                "This app has only public keys (verify-only mode) and cannot issue tokens."
                " Configure JWT_SHIELD_PRIVATE_KEY or a 'key' in JWT_SHIELD_KEYS to issue."
            )
        header = {"alg": key.alg, "kid": key.kid, "typ": typ}
        segments = [
            b64url(json.dumps(header, separators=(",", ":")).encode()),
            b64url(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()),
        ]
        signing_input = ".".join(segments).encode("ascii")
        signature = key.algorithm.sign(signing_input, key.signing)
        return f"{segments[0]}.{segments[1]}.{b64url(signature)}"

    def claims_for(
        self,
        sub: str,
        *,
        ttl: float,
        extra: Mapping[str, t.Any] | None = None,
        sid: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
    ) -> dict[str, t.Any]:
        """The registered claims of a new token (plus ``extra``)."""
        if not isinstance(sub, str) or not sub:
            raise TypeError(f"sub must be a non-empty string, not {sub!r}; use str(user.id).")
        payload: dict[str, t.Any] = {}
        if extra:
            clash = RESERVED_CLAIMS.intersection(extra)
            if clash:
                raise ValueError(f"claims may not set {sorted(clash)}; the shield writes them.")
            payload.update(extra)
        now = time.time() if iat is None else iat
        if self.config.keys.issuer is not None:
            payload["iss"] = self.config.keys.issuer
        payload["sub"] = sub
        if self.config.keys.audience is not None:
            payload["aud"] = self.config.keys.audience
        # Integer NumericDates, as joserfc and Authlib expect with no leeway; the precise
        # instant, in its own claim, lets revoke_subject() separate tokens within one second.
        payload["iat"] = math.floor(now)
        payload[PRECISE_IAT] = now
        payload["nbf"] = math.floor(now)
        payload["exp"] = math.floor(now + ttl)
        payload["jti"] = jti or secrets.token_urlsafe(16)  # 128 random bits
        if sid is not None:
            payload["sid"] = sid
        return payload

    # -- verifying -------------------------------------------------------------------

    def verify(self, token: str, typ: str = ACCESS_TYPE) -> tuple[Claims, str]:
        """Verify ``token`` as a token of type ``typ``; return its claims and its key's ``kid``.

        Raises :class:`InvalidToken` or :class:`ExpiredToken`. Access tokens that verified
        once are served from a bounded cache; their times are checked on every use.
        """
        remote = self.remote
        if remote is not None:
            if time.time() >= remote.next_check:
                remote.refresh_if_due()  # one thread fetches when due; no other waits for it
            if remote.generation != self._generation:
                self._forget_keys(remote.generation)
        if typ == ACCESS_TYPE:
            cached = self._verified.get(token)
            if cached is not None:
                claims, exp, nbf, kid = cached
                self._check_time(exp, nbf, token)
                return claims, kid
        payload, kid = self._verify_uncached(token, typ)
        claims = frozen(payload)
        exp = payload["exp"]
        nbf = payload.get("nbf", -math.inf)
        self._check_time(exp, nbf, None)
        if typ == ACCESS_TYPE and self._cache_size:
            bounded_put(self._verified, token, (claims, exp, nbf, kid), self._cache_size)
        return claims, kid

    def verified_before(self, token: str) -> bool:
        """Whether ``token`` is in the verified-token cache: it verified as an access token
        (its times are still checked on every use)."""
        return token in self._verified

    def _forget_keys(self, generation: int) -> None:
        """The provider's keys changed: what was verified with a removed key must not stay."""
        self._generation = generation
        self._headers = {}
        self._verified = {}

    def inspect(self, token: str) -> Claims:
        """Verify signature and type (access or refresh) of ``token`` but not its times."""
        return frozen(self._verify_uncached(token, None)[0])

    def _check_time(self, exp: float, nbf: float, cached_token: str | None) -> None:
        now = time.time()
        leeway = self.config.keys.leeway
        if now >= exp + leeway:
            if cached_token is not None:
                self._verified.pop(cached_token, None)
            raise ExpiredToken()
        if nbf > now + leeway:
            raise InvalidToken("The token is not valid yet.", reason="not-yet-valid")

    def _verify_uncached(self, token: str, typ: str | None) -> tuple[dict[str, t.Any], str]:
        if len(token) > self.config.request.max_token_bytes:
            raise InvalidToken("The token is too large.", reason="too-large")
        try:
            header_segment, payload_segment, signature_segment = split_compact(token)
        except JOSEError as exc:
            if exc.reason == "unsigned":
                raise InvalidToken("The token is not signed.", reason="unsigned") from None
            raise InvalidToken("The token is malformed.", reason="malformed") from None
        key, token_type = self._key_for(header_segment)
        profile = token_type
        if token_type == _JWT_PROFILE:
            token_type = ACCESS_TYPE  # if a profile's claim rule says so, checked below
        if typ is not None and token_type != typ:
            raise InvalidToken(
                "The token is not an access token." if typ == ACCESS_TYPE else "The token is not a refresh token.",
                reason="wrong-type",
            )
        try:
            signature = b64decode(signature_segment)
        except JOSEError:
            raise InvalidToken("The token is malformed.", reason="malformed") from None
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        if not signature_valid(key.algorithm, key.verifying, signing_input, signature):
            raise InvalidToken("The token's signature is invalid.", reason="bad-signature")
        try:
            payload = segment_object(payload_segment)
        except JOSEError as exc:  # "malformed" (base64url) or "malformed-json"
            raise InvalidToken("The token is malformed.", reason=exc.reason) from None
        if self.remote is not None:
            if profile == _JWT_PROFILE and not any(rule(payload) for rule in self._jwt_rules):
                # The provider's ID and refresh tokens have header typ JWT too; the claims tell.
                raise InvalidToken("The token is not an access token.", reason="wrong-type")
            if "jti" not in payload:
                payload["jti"] = signature_name(key.alg, signature)
        self._check_claims(payload, token_type)
        return payload, key.kid

    def _key_for(self, header_segment: str) -> tuple[Key, str]:
        cached = self._headers.get(header_segment)
        if cached is not None:
            return cached
        try:
            header = segment_object(header_segment)
        except JOSEError as exc:  # "malformed" (base64url) or "malformed-json"
            raise InvalidToken("The token is malformed.", reason=exc.reason) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.keys.algorithms:
            raise InvalidToken("The token's algorithm is not accepted.", reason="bad-alg")
        if "crit" in header:
            raise InvalidToken("The token uses an unsupported critical extension.", reason="crit")
        kid = header.get("kid")
        raw_type = header.get("typ")
        # Type before key: a token of the wrong kind never makes the provider's set refetch.
        token_type = self._types.get(raw_type.lower()) if isinstance(raw_type, str) else None
        if self.remote is not None:
            if token_type is None:
                raise InvalidToken("The token is not an access token.", reason="wrong-type")
            if not isinstance(kid, str) or not kid or len(kid) > 255:
                raise InvalidToken("The token's key is unknown.", reason="unknown-kid")
            key = self.remote.key(kid, alg)  # may refetch once, or raise KeysUnavailable (503)
        else:
            found = self.keys.get(kid) if isinstance(kid, str) else None
            if found is None:
                raise InvalidToken("The token's key is unknown.", reason="unknown-kid")
            key = found
        if key.alg != alg:
            raise InvalidToken("The token's algorithm does not match its key.", reason="bad-alg")
        if token_type is None:
            raise InvalidToken("The token is not an access token.", reason="wrong-type")
        if len(self._headers) < 256:  # headers vary by kid and typ only; don't let garbage grow it
            self._headers[header_segment] = (key, token_type)
        return key, token_type

    def _check_claims(self, claims: dict[str, t.Any], token_type: str) -> None:
        exp = _number(claims, "exp")
        iat = _number(claims, "iat")
        if "nbf" in claims:
            _number(claims, "nbf")
        _string(claims, "sub")
        _string(claims, "jti")
        if token_type == REFRESH_TYPE or "sid" in claims:
            _string(claims, "sid")
        if iat > time.time() + self.config.keys.leeway + _IAT_TOLERANCE:
            raise InvalidToken("The token was issued in the future.", reason="iat-in-future")
        if exp < iat:
            raise InvalidToken("The token expires before it was issued.", reason="bad-exp")
        issuer = self.config.keys.issuer
        if issuer is not None and claims.get("iss") != issuer:
            raise InvalidToken("The token's issuer is not accepted.", reason="bad-iss")
        audience = self.config.keys.audience
        aud = claims.get("aud")
        if audience is None:
            if aud is not None:
                # RFC 7519 §4.1.3: a token meant for a named audience is not meant for us.
                raise InvalidToken("The token's audience is not accepted.", reason="bad-aud")
        elif not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise InvalidToken("The token's audience is not accepted.", reason="bad-aud")


def frozen(claims: dict[str, t.Any]) -> Claims:
    """``claims`` as :class:`Claims`, nested objects and arrays included, so that no view
    function can change what the verified-token cache holds for the next request."""
    return Claims((key, _frozen_value(value)) for key, value in claims.items())


def _frozen_value(value: t.Any) -> t.Any:
    if type(value) is dict:
        return frozen(value)
    if type(value) is list:
        return ClaimsList(_frozen_value(item) for item in value)
    return value  # str, int, float, bool, None: immutable already
