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
from .tokens import ACCESS_TYPE
from .tokens import REFRESH_TYPE
from .tokens import Claims

if t.TYPE_CHECKING:
    from .sessions import TokenPair

logger = logging.getLogger("flask_jwt_shield")

__all__ = [
    "ClientCredentials",
    "TokenEndpoint",
    "TokenRequest",
    "authenticate",
    "body_parameters",
    "client_credentials",
    "invalid_request",
    "json_response",
    "parse_token_request",
    "presented_token",
    "role",
    "scope_tokens",
]

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


#: RFC 7009 §2.1 / RFC 7662 §2.1 ``token_type_hint`` values and the token types they name.
TOKEN_TYPE_HINTS = {"access_token": ACCESS_TYPE, "refresh_token": REFRESH_TYPE}
#: The attribute that names an OAuth endpoint's role on its view function (the metadata
#: documents find the mounted endpoints by it) and the client authentication methods it takes.
ROLE_ATTRIBUTE = "jwt_shield_oauth_role"
#: Client authentication methods of the endpoints that take public clients too.
ALL_METHODS = ("client_secret_basic", "client_secret_post", "none")

#: ``authenticate_client(credentials) -> bool``: ``True`` lets the request through.
ClientAuthenticator = t.Callable[[ClientCredentials], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRequest:
    """A well-formed refresh request (RFC 6749 §6)."""

    refresh_token: str
    client: ClientCredentials
    #: The requested scope tokens, or ``None`` when the request names none.
    scope: frozenset[str] | None = None


def invalid_request(description: str, reason: str) -> InvalidRequest:
    """RFC 6749 §5.2 ``invalid_request``, without the Bearer challenge a resource sends."""
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
        raise invalid_request("Send the token request parameters in the body, not the URL.", "secret-in-query")
    params, form = body_parameters(req, PARAMETERS, max_body=max_body, what="token request")
    grant_type = params.get("grant_type")
    if grant_type is None and form:
        raise invalid_request("The grant_type parameter is missing.", "missing-grant-type")
    if grant_type is not None and grant_type != "refresh_token":
        raise UnsupportedGrantType("Only grant_type=refresh_token is served here.", reason="unsupported-grant")
    client = client_credentials(req, params)
    refresh_token = params.get("refresh_token")
    if refresh_token is None:
        raise invalid_request("The refresh_token parameter is missing.", "missing-refresh-token")
    scope = params.get("scope")
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise InvalidScope("The scope parameter is malformed.", reason="malformed-scope")
    return TokenRequest(refresh_token, client, frozenset(scope.split(" ")) if scope is not None else None)


def body_parameters(
    req: Request, names: t.Collection[str], *, max_body: int, what: str, json_allowed: bool = True
) -> tuple[dict[str, str], bool]:
    """The parameters of the body that ``names`` lists, and whether the body was a form.

    The one reader of every OAuth endpoint's body (token, revocation, introspection): a
    form (or a JSON object of strings, where ``json_allowed``), at most ``max_body`` bytes,
    UTF-8, each parameter at most once (RFC 6749 §3.1); others are ignored, and one without
    a value counts as absent. Anything else is ``invalid_request``, never a 500.
    """
    mimetype = req.mimetype
    if mimetype != FORM and not (json_allowed and mimetype == JSON):
        raise invalid_request(f"Send the {what} as {FORM} (RFC 6749 §3.2).", "wrong-content-type")
    # The app's own MAX_CONTENT_LENGTH still applies when it is lower.
    app_limit = req.max_content_length
    limit = max_body if app_limit is None else min(app_limit, max_body)
    if req.content_length is not None and req.content_length > limit:
        raise invalid_request("The request body is too large.", "body-too-large")
    # A chunked body has no Content-Length: werkzeug stops reading at the maximum (and
    # returns what it read), so one byte more than allowed tells that the body was larger.
    req.max_content_length = limit + 1
    try:
        data = req.get_data(cache=True)
    except RequestEntityTooLarge:
        data = b"-" * (limit + 1)
    except ClientDisconnected:  # fewer bytes than Content-Length said
        raise invalid_request("The request body is incomplete.", "body-incomplete") from None
    if len(data) > limit:
        raise invalid_request("The request body is too large.", "body-too-large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request("The request body is not UTF-8.", "bad-encoding") from None
    if mimetype == FORM:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:
            raise invalid_request("The request body has too many parameters.", "too-many-parameters") from None
    else:
        pairs = _json_pairs(text)
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in names:
            continue  # RFC 6749 §3.2: unrecognised parameters are ignored
        if name in params:
            raise invalid_request(f"The {name} parameter is given more than once.", "duplicate-parameter")
        if not isinstance(value, str):
            raise invalid_request(f"The {name} parameter must be a string.", "not-a-string")
        params[name] = value
    # RFC 6749 §3.1: a parameter without a value is treated as omitted.
    return {name: value for name, value in params.items() if value}, mimetype == FORM


class _Object(list[tuple[str, t.Any]]):
    """A JSON object's members in document order, duplicates kept (so they can be refused)."""


def _json_pairs(text: str) -> list[tuple[str, t.Any]]:
    try:
        document = json.loads(text, object_pairs_hook=_Object)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError; deep nesting recurses
        raise invalid_request("The request body is not valid JSON.", "bad-json") from None
    if not isinstance(document, _Object):
        raise invalid_request("The request body must be a JSON object.", "not-an-object")
    return document


def client_credentials(req: Request, params: dict[str, str]) -> ClientCredentials:
    """RFC 6749 §2.3: HTTP Basic, or the body's client_id/client_secret, never both."""
    header = req.headers.get("Authorization")
    scheme, _, encoded = (header or "").strip(" ").partition(" ")
    if header is not None and scheme.lower() == "basic":
        if "client_secret" in params:
            raise invalid_request("Use one client authentication method, not two.", "two-client-methods")
        client_id, secret = _basic(encoded.strip(" "))
        if params.get("client_id", client_id) != client_id:
            raise invalid_request("client_id differs from the Basic credentials.", "client-id-mismatch")
        return ClientCredentials(client_id, secret, "client_secret_basic")
    # Another scheme (a DPoP or Bearer header, say) authenticates no client here.
    if "client_secret" in params:
        if "client_id" not in params:
            raise invalid_request("client_secret without client_id.", "secret-without-id")
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


def authenticate(
    state: ShieldState,
    hook: ClientAuthenticator | None,
    client: ClientCredentials,
    *,
    endpoint: str,
    require: bool = False,
) -> None:
    """Run the application's client check (RFC 6749 §2.3) for one request at ``endpoint``.

    Without a ``hook`` every client passes (a ``client_id`` is only a name), unless
    ``require``: then, as for anything refused, 401 ``invalid_client``. A hook that raises
    answers 503, never a 200 by accident. A refusal is an event, once a minute per client
    and address: a guesser must not write one per try.
    """
    if hook is None:
        if not require:
            return  # no registered clients: a client_id is only a name (public clients)
        accepted: t.Any = False
    else:
        try:
            accepted = hook(client)
        except Exception:
            # Never a 200 by accident, never a stack trace to the client.
            logger.exception("authenticate_client raised for client_id %r; answering 503", client.client_id)
            raise StoreUnavailable(
                "Client authentication is unavailable; try again shortly.", reason="client-auth-failed"
            ) from None
    if accepted is not True:
        if state.first_in_a_while(
            ("token-rejected", client.client_id or "", request.remote_addr or "", "invalid-client", endpoint)
        ):
            detail: dict[str, t.Any] = {
                "reason": "invalid-client",
                "status": 401,
                "client_id": client.client_id,
                "client_auth": client.method,
            }
            if endpoint == "token":
                detail["grant"] = "refresh_token"
            else:
                detail["endpoint"] = endpoint
            state.record("token-rejected", None, action="deny", detail=detail)
        raise InvalidClient("Client authentication failed.", reason="invalid-client")


def json_response(body: t.Mapping[str, t.Any], status: int = 200) -> Response:
    """A JSON answer of an OAuth endpoint, never cached (RFC 6749 §5.1, RFC 7662 §2.2)."""
    response = current_app.response_class(json.dumps(body), status=status, mimetype=JSON)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def scope_tokens(value: t.Any) -> frozenset[str] | None:
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
            authenticate(state, self.authenticate_client, token_request.client, endpoint="token")
            granted = self._check_session(state, token_request)
        except ShieldError as exc:
            exc.realm = config.request.realm
            raise
        pair = self.refresh(token_request.refresh_token)
        return token_response(pair, granted)

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
        granted = scope_tokens(raw_scope)
        # RFC 6749 §6: the requested scope may not exceed the one originally granted.
        if refusal is None and token_request.scope is not None and not token_request.scope <= (granted or frozenset()):
            refusal = InvalidScope("The requested scope exceeds the session's.", reason="scope-exceeded")
        if refusal is not None:
            if state.first_in_a_while(("token-rejected", claims["jti"], refusal.reason)):
                state.record(
                    "token-rejected",
                    claims,
                    action="deny",
                    detail={
                        "reason": refusal.reason,
                        "status": 400,
                        "grant": "refresh_token",
                        "client_id": token_request.client.client_id,
                    },
                )
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
    return json_response(body)


V = t.TypeVar("V", bound=t.Callable[..., t.Any])


def role(view: V, name: str, methods: t.Sequence[str] = ()) -> V:
    """Mark ``view`` as the endpoint ``name`` of the metadata documents (``"token_endpoint"``,
    ``"revocation_endpoint"`` ...) taking the client authentication ``methods``."""
    setattr(view, ROLE_ATTRIBUTE, (name, tuple(methods)))
    return view


def presented_token(state: ShieldState, token: str, hint: str | None) -> tuple[str, Claims, str] | None:
    """What a token given to the revocation or introspection endpoint is: its type
    (``at+jwt`` or ``refresh+jwt``), its verified claims and its key's ``kid``; ``None``
    for a token that is not one of this app's, malformed, forged or expired.

    ``hint`` (``token_type_hint``) only decides which type is tried first (RFC 7009 §2.1:
    honoured, not trusted); an unknown hint is ignored.
    """
    first = TOKEN_TYPE_HINTS.get(hint or "", ACCESS_TYPE)
    for typ in (first, REFRESH_TYPE if first == ACCESS_TYPE else ACCESS_TYPE):
        try:
            claims, kid = state.codec.verify(token, typ)
        except InvalidToken as exc:
            if exc.reason != "wrong-type":
                return None  # expired, forged, malformed: the same answer for either type
            continue
        return typ, claims, kid
    return None
