"""Exceptions, and how request-time ones render themselves (RFC 6750 §3).

Every request-time failure is a werkzeug :class:`~werkzeug.exceptions.HTTPException`
subclass, so Flask renders it with the right status, a JSON body and the
``WWW-Authenticate`` header without any handler, while ``@app.errorhandler(InvalidToken)``
or ``@app.errorhandler(401)`` still let an application take over.
"""

from __future__ import annotations

import json
import re
import typing as t
from datetime import datetime

from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.exceptions import TooManyRequests
from werkzeug.exceptions import Unauthorized
from werkzeug.http import http_date

__all__ = [
    "AccessDenied",
    "ConfigurationError",
    "ExpiredToken",
    "InsufficientUserAuthentication",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "KeysUnavailable",
    "MissingToken",
    "NotIssuedHere",
    "RateLimitExceeded",
    "RevokedToken",
    "ShieldError",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedGrantType",
    "UseDPoPNonce",
]

# RFC 6750 §3: error_description is limited to %x20-21 / %x23-5B / %x5D-7E, so it can
# sit inside a quoted-string without escaping. Anything else is replaced.
_UNSAFE_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    return '"' + _UNSAFE_DESCRIPTION.sub("?", value) + '"'


class ConfigurationError(ValueError):
    """A ``JWT_SHIELD_*`` setting is missing, of the wrong type or unsafe.

    Raised by :meth:`JWTShield.init_app`, never during a request. The message names the
    key and says how to fix it.
    """


class StoreError(Exception):
    """A store could not be reached or answered with an error.

    Not an HTTP error: the pipeline turns it into :class:`StoreUnavailable` or lets the
    request through, as ``JWT_SHIELD_FAIL_MODE`` says.
    """


class ShieldError(HTTPException):
    """Base class of every error the shield raises during a request.

    :param description: a human-readable sentence for ``error_description``. It never
        contains a token.
    :param reason: a short machine-readable reason recorded in the security event
        (``"expired"``, ``"bad-signature"`` ...). Not sent to the client.
    """

    #: The OAuth 2.0 / RFC 6750 error code, or ``None`` where none is sent.
    error: str | None = None
    #: The ``WWW-Authenticate`` scheme, or ``None`` for no challenge.
    scheme: str | None = None
    #: Set by the pipeline from ``JWT_SHIELD_REALM``.
    realm: str = "api"
    #: Whole seconds (or an instant) for a ``Retry-After`` header; ``None`` for none. The
    #: same attribute as werkzeug's 429 and 503 exceptions.
    retry_after: datetime | int | None = None
    #: Set by the pipeline when DPoP is on: ``(mode, "ES256 PS256 ...")``. ``optional``
    #: adds a ``DPoP`` challenge beside the ``Bearer`` one; ``required`` sends only
    #: ``DPoP`` (RFC 9449 §7.1: "algs" names the proof algorithms accepted).
    dpop: tuple[str, str] | None = None
    #: A fresh server nonce for a ``DPoP-Nonce`` header (RFC 9449 §8, §9), or ``None``.
    dpop_nonce: str | None = None
    #: Set by the pipeline when the app serves RFC 9728 metadata: its URL, named in every
    #: challenge (``resource_metadata="..."``, RFC 9728 §5.1) so a client finds where to
    #: get a token.
    resource_metadata: str | None = None
    #: More for the security event than ``reason`` says (never sent to the client), or
    #: ``None``: e.g. the status list and index that revoked a token.
    detail: dict[str, t.Any] | None = None

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(description)
        self.reason = reason or self.error or "error"

    def challenges(self) -> list[str]:
        """Every ``WWW-Authenticate`` value, first the one that carries the error."""
        if self.scheme is None:
            return []
        scheme = self.scheme
        dpop = self.dpop
        if dpop is not None and dpop[0] == "required":
            scheme = "DPoP"  # a Bearer token is never enough here: say so
        params = [f"realm={_quoted(self.realm)}"]
        if self.error is not None:
            params.append(f"error={_quoted(self.error)}")
            if self.description:
                params.append(f"error_description={_quoted(self.description)}")
        if scheme == "DPoP" and dpop is not None:
            params.append(f"algs={_quoted(dpop[1])}")
        metadata = f", resource_metadata={_quoted(self.resource_metadata)}" if self.resource_metadata else ""
        challenges = [f"{scheme} " + ", ".join(params) + metadata]
        if scheme != "DPoP" and dpop is not None:
            # RFC 9449 §7.1: a server accepting both schemes may send one challenge each.
            challenges.append(f"DPoP realm={_quoted(self.realm)}, algs={_quoted(dpop[1])}{metadata}")
        return challenges

    def body(self) -> dict[str, str]:
        """The JSON body: ``{"error": ..., "error_description": ...}``."""
        data = {"error": self.error or self.name.lower().replace(" ", "_")}
        if self.description:
            data["error_description"] = self.description
        return data

    def get_body(
        self,
        environ: t.Any = None,
        scope: dict[str, t.Any] | None = None,
    ) -> str:
        return json.dumps(self.body())

    def get_headers(
        self,
        environ: t.Any = None,
        scope: dict[str, t.Any] | None = None,
    ) -> list[tuple[str, str]]:
        headers = [
            ("Content-Type", "application/json"),
            # RFC 6750 §5.3 / RFC 6749 §5.1: never cache an authentication failure.
            ("Cache-Control", "no-store"),
        ]
        for challenge in self.challenges():
            headers.append(("WWW-Authenticate", challenge))
        if self.dpop_nonce is not None:
            headers.append(("DPoP-Nonce", self.dpop_nonce))
        if self.retry_after is not None:
            when = self.retry_after
            headers.append(("Retry-After", http_date(when) if isinstance(when, datetime) else str(when)))
        return headers


class MissingToken(ShieldError, Unauthorized):
    """No access token in the request: 401 with a bare challenge (RFC 6750 §3.1)."""

    scheme = "Bearer"
    error = None

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(description or "An access token is required.", reason=reason or "missing")

    def body(self) -> dict[str, str]:
        return {"error": "unauthorized", "error_description": self.description or ""}


class InvalidToken(ShieldError, Unauthorized):
    """The token is malformed, forged, of the wrong kind or otherwise unacceptable."""

    scheme = "Bearer"
    error = "invalid_token"


class ExpiredToken(InvalidToken):
    """The token is past its ``exp``."""

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(description or "The access token expired.", reason=reason or "expired")


class RevokedToken(InvalidToken):
    """The token, its session, its subject or its key was revoked."""

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(description or "The access token was revoked.", reason=reason or "revoked")


class InsufficientUserAuthentication(InvalidToken):
    """The token is valid, but the authentication behind it is too old or too weak for what
    was detected: the ``step_up`` action (RFC 9470 §3).

    401 with ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` and the
    requirement the client must meet in a new authentication: ``acr_values`` (the
    authentication context classes accepted, space-separated, in order of preference) and/or
    ``max_age`` (the most seconds allowed since the person last authenticated). An
    :class:`InvalidToken` too, so a handler that sends the person back to log in on
    ``InvalidToken`` does what a step-up asks.

    :param acr_values: the ``acr`` values that pass, or ``None``.
    :param max_age: the seconds since ``auth_time`` that pass, or ``None``.
    """

    error = "insufficient_user_authentication"

    def __init__(
        self,
        description: str | None = None,
        *,
        acr_values: t.Sequence[str] | None = None,
        max_age: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            description or "A more recent or stronger authentication is required.", reason=reason or "step-up"
        )
        self.acr_values = tuple(acr_values) if acr_values else None
        self.max_age = max_age

    def challenges(self) -> list[str]:
        challenges = super().challenges()
        # RFC 9470 §3: the requirement rides in the challenge that carries the error (the
        # first); max_age is an integer, sent as a quoted-string as in the RFC's examples.
        extra = []
        if self.acr_values:
            extra.append(f"acr_values={_quoted(' '.join(self.acr_values))}")
        if self.max_age is not None:
            extra.append(f"max_age={_quoted(str(self.max_age))}")
        if challenges and extra:
            challenges[0] = ", ".join([challenges[0], *extra])
        return challenges


class InvalidRequest(ShieldError, BadRequest):
    """The request itself is malformed (RFC 6750 ``invalid_request``).

    At the token endpoint (RFC 6749 §5.2) it carries no challenge: ``scheme`` is ``None``.
    """

    scheme: str | None = "Bearer"
    error = "invalid_request"


class InvalidGrant(ShieldError, BadRequest):
    """A refresh token was reused, revoked, expired or not a refresh token (RFC 6749 §5.2).

    At :meth:`~flask_jwt_shield.JWTShield.issue_tokens` and
    :meth:`~flask_jwt_shield.JWTShield.refresh`, a refused DPoP proof is an
    ``InvalidGrant`` too, with ``error`` ``invalid_dpop_proof`` or ``use_dpop_nonce``
    (RFC 9449 §5, §8): a token endpoint answers 400, not 401.
    """

    error = "invalid_grant"

    def __init__(self, description: str | None = None, *, reason: str | None = None, error: str | None = None) -> None:
        if error is not None:
            self.error = error
        super().__init__(description, reason=reason)


class InvalidDPoPProof(ShieldError, Unauthorized):
    """The DPoP proof of a request is missing, malformed or does not match (RFC 9449 §7.1).

    401 with ``WWW-Authenticate: DPoP error="invalid_dpop_proof", algs="..."``.
    """

    scheme = "DPoP"
    error = "invalid_dpop_proof"


class UseDPoPNonce(InvalidDPoPProof):
    """The proof lacks the server's current nonce: retry with the ``DPoP-Nonce`` sent
    (RFC 9449 §9)."""

    error = "use_dpop_nonce"


class InvalidClient(ShieldError, Unauthorized):
    """Client authentication failed at the token endpoint (RFC 6749 §5.2 ``invalid_client``).

    401 with a ``Basic`` challenge, the scheme of RFC 6749 §2.3.1.
    """

    scheme = "Basic"
    error = "invalid_client"

    def challenges(self) -> list[str]:
        # RFC 7617: a Basic challenge has a realm (and a charset), no error parameters.
        return [f'Basic realm={_quoted(self.realm)}, charset="UTF-8"']


class UnsupportedGrantType(ShieldError, BadRequest):
    """The token endpoint was asked for a grant it does not serve (RFC 6749 §5.2)."""

    error = "unsupported_grant_type"


class NotIssuedHere(UnsupportedGrantType, RuntimeError):
    """Issuing or refreshing was asked of an app in resource-server mode, where the identity
    provider issues the tokens: a programming mistake, but a route that still calls it
    answers 400 ``unsupported_grant_type`` rather than 500. Also a :class:`RuntimeError`,
    so code outside a request sees what it always saw."""


class InvalidScope(ShieldError, BadRequest):
    """The requested scope is malformed or exceeds the session's (RFC 6749 §5.2, §6)."""

    error = "invalid_scope"


class AccessDenied(ShieldError, Forbidden):
    """A detector denied this request (OAuth ``access_denied``)."""

    error = "access_denied"


class RateLimitExceeded(ShieldError, TooManyRequests):
    """The token (or its subject) went over its rate limit.

    :param retry_after: whole seconds until a request may succeed.
    :param rate_headers: ``RateLimit-*`` headers to send along.
    """

    error = "rate_limited"

    def __init__(
        self,
        description: str | None = None,
        *,
        retry_after: int = 1,
        rate_headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(description or "Too many requests with this token.", reason=reason)
        self.retry_after = max(1, int(retry_after))
        self.rate_headers = dict(rate_headers or {})

    def get_headers(
        self,
        environ: t.Any = None,
        scope: dict[str, t.Any] | None = None,
    ) -> list[tuple[str, str]]:
        return super().get_headers(environ, scope) + list(self.rate_headers.items())


class StoreUnavailable(ShieldError, ServiceUnavailable):
    """The store could not be reached and ``JWT_SHIELD_FAIL_MODE`` is ``"closed"``."""

    error = "temporarily_unavailable"

    def __init__(
        self,
        description: str | None = None,
        *,
        retry_after: int = 5,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            description or "The security store is unavailable; try again shortly.",
            reason=reason or "store-unavailable",
        )
        self.retry_after = retry_after


class KeysUnavailable(ShieldError, ServiceUnavailable):
    """Resource-server mode: no usable key of the identity provider is known yet (its JWK
    Set cannot be fetched, or holds no usable key). Always a 503, whatever
    ``JWT_SHIELD_FAIL_MODE`` says: a signature check never fails open."""

    error = "temporarily_unavailable"

    def __init__(
        self,
        description: str | None = None,
        *,
        retry_after: int = 5,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            description or "The identity provider's signing keys are unavailable; try again shortly.",
            reason=reason or "jwks-unavailable",
        )
        self.retry_after = max(1, int(retry_after))
