"""The revocation step: one store lookup, then every ``@shield.revocation_checker``."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

from .errors import RevokedToken
from .errors import ShieldError
from .stores import Store
from .tokens import Claims

Checker = Callable[[Claims], bool]

#: Why a token is revoked, as the error description says it.
REASONS = {
    "token": "token",
    "family": "session",
    "subject": "all tokens of the subject",
    "key": "signing key",
    "callback": "application check",
}


class CheckerFailed(Exception):
    """A ``revocation_checker`` raised: the pipeline treats it as an unreachable store."""


def revocation_reason(store: Store, checkers: Sequence[Checker], claims: Claims, kid: str, now: float) -> str | None:
    """Why the token is revoked (a key of :data:`REASONS`), or ``None``.

    The store answers for the token's ``jti``, its family ``sid``, its subject's not-before
    instant and its key in one round trip; callbacks run only when the store says no.
    Raises :class:`~flask_jwt_shield.errors.StoreError` or :class:`CheckerFailed`.
    """
    reason = store.check(jti=claims["jti"], sid=claims.get("sid"), sub=claims["sub"], kid=kid,
                         iat=claims["iat"], now=now)  # fmt: skip
    if reason is not None:
        return reason
    for checker in checkers:
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
