"""Revocation, both directions.

The request-time check (:func:`check`: one store lookup, then every
``@shield.revocation_checker``), the operators' revocations (:func:`revoke_token`,
:func:`revoke_family`, :func:`revoke_subject`, :func:`revoke_key`: the face, the CLI, the
dashboard and the security-event receiver all call these), and the upper rungs of the action
ladder (:func:`act`), where a detector's finding ends in a revocation.
"""

from __future__ import annotations

import logging
import time
import typing as t

from .actions import Finding
from .config import ShieldConfig
from .errors import AccessDenied
from .errors import InsufficientUserAuthentication
from .errors import RevokedToken
from .errors import ShieldError
from .errors import StoreError
from .state import ShieldState
from .stores import Family
from .stores.base import StatusKind
from .tokens import Claims
from .tokens import issued_at

logger = logging.getLogger("flask_jwt_shield")

#: Why a token is revoked, as the error description says it.
REASONS = {
    "token": "token",
    "family": "session",
    "subject": "all tokens of the subject",
    "key": "signing key",
    "callback": "application check",
}


class CheckerFailed(Exception):
    """A ``revocation_checker`` raised: treated like an unreachable store."""


# -- the request-time check -------------------------------------------------------------------


def check(state: ShieldState, claims: Claims, kid: str) -> None:
    """Step 4: raise 401 (revoked) when the store or a registered checker says so.

    A store that cannot answer, or a checker that raises, goes through the fail mode: never
    a 200 by accident.
    """
    try:
        reason = revocation_reason(state, claims, kid, time.time())
    except StoreError as exc:
        state.store_failed(exc, claims)
        return
    except CheckerFailed as exc:
        logger.error("revocation_checker %s raised; treating it as an unreachable store", exc, exc_info=exc.__cause__)
        state.store_failed(exc, claims)
        return
    if reason is not None:
        raise revoked(reason)


def revocation_reason(state: ShieldState, claims: Claims, kid: str, now: float) -> str | None:
    """Why the token is revoked (a key of :data:`REASONS`), or ``None``.

    The store answers for the token's ``jti``, its family ``sid``, its subject's not-before
    instant and its key in one round trip; callbacks run only when the store says no.
    Raises :class:`~flask_jwt_shield.errors.StoreError` or :class:`CheckerFailed`.
    """
    reason = state.store.check(
        jti=claims["jti"], sid=claims.get("sid"), sub=claims["sub"], kid=kid, iat=issued_at(claims), now=now
    )
    if reason is not None:
        return reason
    for checker in state.registry.revocation_checkers:
        try:
            if checker(claims):
                return "callback"
        except ShieldError:
            raise  # a callback may answer with the shield's own errors on purpose
        except Exception as exc:
            raise CheckerFailed(getattr(checker, "__qualname__", repr(checker))) from exc
    return None


def revoked(reason: str) -> RevokedToken:
    """The 401 for a token revoked for ``reason``."""
    return RevokedToken(f"The access token was revoked ({REASONS[reason]}).", reason=f"revoked-{reason}")


# -- the operators' revocations ----------------------------------------------------------------


def revoke_token(
    state: ShieldState, token_or_jti: str, *, by: str | None = None, detail: dict[str, t.Any] | None = None
) -> str:
    """See :meth:`JWTShield.revoke_token <flask_jwt_shield.JWTShield.revoke_token>`."""
    now = time.time()
    sub = sid = None
    jti: str
    if token_or_jti.count(".") == 2:
        claims = state.codec.inspect(token_or_jti)
        jti, sub, sid = claims["jti"], claims["sub"], claims.get("sid")
        until = float(claims["exp"]) + state.config.keys.leeway + 1
    else:
        jti, until = token_or_jti, state.revocation_horizon(now)
    state.write(lambda: state.store.revoke("jti", jti, until))
    state.write(lambda: mark_status(state, "jti", jti, until=until))
    state.record("token-revoked", None, subject=sub, jti=jti, sid=sid, action="revoke", detail=_detail(by, detail))
    return jti


def revoke_family(
    state: ShieldState,
    sid: str,
    *,
    by: str | None = None,
    detail: dict[str, t.Any] | None = None,
    subject: t.Callable[[], str | None] | None = None,
) -> Family | None:
    """See :meth:`JWTShield.revoke_family <flask_jwt_shield.JWTShield.revoke_family>`.

    Returns the family as it was, ``None`` when the store never knew it; then ``subject()``,
    when given, names the subject for the event.
    """
    until = state.revocation_horizon(time.time())
    family = state.write(lambda: state.store.revoke_family(sid, until))
    state.write(lambda: mark_status(state, "sid", sid, until=until))
    sub = family.sub if family is not None else (subject() if subject is not None else None)
    state.record("family-revoked", None, subject=sub, sid=sid, action="revoke_family", detail=_detail(by, detail))
    return family


def revoke_subject(
    state: ShieldState,
    sub: str,
    *,
    by: str | None = None,
    detail: dict[str, t.Any] | None = None,
    at: float | None = None,
) -> None:
    """See :meth:`JWTShield.revoke_subject <flask_jwt_shield.JWTShield.revoke_subject>`.

    ``at``: the instant tokens issued at or before are revoked, when it is not now (a
    revocation made at the issuer and received in a SET: a login right after it must pass).
    The event's ``detail["not_before"]`` names the instant, for the Shared Signals transmitter.
    """
    now = time.time()
    if at is None or at > now:
        at = now
    instant = at
    until = state.revocation_horizon(now)
    state.write(lambda: state.store.revoke_subject(sub, instant, until))
    state.write(lambda: mark_status(state, "sub", sub, until=until, at=instant))
    merged = {**_detail(by, detail), "not_before": instant}
    state.record("subject-revoked", None, subject=sub, action="revoke_subject", detail=merged)


def revoke_key(state: ShieldState, kid: str, *, by: str | None = None, detail: dict[str, t.Any] | None = None) -> None:
    """See :meth:`JWTShield.revoke_key <flask_jwt_shield.JWTShield.revoke_key>`."""
    signing = state.keys.signing_key
    if signing is not None and signing.kid == kid:
        raise ValueError(
            f"Key {kid!r} still signs new tokens; revoking it would reject every new login."
            " Put a new key first in JWT_SHIELD_KEYS, deploy, then revoke this one."
        )
    until = state.revocation_horizon(time.time())
    state.write(lambda: state.store.revoke("kid", kid, until))
    state.write(lambda: mark_status(state, "kid", kid, until=until))
    state.record("key-revoked", None, kid=kid, action="revoke", detail=_detail(by, detail))


def mark_status(state: ShieldState, kind: StatusKind, value: str, *, until: float, at: float | None = None) -> None:
    """Set the status-list bits (draft-ietf-oauth-status-list) of every live access token
    that a revocation of ``kind`` ``value`` covers -- a subject's: issued at or before
    ``at`` -- so that the services reading the list refuse them too. Called after the
    store's own revocation; a no-op with ``JWT_SHIELD_STATUS_LIST`` off.

    :raises StoreError: the store cannot be reached.
    """
    if state.status_list is not None:
        state.status_list.revoke(kind, value, until=until, at=at)


def _detail(by: str | None, detail: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
    """An operator's revocation names where it came from (``"dashboard"``), when known."""
    merged = dict(detail or {})
    if by:
        merged["by"] = by
    return merged


# -- the action ladder -------------------------------------------------------------------------


def act(
    state: ShieldState,
    finding: Finding,
    claims: Claims | None,
    *,
    subject: str | None = None,
    login: t.Mapping[str, t.Any] | None = None,
) -> None:
    """Record a detector's finding and apply its action from the ladder.

    ``flag`` returns; ``step_up`` returns when the token's authentication is recent or
    strong enough (:func:`passes_step_up`), else raises 401
    ``insufficient_user_authentication`` (RFC 9470); ``deny`` raises 403; the ``revoke*``
    actions revoke first, then raise 401 (revoked). At login (no ``claims``; ``login``
    holds the ``acr`` and ``auth_time`` being issued) ``step_up`` judges that
    authentication the same way, every action above it denies the login, and
    ``revoke_subject`` also revokes the subject's existing tokens.
    """
    config = state.config
    action = finding.action
    effective = "flag" if config.request.monitor_only else action
    detail = finding.detail
    if effective != action:
        detail = {**detail, "monitor_only": True, "intended_action": action}
    sub = subject if subject is not None else (claims["sub"] if claims is not None else None)
    if effective == "step_up":
        _step_up(state, finding, claims, sub, detail, claims if claims is not None else (login or {}))
        return
    repeated = effective == "deny" and claims is not None and not state.first_in_a_while((finding.kind, claims["jti"]))
    if not repeated:
        state.record(finding.kind, claims, subject=sub, country=finding.country, action=effective, detail=detail)
    if effective == "flag":
        return
    if effective == "deny" or (claims is None and effective != "revoke_subject"):
        raise AccessDenied(finding.description, reason=finding.kind)
    now = time.time()
    until = state.revocation_horizon(now)
    why = {"reason": finding.kind}
    try:
        if effective == "revoke_subject" and sub is not None:
            state.store.revoke_subject(sub, now, until)
            mark_status(state, "sub", sub, until=until, at=now)
            state.record("subject-revoked", claims, subject=sub, action=effective, detail={**why, "not_before": now})
        elif claims is not None and effective == "revoke_family" and claims.get("sid"):
            state.store.revoke_family(claims["sid"], until)
            mark_status(state, "sid", claims["sid"], until=until)
            state.record("family-revoked", claims, action=effective, detail=why)
        elif claims is not None:
            token_until = float(claims["exp"]) + config.keys.leeway + 1
            state.store.revoke("jti", claims["jti"], token_until)
            mark_status(state, "jti", claims["jti"], until=token_until)
            state.record("token-revoked", claims, action="revoke", detail=why)
    except StoreError as exc:
        state.store_failed(exc, claims)
    if claims is None:
        raise AccessDenied(finding.description, reason=finding.kind)
    description = finding.description
    raise RevokedToken(
        f"The access token was revoked: {description[0].lower()}{description[1:]}", reason=f"revoked-{finding.kind}"
    )


def passes_step_up(config: ShieldConfig, authn: t.Mapping[str, t.Any], now: float) -> bool:
    """Whether a token (or a login) with these ``acr`` and ``auth_time`` claims passes the
    ``step_up`` rung: its ``acr`` is one of :data:`JWT_SHIELD_STEP_UP_ACR_VALUES`, or its
    ``auth_time`` lies within :data:`JWT_SHIELD_STEP_UP_MAX_AGE` seconds before ``now``.
    A missing or malformed claim never passes; an ``auth_time`` in the future beyond the
    leeway neither (it would pass forever)."""
    rung = config.step_up
    acr = authn.get("acr")
    if rung.acr_values is not None and isinstance(acr, str) and acr in rung.acr_values:
        return True
    auth_time = authn.get("auth_time")
    if rung.max_age is None or isinstance(auth_time, bool) or not isinstance(auth_time, (int, float)):
        return False
    return auth_time - config.keys.leeway <= now <= auth_time + rung.max_age


def _step_up(
    state: ShieldState,
    finding: Finding,
    claims: Claims | None,
    sub: str | None,
    detail: dict[str, t.Any],
    authn: t.Mapping[str, t.Any],
) -> None:
    """The ``step_up`` rung: record whether the authentication passed, raise the RFC 9470
    challenge when it did not. A token challenged again and again is recorded once a while."""
    config = state.config
    passed = passes_step_up(config, authn, time.time())
    outcome = "passed" if passed else "required"
    if claims is None or state.first_in_a_while((finding.kind, claims["jti"], outcome)):
        said = {"step_up": outcome, "acr": authn.get("acr"), "auth_time": authn.get("auth_time")}
        state.record(
            finding.kind, claims, subject=sub, country=finding.country, action="step_up", detail={**detail, **said}
        )
    if passed:
        return
    error = InsufficientUserAuthentication(
        f"{finding.description} Authenticate again to continue.",
        acr_values=config.step_up.acr_values,
        max_age=config.step_up.max_age,
        reason=f"step-up-{finding.kind}",
    )
    error.realm = config.request.realm
    raise error
