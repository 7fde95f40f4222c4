"""Sessions: issuing and refreshing.

A session (a refresh family, id ``sid``) starts at a login (:func:`issue_tokens`) and
accepts one refresh token at a time (:func:`refresh`). Rotation and reuse detection happen
atomically in the store (:meth:`Store.rotate`); this module checks what must hold before
anything rotates -- the token, its revocation, the session's binding (a DPoP key or a
fingerprint cookie), where the client is -- builds families and pairs, and says what each
rotation outcome means to the client. The face (:class:`~flask_jwt_shield.JWTShield`)
validates its arguments and delegates here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import secrets
import time
import typing as t

from flask import has_request_context
from flask import request

from . import geocheck
from . import revocation
from .config import ConfigKey
from .config import ShieldConfig
from .errors import InsufficientUserAuthentication
from .errors import InvalidDPoPProof
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import NotIssuedHere
from .errors import RateLimitExceeded
from .errors import RevokedToken
from .errors import StoreError
from .errors import StoreUnavailable
from .events import mask_ip
from .jose import b64url
from .signals import EventKind
from .state import ShieldState
from .statuslist.issuer import StatusListFull
from .stores import Family
from .stores import Rotation
from .stores.base import StatusClaim
from .tokens import ACCESS_TYPE
from .tokens import BINDING_CLAIMS
from .tokens import REFRESH_TYPE
from .tokens import Claims
from .tokens import TokenCodec
from .transport import REFRESH_COOKIE
from .transport import SAFE_METHODS
from .transport import check_csrf
from .transport import fingerprint_hash
from .transport import fingerprint_matches
from .transport import new_fingerprint
from .transport import send_nonce

logger = logging.getLogger("flask_jwt_shield")


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
        return cls(
            sid=family.sid,
            created_at=family.created_at,
            last_used_at=family.last_used_at,
            expires_at=family.expires_at,
            last_ip=family.last_ip,
            last_country=family.last_country,
        )


#: The claims that say how and when the person authenticated (RFC 9470 §6.1): written from
#: ``issue_tokens(acr=..., auth_time=...)``, kept in the session, never renewed by a refresh.
AUTHN_CLAIMS = frozenset({"acr", "auth_time"})

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
    kid: str | None = None,
) -> Family:
    """A family born now: its absolute lifetime starts here and rotation never extends it.
    ``kid``: the key that signs its refresh token."""
    return Family(
        sid=sid,
        sub=sub,
        created_at=now,
        expires_at=now + config.sessions.refresh_token_ttl,
        last_used_at=now,
        current_jti=refresh_jti,
        current_iat=now,
        last_ip=ip,
        last_country=country,
        claims=claims,
        kid=kid,
    )


def generation_jti(family: Family) -> str:
    """The ``jti`` of the access token of the family's current generation: 128 bits derived
    from its refresh token's ``jti`` (itself 128 random bits), the same on every rebuild."""
    return _generation_jti(family.sid, family.current_jti)


def _generation_jti(sid: str, refresh_jti: str) -> str:
    digest = hashlib.sha256(f"{sid}\x00{refresh_jti}\x00access".encode()).digest()
    return b64url(digest[:16])


def status_request(
    state: ShieldState,
    *,
    sub: str,
    sid: str | None,
    refresh_jti: str | None,
    iat: float,
    ttl: float,
    ends_at: float | None = None,
    jti: str | None = None,
) -> StatusClaim | None:
    """A first claim of a status-list index for the access token about to be issued, for
    the store to make along with its own write: ``None`` with ``JWT_SHIELD_STATUS_LIST``
    off. The token's ``jti`` is its generation's (``sid`` and ``refresh_jti``), else ``jti``."""
    issuer = state.status_list
    if issuer is None:
        return None
    token_jti = _generation_jti(sid, refresh_jti) if sid is not None and refresh_jti is not None else jti
    assert token_jti is not None
    return issuer.request(
        jti=token_jti, sub=sub, sid=sid, kid=_signing_kid(state), iat=iat, exp=math.floor(iat + ttl), ends_at=ends_at
    )


def claimed_reference(state: ShieldState, claim: StatusClaim | None) -> dict[str, t.Any] | None:
    """The ``status`` claim (draft-ietf-oauth-status-list) for ``claim``: the index the
    store's write got, or one claimed now.

    :raises StoreError: the store cannot be reached, or the list has no free index (a
        misconfiguration, logged): the caller applies its fail mode.
    """
    issuer = state.status_list
    if issuer is None or claim is None:
        return None
    try:
        return issuer.reference(claim)
    except StatusListFull as exc:
        logger.error("%s", exc)
        raise StoreError(str(exc)) from None


def status_reference(
    state: ShieldState,
    *,
    sub: str,
    sid: str | None,
    refresh_jti: str | None,
    iat: float,
    ttl: float,
    ends_at: float | None = None,
    jti: str | None = None,
) -> dict[str, t.Any] | None:
    """The ``status`` claim (draft-ietf-oauth-status-list) of the access token about to be
    issued, claimed on its own: ``None`` with ``JWT_SHIELD_STATUS_LIST`` off. The token's
    ``jti`` is its generation's (``sid`` and ``refresh_jti``), else ``jti``.

    :raises StoreError: the store cannot be reached, or the list has no free index (a
        misconfiguration, logged): the caller applies its fail mode.
    """
    claim = status_request(state, sub=sub, sid=sid, refresh_jti=refresh_jti, iat=iat, ttl=ttl, ends_at=ends_at, jti=jti)
    return claimed_reference(state, claim)


def sign_pair(
    codec: TokenCodec,
    config: ShieldConfig,
    family: Family,
    *,
    country: str | None,
    new_country: bool = False,
    fingerprint: str | None = None,
    status: t.Mapping[str, t.Any] | None = None,
) -> TokenPair:
    """The family's current generation: its access token and its refresh token.

    Both are rebuilt from the family: the refresh token with the same ``jti``, ``iat`` and
    ``exp``, the access token with the same ``iat`` and a ``jti`` derived from the
    generation. So a client answered within the reuse grace period holds exactly what the
    one that rotated first holds -- no second live branch, and no fresh access token (nor a
    fresh rate budget) however often a spent refresh token is presented in the grace
    (``status``, its status-list reference, is the generation's too). The
    family's binding (``cnf``: a DPoP key, ``fgp``: a fingerprint) goes into both tokens,
    so a refresh is checked against it before anything rotates.
    """
    extra = {k: v for k, v in family.claims.items() if k not in BINDING_CLAIMS}
    binding = {k: family.claims[k] for k in BINDING_CLAIMS if k in family.claims}
    # The session's authentication (RFC 9470 §6.1) rides in both tokens: a refresh never
    # renews it, and a refresh from elsewhere meets the step_up rung like a request does.
    authn = {k: family.claims[k] for k in AUTHN_CLAIMS if k in family.claims}
    if country is not None:
        extra["ctry"] = country  # where it was issued: the country-change detector compares
    access = codec.claims_for(
        family.sub,
        ttl=config.sessions.access_token_ttl,
        extra=extra,
        sid=family.sid,
        iat=family.current_iat,
        jti=generation_jti(family),
    )
    access.update(binding)
    if status is not None:
        access["status"] = dict(status)
    # The refresh token carries no application claims (they live in the family), only where
    # the session was last refreshed, so that a refresh from elsewhere is noticed too.
    refresh = codec.claims_for(
        family.sub,
        ttl=family.expires_at - family.current_iat,
        sid=family.sid,
        iat=family.current_iat,
        jti=family.current_jti,
        extra={"ctry": country} if country is not None else None,
    )
    refresh.update(binding)
    refresh.update(authn)
    return TokenPair(
        access_token=codec.encode(access, ACCESS_TYPE),
        refresh_token=codec.encode(refresh, REFRESH_TYPE),
        expires_in=config.sessions.access_token_ttl,
        sid=family.sid,
        # RFC 9449 §5: a token response for a bound token says so.
        token_type="DPoP" if "cnf" in binding else "Bearer",
        new_country=new_country,
        refresh_expires_at=family.expires_at,
        cookie_bound="fgp" in binding,
        fingerprint=fingerprint,
    )


# -- issuing ------------------------------------------------------------------------------------


def create_access_token(
    state: ShieldState, sub: str, claims: t.Mapping[str, t.Any] | None, expires_in: int | None
) -> str:
    """See :meth:`JWTShield.create_access_token <flask_jwt_shield.JWTShield.create_access_token>`."""
    refuse_in_resource_server_mode(state, "create_access_token")
    ttl = state.config.sessions.access_token_ttl if expires_in is None else expires_in
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"expires_in must be a positive number of seconds, not {expires_in!r}.")
    _refuse_status_claim(state, claims or {})
    jti = secrets.token_urlsafe(16)
    status = None
    try:
        iat = issue_time(state, sub)
        status = status_reference(state, sub=sub, sid=None, refresh_jti=None, iat=iat, ttl=ttl, jti=jti)
    except StoreError as exc:
        state.store_failed(exc, None)
        iat = time.time()
    payload = state.codec.claims_for(sub, ttl=ttl, extra=claims, iat=iat, jti=jti)
    if status is not None:
        payload["status"] = status
    return state.codec.encode(payload, ACCESS_TYPE)


def issue_tokens(
    state: ShieldState,
    sub: str,
    claims: t.Mapping[str, t.Any] | None,
    *,
    cookies: bool,
    acr: str | None = None,
    auth_time: float | None = None,
) -> TokenPair:
    """See :meth:`JWTShield.issue_tokens <flask_jwt_shield.JWTShield.issue_tokens>`."""
    refuse_in_resource_server_mode(state, "issue_tokens")
    config = state.config
    ip = request.remote_addr if has_request_context() else None
    extra = dict(claims or {})
    codec = state.codec
    codec.claims_for(sub, ttl=1, extra=extra)  # validates sub and claims before any write
    _refuse_status_claim(state, extra)
    authn = authentication(config, extra, acr, auth_time)
    extra.update(authn)
    binding: dict[str, t.Any] = {}
    fingerprint = nonce = None
    if cookies:
        if "cookies" not in config.request.token_locations:
            raise RuntimeError(f"issue_tokens(..., cookies=True) needs 'cookies' in {ConfigKey.TOKEN_LOCATIONS}.")
        fingerprint = new_fingerprint()
        binding["fgp"] = fingerprint_hash(fingerprint)
    else:
        jkt, nonce = token_request_proof(state, required=config.dpop.dpop == "required")
        if jkt is not None:
            binding["cnf"] = {"jkt": jkt}  # RFC 9449 §6.1
    country, new_country = geocheck.on_login(state, sub, ip, authn)
    sid = secrets.token_urlsafe(16)
    refresh_jti = secrets.token_urlsafe(16)
    dropped: list[str] = []
    session_claims = {**extra, **binding}
    status = None
    stored = False
    try:
        iat = issue_time(state, sub)
        family = new_family(
            config,
            sid=sid,
            sub=sub,
            refresh_jti=refresh_jti,
            now=iat,
            ip=ip,
            country=country,
            claims=session_claims,
            kid=_signing_kid(state),
        )
        # The first access token's index is claimed with the family's write (one
        # transaction or round trip); the bits of sessions it drops are set after.
        claim = status_request(
            state,
            sub=sub,
            sid=sid,
            refresh_jti=refresh_jti,
            iat=iat,
            ttl=config.sessions.access_token_ttl,
            ends_at=family.expires_at,
        )
        dropped = state.store.create_family(
            family,
            max_sessions=config.sessions.max_sessions,
            idle_ttl=config.sessions.refresh_idle_ttl,
            until=family.expires_at + config.sessions.access_token_ttl,
            status=claim,
        )
        stored = True
    except StoreError as exc:
        # Without the store no session can be recorded, so none can be refreshed: in
        # "open" mode the login still succeeds and the user logs in again later.
        state.store_failed(exc, None)
        iat = time.time()
        family = new_family(
            config, sid=sid, sub=sub, refresh_jti=refresh_jti, now=iat, ip=ip, country=country, claims=session_claims
        )
    if stored:
        try:
            for old in dropped:
                revocation.mark_status(state, "sid", old, until=family.expires_at + config.sessions.access_token_ttl)
            status = claimed_reference(state, claim)
        except StoreError as exc:
            state.store_failed(exc, None)  # "open": the pair is issued without a status claim
    for old in dropped:
        state.record(
            "family-revoked", None, subject=sub, sid=old, action="revoke_family", detail={"reason": "max-sessions"}
        )
    pair = sign_pair(
        codec, config, family, country=country, new_country=new_country, fingerprint=fingerprint, status=status
    )
    detail: dict[str, t.Any] = {"new_country": new_country} if new_country else {}
    if binding:
        detail["bound"] = "dpop" if "cnf" in binding else "fingerprint"
    state.record("session-started", None, subject=sub, sid=sid, jti=refresh_jti, country=country, detail=detail)
    if nonce is not None:
        send_nonce(nonce)
    return pair


def authentication(
    config: ShieldConfig, claims: t.Mapping[str, t.Any], acr: str | None, auth_time: float | None
) -> dict[str, t.Any]:
    """The ``acr`` and ``auth_time`` claims of a new session (RFC 9470 §6.1, OpenID Connect
    Core §2): ``auth_time`` defaults to now, the login the app just checked."""
    given = sorted(AUTHN_CLAIMS.intersection(claims))
    if given:
        raise ValueError(f"claims may not set {given}; pass issue_tokens(sub, acr=..., auth_time=...) instead.")
    if acr is not None and (not isinstance(acr, str) or not acr or not acr.isprintable()):
        raise ValueError(f"acr must be a non-empty string such as 'mfa', or None; not {acr!r}.")
    now = time.time()
    if auth_time is None:
        auth_time = now
    elif isinstance(auth_time, bool) or not isinstance(auth_time, (int, float)) or not math.isfinite(auth_time):
        raise ValueError(f"auth_time must be the epoch seconds of the authentication, not {auth_time!r}.")
    elif auth_time > now + config.keys.leeway:
        raise ValueError("auth_time lies in the future: pass the moment the person authenticated (default: now).")
    authn: dict[str, t.Any] = {"auth_time": math.floor(auth_time)}  # a NumericDate, like iat
    if acr is not None:
        authn["acr"] = acr
    return authn


# -- refreshing ---------------------------------------------------------------------------------


def refresh(state: ShieldState, refresh_token: str | None, *, device_key: str | None = None) -> TokenPair:
    """See :meth:`JWTShield.refresh <flask_jwt_shield.JWTShield.refresh>`. ``device_key``: the
    thumbprint of the DBSC key the request proved (:mod:`.dbsc` only), which a session bound
    to a device key needs."""
    refuse_in_resource_server_mode(state, "refresh")
    config = state.config
    ip = request.remote_addr if has_request_context() else None
    from_cookie = False
    if refresh_token is None and "cookies" in config.request.token_locations and has_request_context():
        refresh_token = request.cookies.get(REFRESH_COOKIE)
        from_cookie = refresh_token is not None
        if from_cookie and request.method not in SAFE_METHODS:
            try:
                check_csrf(request, request.environ)
            except InvalidRequest as exc:
                _refused(state, None, exc.reason)
                raise
    if not isinstance(refresh_token, str):
        raise InvalidGrant("A refresh token is required.", reason="missing")
    _limit(state, "address", ip, None)  # before any signature work
    try:
        claims, kid = state.codec.verify(refresh_token, REFRESH_TYPE)
    except InvalidToken as exc:
        _refused(state, None, exc.reason)
        raise InvalidGrant(exc.description, reason=exc.reason) from None
    try:
        revocation.check(state, claims, kid)
    except RevokedToken as exc:
        _refused(state, claims, exc.reason)
        raise InvalidGrant("The refresh token was revoked.", reason=exc.reason) from None
    _limit(state, "session", claims["sid"], claims)
    nonce = _check_binding(state, claims, from_cookie, device_key)
    sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
    country = None
    if state.geo is not None:
        # A refresh is a use too: allowed countries, the country the refresh token was
        # issued in, and travel are checked before anything is rotated.
        try:
            geocheck.on_use(state, claims, ip)
        except InsufficientUserAuthentication as exc:
            # A token endpoint answers 400 (RFC 6749 §5.2); the step-up is a new login.
            raise InvalidGrant(exc.description, reason=exc.reason) from None
        except RevokedToken as exc:
            raise InvalidGrant(exc.description, reason=exc.reason) from None
        location = state.geo.locate(ip)
        country = location.country if location is not None else None
    try:
        new_iat = issue_time(state, sub)
        new_jti = secrets.token_urlsafe(16)
        # The new generation's index is claimed with the rotation, and before it: a claim
        # that fails leaves the refresh token unspent, so the client's retry is not taken
        # for reuse; one that finds no free index ("unclaimed") claims apart, then rotates.
        claim = status_request(
            state,
            sub=sub,
            sid=sid,
            refresh_jti=new_jti,
            iat=new_iat,
            ttl=config.sessions.access_token_ttl,
            ends_at=float(claims["exp"]),  # the session's absolute end, as its refresh token says
        )

        def rotate(status: StatusClaim | None) -> Rotation:
            return state.store.rotate(
                sid,
                jti,
                new_jti=new_jti,
                new_iat=new_iat,
                now=time.time(),
                idle_ttl=config.sessions.refresh_idle_ttl,
                grace=config.sessions.refresh_reuse_grace,
                ip=ip,
                country=country,
                until=time.time() + config.sessions.refresh_token_ttl + config.sessions.access_token_ttl,
                kid=kid,
                new_kid=_signing_kid(state),
                status=status,
            )

        rotation = rotate(claim)
        if rotation.outcome == "unclaimed":
            status = claimed_reference(state, claim)  # more candidates, each on its own
            rotation = rotate(None)
        else:
            status = claimed_reference(state, claim)  # the index the rotation claimed
    except StoreError as exc:
        # Rotation cannot be proven single without the store: refuse in both modes,
        # or a stolen refresh token would mint sessions for the whole outage.
        state.store_failed(exc, claims)
        raise StoreUnavailable() from None
    family = rotation.family
    if rotation.outcome in ("rotated", "grace") and family is not None:
        if rotation.outcome == "grace" and state.status_list is not None:
            try:  # the current generation's own index (claimed when it was issued)
                status = status_reference(
                    state,
                    sub=sub,
                    sid=sid,
                    refresh_jti=family.current_jti,
                    iat=family.current_iat,
                    ttl=config.sessions.access_token_ttl,
                    ends_at=family.expires_at,
                )
            except StoreError as exc:
                state.store_failed(exc, claims)
                raise StoreUnavailable() from None
        pair = sign_pair(state.codec, config, family, country=country, status=status)
        state.record("token-refreshed", claims, detail={"grace": rotation.outcome == "grace"})
        if nonce is not None:
            send_nonce(nonce)
        return pair
    if rotation.outcome == "reused":
        try:
            revocation.mark_status(state, "sid", sid, until=state.revocation_horizon(time.time()))
        except StoreError as exc:
            state.store_failed(exc, claims)
        first, mode = rotation.first_use, config.events.event_ip
        state.record(
            "refresh-reused",
            claims,
            action="revoke_family",
            detail={
                "first_use": {"at": first.at, "ip": mask_ip(first.ip, mode)} if first else None,
                "second_use": {"at": time.time(), "ip": mask_ip(ip, mode)},
            },
        )
        state.record("family-revoked", claims, action="revoke_family", detail={"reason": "refresh-reused"})
        raise InvalidGrant(REFUSALS["reused"], reason="refresh-reused")
    _refused(state, claims, f"session-{rotation.outcome}")
    raise InvalidGrant(
        REFUSALS.get(rotation.outcome, "The refresh token is invalid."), reason=f"session-{rotation.outcome}"
    )


def _limit(state: ShieldState, name: t.Literal["session", "address"], key: str | None, claims: Claims | None) -> None:
    """The token endpoint's own limit per session (``JWT_SHIELD_REFRESH_RATE_LIMIT``) or per
    client address (``JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT``): 429 over it. Refreshing is
    rare for an honest client; a thief minting tokens or guessing is not."""
    limit = state.refresh_limits[0 if name == "session" else 1]
    if limit is None or not key:
        return
    try:
        retry_after = limit.hit(key)
    except StoreError as exc:
        state.store_failed(exc, claims)
        return
    if retry_after is None:
        return
    if state.first_in_a_while(("rate-limited", f"refresh-{name}", key)):
        state.record(
            "rate-limited",
            claims,
            action="deny",
            detail={"limit": limit.text, "key": f"refresh-{name}", "grant": "refresh_token"},
        )
    raise RateLimitExceeded(
        f"Too many refreshes from this {'session' if name == 'session' else 'address'}.",
        retry_after=retry_after,
        reason=f"refresh-{name}-limited",
    )


def _check_binding(state: ShieldState, claims: Claims, from_cookie: bool, device_key: str | None) -> str | None:
    """Before anything rotates: the session's fingerprint, DBSC key and DPoP key. Returns a
    DPoP nonce to send back, if any."""
    fgp = claims.get("fgp")
    if (fgp is not None or from_cookie) and not (has_request_context() and fingerprint_matches(request, fgp)):
        _refused(state, claims, "fingerprint-mismatch")
        raise InvalidGrant(
            "The refresh token's fingerprint cookie is missing or does not match.", reason="fingerprint-mismatch"
        )
    device = claims.get("dbsc")
    if device is not None and (device_key is None or not isinstance(device, dict) or device.get("jkt") != device_key):
        # Bound to the browser's key (DBSC): renewed only by the DBSC refresh endpoint,
        # after a proof by that key. A copied cookie set cannot refresh anywhere.
        _refused(state, claims, "dbsc-bound")
        raise InvalidGrant(
            "This session is bound to the browser's device key (DBSC); it renews only at the DBSC refresh endpoint.",
            reason="dbsc-bound",
        )
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt is not None:
        return token_request_proof(state, bound=jkt, claims=claims)[1]
    if state.config.dpop.dpop == "required" and fgp is None:
        # A session from before DPoP was required: it cannot become bound on the way.
        _refused(state, claims, "dpop-required", kind="dpop-rejected")
        raise InvalidGrant(
            "This session is not DPoP-bound; log in again with a DPoP proof.",
            reason="dpop-required",
            error="invalid_dpop_proof",
        )
    return None


def _refused(state: ShieldState, claims: Claims | None, reason: str, *, kind: EventKind = "token-rejected") -> None:
    """The event of a refresh refused before anything rotated (400 at the token endpoint)."""
    state.record(kind, claims, action="deny", detail={"reason": reason, "status": 400, "grant": "refresh_token"})


def token_request_proof(
    state: ShieldState, *, bound: str | None = None, required: bool = False, claims: Claims | None = None
) -> tuple[str | None, str | None]:
    """DPoP at a token endpoint (``issue_tokens``, ``refresh``; RFC 9449 §5).

    Returns the thumbprint of the key the request's proof proves (``None`` without a
    proof) and a nonce to send back, if any. ``bound``: the session's key, which the
    proof must be signed with; ``claims``: the refresh token's, for the event. Raises 400
    ``invalid_dpop_proof`` / ``use_dpop_nonce``.
    """
    verifier = state.dpop
    proof_header = request.headers.get("DPoP") if has_request_context() else None
    if verifier is None:
        if bound is not None:
            raise InvalidGrant("The session is DPoP-bound, and DPoP is off here.", reason="dpop-off")
        return None, None
    if proof_header is None and bound is None and not required:
        return None, None
    try:
        if not has_request_context():
            raise InvalidDPoPProof("A DPoP proof is required (the DPoP header).", reason="dpop-missing")
        url = verifier.request_url(request.environ) or ""
        proof = verifier.verify(proof_header, method=request.method, url=url)
        if bound is not None and proof.jkt != bound:
            raise InvalidDPoPProof(
                "The DPoP proof is signed by another key than the session is bound to.", reason="dpop-wrong-key"
            )
    except InvalidDPoPProof as exc:
        # Like a request's refusals: once a minute per client address and reason.
        who = claims["jti"] if claims is not None else (request.remote_addr if has_request_context() else "")
        if state.first_in_a_while(("dpop-rejected", who or "", exc.reason)):
            state.record("dpop-rejected", claims, action="deny", detail={"reason": exc.reason, "status": 400})
        error = InvalidGrant(exc.description, reason=exc.reason, error=exc.error)
        error.dpop_nonce = exc.dpop_nonce
        raise error from None
    except StoreError as exc:
        state.store_failed(exc, None)
        raise StoreUnavailable() from None  # an unproven binding is never issued
    return proof.jkt, proof.next_nonce


# -- reading -------------------------------------------------------------------------------------


def sessions(state: ShieldState, sub: str) -> list[Session]:
    """See :meth:`JWTShield.sessions <flask_jwt_shield.JWTShield.sessions>`."""
    families = state.store.families(sub, now=time.time(), idle_ttl=state.config.sessions.refresh_idle_ttl)
    return [Session.of(f) for f in families]


# -- shared rules ------------------------------------------------------------------------------


def refuse_in_resource_server_mode(state: ShieldState, method: str) -> None:
    if state.config.resource_server:
        raise NotIssuedHere(
            f"shield.{method}() is not available in resource-server mode ({ConfigKey.JWKS_URL}):"
            " the identity provider issues and refreshes the tokens, and owns the sessions"
            " (refresh-token reuse detection is its job). Send users to the provider to log in.",
            reason="resource-server-mode",
        )


def _refuse_status_claim(state: ShieldState, claims: t.Mapping[str, t.Any]) -> None:
    if state.status_list is not None and "status" in claims:
        raise ValueError(
            f"claims may not set 'status' while {ConfigKey.STATUS_LIST} is on: the shield writes it"
            " (the token's status-list reference). Name the application's claim otherwise."
        )


def _signing_kid(state: ShieldState) -> str | None:
    signing = state.keys.signing_key
    return signing.kid if signing is not None else None


def issue_time(state: ShieldState, sub: str) -> float:
    """Now, but strictly after any ``revoke_subject`` of ``sub`` (even within one clock tick)."""
    now = time.time()
    not_before = state.store.not_before(sub, now)
    if not_before is not None and now <= not_before:
        now = math.nextafter(not_before, math.inf)
    return now
