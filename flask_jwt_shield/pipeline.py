"""The request pipeline of one app: the steps in DESIGN.md's order.

:meth:`JWTShield.init_app <flask_jwt_shield.JWTShield.init_app>` builds one
:class:`Pipeline` per app over the app's :class:`~flask_jwt_shield.state.ShieldState`; its
:meth:`~Pipeline.run` is the app's ``before_request`` hook, and only the face builds one.
Read :meth:`Pipeline.run` top to bottom for what a request goes through:

1. exempt? -- ``@shield.exempt``, ``JWT_SHIELD_EXEMPT_ENDPOINTS``, ``static``, CORS preflight;
2. extract (:mod:`.transport`); 3. verify (:mod:`.tokens`); 4. revocation (:mod:`.revocation`,
and in resource-server mode the issuer's Token Status List, :mod:`.statuslist.client`);
5. sender constraint (:mod:`.dpop`, fingerprint cookie); 6. rate (:mod:`.ratelimit`); 7. geo (:mod:`.geocheck`);
8. publish the claims on ``g._jwt_shield``.

Every step raises one of :mod:`.errors`; a detector's finding goes up the action ladder
(:func:`.revocation.act`), a store failure through the fail mode
(:meth:`ShieldState.store_failed <flask_jwt_shield.state.ShieldState.store_failed>`).
"""

from __future__ import annotations

import functools
import time
import typing as t

from flask import Blueprint
from flask import Flask
from flask import after_this_request
from flask import current_app
from flask import g
from flask import request

from . import dbsc
from . import geocheck
from . import revocation
from . import signals
from .actions import Finding
from .cache import bounded_put
from .errors import AccessDenied
from .errors import InsufficientUserAuthentication
from .errors import InvalidDPoPProof
from .errors import InvalidToken
from .errors import KeysUnavailable
from .errors import MissingToken
from .errors import RateLimitExceeded
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .ratelimit import LimiterStorageError
from .ratelimit import RateDecision
from .signals import EventKind
from .state import ShieldState
from .statuslist.client import StatusListUnavailable
from .tokens import Claims
from .transport import FINGERPRINT_COOKIE
from .transport import Location
from .transport import TokenExtractor
from .transport import fingerprint_matches
from .transport import request_cookies
from .transport import send_nonce

# How many (cookie token, fingerprint, bound cookie) successes check_sender remembers.
_SENDERS = 4096
_RECORDED_ELSEWHERE = (MissingToken, StoreUnavailable, RateLimitExceeded, AccessDenied, InsufficientUserAuthentication)

# How an endpoint is served (compared by identity on the hot path).
REQUIRED, EXEMPT, OPTIONAL = 0, 1, 2


class Pipeline:
    """One app's request pipeline, over its :class:`~flask_jwt_shield.state.ShieldState`."""

    def __init__(self, state: ShieldState) -> None:
        self.state = state
        config = state.config
        self.config = config
        self.codec = state.codec
        self.limiter = state.limiter
        self.dpop = state.dpop
        # endpoint -> REQUIRED, EXEMPT or OPTIONAL, settled at its first request
        self._modes: dict[str, int] = {}
        self._dpop_challenge = (config.dpop.dpop, self.dpop.algs) if self.dpop is not None else None
        self._cookies = "cookies" in config.request.token_locations
        self._extract = TokenExtractor(
            config.request.max_token_bytes,
            headers="headers" in config.request.token_locations,
            dpop=self.dpop is not None,
            cookies=self._cookies,
            remember=config.request.token_cache_size,
            known=self.codec.verified_before,
        ).extract
        # Step 5 runs for every request when DPoP or cookies are on, else only for a token
        # that names a key or a fingerprint (issued while they were on): never skipped.
        self._constrain = self.dpop is not None or self._cookies
        #: Resource-server mode: the issuer's Token Status Lists (step 4), else ``None``.
        self._status_lists = state.status_list_client
        self._dbsc = dbsc.binding_for(state)
        # (cookie token, fingerprint cookie, bound cookie) -> until when check_sender passes.
        self._senders: dict[tuple[str, str | None, str | None], float] = {}
        self._rate_by_jti = config.rate.rate_limit_key == "jti"
        self._rate_headers = config.rate.rate_limit_headers

    # -- the before_request hook -------------------------------------------------------------

    def run(self) -> None:
        """Check the current request; on success publish its claims on ``g._jwt_shield``."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        if endpoint is None:  # no route matched: Flask answers 404/405, nothing to protect
            return
        mode = self._modes.get(endpoint)
        if mode is None:
            mode = self._settle_endpoint(endpoint)
        if mode is EXEMPT:
            return
        environ = req.environ
        if (
            environ["REQUEST_METHOD"] == "OPTIONS"
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
            and req.url_rule.provide_automatic_options
        ):
            # A CORS preflight carries no credentials by design; Flask answers it without
            # running the view. A route that declares OPTIONS itself runs its view: checked.
            return
        state = self.state
        status_lists = self._status_lists
        claims: Claims | None = None
        try:
            token, location = self._extract(req, environ)
            claims, kid = self.codec.verify(token)
            revocation.check(state, claims, kid)
            if status_lists is not None and "status" in claims:
                try:
                    status_lists.check(claims)  # the issuer's Token Status List
                except StatusListUnavailable as exc:
                    state.status_list_failed(exc, claims)
            if self._constrain or "cnf" in claims or "fgp" in claims:
                self.check_sender(claims, token, location, req)
            if self.limiter is not None and self.limiter.active:
                self._check_rate(claims, endpoint)
            if state.geo is not None:
                geocheck.on_use(state, claims, req.remote_addr)
        except KeysUnavailable:
            self._keys_unavailable()
            raise
        except ShieldError as exc:
            if mode is OPTIONAL and isinstance(exc, MissingToken):
                return  # @shield.optional: no token is fine, a bad one is refused below
            exc.realm = self.config.request.realm
            exc.dpop = self._dpop_challenge
            if state.resource_metadata is not None:
                exc.resource_metadata = state.resource_metadata()
            # Refusals a detector already recorded (its finding's event) or that are no token
            # problem are not recorded again as token-rejected.
            if not isinstance(exc, _RECORDED_ELSEWHERE):
                self._rejected(exc, claims)
            raise
        g._get_current_object()._jwt_shield = claims  # not through the proxy: less than half the cost
        if signals.token_verified.receivers:
            signals.token_verified.send(current_app._get_current_object(), claims=claims)  # type: ignore[attr-defined]

    def _settle_endpoint(self, endpoint: str) -> int:
        """First request to ``endpoint``: settle its exemption and its own rate limit."""
        registry = self.state.registry
        if not self._modes:
            self.state.warn_unmatched_exemptions(current_app)
        # The view and what it wraps: @shield.exempt / @shield.limit under another decorator
        # (limiter.limit(...)(view), a login_required) still count, as functools.wraps says.
        view = current_app.view_functions.get(endpoint)
        views = _wrapped_chain(view)
        exempt = (
            self.state.config_exempts(endpoint)
            or _serves_static_files(view)
            or any(v in registry.exempt_views for v in views)
            or any(current_app.blueprints.get(name) in registry.exempt_blueprints for name in request.blueprints)
        )
        mode = EXEMPT if exempt else OPTIONAL if any(v in registry.optional_views for v in views) else REQUIRED
        limited = next((v for v in views if v in registry.view_limits), None)
        if limited is not None and self.limiter is not None:
            limits = registry.view_limits[limited]
            if limits is None:
                self.limiter.exempt_endpoint(endpoint)
            else:
                self.limiter.set_endpoint_limit(endpoint, limits)
        self._modes[endpoint] = mode
        return mode

    # -- the steps -------------------------------------------------------------------------

    def check_sender(self, claims: Claims, token: str, location: Location, req: t.Any) -> None:
        """Step 5: a token bound to a key needs a DPoP proof by that key (RFC 9449 §7.1), a
        token bound to a fingerprint needs the fingerprint cookie; ``required`` refuses
        tokens bound to neither.

        A cookie token's answer depends on nothing but the token, the fingerprint cookie and
        the bound cookie: a browser sends the same three for minutes, so a success is
        remembered for those values until the token or the bound cookie expires.
        """
        if location == "cookie":
            cookies = request_cookies(req, req.environ)
            seen = (token, cookies.get(FINGERPRINT_COOKIE), cookies.get(dbsc.BOUND_COOKIE))
            until = self._senders.get(seen)
            if until is not None and until > time.time():
                return
            until = self._check_sender(claims, token, location, req)
            bounded_put(self._senders, seen, until, _SENDERS)
        else:
            self._check_sender(claims, token, location, req)

    def _check_sender(self, claims: Claims, token: str, location: Location, req: t.Any) -> float:
        """:meth:`check_sender`'s checks; returns until when a success holds."""
        until: float = claims.get("exp", 0)  # no exp: nothing is remembered
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if cnf is not None and not isinstance(jkt, str):
            # RFC 7800 §3: a token confirmed by something else (an mTLS certificate's
            # x5t#S256, RFC 8705) is no bearer token either; it cannot be checked here.
            raise InvalidToken(
                "The access token is bound by a confirmation method this server cannot check.", reason="unsupported-cnf"
            )
        if jkt is not None:
            verifier = self.dpop
            if verifier is None:
                raise InvalidToken("The access token is DPoP-bound, and DPoP is off here.", reason="dpop-off")
            if location != "dpop":
                raise InvalidToken(
                    "The access token is DPoP-bound: send it as 'Authorization: DPoP' with a DPoP proof.",
                    reason="dpop-bound-as-bearer",
                )
            try:
                environ = req.environ
                proof = verifier.verify(
                    environ.get("HTTP_DPOP"),
                    method=environ["REQUEST_METHOD"],
                    url=verifier.request_url(environ) or "",
                    access_token=token,
                )
            except StoreError as exc:  # the replay cache is out of reach
                self.state.store_failed(exc, claims)
                return until
            if proof.jkt != jkt:
                raise InvalidDPoPProof(
                    "The DPoP proof is signed by another key than the token is bound to.", reason="dpop-wrong-key"
                )
            if proof.next_nonce is not None:
                send_nonce(proof.next_nonce)
        elif location == "dpop":
            raise InvalidToken("The access token is not DPoP-bound; send it as a Bearer token.", reason="dpop-unbound")
        elif self.config.dpop.dpop == "required":
            raise InvalidToken("A DPoP-bound access token is required.", reason="dpop-required")
        fgp = claims.get("fgp")
        if fgp is not None:
            if not fingerprint_matches(req, fgp):
                raise InvalidToken(
                    "The access token's fingerprint cookie is missing or does not match.", reason="fingerprint-mismatch"
                )
        elif location == "cookie":
            # set_cookies() takes only fingerprinted pairs: a cookie token without one was
            # put there by something else.
            raise InvalidToken("A token in a cookie must be bound to a fingerprint.", reason="fingerprint-missing")
        if "dbsc" in claims:  # a DBSC session: its short-lived bound cookie (an HMAC, no signature)
            until = min(until, dbsc.check_request(self._dbsc, claims, req))
        return until

    def _check_rate(self, claims: Claims, endpoint: str) -> None:
        """Step 6: the per-token limit (429), spikes and the adaptive baseline."""
        config = self.config
        limiter = self.limiter
        assert limiter is not None
        # "jti": each token -- and a refreshed token keeps its session's budget and spike
        # count (a thief refreshing gets no fresh budget), so a token with a session counts
        # under its sid. "sub": each user across sessions.
        session = claims.get("sid") or claims["jti"]
        identity = session if self._rate_by_jti else claims["sub"]
        try:
            # The adaptive baseline is the session's own, whatever the limit's key.
            decision = limiter.check(identity, endpoint, subject=claims["sub"], session=session)
        except LimiterStorageError as exc:
            self.state.store_failed(exc, claims)
            return
        if decision.spike is not None:
            spike = Finding(
                "traffic-spike",
                config.rate.spike_action,
                "Too many requests with this token.",
                detail=decision.spike.as_detail(),
            )
            revocation.act(self.state, spike, claims)
        anomaly = decision.anomaly
        if anomaly is not None and anomaly.scope == "subject":
            # The account's total alone: a second signal, recorded against no session.
            finding = Finding(
                "traffic-anomaly", "flag", "Unusual traffic for this account.", detail=anomaly.as_detail()
            )
            revocation.act(self.state, finding, None, subject=claims["sub"])
        elif anomaly is not None:
            # This request's session is the anomalous one (its own count), so the action
            # lands on it. A short burst (an app starting, tabs reloading) is only flagged;
            # the action waits until the anomaly lasts (JWT_SHIELD_ADAPTIVE_SUSTAIN).
            action = config.rate.adaptive_action if anomaly.sustained else "flag"
            finding = Finding(
                "traffic-anomaly", action, "Unusual traffic for this session.", detail=anomaly.as_detail()
            )
            revocation.act(self.state, finding, claims)
        if not decision.allowed:
            try:
                headers = decision.headers()
            except LimiterStorageError:
                headers = {}
            if self.state.first_in_a_while(("rate-limited", identity)):
                limit = decision.limit
                self.state.record(
                    "rate-limited",
                    claims,
                    action="deny",
                    detail={
                        "limit": str(limit) if limit else None,
                        "key": config.rate.rate_limit_key,
                        "endpoint": endpoint,
                    },
                )
            headers.pop("Retry-After", None)  # the exception sends it
            raise RateLimitExceeded(retry_after=decision.retry_after, rate_headers=headers)
        if self._rate_headers and not decision.exempt:
            _send_rate_headers(decision)

    def _keys_unavailable(self) -> None:
        """Resource-server mode without a usable key: 503 whatever the fail mode (the caller
        re-raises); one event per outage interval."""
        if self.state.outage_event_due("jwks-unavailable"):
            remote = self.codec.remote
            error = (remote.last_error if remote is not None else None) or "no usable key"
            self.state.record("jwks-unavailable", None, action="deny", detail={"error": error})

    def _rejected(self, exc: ShieldError, claims: Claims | None) -> None:
        who = claims["jti"] if claims is not None else (request.remote_addr or "")
        kind: EventKind = (
            "dpop-rejected"
            if isinstance(exc, InvalidDPoPProof) or exc.reason.startswith("dpop-")
            else ("token-rejected")
        )
        if self.state.first_in_a_while((kind, who, exc.reason)):
            detail = {"reason": exc.reason, "status": exc.code}
            if exc.detail:
                detail.update(exc.detail)
            self.state.record(kind, claims, action="deny", detail=detail)


def _send_rate_headers(decision: RateDecision) -> None:
    """``RateLimit-*`` on an allowed response too (``JWT_SHIELD_RATE_LIMIT_HEADERS``), as
    Flask-Limiter sends them with its headers enabled; read after the view, off the check."""

    @after_this_request
    def add_headers(response: t.Any) -> t.Any:
        try:
            headers = decision.headers()
        except LimiterStorageError:
            return response  # the figures are a courtesy: never fail a response for them
        for name, value in headers.items():
            response.headers[name] = value
        return response


def _serves_static_files(view: t.Callable[..., t.Any] | None) -> bool:
    """Whether ``view`` is one of the static-file views Flask itself registers (by the view,
    not by its endpoint's name: any view may be called ``static``)."""
    if view is None:
        return False
    if getattr(view, "__func__", None) is Blueprint.send_static_file:
        return True
    code = getattr(view, "__code__", None)
    return code is not None and code is _flask_static_view()


@functools.cache
def _flask_static_view() -> object:
    """The code of the view Flask registers for an app's static folder (a lambda in
    ``Flask.__init__``), found by asking Flask rather than by its name."""
    return getattr(Flask("flask_jwt_shield_probe").view_functions.get("static"), "__code__", None)


def _wrapped_chain(view: t.Callable[..., t.Any] | None) -> list[t.Callable[..., t.Any]]:
    """``view``, then each function it wraps (``__wrapped__``), outermost first."""
    chain: list[t.Callable[..., t.Any]] = []
    while view is not None and len(chain) < 32 and view not in chain:  # a cycle, or absurd depth
        chain.append(view)
        view = getattr(view, "__wrapped__", None)
    return chain
