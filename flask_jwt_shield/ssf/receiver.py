"""The identity provider's own revocation signals: Security Event Tokens (RFC 8417) pushed
per RFC 8935, in the OpenID Shared Signals vocabulary (CAEP and RISC).

:meth:`JWTShield.security_events_blueprint <flask_jwt_shield.JWTShield.security_events_blueprint>`
serves one endpoint that the provider POSTs each SET to (``Content-Type:
application/secevent+jwt``). A SET is accepted only when

* its header ``typ`` is ``secevent+jwt`` (RFC 8417 §2.3) and its ``alg`` one the
  configuration allows; its signature verifies with the provider's JWK Set (the same client,
  cache and hygiene as resource-server mode, :mod:`.jwks`);
* ``iss`` and ``aud`` are the expected ones, ``iat`` is not in the future nor older than the
  replay window, ``jti`` was never applied before (remembered in the store, shared by every
  process, once its events are applied: a delivery that fails is answered 503 and the
  transmitter's retry applies it), and ``events`` is an object.

Then each event it carries is mapped to the shield's own revocations:

==========================================  ====================================
event type                                  the shield
==========================================  ====================================
CAEP ``session-revoked``                    revokes that session when the store
                                            knows it; else per ``session_fallback``:
                                            every token of the user (``"subject"``)
                                            or the tokens carrying that ``sid``
                                            (``"none"``); every token of the user
                                            when the subject names no session
CAEP ``credential-change``                  revokes every token of the subject
RISC ``sessions-revoked``                   revokes every token of the subject
RISC ``account-disabled``                   revokes every token of the subject
RISC ``account-purged``                     revokes every token of the subject
verification, anything else                 nothing (202): RFC 8417 §2.2 says
                                            unknown events are ignored
==========================================  ====================================

each recorded as a ``family-revoked`` / ``subject-revoked`` event whose ``detail`` names the
SET and says what was done. A transmitter names only its own users: an ``iss_sub`` is the
``sub`` of the app's tokens when its ``iss`` is both the SET's and the tokens' issuer; any
other identifier goes through ``resolve_subject``.

Answers follow RFC 8935 §2.3/§2.4: 202 on success, 400 with ``{"err", "description"}``
(``invalid_request``, ``invalid_key``, ``invalid_issuer``, ``invalid_audience``) for a bad SET,
401 ``authentication_failed`` / 403 ``access_denied`` when the application's ``authorize``
callback refuses the transmitter, 503 while the keys or the store are unreachable or another
delivery of the same SET is being applied; never a 500.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import secrets
import time
import typing as t

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request

from .. import revocation
from .. import subjects
from ..errors import ConfigurationError
from ..errors import InvalidToken
from ..errors import KeysUnavailable
from ..errors import StoreError
from ..errors import StoreUnavailable
from ..jose import JOSEError
from ..jose import b64decode
from ..jose import segment_object
from ..jose import signature_valid
from ..jose import split_compact
from ..jwks import JWKSClient
from ..state import EXTENSION_KEY
from ..state import ShieldState
from ..state import current_state
from ..subjects import SubjectResolver
from .vocabulary import ACCOUNT_DISABLED
from .vocabulary import ACCOUNT_PURGED
from .vocabulary import CREDENTIAL_CHANGE
from .vocabulary import KEY_REVOKED
from .vocabulary import SESSION_REVOKED
from .vocabulary import SESSIONS_REVOKED
from .vocabulary import TOKEN_REVOKED

logger = logging.getLogger("flask_jwt_shield")

SET_TYPE = "secevent+jwt"
_SET_TYPES = frozenset({"secevent+jwt", "application/secevent+jwt"})
_MAX_BYTES = 64 * 1024
_REPLAY_NAMESPACE = "ssf-jti"
_LEASE_NAMESPACE = "ssf-jti-lease"
#: Seconds one delivery of a SET holds it while applying it; a failed delivery's retry
#: (told ``Retry-After``) comes after it.
LEASE = 30.0

#: Event type -> what the shield does: ``"session"`` (that session, else the subject),
#: ``"subject"`` (every token of the subject), ``"token"`` (one token, by ``jti``) or
#: ``"key"`` (every token signed by that ``kid``). The last two only from the tokens' own
#: issuer: another issuer's token and key ids name nothing here.
ACTIONS: dict[str, str] = {
    SESSION_REVOKED: "session",
    CREDENTIAL_CHANGE: "subject",
    SESSIONS_REVOKED: "subject",
    ACCOUNT_DISABLED: "subject",
    ACCOUNT_PURGED: "subject",
    TOKEN_REVOKED: "token",
    KEY_REVOKED: "key",
}

#: What a CAEP ``session-revoked`` revokes when the session is not one the store knows:
#: ``"subject"`` every token of the user, ``"none"`` only tokens carrying that ``sid``.
SessionFallback = t.Literal["subject", "none"]
SESSION_FALLBACKS = ("subject", "none")
#: ``authorize() -> bool``: runs in the request; ``False`` refuses the transmitter (401).
Authorizer = t.Callable[[], bool]


class SETError(Exception):
    """A SET refused with an RFC 8935 error code."""

    def __init__(self, err: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.err = err
        self.description = description
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """What one security-events endpoint expects; ``None`` means the app's setting
    (``JWT_SHIELD_ISSUER``, ``JWT_SHIELD_AUDIENCE``)."""

    issuer: str | None = None
    audience: str | None = None
    max_age: float = 7 * 86400.0
    resolve_subject: SubjectResolver | None = None
    authorize: Authorizer | None = None
    session_fallback: SessionFallback = "subject"


def error_response(err: str, description: str, status: int = 400) -> Response:
    # RFC 8935 §2.4: {"err": ..., "description": ...}; never cached.
    body = json.dumps({"err": err, "description": description})
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


#: Where :mod:`.connection` keeps an app's connection to a transmitter.
CONNECTION_KEY = "jwt_shield_ssf_connection"


class SecurityEventReceiver:
    """Verifies SETs and applies their events to one app's state.

    ``follow_connection``: when the app has a connection to a transmitter
    (``JWT_SHIELD_SSF_RECEIVE_FROM``), its pushes are checked with that stream's settings
    (:meth:`.connection.Connection.handle_push`) instead of these.
    """

    def __init__(self, settings: ReceiverSettings, jwks: JWKSClient | None, *, follow_connection: bool = False) -> None:
        self.settings = settings
        self._jwks = jwks  # None: the resource-server mode's client of the app
        self.follow_connection = follow_connection

    def handle(self, state: ShieldState) -> Response:
        """The endpoint: check the transmitter and the SET, act, answer per RFC 8935."""
        if self.follow_connection:
            connection = current_app.extensions.get(CONNECTION_KEY)
            if connection is not None:
                return t.cast(Response, connection.handle_push(state))
        try:
            self.check(state)
        except ValueError as exc:
            logger.error("security events cannot be verified: %s", exc)
            return error_response("temporarily_unavailable", "This recipient cannot verify SETs yet.", 503)
        try:
            authorize = self.settings.authorize
            if authorize is not None and not authorize():
                raise SETError("authentication_failed", "The SET Transmitter could not be authenticated.", 401)
            self.accept(state, self._body())
        except SETError as exc:
            logger.warning("security event refused: %s (%s)", exc.err, exc.description)
            # Like refused tokens: once a minute per client address and reason, so junk
            # POSTed in a loop is not one stored event per request.
            again = ("set-rejected", request.remote_addr or "", exc.err)
            if exc.status not in (401, 503) and state.first_in_a_while(again):
                state.record(
                    "token-rejected",
                    None,
                    action="deny",
                    detail={"reason": f"set-{exc.err}", "status": exc.status, "set": True},
                )
            response = error_response(exc.err, exc.description, exc.status)
            if exc.status == 503:
                response.headers["Retry-After"] = str(int(LEASE))
            return response
        except KeysUnavailable as exc:
            response = error_response(
                "temporarily_unavailable", "The SET Issuer's keys are unavailable; retry later.", 503
            )
            response.headers["Retry-After"] = str(exc.retry_after or 5)
            return response
        except StoreUnavailable:
            response = error_response("temporarily_unavailable", "The security store is unavailable; retry later.", 503)
            # Past the lease of this delivery, so that the retry is the one that applies it.
            response.headers["Retry-After"] = str(int(LEASE))
            return response
        return Response(status=202)

    def accept(self, state: ShieldState, token: str) -> dict[str, t.Any]:
        """Verify one SET, apply its events exactly once, and return its claims.

        Raises :class:`SETError` (refused), :class:`~flask_jwt_shield.errors.KeysUnavailable`
        or :class:`~flask_jwt_shield.errors.StoreUnavailable` (try again later). Needs an app
        context: the push endpoint and the poller (:mod:`.connection`) both come here.
        """
        claims = self.verify(state, token)
        remembered = self.claim(state, claims)
        self.apply(state, claims)
        if not remembered:
            self.applied(state, claims)
        return claims

    def _body(self) -> str:
        # RFC 8935 §2.2: the body is the SET itself, as application/secevent+jwt.
        if request.mimetype != "application/secevent+jwt":
            raise SETError("invalid_request", "The Content-Type must be application/secevent+jwt.")
        length = request.content_length
        if length is not None and length > _MAX_BYTES:
            raise SETError("invalid_request", "The SET is too large.")
        data = request.stream.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            raise SETError("invalid_request", "The SET is too large.")
        try:
            return data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise SETError("invalid_request", "The request body is not a SET.") from None

    def client(self, state: ShieldState) -> JWKSClient:
        jwks = self._jwks or state.codec.remote
        if jwks is None:  # refused when the blueprint is registered; kept for type checkers
            raise SETError("invalid_key", "No JWK Set is configured for SETs.")
        return jwks

    def check(self, state: ShieldState) -> None:
        """Raise :class:`ValueError` when this app cannot verify SETs (at registration)."""
        if self._jwks is None and state.codec.remote is None:
            raise ValueError(
                "security_events_blueprint() needs the SET Issuer's JWK Set: give jwks_url=..., or"
                " use resource-server mode (JWT_SHIELD_JWKS_URL), whose provider keys are used."
            )
        if self.expected_issuer(state) is None or self.expected_audience(state) is None:
            raise ValueError(
                "security_events_blueprint() needs the SET Issuer and Audience: give issuer=... and"
                " audience=..., or set JWT_SHIELD_ISSUER and JWT_SHIELD_AUDIENCE."
            )

    def expected_issuer(self, state: ShieldState) -> str | None:
        return self.settings.issuer or state.config.keys.issuer

    def expected_audience(self, state: ShieldState) -> str | None:
        return self.settings.audience or state.config.keys.audience

    def verify(self, state: ShieldState, token: str) -> dict[str, t.Any]:
        """The claims of a valid, never-seen SET; :class:`SETError` otherwise."""
        settings = self.settings
        try:
            header_segment, payload_segment, signature_segment = split_compact(token)
        except JOSEError:
            raise SETError("invalid_request", "The request body is not a signed SET (compact JWS).") from None
        try:
            header = segment_object(header_segment)
            signature = b64decode(signature_segment)
        except JOSEError:
            raise SETError("invalid_request", "The SET is malformed.") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _SET_TYPES:
            # RFC 8417 §2.3: explicit typing, so an access or ID token is never taken for a SET.
            raise SETError("invalid_request", "The SET's typ header must be secevent+jwt.")
        if "crit" in header:
            raise SETError("invalid_request", "The SET uses an unsupported critical extension.")
        alg, kid = header.get("alg"), header.get("kid")
        jwks = self.client(state)
        if not isinstance(alg, str) or alg not in jwks.allowed:
            raise SETError("invalid_key", "The SET's algorithm is not accepted.")
        if not isinstance(kid, str) or not kid or len(kid) > 255:
            raise SETError("invalid_key", "The SET names no known key (kid).")
        try:
            key = jwks.key(kid, alg)  # KeysUnavailable (503) propagates
        except InvalidToken:
            raise SETError("invalid_key", "The SET's signing key is unknown or does not fit its algorithm.") from None
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        if not signature_valid(key.algorithm, key.verifying, signing_input, signature):
            raise SETError("invalid_key", "The SET's signature is invalid.")
        try:
            claims = segment_object(payload_segment)
        except JOSEError:
            raise SETError("invalid_request", "The SET's claims are malformed.") from None
        if claims.get("iss") != self.expected_issuer(state):
            raise SETError("invalid_issuer", "The SET Issuer is not accepted by this recipient.")
        aud, audience = claims.get("aud"), self.expected_audience(state)
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise SETError("invalid_audience", "The SET Audience does not name this recipient.")
        jti, events = claims.get("jti"), claims.get("events")
        raw_iat: t.Any = claims.get("iat")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise SETError("invalid_request", "The SET has no jti.")
        if type(raw_iat) not in (int, float) or not math.isfinite(raw_iat):
            raise SETError("invalid_request", "The SET has no iat.")
        iat = float(raw_iat)
        now = time.time()
        leeway = state.config.keys.leeway + 60  # the provider's clock, not ours
        if iat > now + leeway:
            raise SETError("invalid_request", "The SET was issued in the future.")
        if iat < now - settings.max_age:
            raise SETError("invalid_request", "The SET is older than this recipient's replay window.")
        exp = claims.get("exp")
        if exp is not None and (type(exp) not in (int, float) or not exp > now - state.config.keys.leeway):
            raise SETError("invalid_request", "The SET expired.")
        if not isinstance(events, dict) or not events or not all(isinstance(v, dict) for v in events.values()):
            raise SETError("invalid_request", "The SET's events claim must be an object of objects.")
        return claims

    # -- exactly once: refused when seen, remembered only once applied ----------------------

    def claim(self, state: ShieldState, claims: dict[str, t.Any]) -> bool:
        """Refuse a SET applied before (400) or being applied right now by another delivery
        (503, retry later); else hold it for :data:`LEASE` seconds while this one applies it.
        ``True`` when the ``jti`` is remembered already (see below).

        The store offers test-and-set only (``remember_once``), and no "forget", so the
        ``jti`` is remembered as applied only after the events are (:meth:`applied`): a
        delivery that fails on the way leaves it unremembered and the transmitter's retry
        applies it. The test is ``remember_once`` with ``until=now``: an entry that expires
        at once, so it answers "remembered?" and keeps nothing. The lease serializes
        deliveries of one SET across processes, so two at once do not both apply it.

        A store over its size bound may have dropped remembered SETs and then answers
        "seen" for any key it is not sure of (its floor), the test included: told apart by
        a key never used, such a SET is remembered before it is applied, as a replay must
        never be applied twice (a failure then loses it, as it would have been refused).
        """
        key, now = _replay_key(claims), time.time()
        store = state.store
        try:
            if not store.remember_once(_REPLAY_NAMESPACE, key, now, now=now):
                if store.remember_once(_REPLAY_NAMESPACE, f"\x00unused\x00{secrets.token_hex(16)}", now, now=now):
                    raise SETError("invalid_request", "This SET was received before (jti replay).")
                if not store.remember_once(_REPLAY_NAMESPACE, key, self._until(state, claims), now=now):
                    raise SETError("invalid_request", "This SET was received before (jti replay).")
                return True
            if not store.remember_once(_LEASE_NAMESPACE, key, now + LEASE, now=now):
                raise SETError("temporarily_unavailable", "This SET is being applied; retry later.", 503)
        except StoreError:
            raise StoreUnavailable() from None
        return False

    def applied(self, state: ShieldState, claims: dict[str, t.Any]) -> None:
        """Remember the SET's ``jti`` as applied, until past the replay window."""
        try:
            if not state.store.remember_once(
                _REPLAY_NAMESPACE, _replay_key(claims), self._until(state, claims), now=time.time()
            ):
                # Only when applying took longer than the lease and another delivery ran.
                logger.warning("SET %s was applied by two deliveries at once", claims["jti"])
        except StoreError:
            # Applied but not remembered: the transmitter's retry of this 503 applies it
            # again (the same revocation), then it is remembered.
            raise StoreUnavailable() from None

    def _until(self, state: ShieldState, claims: dict[str, t.Any]) -> float:
        return float(claims["iat"]) + self.settings.max_age + state.config.keys.leeway + 60

    def apply(self, state: ShieldState, claims: dict[str, t.Any]) -> None:
        """Apply each event of a verified SET; unknown event types are ignored."""
        for event_type, payload in claims["events"].items():
            action = ACTIONS.get(event_type)
            if action is None:
                logger.info("security event %s (SET %s) needs no action", event_type, claims["jti"])
                continue
            subject = payload.get("subject", claims.get("sub_id"))
            if not isinstance(subject, dict):
                raise SETError("invalid_request", f"The {event_type} event has no subject.")
            detail = {
                "reason": "security-event",
                "event": event_type,
                "set_jti": claims["jti"],
                "set_iss": claims["iss"],
            }
            if action in ("token", "key"):
                self._revoke_token_or_key(state, claims, action, payload, detail)
                continue
            if action == "session" and self._revoke_session(state, claims, subject, detail):
                continue
            sub = self._subject(state, claims, subject, required=True)
            assert sub is not None
            revocation.revoke_subject(state, sub, detail=detail, at=self._not_before(state, claims, payload))

    def _not_before(self, state: ShieldState, claims: dict[str, t.Any], payload: dict[str, t.Any]) -> float | None:
        """The instant a subject-wide event revokes up to, when the tokens' own issuer says
        it (the shield transmitter's ``not_before`` member): the revocation's own instant at
        the issuer, so that a login right after it, already made when the SET arrives, is
        not refused here. ``None`` (now) for any other issuer or value."""
        at: t.Any = payload.get("not_before")
        if claims["iss"] != state.config.keys.issuer or type(at) not in (int, float) or not math.isfinite(at):
            return None
        if at < time.time() - self.settings.max_age:
            return None
        return float(at)

    def _revoke_token_or_key(
        self,
        state: ShieldState,
        claims: dict[str, t.Any],
        action: str,
        payload: dict[str, t.Any],
        detail: dict[str, t.Any],
    ) -> None:
        """The shield's own ``token-revoked`` (``jti``) and ``key-revoked`` (``kid``) events.

        Only from the tokens' own issuer: a ``jti`` or ``kid`` names a token or key of the
        issuer that made it, and another issuer naming one here would revoke at random.
        """
        name = "jti" if action == "token" else "kid"
        value = payload.get(name)
        if claims["iss"] != state.config.keys.issuer:
            logger.info("SET %s revokes a %s of another issuer than the tokens': no action", claims["jti"], name)
            return
        if not isinstance(value, str) or not value or len(value) > 255 or value.count(".") == 2:
            raise SETError("invalid_request", f"The {action}-revoked event has no valid {name!r}.")
        if action == "token":
            revocation.revoke_token(state, value, detail=detail)
            return
        try:
            revocation.revoke_key(state, value, detail=detail)
        except ValueError:  # this app signs with that key: not the transmitter's to revoke
            raise SETError("invalid_request", "The key-revoked event names this recipient's own signing key.") from None

    def _revoke_session(
        self, state: ShieldState, claims: dict[str, t.Any], subject: dict[str, t.Any], detail: dict[str, t.Any]
    ) -> bool:
        """Revoke the session a CAEP ``session-revoked`` names, as far as it can be told
        apart; ``False`` when the subject's tokens must all go instead.

        A session the store knows (a family of this app) is revoked alone. Any other one
        (resource-server mode, where the provider's ``sid`` claim is the session, if its
        tokens carry one at all): ``session_fallback="subject"`` revokes every token of the
        user, ``"none"`` refuses only the tokens whose ``sid`` claim is that session. A
        session id from a SET Issuer other than the tokens' names none of our sessions.
        """
        sid = _session_id(subject)
        if sid is None:
            return False  # a user without a session: every session of the user
        if claims["iss"] != state.config.keys.issuer:
            if self.settings.session_fallback == "subject":
                return False
            logger.info("SET %s names a session of another issuer; session_fallback='none': no action", claims["jti"])
            return True
        try:
            known = state.store.get_family(sid) is not None
        except StoreError:
            raise StoreUnavailable() from None
        if not known and self.settings.session_fallback == "subject":
            sub = self._subject(state, claims, subject, required=False)
            if sub is not None:
                detail.update(session=sid, session_known=False, session_fallback="subject")
                revocation.revoke_subject(state, sub, detail=detail, at=self._not_before(state, claims, {}))
                return True
        if not known:
            detail["session_known"] = False  # refused: only the tokens carrying this sid
        resolve = functools.partial(self._subject, state, claims, subject, required=False)
        revocation.revoke_family(state, sid, detail=detail, subject=resolve)
        return True

    def _subject(
        self, state: ShieldState, claims: dict[str, t.Any], subject: dict[str, t.Any], *, required: bool
    ) -> str | None:
        """The ``sub`` of the application's tokens for an RFC 9493 subject identifier.

        An ``iss_sub`` names that ``sub`` only when its ``iss`` is both the SET's issuer and
        the tokens' issuer: a transmitter speaks for its own users, never for another
        issuer's (a third-party sender naming the app's own issuer goes through
        ``resolve_subject`` like any other identifier).
        """
        nested = subject.get("user")
        user: dict[str, t.Any] = nested if isinstance(nested, dict) else subject
        fmt = user.get("format", user.get("subject_type"))  # subject_type: RISC's older drafts
        if fmt in ("iss_sub", "iss-sub") and isinstance(user.get("sub"), str) and user["sub"]:
            if user.get("iss") == claims["iss"] == state.config.keys.issuer:
                return t.cast(str, user["sub"])
        resolved = subjects.resolve(self.settings.resolve_subject, user, "a security event")
        if resolved is not None:
            return resolved
        if required:
            raise SETError(
                "invalid_request",
                "The event's subject names no user of this recipient (an iss_sub of the tokens' issuer,"
                " or one that resolve_subject maps).",
            )
        return None


def _replay_key(claims: dict[str, t.Any]) -> str:
    return f"{claims['iss']}\x00{claims['jti']}"


def _session_id(subject: dict[str, t.Any]) -> str | None:
    """The session a CAEP ``session-revoked`` subject names, if any (RFC 9493 / CAEP §3.1)."""
    session = subject.get("session")
    if isinstance(session, dict):
        subject = session
    elif "user" in subject:
        return None  # a user without a session: every session of the user
    if subject.get("format", subject.get("subject_type")) == "opaque":
        sid = subject.get("id")
        if isinstance(sid, str) and 0 < len(sid) <= 255:
            return sid
    return None


def make_blueprint(
    name: str,
    url: str,
    receiver: SecurityEventReceiver,
    exempt: t.Callable[[t.Callable[..., Response]], t.Callable[..., Response]],
) -> Blueprint:
    """The blueprint with the one POST endpoint (exempt from the token pipeline)."""
    bp = Blueprint(name, __name__)

    def security_events() -> Response:
        return receiver.handle(current_state())

    bp.add_url_rule(url, "security_events", exempt(security_events), methods=["POST"])

    def check(setup: t.Any) -> None:
        state = setup.app.extensions.get(EXTENSION_KEY)
        if receiver.follow_connection and CONNECTION_KEY in setup.app.extensions:
            return  # the connection's stream says what to expect
        if state is not None:  # else checked by the first SET (init_app may come later)
            try:
                receiver.check(state)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None

    bp.record_once(check)
    return bp
