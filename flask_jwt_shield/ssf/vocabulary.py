"""The event types and subject identifiers both sides of a stream speak (a leaf).

CAEP 1.0 and RISC 1.0 event types, the SSF 1.0 stream events, the shield's own two event
types for what CAEP and RISC have no word for, and the RFC 9493 subject identifiers the
transmitter writes.
"""

from __future__ import annotations

import typing as t

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
#: The shield's own event types: one access token revoked (by ``jti``), one signing key
#: revoked (by ``kid``). CAEP and RISC name sessions and accounts, never a single token or a
#: key; a receiver that does not know these ignores them (RFC 8417 §2.2).
SHIELD = "urn:flask-jwt-shield:secevent:event-type:"

SESSION_REVOKED = CAEP + "session-revoked"
CREDENTIAL_CHANGE = CAEP + "credential-change"
SESSIONS_REVOKED = RISC + "sessions-revoked"
ACCOUNT_DISABLED = RISC + "account-disabled"
ACCOUNT_PURGED = RISC + "account-purged"
TOKEN_REVOKED = SHIELD + "token-revoked"
KEY_REVOKED = SHIELD + "key-revoked"
VERIFICATION = SSF + "verification"
STREAM_UPDATED = SSF + "stream-updated"

#: RFC 8935 push and RFC 8936 poll, as SSF 1.0 names the delivery methods.
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"


def iss_sub(iss: str, sub: str) -> dict[str, t.Any]:
    """RFC 9493 §3.2.5: a user named by issuer and subject."""
    return {"format": "iss_sub", "iss": iss, "sub": sub}


def opaque(value: str) -> dict[str, t.Any]:
    """RFC 9493 §3.2.6: an identifier only the two sides understand (a session id, a key id)."""
    return {"format": "opaque", "id": value}


def session(iss: str, sub: str | None, sid: str) -> dict[str, t.Any]:
    """SSF 1.0 §3.3 complex subject: the session ``sid`` of the user ``sub`` (when known)."""
    subject: dict[str, t.Any] = {"format": "complex", "session": opaque(sid)}
    if sub is not None:
        subject["user"] = iss_sub(iss, sub)
    return subject


def user(iss: str, sub: str) -> dict[str, t.Any]:
    """SSF 1.0 §3.3 complex subject naming only a user: every session of that user."""
    return {"format": "complex", "user": iss_sub(iss, sub)}
