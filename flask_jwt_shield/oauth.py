"""The OAuth 2.0 token endpoint for the refresh grant (RFC 6749 §6), as standard clients call it.

:meth:`JWTShield.token_view` and :meth:`JWTShield.token_blueprint` serve it. This module
reads the request (form-encoded per RFC 6749 §3.2, or JSON), authenticates the client with
the application's hook (§2.3), checks what the session allows (scope, client), and answers
per §5.1 or §5.2. Rotation and reuse detection stay in :meth:`JWTShield.refresh`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import typing as t
from urllib.parse import parse_qsl
from urllib.parse import unquote

from flask import Request
from flask import Response
from flask import current_app
from flask import request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import InvalidClient
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidScope
from .errors import InvalidToken
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .errors import UnsupportedGrantType
from .state import ShieldState
from .state import current_state
from .tokens import REFRESH_TYPE

if t.TYPE_CHECKING:
    from .sessions import TokenPair

logger = logging.getLogger("flask_jwt_shield")

__all__ = ["ClientCredentials", "TokenEndpoint", "TokenRequest", "parse_token_request"]

#: The parameters this endpoint reads; any other is ignored (RFC 6749 §3.2).
PARAMETERS = ("grant_type", "refresh_token", "scope", "client_id", "client_secret")
# Secrets never travel in a URL: it ends up in logs and browser history.
_NEVER_IN_QUERY = ("refresh_token", "client_secret")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by one space.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
# A form or JSON body with this many parameters is not a token request.
_MAX_FIELDS = 32

ClientMethod = t.Literal["client_secret_basic", "client_secret_post", "none"]


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The client's credentials as the token request presented them (RFC 6749 §2.3).

    ``method`` is ``"client_secret_basic"`` (HTTP Basic), ``"client_secret_post"``
    (``client_id`` and ``client_secret`` in the body) or ``"none"`` (at most a ``client_id``:
    a public client, or no client identification at all).
    """

    client_id: str | None
    client_secret: str | None
    method: ClientMethod

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        secret = None if self.client_secret is None else "***"
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret={secret}, method={self.method!r})"


#: ``authenticate_client(credentials) -> bool``: ``True`` lets the request through.
ClientAuthenticator = t.Callable[[ClientCredentials], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRequest:
    """A well-formed refresh request (RFC 6749 §6)."""

    refresh_token: str
    client: ClientCredentials
    #: The requested scope tokens, or ``None`` when the request names none.
    scope: frozenset[str] | None = None


def _invalid_request(description: str, reason: str) -> InvalidRequest:
    error = InvalidRequest(description, reason=reason)
    error.scheme = None  # RFC 6749 §5.2: no Bearer challenge at the token endpoint
    return error


def parse_token_request(req: Request, *, max_body: int) -> TokenRequest:
    """Read a refresh request, or raise the RFC 6749 §5.2 error it deserves.

    Accepts ``application/x-www-form-urlencoded`` (the standard) and ``application/json``
    (a JSON object of strings, where ``grant_type`` may be left out). Parameters without a
    value count as absent (§3.1); a parameter given twice is ``invalid_request`` (§3.1).
    """
    if req.query_string and any(name in req.args for name in _NEVER_IN_QUERY):
        raise _invalid_request("Send the token request parameters in the body, not the URL.", "secret-in-query")
    params, form = _body_parameters(req, max_body)
    grant_type = params.get("grant_type")
    if grant_type is None and form:
        raise _invalid_request("The grant_type parameter is missing.", "missing-grant-type")
    if grant_type is not None and grant_type != "refresh_token":
        raise UnsupportedGrantType("Only grant_type=refresh_token is served here.", reason="unsupported-grant")
    client = _client_credentials(req, params)
    refresh_token = params.get("refresh_token")
    if refresh_token is None:
        raise _invalid_request("The refresh_token parameter is missing.", "missing-refresh-token")
    scope = params.get("scope")
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise InvalidScope("The scope parameter is malformed.", reason="malformed-scope")
    return TokenRequest(refresh_token, client, frozenset(scope.split(" ")) if scope is not None else None)


def _body_parameters(req: Request, max_body: int) -> tuple[dict[str, str], bool]:
    """The recognised parameters of the body, and whether it was a form."""
    mimetype = req.mimetype
    if mimetype not in (FORM, JSON):
        raise _invalid_request(f"Send the token request as {FORM} (RFC 6749 §3.2).", "wrong-content-type")
    # The app's own MAX_CONTENT_LENGTH still applies when it is lower.
    app_limit = req.max_content_length
    limit = max_body if app_limit is None else min(app_limit, max_body)
    if req.content_length is not None and req.content_length > limit:
        raise _invalid_request("The request body is too large.", "body-too-large")
    # A chunked body has no Content-Length: werkzeug stops reading at the maximum (and
    # returns what it read), so one byte more than allowed tells that the body was larger.
    req.max_content_length = limit + 1
    try:
        data = req.get_data(cache=True)
    except RequestEntityTooLarge:
        data = b"-" * (limit + 1)
    except ClientDisconnected:  # fewer bytes than Content-Length said
        raise _invalid_request("The request body is incomplete.", "body-incomplete") from None
    if len(data) > limit:
        raise _invalid_request("The request body is too large.", "body-too-large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_request("The request body is not UTF-8.", "bad-encoding") from None
    if mimetype == FORM:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:
            raise _invalid_request("The request body has too many parameters.", "too-many-parameters") from None
    else:
        pairs = _json_pairs(text)
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            continue  # RFC 6749 §3.2: unrecognised parameters are ignored
        if name in params:
            raise _invalid_request(f"The {name} parameter is given more than once.", "duplicate-parameter")
        if not isinstance(value, str):
            raise _invalid_request(f"The {name} parameter must be a string.", "not-a-string")
        params[name] = value
    # RFC 6749 §3.1: a parameter without a value is treated as omitted.
    return {name: value for name, value in params.items() if value}, mimetype == FORM


class _Object(list[tuple[str, t.Any]]):
    """A JSON object's members in document order, duplicates kept (so they can be refused)."""


def _json_pairs(text: str) -> list[tuple[str, t.Any]]:
    try:
        document = json.loads(text, object_pairs_hook=_Object)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError; deep nesting recurses
        raise _invalid_request("The request body is not valid JSON.", "bad-json") from None
    if not isinstance(document, _Object):
        raise _invalid_request("The request body must be a JSON object.", "not-an-object")
    return document


def _client_credentials(req: Request, params: dict[str, str]) -> ClientCredentials:
    """RFC 6749 §2.3: HTTP Basic, or the body's client_id/client_secret, never both."""
    header = req.headers.get("Authorization")
    scheme, _, encoded = (header or "").strip(" ").partition(" ")
    if header is not None and scheme.lower() == "basic":
        if "client_secret" in params:
            raise _invalid_request("Use one client authentication method, not two.", "two-client-methods")
        client_id, secret = _basic(encoded.strip(" "))
        if params.get("client_id", client_id) != client_id:
            raise _invalid_request("client_id differs from the Basic credentials.", "client-id-mismatch")
        return ClientCredentials(client_id, secret, "client_secret_basic")
    # Another scheme (a DPoP or Bearer header, say) authenticates no client here.
    if "client_secret" in params:
        if "client_id" not in params:
            raise _invalid_request("client_secret without client_id.", "secret-without-id")
        return ClientCredentials(params["client_id"], params["client_secret"], "client_secret_post")
    return ClientCredentials(params.get("client_id"), None, "none")


def _basic(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("The Basic credentials are malformed.", reason="malformed-basic") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise InvalidClient("The Basic credentials are malformed.", reason="malformed-basic")
    # RFC 6749 §2.3.1 form-encodes both before Basic. Percent-decoding only (no "+" to
    # space), as Authlib's server does: clients that skip the encoding still work.
    return unquote(client_id), unquote(secret)


def _scope_tokens(value: t.Any) -> frozenset[str] | None:
    """A session's granted scope: an RFC 9068 ``scope`` string, or a list of strings."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    return None


class TokenEndpoint:
    """The token endpoint of one :class:`~flask_jwt_shield.JWTShield`, for any app it serves.

    :param refresh: :meth:`JWTShield.refresh`, which spends the token.
    """

    def __init__(
        self,
        refresh: t.Callable[[str], TokenPair],
        authenticate_client: ClientAuthenticator | None = None,
    ) -> None:
        self.refresh = refresh
        self.authenticate_client = authenticate_client

    def __call__(self) -> Response:
        state = current_state()
        config = state.config
        try:
            token_request = parse_token_request(request, max_body=2 * config.request.max_token_bytes + 8192)
            self._authenticate(state, token_request.client)
            granted = self._check_session(state, token_request)
        except ShieldError as exc:
            exc.realm = config.request.realm
            raise
        pair = self.refresh(token_request.refresh_token)
        return token_response(pair, granted)

    def _authenticate(self, state: ShieldState, client: ClientCredentials) -> None:
        if self.authenticate_client is None:
            return  # no registered clients: a client_id is only a name (public clients)
        try:
            accepted = self.authenticate_client(client)
        except Exception:
            # Never a 200 by accident, never a stack trace to the client.
            logger.exception("authenticate_client raised for client_id %r; answering 503", client.client_id)
            raise StoreUnavailable("Client authentication is unavailable; try again shortly.",
                                   reason="client-auth-failed") from None  # fmt: skip
        if accepted is not True:
            # A guessed secret is worth an event, but a guesser must not write one per try.
            if state.first_in_a_while(("token-rejected", client.client_id or "", request.remote_addr or "",
                                           "invalid-client")):  # fmt: skip
                state.record("token-rejected", None, action="deny", detail={
                    "reason": "invalid-client", "status": 401, "grant": "refresh_token",
                    "client_id": client.client_id, "client_auth": client.method,
                })  # fmt: skip
            raise InvalidClient("Client authentication failed.", reason="invalid-client")

    def _check_session(self, state: ShieldState, token_request: TokenRequest) -> str | None:
        """Scope and client checks against the session, before anything is spent.

        Returns the session's granted scope string (for the response), or ``None``. A token
        that does not verify is left to :meth:`JWTShield.refresh`, which refuses it and
        records why.
        """
        try:
            claims, _ = state.codec.verify(token_request.refresh_token, REFRESH_TYPE)
        except InvalidToken:
            return None
        try:
            family = state.store.get_family(claims["sid"])
        except StoreError:
            raise StoreUnavailable() from None
        if family is None:
            return None
        session_client = family.claims.get("client_id")
        refusal: ShieldError | None = None
        # RFC 6749 §6: the refresh token must have been issued to this client.
        if session_client is not None and session_client != token_request.client.client_id:
            refusal = InvalidGrant("The refresh token was issued to another client.", reason="client-mismatch")
        raw_scope = family.claims.get("scope")
        granted = _scope_tokens(raw_scope)
        # RFC 6749 §6: the requested scope may not exceed the one originally granted.
        if refusal is None and token_request.scope is not None and not token_request.scope <= (granted or frozenset()):
            refusal = InvalidScope("The requested scope exceeds the session's.", reason="scope-exceeded")
        if refusal is not None:
            if state.first_in_a_while(("token-rejected", claims["jti"], refusal.reason)):
                state.record("token-rejected", claims, action="deny", detail={
                    "reason": refusal.reason, "status": 400, "grant": "refresh_token",
                    "client_id": token_request.client.client_id,
                })  # fmt: skip
            raise refusal
        if granted is None:
            return None
        return raw_scope if isinstance(raw_scope, str) else " ".join(sorted(granted))


def token_response(pair: TokenPair, scope: str | None = None) -> Response:
    """The RFC 6749 §5.1 answer: the pair as JSON, never cached.

    ``scope`` is the session's scope. The shield does not narrow a session's scope on
    refresh (§3.3 allows that), so the response names it whenever there is one.
    """
    body = pair.as_dict()
    if scope is not None:
        body["scope"] = scope
    response = current_app.response_class(json.dumps(body), mimetype=JSON)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
