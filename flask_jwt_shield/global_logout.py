"""Global token revocation: the identity provider logs a user out of this app.

draft-parecki-oauth-global-token-revocation, the request Okta Universal Logout sends:
``POST`` with ``Content-Type: application/json``, a body ``{"sub_id": {...}}`` holding an
RFC 9493 subject identifier, and ``Authorization: Bearer <JWT>`` signed by the provider.
:meth:`JWTShield.global_token_revocation_view
<flask_jwt_shield.JWTShield.global_token_revocation_view>` serves it.

The JWT is checked with the provider's JWK Set (the same client, cache and key hygiene as
resource-server mode, :mod:`.jwks`): an accepted ``alg`` and known ``kid``, the signature,
``iss`` (the configured provider), ``aud`` (this endpoint's URL, or the configured
audience), ``exp``, ``iat`` not in the future nor too old, and a ``jti`` never seen before
(remembered in the store). Then the subject -- an ``iss_sub`` of the app's own token issuer,
or whatever the application's ``resolve_subject`` maps (``email``, the provider's
``iss_sub`` ...) -- loses every session and token (:func:`.revocation.revoke_subject`), and
a ``global-logout`` event is recorded.

Answers are the draft's: 204 done; 400 malformed request or unsupported identifier format;
401 missing or invalid authentication (with a ``Bearer`` challenge); 404 no such user;
503 while the provider's keys or the store cannot be reached; never a 500.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import typing as t

from flask import Response
from flask import request

from . import revocation
from . import subjects
from .errors import ConfigurationError
from .errors import InvalidToken
from .errors import KeysUnavailable
from .errors import StoreError
from .errors import StoreUnavailable
from .jose import JOSEError
from .jose import b64decode
from .jose import segment_object
from .jose import signature_valid
from .jose import split_compact
from .jwks import JWKSClient
from .oauth import role
from .state import ShieldState
from .state import current_state
from .subjects import SubjectResolver

logger = logging.getLogger("flask_jwt_shield")

__all__ = ["GlobalTokenRevocation", "GlobalTokenRevocationSettings"]

#: ``resolve_subject(sub_id) -> sub | None``: the ``sub`` of the app's tokens for an RFC 9493
#: subject identifier (a dict with ``format``), ``None`` for no such user (404).
#: RFC 9493 formats and the members each needs.
FORMATS = {
    "iss_sub": ("iss", "sub"),
    "email": ("email",),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "account": ("uri",),
    "uri": ("uri",),
    "did": ("url",),
}
_MAX_BODY = 8192
_MAX_TOKEN = 16384
_REPLAY_NAMESPACE = "global-logout-jti"
_CLOCK_SKEW = 60.0  # the provider's clock, not ours


class RequestRefused(Exception):
    """A request answered with ``status`` and an OAuth-style error."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalTokenRevocationSettings:
    """What one global token revocation endpoint expects."""

    #: The provider's issuer identifier (``https://example.okta.com``): the JWT's ``iss``.
    issuer: str
    #: The JWT's expected ``aud``; ``None``: this endpoint's own URL.
    audience: str | None = None
    #: Seconds an authentication JWT may be old (its ``iat``).
    max_age: float = 300.0
    resolve_subject: SubjectResolver | None = None


def _refusal(status: int, error: str, description: str, realm: str) -> Response:
    response = Response(
        json.dumps({"error": error, "error_description": description}), status=status, mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="{realm}", error="invalid_token"' if error == "invalid_token" else f'Bearer realm="{realm}"'
        )
    return response


class GlobalTokenRevocation:
    """The endpoint of one provider, for any app the shield serves."""

    def __init__(self, settings: GlobalTokenRevocationSettings, jwks: JWKSClient) -> None:
        self.settings = settings
        self.jwks = jwks

    @classmethod
    def create(
        cls,
        *,
        issuer: str,
        jwks_url: str,
        audience: str | None,
        algorithms: t.Sequence[str],
        resolve_subject: SubjectResolver | None,
        max_age: float,
    ) -> GlobalTokenRevocation:
        """The endpoint for one provider; :class:`~flask_jwt_shield.ConfigurationError` for a
        bad URL or algorithm list."""
        try:
            client = JWKSClient(jwks_url, allowed=frozenset(algorithms))
        except ValueError as exc:
            raise ConfigurationError(f"global_token_revocation_view(jwks_url=...): {exc}") from None
        settings = GlobalTokenRevocationSettings(
            issuer=issuer, audience=audience, max_age=float(max_age), resolve_subject=resolve_subject
        )
        return cls(settings, client)

    def view(self) -> t.Callable[[], Response]:
        def global_token_revocation() -> Response:
            return self.handle(current_state())

        return role(global_token_revocation, "global_token_revocation_endpoint")

    def handle(self, state: ShieldState) -> Response:
        realm = state.config.request.realm
        try:
            claims = self.authenticate(state)
            sub_id = self.subject_identifier()
            sub = self.resolve(state, sub_id)
            detail = {"issuer": claims["iss"], "format": sub_id["format"], "auth_jti": claims["jti"]}
            revocation.revoke_subject(state, sub, by="global-token-revocation", detail=detail)
        except RequestRefused as exc:
            logger.warning("global token revocation refused: %s (%s)", exc.error, exc.description)
            if state.first_in_a_while(("global-logout", request.remote_addr or "", exc.error, str(exc.status))):
                detail = {"issuer": self.settings.issuer, "status": exc.status, "reason": exc.error}
                state.record("global-logout", None, action="deny", detail=detail)
            return _refusal(exc.status, exc.error, exc.description, realm)
        except KeysUnavailable as exc:
            response = _refusal(
                503, "temporarily_unavailable", "The provider's keys are unavailable; retry later.", realm
            )
            response.headers["Retry-After"] = str(exc.retry_after or 5)
            return response
        state.record("global-logout", None, subject=sub, action="revoke_subject", detail={**detail, "status": 204})
        response = Response(status=204)
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- the provider's JWT ---------------------------------------------------------------

    def authenticate(self, state: ShieldState) -> dict[str, t.Any]:
        """The claims of the provider's valid, never-seen JWT in the Authorization header."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip(" ").partition(" ")
        token = token.strip(" ")
        if scheme.lower() != "bearer" or not token:
            raise RequestRefused(401, "invalid_request", "Authenticate with the provider's signed JWT (Bearer).")
        if len(token) > _MAX_TOKEN:
            raise RequestRefused(401, "invalid_token", "The authentication token is too large.")
        try:
            header_segment, payload_segment, signature_segment = split_compact(token)
            jose_header = segment_object(header_segment)
            signature = b64decode(signature_segment)
        except JOSEError:
            raise RequestRefused(401, "invalid_token", "The authentication token is malformed.") from None
        alg, kid = jose_header.get("alg"), jose_header.get("kid")
        if not isinstance(alg, str) or alg not in self.jwks.allowed or "crit" in jose_header:
            raise RequestRefused(401, "invalid_token", "The authentication token's algorithm is not accepted.")
        if not isinstance(kid, str) or not kid or len(kid) > 255:
            raise RequestRefused(401, "invalid_token", "The authentication token names no key (kid).")
        try:
            key = self.jwks.key(kid, alg)  # KeysUnavailable (503) propagates
        except InvalidToken:
            raise RequestRefused(401, "invalid_token", "The authentication token's key is unknown.") from None
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        if not signature_valid(key.algorithm, key.verifying, signing_input, signature):
            raise RequestRefused(401, "invalid_token", "The authentication token's signature is invalid.")
        try:
            claims = segment_object(payload_segment)
        except JOSEError:
            raise RequestRefused(401, "invalid_token", "The authentication token is malformed.") from None
        return self._check_claims(state, claims)

    def _check_claims(self, state: ShieldState, claims: dict[str, t.Any]) -> dict[str, t.Any]:
        settings = self.settings
        if claims.get("iss") != settings.issuer:
            raise RequestRefused(401, "invalid_token", "The authentication token's issuer is not accepted.")
        audience = settings.audience or request.base_url
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise RequestRefused(401, "invalid_token", "The authentication token is not meant for this endpoint.")
        now = time.time()
        leeway = state.config.keys.leeway + _CLOCK_SKEW
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        for name, value in (("exp", exp), ("iat", iat)):
            if type(value) not in (int, float) or not math.isfinite(t.cast(float, value)):
                raise RequestRefused(401, "invalid_token", f"The authentication token has no {name}.")
        assert isinstance(exp, (int, float)) and isinstance(iat, (int, float))
        if exp <= now - state.config.keys.leeway:
            raise RequestRefused(401, "invalid_token", "The authentication token expired.")
        if iat > now + leeway or iat < now - settings.max_age:
            raise RequestRefused(401, "invalid_token", "The authentication token is not recent.")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise RequestRefused(401, "invalid_token", "The authentication token has no jti.")
        try:
            first = state.store.remember_once(
                _REPLAY_NAMESPACE,
                f"{settings.issuer}\x00{jti}",
                max(float(exp), iat + settings.max_age) + leeway,
                now=now,
            )
        except StoreError:
            raise StoreUnavailable() from None
        if not first:
            raise RequestRefused(401, "invalid_token", "The authentication token was used before.")
        return claims

    # -- the subject ------------------------------------------------------------------------

    def subject_identifier(self) -> dict[str, t.Any]:
        """The request's ``sub_id`` (RFC 9493), checked for its format's members."""
        if request.mimetype != "application/json":
            raise RequestRefused(400, "invalid_request", "Send the request as application/json.")
        length = request.content_length
        if length is not None and length > _MAX_BODY:
            raise RequestRefused(400, "invalid_request", "The request body is too large.")
        data = request.stream.read(_MAX_BODY + 1)
        if len(data) > _MAX_BODY:
            raise RequestRefused(400, "invalid_request", "The request body is too large.")
        try:
            body = json.loads(data.decode("utf-8"), object_pairs_hook=_unique)
        except (ValueError, RecursionError):  # bad UTF-8, bad JSON, a duplicated member, deep nesting
            raise RequestRefused(400, "invalid_request", "The request body is not a valid JSON object.") from None
        sub_id = body.get("sub_id") if isinstance(body, dict) else None
        if not isinstance(sub_id, dict):
            raise RequestRefused(400, "invalid_request", "The request has no sub_id object.")
        fmt = sub_id.get("format")
        members = FORMATS.get(fmt) if isinstance(fmt, str) else None
        if members is None:
            raise RequestRefused(400, "invalid_request", "The sub_id format is not supported.")
        for member in members:
            value = sub_id.get(member)
            if not isinstance(value, str) or not value or len(value) > 1024:
                raise RequestRefused(400, "invalid_request", f"The {fmt} identifier needs a {member} string.")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestRefused(400, "invalid_request", f"The {member} is not valid Unicode text.") from None
        return sub_id

    def resolve(self, state: ShieldState, sub_id: dict[str, t.Any]) -> str:
        """The ``sub`` of the app's tokens, or 404."""
        issuer = state.config.keys.issuer
        if sub_id["format"] == "iss_sub" and issuer is not None and sub_id["iss"] == issuer:
            return t.cast(str, sub_id["sub"])
        resolved = subjects.resolve(self.settings.resolve_subject, sub_id, "a global token revocation")
        if resolved is not None:
            return resolved
        raise RequestRefused(404, "invalid_request", "The subject names no user of this application.")


def _unique(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member")
    return dict(pairs)
