"""Refresh families: what a session is, and the token pairs it hands out.

A family (one login session, id ``sid``) accepts one refresh token at a time. Rotation and
reuse detection happen atomically in the store (:meth:`Store.rotate`); this module builds
families and pairs and says what each rotation outcome means to the client.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .config import ShieldConfig
from .stores import Family
from .tokens import ACCESS_TYPE
from .tokens import BINDING_CLAIMS
from .tokens import REFRESH_TYPE
from .tokens import TokenCodec


@dataclasses.dataclass(frozen=True, slots=True)
class TokenPair:
    """What :meth:`JWTShield.issue_tokens` and :meth:`JWTShield.refresh` return."""

    access_token: str
    refresh_token: str
    expires_in: int
    sid: str
    token_type: str = "Bearer"
    #: The login came from a country not in the subject's history (``flag`` action).
    new_country: bool = False
    #: When the session ends (epoch seconds): the refresh cookie's lifetime.
    refresh_expires_at: float | None = None
    #: The tokens are bound to a fingerprint cookie (``issue_tokens(..., cookies=True)``).
    cookie_bound: bool = False
    #: The fingerprint itself, at login only: :meth:`JWTShield.set_cookies` puts it in the
    #: ``__Host-jws_fgp`` cookie. Never in :meth:`as_dict`.
    fingerprint: str | None = dataclasses.field(default=None, repr=False)

    def as_dict(self) -> dict[str, t.Any]:
        """The OAuth 2.0 token response (RFC 6749 §5.1)."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A live refresh family, as :meth:`JWTShield.sessions` lists it."""

    sid: str
    created_at: float
    last_used_at: float
    expires_at: float
    last_ip: str | None
    last_country: str | None

    @classmethod
    def of(cls, family: Family) -> Session:
        return cls(sid=family.sid, created_at=family.created_at, last_used_at=family.last_used_at,
                   expires_at=family.expires_at, last_ip=family.last_ip, last_country=family.last_country)  # fmt: skip


#: What the client is told for each rotation outcome that is not a success.
REFUSALS = {
    "reused": "The refresh token was already used; the session has been revoked.",
    "revoked": "The session was revoked.",
    "expired": "The session expired.",
    "unknown": "The session is unknown.",
}


def new_family(
    config: ShieldConfig,
    *,
    sid: str,
    sub: str,
    refresh_jti: str,
    now: float,
    ip: str | None,
    country: str | None,
    claims: dict[str, t.Any],
) -> Family:
    """A family born now: its absolute lifetime starts here and rotation never extends it."""
    return Family(
        sid=sid, sub=sub, created_at=now, expires_at=now + config.refresh_token_ttl, last_used_at=now,
        current_jti=refresh_jti, current_iat=now, last_ip=ip, last_country=country, claims=claims,
    )  # fmt: skip


def sign_pair(
    codec: TokenCodec,
    config: ShieldConfig,
    family: Family,
    *,
    access_iat: float,
    country: str | None,
    new_country: bool = False,
    fingerprint: str | None = None,
) -> TokenPair:
    """A new access token, and the family's current refresh token.

    The refresh token is rebuilt from the family (same ``jti``, ``iat`` and ``exp``), so a
    client answered within the reuse grace period holds the same generation as the one that
    rotated first: there is never a second live branch. The family's binding (``cnf``: a
    DPoP key, ``fgp``: a fingerprint) goes into both tokens, so a refresh is checked
    against it before anything rotates.
    """
    extra = {k: v for k, v in family.claims.items() if k not in BINDING_CLAIMS}
    binding = {k: family.claims[k] for k in BINDING_CLAIMS if k in family.claims}
    if country is not None:
        extra["ctry"] = country  # where it was issued: the country-change detector compares
    access = codec.claims_for(family.sub, ttl=config.access_token_ttl, extra=extra, sid=family.sid, iat=access_iat)
    access.update(binding)
    # The refresh token carries no application claims (they live in the family), only where
    # the session was last refreshed, so that a refresh from elsewhere is noticed too.
    refresh = codec.claims_for(family.sub, ttl=family.expires_at - family.current_iat, sid=family.sid,
                               iat=family.current_iat, jti=family.current_jti,
                               extra={"ctry": country} if country is not None else None)  # fmt: skip
    refresh.update(binding)
    return TokenPair(
        access_token=codec.encode(access, ACCESS_TYPE),
        refresh_token=codec.encode(refresh, REFRESH_TYPE),
        expires_in=config.access_token_ttl,
        sid=family.sid,
        # RFC 9449 §5: a token response for a bound token says so.
        token_type="DPoP" if "cnf" in binding else "Bearer",
        new_country=new_country,
        refresh_expires_at=family.expires_at,
        cookie_bound="fgp" in binding,
        fingerprint=fingerprint,
    )
