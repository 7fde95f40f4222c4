"""The OAuth 2.0 token revocation endpoint (RFC 7009), as standard clients call it.

:meth:`JWTShield.revocation_view <flask_jwt_shield.JWTShield.revocation_view>` serves it.
A client posts ``token=...`` (and maybe ``token_type_hint``) form-encoded, authenticated
with the same hook as the token endpoint:

* a refresh token ends its whole session (:func:`.revocation.revoke_family`), an access
  token only itself (:func:`.revocation.revoke_token`); the hint only says which type is
  tried first;
* a token issued to another client (its session's ``client_id``) is not revoked:
  400 ``invalid_grant``; a token issued without a ``client_id`` belongs to the application,
  and any client it authenticates may revoke it;
* an unknown, malformed, forged or expired token gets 200 like a revoked one (§2.2): there
  is nothing left to revoke, and the answer tells a prober nothing;
* a DPoP-bound session needs no proof to be revoked: the client may have lost its key.
"""

from __future__ import annotations

import typing as t

from flask import Response
from flask import current_app
from flask import request

from . import revocation
from .errors import InvalidGrant
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .oauth import ALL_METHODS
from .oauth import ClientAuthenticator
from .oauth import ClientCredentials
from .oauth import authenticate
from .oauth import body_parameters
from .oauth import client_credentials
from .oauth import invalid_request
from .oauth import presented_token
from .oauth import role
from .sessions import refuse_in_resource_server_mode
from .state import ShieldState
from .state import current_state
from .tokens import REFRESH_TYPE
from .tokens import Claims

__all__ = ["RevocationEndpoint", "make_view", "token_owner"]

#: The parameters this endpoint reads; any other is ignored (RFC 6749 §3.2).
PARAMETERS = ("token", "token_type_hint", "client_id", "client_secret")


def max_body(state: ShieldState) -> int:
    """The largest request body a revocation or introspection request may have."""
    return state.config.request.max_token_bytes + 8192


def token_owner(state: ShieldState, typ: str, claims: Claims) -> tuple[bool, str | None]:
    """Whether the token's session still exists (always, for a token without one), and the
    client it was issued to (``None``: the application itself)."""
    if typ == REFRESH_TYPE:
        try:
            family = state.store.get_family(claims["sid"])
        except StoreError:
            raise StoreUnavailable() from None
        if family is None:
            return False, None
        owner = family.claims.get("client_id")
    else:
        owner = claims.get("client_id")
    return True, owner if isinstance(owner, str) else None


class RevocationEndpoint:
    """The revocation endpoint of one :class:`~flask_jwt_shield.JWTShield`, for any app."""

    def __init__(self, authenticate_client: ClientAuthenticator | None = None) -> None:
        self.authenticate_client = authenticate_client

    def __call__(self) -> Response:
        state = current_state()
        try:
            params, _ = body_parameters(
                request, PARAMETERS, max_body=max_body(state), what="revocation request", json_allowed=False
            )
            client = client_credentials(request, params)
            authenticate(state, self.authenticate_client, client, endpoint="revocation")
            token = params.get("token")
            if token is None:
                raise invalid_request("The token parameter is missing.", "missing-token")
            self.revoke(state, token, params.get("token_type_hint"), client)
        except ShieldError as exc:
            exc.realm = state.config.request.realm
            raise
        # §2.2: 200, and the body is ignored by the client. Never cached.
        response = current_app.response_class(status=200)
        response.headers["Cache-Control"] = "no-store"
        return response

    def revoke(self, state: ShieldState, token: str, hint: str | None, client: ClientCredentials) -> None:
        found = presented_token(state, token, hint)
        if found is None:
            return  # §2.2: an invalid token needs no revocation; 200 all the same
        typ, claims, _ = found
        exists, owner = token_owner(state, typ, claims)
        if not exists:
            return  # a session the store never knew (or long forgotten): nothing to end
        if owner is not None and owner != client.client_id:
            # §2.1: the server verifies that the token was issued to the requesting client.
            if state.first_in_a_while(("token-rejected", claims["jti"], "revocation-client-mismatch")):
                state.record(
                    "token-rejected",
                    claims,
                    action="deny",
                    detail={
                        "reason": "client-mismatch",
                        "status": 400,
                        "endpoint": "revocation",
                        "client_id": client.client_id,
                    },
                )
            raise InvalidGrant("The token was issued to another client.", reason="client-mismatch")
        detail: dict[str, t.Any] = {"client_id": client.client_id, "endpoint": "revocation"}
        if typ == REFRESH_TYPE:
            # RFC 7009 §2.1: revoking a refresh token ends the grant, here the whole session.
            revocation.revoke_family(
                state, claims["sid"], by="revocation-endpoint", detail=detail, subject=lambda: claims["sub"]
            )
        else:
            revocation.revoke_token(state, token, by="revocation-endpoint", detail=detail)


def make_view(authenticate_client: ClientAuthenticator | None) -> t.Callable[[], Response]:
    """The view of :meth:`JWTShield.revocation_view <flask_jwt_shield.JWTShield.revocation_view>`."""
    endpoint = RevocationEndpoint(authenticate_client)

    def revoke() -> Response:
        refuse_in_resource_server_mode(current_state(), "revocation_view")
        return endpoint()

    return role(revoke, "revocation_endpoint", ALL_METHODS)
