"""The :class:`JWTShield` extension: ``init_app``, the decorator registries and the pipeline."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import secrets
import time
import typing as t

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import has_request_context
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue

from . import signals
from .config import ConfigKey
from .config import ShieldConfig
from .errors import AccessDenied
from .errors import ConfigurationError
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import MissingToken
from .errors import RateLimitExceeded
from .errors import RevokedToken
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .events import EventRecorder
from .events import SecurityEvent
from .events import mask_ip
from .geo import Finding
from .geo import GeoGuard
from .keys import KeyRing
from .oauth import ClientAuthenticator
from .oauth import TokenEndpoint
from .ratelimit import AdaptiveSettings
from .ratelimit import LimiterStorageError
from .ratelimit import TokenRateLimiter
from .ratelimit import default_spike_threshold
from .ratelimit import parse_limits
from .refresh import REFUSALS
from .refresh import Session
from .refresh import TokenPair
from .refresh import new_family
from .refresh import sign_pair
from .revocation import CheckerFailed
from .revocation import revocation_reason
from .revocation import revoked
from .stores import Store
from .stores import store_from_uri
from .tokens import ACCESS_TYPE
from .tokens import REFRESH_TYPE
from .tokens import Claims
from .tokens import TokenCodec

logger = logging.getLogger("flask_jwt_shield")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
T_revocation_checker = t.TypeVar("T_revocation_checker", bound=t.Callable[[Claims], bool])

EXTENSION_KEY = "jwt_shield"

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# One store-unavailable event per this many seconds per app, not one per request.
_OUTAGE_EVENT_INTERVAL = 5.0
# A token seen again from the same address within this many seconds skips the geo step:
# no store read or write per request in steady state, one event per minute at most.
_GEO_RECHECK = 60.0
_GEO_SEEN_MAX = 100_000
# Repeated refusals of one token (or client address) for one reason are recorded once per
# this many seconds: a hammering client must not turn into one stored event per request.
# The limiter and the spike detector still count every attempt.
_REPEAT_INTERVAL = 60.0


@dataclasses.dataclass(eq=False)
class _State:
    """Everything per app: lives in ``app.extensions["jwt_shield"]``."""

    shield: JWTShield
    config: ShieldConfig
    keys: KeyRing
    codec: TokenCodec
    store: Store
    recorder: EventRecorder
    limiter: TokenRateLimiter | None = None
    geo: GeoGuard | None = None
    exempt: dict[str, bool] = dataclasses.field(default_factory=dict)
    last_outage_event: float = -math.inf
    geo_seen: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    recent: dict[tuple[str, ...], float] = dataclasses.field(default_factory=dict)


class JWTShield:
    """The Flask extension.

    :param app: an application to initialise now (or call :meth:`init_app` later).
    :param limiter: an app's existing ``flask_limiter.Limiter`` whose storage the per-token
        limits share (keys never collide with the app's own).
    :param store: a store instance to use instead of ``JWT_SHIELD_STORE_URI``.
    """

    def __init__(self, app: Flask | None = None, *, limiter: t.Any = None, store: Store | None = None) -> None:
        self._limiter = limiter
        self._store = store
        self._exempt_views: set[t.Callable[..., t.Any]] = set()
        self._view_limits: dict[t.Callable[..., t.Any], str | None] = {}
        self._revocation_checkers: list[t.Callable[[Claims], bool]] = []
        if app is not None:
            self.init_app(app)

    # -- setup -------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read and validate the ``JWT_SHIELD_*`` configuration and install the pipeline.

        Raises :class:`~flask_jwt_shield.ConfigurationError` for a bad setting. Keys read:
        every name in :class:`~flask_jwt_shield.config.ConfigKey` (see the configuration
        page), plus ``SECRET_KEY`` when ``JWT_SHIELD_SECRET_KEY`` is unset.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'JWTShield' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        config = ShieldConfig.from_mapping(app.config)
        keys = KeyRing.from_config(config)
        store = self._store or store_from_uri(config.store_uri, instance_path=app.instance_path)
        if config.store_uri.startswith("memory") and self._store is None and not app.testing:
            logger.warning(
                "JWT_SHIELD_STORE_URI is 'memory://': revocations and sessions live in this process"
                " only and are lost on restart. Use 'sqlite:///shield.db' in production."
            )
        state = _State(
            shield=self,
            config=config,
            keys=keys,
            codec=TokenCodec(config, keys),
            store=store,
            recorder=EventRecorder(config, store),
            limiter=self._make_limiter(config),
            geo=GeoGuard.from_config(config),
        )
        app.extensions[EXTENSION_KEY] = state
        if config.enabled:
            guard = self._guard

            # A plain function rather than functools.partial: Flask asks on every request
            # whether a hook is a coroutine, and unwrapping a partial costs more.
            def jwt_shield_guard() -> None:
                guard(state)

            app.before_request(jwt_shield_guard)
        from .cli import cli

        if "jwt-shield" not in app.cli.commands:
            app.cli.add_command(cli)

    def _make_limiter(self, config: ShieldConfig) -> TokenRateLimiter:
        """The per-token limiter: built even with no default limit, for ``@shield.limit``."""
        K = ConfigKey
        if self._limiter is not None and config.rate_limit_storage_uri is not None:
            raise ConfigurationError(
                f"{K.RATE_LIMIT_STORAGE_URI} is set, but JWTShield(limiter=...) shares that Limiter's"
                f" storage: remove one of the two."
            )
        try:
            adaptive = (
                AdaptiveSettings(factor=config.adaptive_factor, floor=config.adaptive_floor)
                if config.adaptive
                else None
            )
            spike = config.spike_threshold or default_spike_threshold(config.rate_limit)
            return TokenRateLimiter(
                config.rate_limit,
                strategy=config.rate_limit_strategy,
                storage_uri=None if self._limiter is not None else (config.rate_limit_storage_uri or "memory://"),
                limiter=self._limiter,
                spike_threshold=spike,
                adaptive=adaptive,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"Rate limiting ({K.RATE_LIMIT}, {K.RATE_LIMIT_STORAGE_URI}, {K.SPIKE_THRESHOLD},"
                f" {K.ADAPTIVE_FLOOR}, or JWTShield(limiter=...)): {exc}"
            ) from None

    def _state(self) -> _State:
        try:
            state: _State = current_app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                "JWTShield is not initialised on this app. Did you forget to call"
                " 'shield.init_app(app)'?"
            ) from None
        return state

    # -- decorators ----------------------------------------------------------------------

    def exempt(self, view: F) -> F:
        """Serve this view without a token (login, refresh, health checks)."""
        self._exempt_views.add(view)
        return view

    @t.overload
    def limit(self, limits: str) -> t.Callable[[F], F]: ...
    @t.overload
    def limit(self, *, exempt: t.Literal[True]) -> t.Callable[[F], F]: ...
    def limit(self, limits: str | None = None, *, exempt: bool = False) -> t.Callable[[F], F]:
        """Give one view its own per-token limit (``@shield.limit("5/minute")``), counted
        apart from the default one, or remove per-token limits there (``exempt=True``).

        Spike and adaptive detection still count requests to that view.
        """
        if exempt == (limits is not None):
            raise TypeError("give either a limit string or exempt=True")
        if limits is not None:
            parse_limits(limits)  # a typo fails at import time, not at the first request

        def decorator(view: F) -> F:
            self._view_limits[view] = limits
            return view

        return decorator

    def revocation_checker(self, callback: T_revocation_checker) -> T_revocation_checker:
        """Register ``callback(claims) -> bool``; any ``True`` means the token is revoked.

        Called after the built-in checks, for every request. A callback that raises is
        treated as an unreachable store (``JWT_SHIELD_FAIL_MODE``), never as "not revoked".
        """
        self._revocation_checkers.append(callback)
        return callback

    # -- the pipeline ----------------------------------------------------------------------

    def _guard(self, state: _State) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        if endpoint is None:  # no route matched: Flask answers 404/405, nothing to protect
            return
        exempt = state.exempt.get(endpoint)
        if exempt is None:
            exempt = self._is_exempt(state, endpoint)
        if exempt:
            return
        environ = req.environ
        if environ["REQUEST_METHOD"] == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            return  # CORS preflight carries no credentials by design
        claims: Claims | None = None
        try:
            token = self._extract(state, req, environ)
            claims, kid = state.codec.verify(token)
            self._check_revocation(state, claims, kid)
            if state.limiter is not None and state.limiter.active:
                self._check_rate(state, claims, endpoint)
            if state.geo is not None:
                self._check_geo(state, claims, req.remote_addr)
        except ShieldError as exc:
            exc.realm = state.config.realm
            if not isinstance(exc, (MissingToken, StoreUnavailable, RateLimitExceeded, AccessDenied)):
                self._rejected(state, exc, claims)
            raise
        g._jwt_shield = claims
        if signals.token_verified.receivers:
            signals.token_verified.send(current_app._get_current_object(), claims=claims)  # type: ignore[attr-defined]

    def _is_exempt(self, state: _State, endpoint: str) -> bool:
        """First request to ``endpoint``: settle its exemption and its own rate limit."""
        view = current_app.view_functions.get(endpoint)
        exempt = (
            endpoint in state.config.exempt_endpoints
            or endpoint == "static"
            or endpoint.endswith(".static")
            or view in self._exempt_views
        )
        if view in self._view_limits and state.limiter is not None:
            limits = self._view_limits[view]
            if limits is None:
                state.limiter.exempt_endpoint(endpoint)
            else:
                state.limiter.set_endpoint_limit(endpoint, limits)
        state.exempt[endpoint] = exempt
        return exempt

    def _extract(self, state: _State, req: t.Any, environ: dict[str, str]) -> str:
        # RFC 6750 §2.3 allows the query string but warns against it (URLs end up in logs);
        # §2.2's form body is refused too, so a token has one place only: the header.
        # Parsed only when present: a percent-encoded name (access%5Ftoken) is the same name.
        if environ.get("QUERY_STRING") and "access_token" in req.args:
            raise InvalidRequest("Send the access token in the Authorization header, not the URL.",
                                 reason="token-in-query")
        if (
            environ.get("CONTENT_TYPE")
            and req.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
            and "access_token" in req.form
        ):
            raise InvalidRequest("Send the access token in the Authorization header, not the body.",
                                 reason="token-in-body")
        header = environ.get("HTTP_AUTHORIZATION")
        if header is None:
            raise MissingToken()
        if len(header) > state.config.max_token_bytes + 64:
            raise InvalidToken("The token is too large.", reason="too-large")
        scheme, _, credentials = header.strip(" ").partition(" ")
        if scheme.lower() != "bearer":
            if "bearer" in header.lower():  # e.g. "Basic x, Bearer y": two credentials
                raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
            raise MissingToken()  # another scheme: no bearer credentials (RFC 6750 §3.1)
        token: str = credentials.strip(" ")
        if not _B64TOKEN.fullmatch(token):
            # Spaces, commas (two tokens joined by a proxy), or characters no token has.
            raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
        return token

    def _check_revocation(self, state: _State, claims: Claims, kid: str) -> None:
        try:
            reason = revocation_reason(state.store, self._revocation_checkers, claims, kid, time.time())
        except StoreError as exc:
            self._store_failed(state, exc, claims)
            return
        except CheckerFailed as exc:  # never a 200 by accident
            logger.error("revocation_checker %s raised; treating it as an unreachable store", exc,
                         exc_info=exc.__cause__)  # fmt: skip
            self._store_failed(state, exc, claims)
            return
        if reason is not None:
            raise revoked(reason)

    def _check_rate(self, state: _State, claims: Claims, endpoint: str) -> None:
        config = state.config
        limiter = state.limiter
        assert limiter is not None
        identity = claims["jti"] if config.rate_limit_key == "jti" else claims["sub"]
        try:
            decision = limiter.check(identity, endpoint, subject=claims["sub"])
        except LimiterStorageError as exc:
            self._store_failed(state, exc, claims)
            return
        if decision.spike is not None:
            self._act(state, Finding("traffic-spike", config.spike_action, "Too many requests with this token.",
                                     detail=decision.spike.as_detail()), claims)  # fmt: skip
        if decision.anomaly is not None:
            self._act(state, Finding("traffic-anomaly", config.adaptive_action, "Unusual traffic for this account.",
                                     detail=decision.anomaly.as_detail()), claims)  # fmt: skip
        if not decision.allowed:
            try:
                headers = decision.headers()
            except LimiterStorageError:
                headers = {}
            if _first_in_a_while(state, ("rate-limited", identity)):
                limit = decision.limit
                self._record(state, "rate-limited", claims, action="deny",
                             detail={"limit": str(limit) if limit else None, "key": config.rate_limit_key,
                                     "endpoint": endpoint})  # fmt: skip
            headers.pop("Retry-After", None)  # the exception sends it
            raise RateLimitExceeded(retry_after=decision.retry_after, rate_headers=headers)

    def _check_geo(self, state: _State, claims: Claims, ip: str | None) -> None:
        guard = state.geo
        assert guard is not None
        if ip is None:
            return
        key = (claims["jti"], ip)
        now = time.time()
        seen = state.geo_seen.get(key)
        if seen is not None and now - seen < _GEO_RECHECK:
            return  # this token from this address passed a minute ago: no lookup, no store
        location = guard.locate(ip)
        if location is None:  # no known place: never flagged, never denied
            _bounded_put(state.geo_seen, key, now, _GEO_SEEN_MAX)
            return
        for finding in guard.on_request(location, claims.get("ctry")):
            self._act(state, finding, claims)
        if location.has_coordinates:
            sub = claims["sub"]
            try:
                profile = state.store.get_profile(sub) or {}
            except StoreError as exc:
                self._store_failed(state, exc, claims)
                return
            travel, last = guard.travel(location, mask_ip(ip, state.config.event_ip), now, profile)
            if travel is not None:
                # Raises for every action above flag, before the new place is stored: the
                # last place stays the owner's, so the owner's next request is not flagged.
                self._act(state, travel, claims)
            if last is not None:
                try:
                    state.store.put_profile(sub, {**profile, "last": last})
                except StoreError as exc:
                    self._store_failed(state, exc, claims)
        _bounded_put(state.geo_seen, key, now, _GEO_SEEN_MAX)

    def _act(self, state: _State, finding: Finding, claims: Claims | None, *, subject: str | None = None) -> None:
        """Record a detector's finding and apply its action from the ladder.

        ``flag`` returns; ``deny`` raises 403; the ``revoke*`` actions revoke first, then
        raise 401 (revoked). At login (no ``claims``) every action above ``flag`` denies the
        login, and ``revoke_subject`` also revokes the subject's existing tokens.
        """
        config = state.config
        action = finding.action
        effective = "flag" if config.monitor_only else action
        detail = finding.detail
        if effective != action:
            detail = {**detail, "monitor_only": True, "intended_action": action}
        sub = subject if subject is not None else (claims["sub"] if claims is not None else None)
        repeated = effective == "deny" and claims is not None and not _first_in_a_while(
            state, (finding.kind, claims["jti"])
        )
        if not repeated:
            self._record(state, finding.kind, claims, subject=sub, country=finding.country, action=effective,
                         detail=detail)  # fmt: skip
        if effective == "flag":
            return
        if effective == "deny" or (claims is None and effective != "revoke_subject"):
            raise AccessDenied(finding.description, reason=finding.kind)
        now = time.time()
        until = now + config.longest_ttl + config.leeway + 1
        why = {"reason": finding.kind}
        try:
            if effective == "revoke_subject" and sub is not None:
                state.store.revoke_subject(sub, now, until)
                self._record(state, "subject-revoked", claims, subject=sub, action=effective, detail=why)
            elif claims is not None and effective == "revoke_family" and claims.get("sid"):
                state.store.revoke_family(claims["sid"], until)
                self._record(state, "family-revoked", claims, action=effective, detail=why)
            elif claims is not None:
                state.store.revoke("jti", claims["jti"], float(claims["exp"]) + config.leeway + 1)
                self._record(state, "token-revoked", claims, action="revoke", detail=why)
        except StoreError as exc:
            self._store_failed(state, exc, claims)
        if claims is None:
            raise AccessDenied(finding.description, reason=finding.kind)
        description = finding.description
        raise RevokedToken(f"The access token was revoked: {description[0].lower()}{description[1:]}",
                           reason=f"revoked-{finding.kind}")

    def _login_geo(self, state: _State, sub: str, ip: str | None) -> tuple[str | None, bool]:
        """The login-side checks: allowed countries, new country, travel (a login is a use).

        Returns the country (for the ``ctry`` claim) and whether it is new for the subject.
        """
        guard = state.geo
        location = guard.locate(ip) if guard is not None else None
        if guard is None or location is None or ip is None:
            return None, False
        try:
            profile = state.store.get_profile(sub) or {}
        except StoreError as exc:
            self._store_failed(state, exc, None)
            return location.country, False
        before = dict(profile)
        findings = guard.on_login(location, profile)
        travel, last = guard.travel(location, mask_ip(ip, state.config.event_ip), time.time(), profile, login=True)
        if travel is not None:
            findings.append(travel)
        for finding in findings:  # any action above flag raises: nothing issued, nothing stored
            self._act(state, finding, None, subject=sub)
        if last is not None:
            profile["last"] = last
        if profile != before:
            try:
                state.store.put_profile(sub, profile)
            except StoreError as exc:
                self._store_failed(state, exc, None)
        return location.country, any(f.kind == "new-country" for f in findings)

    def _store_failed(self, state: _State, exc: Exception, claims: Claims | None) -> None:
        """Apply ``JWT_SHIELD_FAIL_MODE``: raise 503 (closed) or return (open)."""
        now = time.time()
        if now - state.last_outage_event >= _OUTAGE_EVENT_INTERVAL:
            state.last_outage_event = now
            self._record(state, "store-unavailable", claims,
                         action="deny" if state.config.fail_mode == "closed" else "flag",
                         detail={"error": type(exc).__name__, "fail_mode": state.config.fail_mode})  # fmt: skip
        if state.config.fail_mode == "closed":
            raise StoreUnavailable()

    def _rejected(self, state: _State, exc: ShieldError, claims: Claims | None) -> None:
        who = claims["jti"] if claims is not None else (request.remote_addr or "")
        if _first_in_a_while(state, ("token-rejected", who, exc.reason)):
            self._record(state, "token-rejected", claims, action="deny",
                         detail={"reason": exc.reason, "status": exc.code})  # fmt: skip

    def _record(self, state: _State, kind: str, claims: Claims | None, **fields: t.Any) -> SecurityEvent:
        if claims is not None:
            fields.setdefault("subject", claims.get("sub"))
            fields.setdefault("jti", claims.get("jti"))
            fields.setdefault("sid", claims.get("sid"))
        if has_request_context():
            fields.setdefault("ip", request.remote_addr)
        return state.recorder.record(current_app._get_current_object(), kind, **fields)  # type: ignore[attr-defined]

    # -- issuing -------------------------------------------------------------------------

    def _issue_time(self, state: _State, sub: str) -> float:
        """Now, but strictly after any ``revoke_subject`` of ``sub`` (even within one clock tick)."""
        now = time.time()
        not_before = state.store.not_before(sub, now)
        if not_before is not None and now <= not_before:
            now = math.nextafter(not_before, math.inf)
        return now

    def create_access_token(
        self,
        sub: str,
        claims: t.Mapping[str, t.Any] | None = None,
        expires_in: int | None = None,
    ) -> str:
        """Sign an access token (``typ`` ``at+jwt``) for ``sub``. Needs an app context.

        :param claims: extra claims; registered ones (``sub``, ``exp``, ``jti`` ...) are
            written by the shield and may not be given.
        :param expires_in: seconds, default ``JWT_SHIELD_ACCESS_TOKEN_TTL``.
        """
        state = self._state()
        ttl = state.config.access_token_ttl if expires_in is None else expires_in
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"expires_in must be a positive number of seconds, not {expires_in!r}.")
        try:
            iat = self._issue_time(state, sub)
        except StoreError as exc:
            self._store_failed(state, exc, None)
            iat = time.time()
        payload = state.codec.claims_for(sub, ttl=ttl, extra=claims, iat=iat)
        return state.codec.encode(payload, ACCESS_TYPE)

    def issue_tokens(self, sub: str, claims: t.Mapping[str, t.Any] | None = None) -> TokenPair:
        """Start a session for ``sub`` (after the app checked the password).

        Returns an access token and a refresh token sharing a new family id ``sid``.
        """
        state = self._state()
        config = state.config
        ip = request.remote_addr if has_request_context() else None
        extra = dict(claims or {})
        codec = state.codec
        codec.claims_for(sub, ttl=1, extra=extra)  # validates sub and claims before any write
        country, new_country = self._login_geo(state, sub, ip)
        sid = secrets.token_urlsafe(16)
        refresh_jti = secrets.token_urlsafe(16)
        dropped: list[str] = []
        try:
            iat = self._issue_time(state, sub)
            family = new_family(config, sid=sid, sub=sub, refresh_jti=refresh_jti, now=iat, ip=ip, country=country,
                                claims=extra)  # fmt: skip
            dropped = state.store.create_family(
                family,
                max_sessions=config.max_sessions,
                idle_ttl=config.refresh_idle_ttl,
                until=family.expires_at + config.access_token_ttl,
            )
        except StoreError as exc:
            # Without the store no session can be recorded, so none can be refreshed: in
            # "open" mode the login still succeeds and the user logs in again later.
            self._store_failed(state, exc, None)
            iat = time.time()
            family = new_family(config, sid=sid, sub=sub, refresh_jti=refresh_jti, now=iat, ip=ip, country=country,
                                claims=extra)  # fmt: skip
        for old in dropped:
            self._record(state, "family-revoked", None, subject=sub, sid=old, action="revoke_family",
                         detail={"reason": "max-sessions"})  # fmt: skip
        pair = sign_pair(state.codec, config, family, access_iat=iat, country=country, new_country=new_country)
        self._record(state, "session-started", None, subject=sub, sid=sid, jti=refresh_jti, country=country,
                     detail={"new_country": new_country} if new_country else {})  # fmt: skip
        return pair

    def refresh(self, refresh_token: str) -> TokenPair:
        """Spend ``refresh_token`` and return a new pair in the same session.

        A refresh token presented a second time is reuse: the whole family is revoked and
        :class:`~flask_jwt_shield.InvalidGrant` is raised (400 ``invalid_grant``).
        """
        state = self._state()
        config = state.config
        ip = request.remote_addr if has_request_context() else None
        if not isinstance(refresh_token, str):
            raise InvalidGrant("A refresh token is required.", reason="missing")
        try:
            claims, kid = state.codec.verify(refresh_token, REFRESH_TYPE)
        except InvalidToken as exc:
            self._record(state, "token-rejected", None, action="deny",
                         detail={"reason": exc.reason, "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant(exc.description, reason=exc.reason) from None
        try:
            self._check_revocation(state, claims, kid)
        except RevokedToken as exc:
            self._record(state, "token-rejected", claims, action="deny",
                         detail={"reason": exc.reason, "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant("The refresh token was revoked.", reason=exc.reason) from None
        sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
        country = None
        if state.geo is not None:
            # A refresh is a use too: allowed countries, the country the refresh token was
            # issued in, and travel are checked before anything is rotated.
            try:
                self._check_geo(state, claims, ip)
            except RevokedToken as exc:
                raise InvalidGrant(exc.description, reason=exc.reason) from None
            location = state.geo.locate(ip)
            country = location.country if location is not None else None
        try:
            new_iat = self._issue_time(state, sub)
            rotation = state.store.rotate(
                sid, jti, new_jti=secrets.token_urlsafe(16), new_iat=new_iat, now=time.time(),
                idle_ttl=config.refresh_idle_ttl, grace=config.refresh_reuse_grace, ip=ip,
                country=country, until=time.time() + config.refresh_token_ttl + config.access_token_ttl,
            )  # fmt: skip
        except StoreError as exc:
            # Rotation cannot be proven single without the store: refuse in both modes,
            # or a stolen refresh token would mint sessions for the whole outage.
            self._store_failed(state, exc, claims)
            raise StoreUnavailable() from None
        family = rotation.family
        if rotation.outcome in ("rotated", "grace") and family is not None:
            pair = sign_pair(state.codec, config, family, access_iat=new_iat, country=country)
            self._record(state, "token-refreshed", claims, detail={"grace": rotation.outcome == "grace"})
            return pair
        if rotation.outcome == "reused":
            first, mode = rotation.first_use, config.event_ip
            self._record(state, "refresh-reused", claims, action="revoke_family", detail={
                "first_use": {"at": first.at, "ip": mask_ip(first.ip, mode)} if first else None,
                "second_use": {"at": time.time(), "ip": mask_ip(ip, mode)},
            })  # fmt: skip
            self._record(state, "family-revoked", claims, action="revoke_family", detail={"reason": "refresh-reused"})
            raise InvalidGrant(REFUSALS["reused"], reason="refresh-reused")
        self._record(state, "token-rejected", claims, action="deny", detail={
            "reason": f"session-{rotation.outcome}", "status": 400, "grant": "refresh_token",
        })  # fmt: skip
        raise InvalidGrant(REFUSALS.get(rotation.outcome, "The refresh token is invalid."),
                           reason=f"session-{rotation.outcome}")

    # -- revoking ------------------------------------------------------------------------

    def revoke_token(self, token_or_jti: str) -> str:
        """Revoke one token, given as the token itself or its ``jti``. Returns the ``jti``."""
        state = self._state()
        now = time.time()
        sub = sid = None
        jti: str
        if token_or_jti.count(".") == 2:
            claims = state.codec.inspect(token_or_jti)
            jti, sub, sid = claims["jti"], claims["sub"], claims.get("sid")
            until = float(claims["exp"]) + state.config.leeway + 1
        else:
            jti, until = token_or_jti, now + state.config.longest_ttl + state.config.leeway + 1
        self._write(state, lambda: state.store.revoke("jti", jti, until))
        self._record(state, "token-revoked", None, subject=sub, jti=jti, sid=sid, action="revoke")
        return jti

    def revoke_family(self, sid: str) -> None:
        """Revoke one session: its refresh token and every access token carrying its ``sid``."""
        state = self._state()
        until = time.time() + state.config.longest_ttl + state.config.leeway + 1
        family = self._write(state, lambda: state.store.revoke_family(sid, until))
        self._record(state, "family-revoked", None, subject=family.sub if family else None, sid=sid,
                     action="revoke_family")  # fmt: skip

    def revoke_subject(self, sub: str) -> None:
        """Reject every token issued to ``sub`` before now ("log out everywhere").

        Tokens issued afterwards work, also within the same clock tick.
        """
        state = self._state()
        at = time.time()
        until = at + state.config.longest_ttl + state.config.leeway + 1
        self._write(state, lambda: state.store.revoke_subject(sub, at, until))
        self._record(state, "subject-revoked", None, subject=sub, action="revoke_subject")

    def revoke_key(self, kid: str) -> None:
        """Reject every token signed with key ``kid`` (a compromised key).

        The signing key cannot be revoked while it signs: put a new key first in
        ``JWT_SHIELD_KEYS`` and deploy, then revoke the old one.
        """
        state = self._state()
        signing = state.keys.signing_key
        if signing is not None and signing.kid == kid:
            raise ValueError(
                f"Key {kid!r} still signs new tokens; revoking it would reject every new login."
                " Put a new key first in JWT_SHIELD_KEYS, deploy, then revoke this one."
            )
        until = time.time() + state.config.longest_ttl + state.config.leeway + 1
        self._write(state, lambda: state.store.revoke("kid", kid, until))
        self._record(state, "key-revoked", None, kid=kid, action="revoke")

    R = t.TypeVar("R")

    @staticmethod
    def _write(state: _State, operation: t.Callable[[], R]) -> R:
        try:
            return operation()
        except StoreError:
            # An operator's revocation must never be lost silently, whatever the fail mode.
            raise StoreUnavailable() from None

    # -- reading -----------------------------------------------------------------------

    def sessions(self, sub: str) -> list[Session]:
        """The subject's live sessions (refresh families), oldest first."""
        state = self._state()
        families = state.store.families(sub, now=time.time(), idle_ttl=state.config.refresh_idle_ttl)
        return [Session.of(f) for f in families]

    def events(
        self,
        subject: str | None = None,
        jti: str | None = None,
        sid: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[SecurityEvent]:
        """Stored security events, newest first."""
        rows = self._state().store.events(subject=subject, jti=jti, sid=sid, kind=kind, since=since, limit=limit)
        return [SecurityEvent.from_dict(r) for r in rows]

    def jwks(self) -> dict[str, list[dict[str, t.Any]]]:
        """The public keys as a JWK Set (empty for HMAC keys, which are secret)."""
        return self._state().keys.jwks()

    def jwks_blueprint(self, name: str = "jwt_shield_jwks") -> Blueprint:
        """A blueprint serving the JWK Set at ``/.well-known/jwks.json`` (exempt)."""
        bp = Blueprint(name, __name__)

        @bp.get("/.well-known/jwks.json")
        @self.exempt
        def jwks() -> ResponseReturnValue:
            response = jsonify(self.jwks())
            response.cache_control.public = True
            response.cache_control.max_age = 300
            return response

        return bp

    # -- the OAuth 2.0 token endpoint ----------------------------------------------------

    def token_view(self, *, authenticate_client: ClientAuthenticator | None = None) -> t.Callable[[], Response]:
        """A ready RFC 6749 §6 token endpoint (refresh grant), exempt from the pipeline.

        Mount it where the app wants; it must answer ``POST``::

            app.add_url_rule("/oauth/token", view_func=shield.token_view(), methods=["POST"])

        It reads ``grant_type=refresh_token&refresh_token=...`` form-encoded (RFC 6749
        §3.2), or a JSON object with ``refresh_token`` (``grant_type`` optional there), calls
        :meth:`refresh`, and answers per §5.1 (``Cache-Control: no-store``,
        ``Pragma: no-cache``) or with the §5.2 error: ``invalid_request``,
        ``unsupported_grant_type``, ``invalid_client``, ``invalid_grant`` or
        ``invalid_scope``. A ``DPoP`` header reaches :meth:`refresh` untouched.

        :param authenticate_client: ``fn(credentials: ClientCredentials) -> bool``, called
            for every request (also one without credentials, with ``method="none"``) to
            authenticate the client (§2.3); ``False`` is 401 ``invalid_client``. Without it,
            client credentials are not checked and a ``client_id`` is only a name.

        A session whose claims hold ``client_id`` is refreshed only by that client, and a
        requested ``scope`` may not exceed the session's ``scope`` claim (§6); both are
        checked before the refresh token is spent.
        """
        endpoint = TokenEndpoint(self, authenticate_client)

        def token() -> Response:
            return endpoint()

        return self.exempt(token)

    def token_blueprint(
        self,
        *,
        url: str = "/oauth/token",
        name: str = "jwt_shield_token",
        authenticate_client: ClientAuthenticator | None = None,
    ) -> Blueprint:
        """A blueprint serving :meth:`token_view` at ``url`` (``POST`` only)."""
        bp = Blueprint(name, __name__)
        bp.add_url_rule(url, "token", self.token_view(authenticate_client=authenticate_client), methods=["POST"])
        return bp


K_ = t.TypeVar("K_")


def _first_in_a_while(state: _State, key: tuple[str, ...]) -> bool:
    """True (and remembered) unless ``key`` was seen in the last ``_REPEAT_INTERVAL`` seconds."""
    now = time.time()
    last = state.recent.get(key)
    if last is not None and now - last < _REPEAT_INTERVAL:
        return False
    _bounded_put(state.recent, key, now, _GEO_SEEN_MAX)
    return True


def _bounded_put(cache: dict[K_, float], key: K_, value: float, limit: int) -> None:
    if len(cache) >= limit:
        try:
            del cache[next(iter(cache))]
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass
    cache[key] = value


__all__ = ["ConfigurationError", "JWTShield", "Session", "TokenPair"]
