"""The request pipeline of one app: the steps in DESIGN.md's order, the action ladder, the
fail mode.

:meth:`JWTShield.init_app <flask_jwt_shield.JWTShield.init_app>` builds one
:class:`Pipeline` per app and keeps it in ``app.extensions["jwt_shield"]``; its :meth:`~Pipeline.run`
is the app's ``before_request`` hook. Read :meth:`Pipeline.run` top to bottom for what a
request goes through:

1. exempt? -- ``@shield.exempt``, ``JWT_SHIELD_EXEMPT_ENDPOINTS``, ``static``, CORS preflight;
2. extract (:mod:`.transport`); 3. verify (:mod:`.tokens`); 4. revocation (:mod:`.revocation`);
5. sender constraint (:mod:`.dpop`, fingerprint cookie); 6. rate (:mod:`.ratelimit`); 7. geo (:mod:`.geo`);
8. publish the claims on ``g._jwt_shield``.

Every step raises one of :mod:`.errors`; a detector's finding goes through :meth:`Pipeline.act`
(the action ladder), a store failure through :meth:`Pipeline.store_failed` (the fail mode).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing as t

from cryptography.hazmat.primitives import serialization
from flask import after_this_request
from flask import current_app
from flask import g
from flask import has_request_context
from flask import request

from . import signals
from .actions import Finding
from .config import ConfigKey
from .config import ShieldConfig
from .dpop import Nonces
from .dpop import ProofVerifier
from .errors import AccessDenied
from .errors import ConfigurationError
from .errors import InvalidDPoPProof
from .errors import InvalidGrant
from .errors import InvalidToken
from .errors import KeysUnavailable
from .errors import MissingToken
from .errors import RateLimitExceeded
from .errors import RevokedToken
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .events import EventRecorder
from .events import SecurityEvent
from .events import mask_ip
from .geo import GeoGuard
from .keys import KeyRing
from .ratelimit import LimiterStorageError
from .ratelimit import TokenRateLimiter
from .revocation import Checker
from .revocation import CheckerFailed
from .revocation import revocation_reason
from .revocation import revoked
from .signals import EventKind
from .stores import Store
from .tokens import Claims
from .tokens import TokenCodec
from .transport import Location
from .transport import extract_token
from .transport import fingerprint_matches

logger = logging.getLogger("flask_jwt_shield")

# One store-unavailable event per this many seconds per app, not one per request.
_OUTAGE_EVENT_INTERVAL = 5.0
# A token seen again from the same address within this many seconds skips the geo step:
# no store read or write per request in steady state, one event per minute at most.
_GEO_RECHECK = 60.0
_SEEN_MAX = 100_000
# Repeated refusals of one token (or client address) for one reason are recorded once per
# this many seconds: a hammering client must not turn into one stored event per request.
# The limiter and the spike detector still count every attempt.
_REPEAT_INTERVAL = 60.0

K = t.TypeVar("K")
R = t.TypeVar("R")


@dataclasses.dataclass(eq=False)
class Registry:
    """What an app registered through the extension's decorators.

    Owned by the :class:`~flask_jwt_shield.JWTShield` instance (decorators run before and
    after ``init_app``, for every app it serves) and read by each app's pipeline.
    """

    exempt_views: set[t.Callable[..., t.Any]] = dataclasses.field(default_factory=set)
    view_limits: dict[t.Callable[..., t.Any], str | None] = dataclasses.field(default_factory=dict)
    revocation_checkers: list[Checker] = dataclasses.field(default_factory=list)


class Pipeline:
    """One app's request pipeline and the per-app state it runs on."""

    def __init__(
        self,
        *,
        shield: object,
        registry: Registry,
        config: ShieldConfig,
        keys: KeyRing,
        codec: TokenCodec,
        store: Store,
        limiter: TokenRateLimiter | None,
        geo: GeoGuard | None,
    ) -> None:
        #: the :class:`~flask_jwt_shield.JWTShield` that built this pipeline
        self.shield = shield
        self.registry = registry
        self.config = config
        self.keys = keys
        self.codec = codec
        self.store = store
        self.recorder = EventRecorder(config, store)
        self.limiter = limiter
        self.geo = geo
        self._exempt: dict[str, bool] = {}
        #: The DPoP proof verifier, or ``None`` with ``JWT_SHIELD_DPOP = "off"``.
        self.dpop = _proof_verifier(config, keys, store)
        self._dpop_challenge = (config.dpop, self.dpop.algs) if self.dpop is not None else None
        self._headers = "headers" in config.token_locations
        self._cookies = "cookies" in config.token_locations
        # Step 5 runs for every request when DPoP or cookies are on, else only for a token
        # that names a key or a fingerprint (issued while they were on): never skipped.
        self._constrain = self.dpop is not None or self._cookies
        self._last_outage_event = -math.inf
        self._last_keys_event = -math.inf
        self._geo_seen: dict[tuple[str, str], float] = {}
        self._recent: dict[tuple[str, ...], float] = {}

    # -- the before_request hook -------------------------------------------------------------

    def run(self) -> None:
        """Check the current request; on success publish its claims on ``g._jwt_shield``."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        if endpoint is None:  # no route matched: Flask answers 404/405, nothing to protect
            return
        exempt = self._exempt.get(endpoint)
        if exempt is None:
            exempt = self._settle_endpoint(endpoint)
        if exempt:
            return
        environ = req.environ
        if environ["REQUEST_METHOD"] == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            return  # CORS preflight carries no credentials by design
        claims: Claims | None = None
        try:
            token, location = extract_token(req, environ, self.config.max_token_bytes, headers=self._headers,
                                            dpop=self.dpop is not None, cookies=self._cookies)  # fmt: skip
            claims, kid = self.codec.verify(token)
            self.check_revocation(claims, kid)
            if self._constrain or "cnf" in claims or "fgp" in claims:
                self.check_sender(claims, token, location, req)
            if self.limiter is not None and self.limiter.active:
                self._check_rate(claims, endpoint)
            if self.geo is not None:
                self.check_geo(claims, req.remote_addr)
        except KeysUnavailable:
            self._keys_unavailable()
            raise
        except ShieldError as exc:
            exc.realm = self.config.realm
            exc.dpop = self._dpop_challenge
            if not isinstance(exc, (MissingToken, StoreUnavailable, RateLimitExceeded, AccessDenied)):
                self._rejected(exc, claims)
            raise
        g._jwt_shield = claims
        if signals.token_verified.receivers:
            signals.token_verified.send(current_app._get_current_object(), claims=claims)  # type: ignore[attr-defined]

    def _settle_endpoint(self, endpoint: str) -> bool:
        """First request to ``endpoint``: settle its exemption and its own rate limit."""
        registry = self.registry
        # The view and what it wraps: @shield.exempt / @shield.limit under another decorator
        # (limiter.limit(...)(view), a login_required) still count, as functools.wraps says.
        views = _wrapped_chain(current_app.view_functions.get(endpoint))
        exempt = (
            endpoint in self.config.exempt_endpoints
            or endpoint == "static"
            or endpoint.endswith(".static")
            or any(v in registry.exempt_views for v in views)
        )
        limited = next((v for v in views if v in registry.view_limits), None)
        if limited is not None and self.limiter is not None:
            limits = registry.view_limits[limited]
            if limits is None:
                self.limiter.exempt_endpoint(endpoint)
            else:
                self.limiter.set_endpoint_limit(endpoint, limits)
        self._exempt[endpoint] = exempt
        return exempt

    # -- the steps -------------------------------------------------------------------------

    def check_revocation(self, claims: Claims, kid: str) -> None:
        """Step 4: raise 401 (revoked) when the store or a registered checker says so."""
        try:
            reason = revocation_reason(self.store, self.registry.revocation_checkers, claims, kid, time.time())
        except StoreError as exc:
            self.store_failed(exc, claims)
            return
        except CheckerFailed as exc:  # never a 200 by accident
            logger.error("revocation_checker %s raised; treating it as an unreachable store", exc,
                         exc_info=exc.__cause__)  # fmt: skip
            self.store_failed(exc, claims)
            return
        if reason is not None:
            raise revoked(reason)

    def check_sender(self, claims: Claims, token: str, location: Location, req: t.Any) -> None:
        """Step 5: a token bound to a key needs a DPoP proof by that key (RFC 9449 §7.1), a
        token bound to a fingerprint needs the fingerprint cookie; ``required`` refuses
        tokens bound to neither."""
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if cnf is not None and not isinstance(jkt, str):
            # RFC 7800 §3: a token confirmed by something else (an mTLS certificate's
            # x5t#S256, RFC 8705) is no bearer token either; it cannot be checked here.
            raise InvalidToken("The access token is bound by a confirmation method this server cannot check.",
                               reason="unsupported-cnf")  # fmt: skip
        if jkt is not None:
            verifier = self.dpop
            if verifier is None:
                raise InvalidToken("The access token is DPoP-bound, and DPoP is off here.", reason="dpop-off")
            if location != "dpop":
                raise InvalidToken("The access token is DPoP-bound: send it as 'Authorization: DPoP' with a"
                                   " DPoP proof.", reason="dpop-bound-as-bearer")  # fmt: skip
            try:
                environ = req.environ
                proof = verifier.verify(environ.get("HTTP_DPOP"), method=environ["REQUEST_METHOD"],
                                        url=verifier.request_url(environ) or "", access_token=token)  # fmt: skip
            except StoreError as exc:  # the replay cache is out of reach
                self.store_failed(exc, claims)
                return
            if proof.jkt != jkt:
                raise InvalidDPoPProof("The DPoP proof is signed by another key than the token is bound to.",
                                       reason="dpop-wrong-key")  # fmt: skip
            if proof.next_nonce is not None:
                send_nonce(proof.next_nonce)
        elif location == "dpop":
            raise InvalidToken("The access token is not DPoP-bound; send it as a Bearer token.",
                               reason="dpop-unbound")  # fmt: skip
        elif self.config.dpop == "required":
            raise InvalidToken("A DPoP-bound access token is required.", reason="dpop-required")
        fgp = claims.get("fgp")
        if fgp is not None:
            if not fingerprint_matches(req, fgp):
                raise InvalidToken("The access token's fingerprint cookie is missing or does not match.",
                                   reason="fingerprint-mismatch")  # fmt: skip
        elif location == "cookie":
            # set_cookies() takes only fingerprinted pairs: a cookie token without one was
            # put there by something else.
            raise InvalidToken("A token in a cookie must be bound to a fingerprint.", reason="fingerprint-missing")

    def token_request_proof(
        self, *, bound: str | None = None, required: bool = False, claims: Claims | None = None
    ) -> tuple[str | None, str | None]:
        """DPoP at a token endpoint (``issue_tokens``, ``refresh``; RFC 9449 §5).

        Returns the thumbprint of the key the request's proof proves (``None`` without a
        proof) and a nonce to send back, if any. ``bound``: the session's key, which the
        proof must be signed with; ``claims``: the refresh token's, for the event. Raises 400
        ``invalid_dpop_proof`` / ``use_dpop_nonce``.
        """
        verifier = self.dpop
        proof_header = request.headers.get("DPoP") if has_request_context() else None
        if verifier is None:
            if bound is not None:
                raise InvalidGrant("The session is DPoP-bound, and DPoP is off here.", reason="dpop-off")
            return None, None
        if proof_header is None and bound is None and not required:
            return None, None
        try:
            if not has_request_context():
                raise InvalidDPoPProof("A DPoP proof is required (the DPoP header).", reason="dpop-missing")
            url = verifier.request_url(request.environ) or ""
            proof = verifier.verify(proof_header, method=request.method, url=url)
            if bound is not None and proof.jkt != bound:
                raise InvalidDPoPProof("The DPoP proof is signed by another key than the session is bound to.",
                                       reason="dpop-wrong-key")  # fmt: skip
        except InvalidDPoPProof as exc:
            # Like a request's refusals: once a minute per client address and reason.
            who = claims["jti"] if claims is not None else (request.remote_addr if has_request_context() else "")
            if self.first_in_a_while(("dpop-rejected", who or "", exc.reason)):
                self.record("dpop-rejected", claims, action="deny", detail={"reason": exc.reason, "status": 400})
            error = InvalidGrant(exc.description, reason=exc.reason, error=exc.error)
            error.dpop_nonce = exc.dpop_nonce
            raise error from None
        except StoreError as exc:
            self.store_failed(exc, None)
            raise StoreUnavailable() from None  # an unproven binding is never issued
        return proof.jkt, proof.next_nonce

    def _check_rate(self, claims: Claims, endpoint: str) -> None:
        """Step 6: the per-token limit (429), spikes and the adaptive baseline."""
        config = self.config
        limiter = self.limiter
        assert limiter is not None
        identity = claims["jti"] if config.rate_limit_key == "jti" else claims["sub"]
        try:
            decision = limiter.check(identity, endpoint, subject=claims["sub"])
        except LimiterStorageError as exc:
            self.store_failed(exc, claims)
            return
        if decision.spike is not None:
            self.act(Finding("traffic-spike", config.spike_action, "Too many requests with this token.",
                             detail=decision.spike.as_detail()), claims)  # fmt: skip
        anomaly = decision.anomaly
        if anomaly is not None:
            # A short burst (an app starting, tabs reloading) is only flagged; the action
            # waits until the anomaly lasts (JWT_SHIELD_ADAPTIVE_SUSTAIN).
            action = config.adaptive_action if anomaly.sustained else "flag"
            self.act(Finding("traffic-anomaly", action, "Unusual traffic for this account.",
                             detail=anomaly.as_detail()), claims)  # fmt: skip
        if not decision.allowed:
            try:
                headers = decision.headers()
            except LimiterStorageError:
                headers = {}
            if self.first_in_a_while(("rate-limited", identity)):
                limit = decision.limit
                self.record("rate-limited", claims, action="deny",
                            detail={"limit": str(limit) if limit else None, "key": config.rate_limit_key,
                                    "endpoint": endpoint})  # fmt: skip
            headers.pop("Retry-After", None)  # the exception sends it
            raise RateLimitExceeded(retry_after=decision.retry_after, rate_headers=headers)

    def check_geo(self, claims: Claims, ip: str | None) -> None:
        """Step 7: allowed countries, the country the token was issued in, travel speed."""
        guard = self.geo
        assert guard is not None
        if ip is None:
            return
        key = (claims["jti"], ip)
        now = time.time()
        seen = self._geo_seen.get(key)
        if seen is not None and now - seen < _GEO_RECHECK:
            return  # this token from this address passed a minute ago: no lookup, no store
        location = guard.locate(ip)
        if location is None:  # no known place: never flagged, never denied
            _bounded_put(self._geo_seen, key, now)
            return
        issued_in = claims.get("ctry")
        for finding in guard.on_request(location, issued_in):
            self.act(finding, claims)
        # An identity provider's token has no ctry: judged against the subject's history.
        by_history = issued_in is None and self.config.resource_server and location.country is not None
        if location.has_coordinates or by_history:
            sub = claims["sub"]
            try:
                profile = self.store.get_profile(sub) or {}
            except StoreError as exc:
                self.store_failed(exc, claims)
                return
            updated = dict(profile)
            if by_history:
                for finding in guard.on_provider_token(location, updated):
                    self.act(finding, claims)  # raises above flag: the country is not stored
            travel, last = guard.travel(location, mask_ip(ip, self.config.event_ip), now, profile)
            if travel is not None:
                # Raises for every action above flag, before the new place is stored: the
                # last place stays the owner's, so the owner's next request is not flagged.
                self.act(travel, claims)
            if last is not None:
                updated["last"] = last
            if updated != profile:
                try:
                    self.store.put_profile(sub, updated)
                except StoreError as exc:
                    self.store_failed(exc, claims)
        _bounded_put(self._geo_seen, key, now)

    def login_geo(self, sub: str, ip: str | None) -> tuple[str | None, bool]:
        """The login-side checks: allowed countries, new country, travel (a login is a use).

        Returns the country (for the ``ctry`` claim) and whether it is new for the subject.
        """
        guard = self.geo
        location = guard.locate(ip) if guard is not None else None
        if guard is None or location is None or ip is None:
            return None, False
        try:
            profile = self.store.get_profile(sub) or {}
        except StoreError as exc:
            self.store_failed(exc, None)
            return location.country, False
        before = dict(profile)
        findings = guard.on_login(location, profile)
        travel, last = guard.travel(location, mask_ip(ip, self.config.event_ip), time.time(), profile, login=True)
        if travel is not None:
            findings.append(travel)
        for finding in findings:  # any action above flag raises: nothing issued, nothing stored
            self.act(finding, None, subject=sub)
        if last is not None:
            profile["last"] = last
        if profile != before:
            try:
                self.store.put_profile(sub, profile)
            except StoreError as exc:
                self.store_failed(exc, None)
        return location.country, any(f.kind == "new-country" for f in findings)

    # -- the action ladder -----------------------------------------------------------------

    def act(self, finding: Finding, claims: Claims | None, *, subject: str | None = None) -> None:
        """Record a detector's finding and apply its action from the ladder.

        ``flag`` returns; ``deny`` raises 403; the ``revoke*`` actions revoke first, then
        raise 401 (revoked). At login (no ``claims``) every action above ``flag`` denies the
        login, and ``revoke_subject`` also revokes the subject's existing tokens.
        """
        config = self.config
        action = finding.action
        effective = "flag" if config.monitor_only else action
        detail = finding.detail
        if effective != action:
            detail = {**detail, "monitor_only": True, "intended_action": action}
        sub = subject if subject is not None else (claims["sub"] if claims is not None else None)
        repeated = effective == "deny" and claims is not None and not self.first_in_a_while(
            (finding.kind, claims["jti"])
        )
        if not repeated:
            self.record(finding.kind, claims, subject=sub, country=finding.country, action=effective,
                        detail=detail)  # fmt: skip
        if effective == "flag":
            return
        if effective == "deny" or (claims is None and effective != "revoke_subject"):
            raise AccessDenied(finding.description, reason=finding.kind)
        now = time.time()
        until = self.revocation_horizon(now)
        why = {"reason": finding.kind}
        try:
            if effective == "revoke_subject" and sub is not None:
                self.store.revoke_subject(sub, now, until)
                self.record("subject-revoked", claims, subject=sub, action=effective, detail=why)
            elif claims is not None and effective == "revoke_family" and claims.get("sid"):
                self.store.revoke_family(claims["sid"], until)
                self.record("family-revoked", claims, action=effective, detail=why)
            elif claims is not None:
                self.store.revoke("jti", claims["jti"], float(claims["exp"]) + config.leeway + 1)
                self.record("token-revoked", claims, action="revoke", detail=why)
        except StoreError as exc:
            self.store_failed(exc, claims)
        if claims is None:
            raise AccessDenied(finding.description, reason=finding.kind)
        description = finding.description
        raise RevokedToken(f"The access token was revoked: {description[0].lower()}{description[1:]}",
                           reason=f"revoked-{finding.kind}")  # fmt: skip

    def revocation_horizon(self, now: float) -> float:
        """Until when a revocation made at ``now`` must be kept: past the longest token."""
        return now + self.config.longest_ttl + self.config.leeway + 1

    # -- operators' revocations (JWTShield.revoke_* and the CLI) -----------------------------

    def revoke_token(self, token_or_jti: str, *, by: str | None = None) -> str:
        """See :meth:`JWTShield.revoke_token <flask_jwt_shield.JWTShield.revoke_token>`."""
        now = time.time()
        sub = sid = None
        jti: str
        if token_or_jti.count(".") == 2:
            claims = self.codec.inspect(token_or_jti)
            jti, sub, sid = claims["jti"], claims["sub"], claims.get("sid")
            until = float(claims["exp"]) + self.config.leeway + 1
        else:
            jti, until = token_or_jti, self.revocation_horizon(now)
        self.write(lambda: self.store.revoke("jti", jti, until))
        self.record("token-revoked", None, subject=sub, jti=jti, sid=sid, action="revoke", detail=_by(by))
        return jti

    def revoke_family(self, sid: str, *, by: str | None = None) -> None:
        """See :meth:`JWTShield.revoke_family <flask_jwt_shield.JWTShield.revoke_family>`."""
        until = self.revocation_horizon(time.time())
        family = self.write(lambda: self.store.revoke_family(sid, until))
        self.record("family-revoked", None, subject=family.sub if family else None, sid=sid, action="revoke_family",
                    detail=_by(by))  # fmt: skip

    def revoke_subject(self, sub: str, *, by: str | None = None) -> None:
        """See :meth:`JWTShield.revoke_subject <flask_jwt_shield.JWTShield.revoke_subject>`."""
        at = time.time()
        self.write(lambda: self.store.revoke_subject(sub, at, self.revocation_horizon(at)))
        self.record("subject-revoked", None, subject=sub, action="revoke_subject", detail=_by(by))

    def revoke_key(self, kid: str, *, by: str | None = None) -> None:
        """See :meth:`JWTShield.revoke_key <flask_jwt_shield.JWTShield.revoke_key>`."""
        signing = self.keys.signing_key
        if signing is not None and signing.kid == kid:
            raise ValueError(
                f"Key {kid!r} still signs new tokens; revoking it would reject every new login."
                " Put a new key first in JWT_SHIELD_KEYS, deploy, then revoke this one."
            )
        until = self.revocation_horizon(time.time())
        self.write(lambda: self.store.revoke("kid", kid, until))
        self.record("key-revoked", None, kid=kid, action="revoke", detail=_by(by))

    # -- the fail mode ---------------------------------------------------------------------

    def store_failed(self, exc: Exception, claims: Claims | None) -> None:
        """Apply ``JWT_SHIELD_FAIL_MODE``: raise 503 (closed) or return (open)."""
        now = time.time()
        if now - self._last_outage_event >= _OUTAGE_EVENT_INTERVAL:
            self._last_outage_event = now
            self.record("store-unavailable", claims,
                        action="deny" if self.config.fail_mode == "closed" else "flag",
                        detail={"error": type(exc).__name__, "fail_mode": self.config.fail_mode})  # fmt: skip
        if self.config.fail_mode == "closed":
            raise StoreUnavailable()

    def _keys_unavailable(self) -> None:
        """Resource-server mode without a usable key: 503 whatever the fail mode (the caller
        re-raises); one event per outage interval."""
        now = time.time()
        if now - self._last_keys_event >= _OUTAGE_EVENT_INTERVAL:
            self._last_keys_event = now
            remote = self.codec.remote
            error = (remote.last_error if remote is not None else None) or "no usable key"
            self.record("jwks-unavailable", None, action="deny", detail={"error": error})

    @staticmethod
    def write(operation: t.Callable[[], R]) -> R:
        """Run an operator's store write (a revocation): 503 when it fails, in both modes."""
        try:
            return operation()
        except StoreError:
            # An operator's revocation must never be lost silently, whatever the fail mode.
            raise StoreUnavailable() from None

    # -- events ----------------------------------------------------------------------------

    def record(self, kind: EventKind, claims: Claims | None, **fields: t.Any) -> SecurityEvent:
        """Record one security event, naming the token of ``claims`` by its ``jti``."""
        if claims is not None:
            fields.setdefault("subject", claims.get("sub"))
            fields.setdefault("jti", claims.get("jti"))
            fields.setdefault("sid", claims.get("sid"))
        if has_request_context():
            fields.setdefault("ip", request.remote_addr)
        return self.recorder.record(current_app._get_current_object(), kind, **fields)  # type: ignore[attr-defined]

    def _rejected(self, exc: ShieldError, claims: Claims | None) -> None:
        who = claims["jti"] if claims is not None else (request.remote_addr or "")
        kind: EventKind = "dpop-rejected" if isinstance(exc, InvalidDPoPProof) or exc.reason.startswith("dpop-") else (
            "token-rejected")  # fmt: skip
        if self.first_in_a_while((kind, who, exc.reason)):
            self.record(kind, claims, action="deny", detail={"reason": exc.reason, "status": exc.code})

    def first_in_a_while(self, key: tuple[str, ...]) -> bool:
        """True (and remembered) unless ``key`` was seen in the last ``_REPEAT_INTERVAL`` seconds.

        How every refusal that repeats (a hammering client, a replayed SET) is recorded
        once a minute per process instead of once per request.
        """
        now = time.time()
        last = self._recent.get(key)
        if last is not None and now - last < _REPEAT_INTERVAL:
            return False
        _bounded_put(self._recent, key, now)
        return True


def _by(who: str | None) -> dict[str, str]:
    """An operator's revocation names where it came from (``"dashboard"``), when known."""
    return {"by": who} if who else {}


def _proof_verifier(config: ShieldConfig, keys: KeyRing, store: Store) -> ProofVerifier | None:
    if config.dpop == "off":
        return None
    nonces = None
    if config.dpop_nonce_ttl is not None:
        signing = keys.signing_key
        if signing is None:
            raise ConfigurationError(
                f"{ConfigKey.DPOP_NONCE_TTL} needs a signing key (its nonces are keyed with it); this"
                " app only verifies. Remove the setting, or configure the signing key."
            )
        material = signing.signing
        if not isinstance(material, bytes):
            material = material.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())  # fmt: skip
        nonces = Nonces(material, config.dpop_nonce_ttl)
    return ProofVerifier(algorithms=config.dpop_algorithms, max_age=config.dpop_max_age, leeway=config.leeway,
                         store=store, max_bytes=config.max_token_bytes, nonces=nonces)  # fmt: skip


def send_nonce(nonce: str) -> None:
    """Send ``DPoP-Nonce`` on this request's response (RFC 9449 §8.2: a fresh one, early)."""

    @after_this_request
    def add_nonce(response: t.Any) -> t.Any:
        response.headers["DPoP-Nonce"] = nonce
        return response


def _wrapped_chain(view: t.Callable[..., t.Any] | None) -> list[t.Callable[..., t.Any]]:
    """``view``, then each function it wraps (``__wrapped__``), outermost first."""
    chain: list[t.Callable[..., t.Any]] = []
    while view is not None and len(chain) < 32 and view not in chain:  # a cycle, or absurd depth
        chain.append(view)
        view = getattr(view, "__wrapped__", None)
    return chain


def _bounded_put(cache: dict[K, float], key: K, value: float) -> None:
    if len(cache) >= _SEEN_MAX:
        try:
            del cache[next(iter(cache))]
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass
    cache[key] = value
