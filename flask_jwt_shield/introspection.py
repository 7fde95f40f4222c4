"""The OAuth 2.0 token introspection endpoint (RFC 7662).

:meth:`JWTShield.introspection_view <flask_jwt_shield.JWTShield.introspection_view>` serves
it. A resource server, a gateway or a client posts ``token=...`` form-encoded and learns
whether the shield would accept it *now*: the signature and times, and everything the
signature cannot say -- a revoked token, session, subject or key, a registered
``revocation_checker``; for a refresh token also the session's idle and absolute lifetimes
and whether it was already spent (active only within the reuse grace).

The answer is ``{"active": true, ...}`` with ``scope``, ``client_id``, ``sub``, ``exp``,
``iat``, ``nbf``, ``iss``, ``aud``, ``jti``, ``token_type`` and ``cnf`` (a DPoP-bound
token), or ``{"active": false}`` and nothing else (§2.2). Only authenticated confidential
clients, or callers the application's ``authorize`` callback lets in, may ask (§2.1); each
caller is rate limited (:data:`JWT_SHIELD_INTROSPECTION_RATE_LIMIT`), and the requests are
security events (throttled), so introspection is never an unmetered way to probe tokens.
A store that cannot answer gives 503, never an ``active`` that was not checked.
"""

from __future__ import annotations

import logging
import math
import time
import typing as t

from flask import Response
from flask import request

from . import revocation
from .errors import ConfigurationError
from .errors import InvalidClient
from .errors import RateLimitExceeded
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .oauth import ClientAuthenticator
from .oauth import authenticate
from .oauth import body_parameters
from .oauth import client_credentials
from .oauth import invalid_request
from .oauth import json_response
from .oauth import presented_token
from .oauth import role
from .oauth import scope_tokens
from .sessions import refuse_in_resource_server_mode
from .state import ShieldState
from .state import current_state
from .token_revocation import PARAMETERS
from .token_revocation import max_body
from .tokens import REFRESH_TYPE

logger = logging.getLogger("flask_jwt_shield")

__all__ = ["IntrospectionEndpoint", "introspect", "make_view"]

#: ``authorize() -> bool``, run in the request: lets a resource server in without client
#: credentials (a bearer token of its own, an mTLS header set by the proxy ...).
Authorizer = t.Callable[[], bool]
#: The claims an active answer copies from the token when present (RFC 7662 §2.2).
COPIED = ("sub", "exp", "iat", "nbf", "iss", "aud", "jti", "cnf")
INACTIVE: dict[str, t.Any] = {"active": False}


def introspect(state: ShieldState, token: str, hint: str | None = None) -> dict[str, t.Any]:
    """The RFC 7662 answer for ``token``, as the shield knows it now.

    Raises :class:`~flask_jwt_shield.errors.StoreUnavailable` when the store (or a
    ``revocation_checker``) cannot answer.
    """
    found = presented_token(state, token, hint)
    if found is None:
        return INACTIVE
    typ, claims, kid = found
    now = time.time()
    try:
        if revocation.revocation_reason(state, claims, kid, now) is not None:
            return INACTIVE
        family = state.store.get_family(claims["sid"]) if typ == REFRESH_TYPE else None
    except (StoreError, revocation.CheckerFailed):
        raise StoreUnavailable() from None
    answer: dict[str, t.Any] = {"active": True}
    scope: t.Any = claims.get("scope")
    client_id = claims.get("client_id")
    if typ == REFRESH_TYPE:
        config = state.config
        if family is None or not family.live(now, config.sessions.refresh_idle_ttl):
            return INACTIVE
        spent_in_grace = (
            claims["jti"] == family.previous_jti
            and family.rotated_at is not None
            and now - family.rotated_at <= config.sessions.refresh_reuse_grace
        )
        if claims["jti"] != family.current_jti and not spent_in_grace:
            return INACTIVE  # spent: presenting it now would be reuse
        scope, client_id = family.claims.get("scope"), family.claims.get("client_id")
    for name in COPIED:
        if name in claims:
            answer[name] = claims[name]
    if typ == REFRESH_TYPE:
        assert family is not None
        # The session ends at the first of its lifetimes: absolute, or idle from its last use.
        idle_ends = family.last_used_at + state.config.sessions.refresh_idle_ttl
        answer["exp"] = min(int(claims["exp"]), math.floor(idle_ends))
        answer["token_type"] = "refresh_token"
    else:
        answer["token_type"] = "DPoP" if isinstance(claims.get("cnf"), dict) else "Bearer"
    granted = scope_tokens(scope)
    if granted is not None:
        answer["scope"] = scope if isinstance(scope, str) else " ".join(sorted(granted))
    if isinstance(client_id, str):
        answer["client_id"] = client_id
    return answer


class IntrospectionEndpoint:
    """The introspection endpoint of one :class:`~flask_jwt_shield.JWTShield`, for any app."""

    def __init__(
        self, authenticate_client: ClientAuthenticator | None = None, authorize: Authorizer | None = None
    ) -> None:
        if authenticate_client is None and authorize is None:
            raise ConfigurationError(
                "introspection_view() needs authenticate_client=... or authorize=...: an open"
                " introspection endpoint would tell anyone whether a stolen token still works."
            )
        self.authenticate_client = authenticate_client
        self.authorize = authorize
        #: The client authentication methods the metadata lists.
        self.methods = ("client_secret_basic", "client_secret_post") if authenticate_client is not None else ()

    def __call__(self) -> Response:
        state = current_state()
        try:
            params, _ = body_parameters(
                request, PARAMETERS, max_body=max_body(state), what="introspection request", json_allowed=False
            )
            caller, client_id = self.caller(state, params)
            token = params.get("token")
            if token is None:
                raise invalid_request("The token parameter is missing.", "missing-token")
            self.throttle(state, caller)
            answer = introspect(state, token, params.get("token_type_hint"))
        except ShieldError as exc:
            exc.realm = state.config.request.realm
            raise
        self.record(state, caller, client_id, answer)
        return json_response(answer)

    def caller(self, state: ShieldState, params: dict[str, str]) -> tuple[str, str | None]:
        """Who asks (the rate limit key) and its ``client_id``: an authenticated
        confidential client, or a caller ``authorize`` lets in (counted per address).

        A public client (no secret) never introspects: 401 ``invalid_client``.
        """
        client = client_credentials(request, params)
        if client.method != "none":
            authenticate(state, self.authenticate_client, client, endpoint="introspection", require=True)
            return f"client:{client.client_id}", client.client_id
        authorize = self.authorize
        if authorize is not None:
            try:
                allowed = authorize()
            except Exception:
                logger.exception("the introspection endpoint's authorize callback raised; answering 503")
                raise StoreUnavailable(
                    "Authorization is unavailable; try again shortly.", reason="authorize-failed"
                ) from None
            if allowed is True:
                return f"address:{request.remote_addr or ''}", None
        # The same event and answer as a wrong secret (once a minute per client and address).
        authenticate(state, None, client, endpoint="introspection", require=True)
        raise InvalidClient("Client authentication failed.", reason="invalid-client")  # not reached

    def throttle(self, state: ShieldState, caller: str) -> None:
        """429 over :data:`JWT_SHIELD_INTROSPECTION_RATE_LIMIT` for this caller."""
        limit = state.introspection_limit
        if limit is None:
            return
        try:
            retry_after = limit.hit(caller)
        except StoreError as exc:  # the limiter storage failed: the fail mode decides
            state.store_failed(exc, None)
            return
        if retry_after is None:
            return
        if state.first_in_a_while(("rate-limited", "introspection", caller)):
            state.record("rate-limited", None, action="deny", detail={"endpoint": "introspection", "limit": limit.text})
        raise RateLimitExceeded(
            "Too many introspection requests.", retry_after=retry_after, reason="introspection-rate-limited"
        )

    def record(self, state: ShieldState, caller: str, client_id: str | None, answer: dict[str, t.Any]) -> None:
        """One event per caller and token (or per caller, for inactive answers) a minute.
        The token is named by its ``jti``, never given."""
        jti = answer.get("jti")
        if state.first_in_a_while(("token-introspected", caller, jti or "")):
            state.record(
                "token-introspected",
                None,
                subject=answer.get("sub"),
                jti=jti,
                detail={"client_id": client_id, "active": answer["active"]},
            )


def make_view(
    authenticate_client: ClientAuthenticator | None, authorize: Authorizer | None
) -> t.Callable[[], Response]:
    """The view of :meth:`JWTShield.introspection_view
    <flask_jwt_shield.JWTShield.introspection_view>`."""
    endpoint = IntrospectionEndpoint(authenticate_client, authorize)

    def introspect() -> Response:
        refuse_in_resource_server_mode(current_state(), "introspection_view")
        return endpoint()

    return role(introspect, "introspection_endpoint", endpoint.methods)
