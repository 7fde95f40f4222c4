"""Subject identifiers (RFC 9493) that name a user of this app: the one rule for calling the
app's ``resolve_subject``, shared by the SET receiver and the global token revocation."""

from __future__ import annotations

import logging
import typing as t

from .errors import StoreUnavailable

logger = logging.getLogger("flask_jwt_shield")

#: ``resolve_subject(subject) -> sub or None``: maps a subject identifier (RFC 9493: ``email``,
#: ``phone_number``, ``opaque`` ...) that is not ``iss_sub`` of the tokens' issuer to the
#: ``sub`` of the application's tokens.
SubjectResolver = t.Callable[[dict[str, t.Any]], "str | None"]


def resolve(resolver: SubjectResolver | None, identifier: t.Mapping[str, t.Any], what: str) -> str | None:
    """The ``sub`` that ``resolver`` maps ``identifier`` to, ``None`` when it maps nothing.

    A resolver that raises is an unreachable user directory: 503 (the sender retries), never
    a 500 and never "no such user". ``what`` names the caller in the log.
    """
    if resolver is None:
        return None
    try:
        resolved = resolver(dict(identifier))
    except Exception:
        logger.exception("resolve_subject raised for %s", what)
        raise StoreUnavailable() from None
    return resolved if isinstance(resolved, str) and resolved else None
