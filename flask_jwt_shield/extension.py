"""The :class:`JWTShield` extension: the face users read.

``init_app``, the decorator registries, issuing and refreshing, revoking and the queries.
The request pipeline itself -- the steps in DESIGN.md's order, the action ladder and the
fail mode -- is :mod:`flask_jwt_shield.pipeline`, built here once per app.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import typing as t

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import has_request_context
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from . import events as _events
from . import transport
from .alerts import AlertSink
from .cli import cli
from .config import ConfigKey
from .config import ShieldConfig
from .errors import ConfigurationError
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import RevokedToken
from .errors import StoreError
from .errors import StoreUnavailable
from .events import SecurityEvent
from .events import mask_ip
from .geo import GeoGuard
from .jwks import JWKSClient
from .keys import KeyRing
from .oauth import ClientAuthenticator
from .oauth import TokenEndpoint
from .pipeline import Pipeline
from .pipeline import Registry
from .pipeline import send_nonce
from .ratelimit import AdaptiveSettings
from .ratelimit import TokenRateLimiter
from .ratelimit import default_spike_threshold
from .ratelimit import parse_limits
from .refresh import REFUSALS
from .refresh import Session
from .refresh import TokenPair
from .refresh import new_family
from .refresh import sign_pair
from .ssf import Authorizer
from .ssf import ReceiverSettings
from .ssf import SecurityEventReceiver
from .ssf import SubjectResolver
from .ssf import make_blueprint
from .stores import Store
from .stores import store_from_uri
from .tokens import ACCESS_TYPE
from .tokens import REFRESH_TYPE
from .tokens import Claims
from .tokens import TokenCodec
from .transport import REFRESH_COOKIE
from .transport import SAFE_METHODS
from .transport import check_csrf
from .transport import fingerprint_hash
from .transport import fingerprint_matches
from .transport import new_fingerprint

logger = logging.getLogger("flask_jwt_shield")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
ResponseT = t.TypeVar("ResponseT", bound=BaseResponse)
T_revocation_checker = t.TypeVar("T_revocation_checker", bound=t.Callable[[Claims], bool])

EXTENSION_KEY = "jwt_shield"


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
        self._registry = Registry()
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
        store = self._store or store_from_uri(
            config.store_uri,
            instance_path=app.instance_path,
            connect_timeout=config.redis_connect_timeout,
            timeout=config.redis_timeout,
            max_delay=config.revocation_max_delay,
        )
        if config.store_uri.startswith("memory") and self._store is None and not app.testing:
            logger.warning(
                "JWT_SHIELD_STORE_URI is 'memory://': revocations and sessions live in this process"
                " only and are lost on restart. Use 'sqlite:///shield.db' in production."
            )
        pipeline = Pipeline(
            shield=self,
            registry=self._registry,
            config=config,
            keys=keys,
            codec=TokenCodec(config, keys, JWKSClient.from_config(config) if config.resource_server else None),
            store=store,
            limiter=self._make_limiter(config, store),
            geo=GeoGuard.from_config(config),
        )
        app.extensions[EXTENSION_KEY] = pipeline
        if config.enabled:
            run = pipeline.run

            # A plain function rather than the bound method or a partial: Flask asks on
            # every request whether a hook is a coroutine, and unwrapping those costs more.
            def jwt_shield_guard() -> None:
                run()

            app.before_request(jwt_shield_guard)
        if "jwt-shield" not in app.cli.commands:
            app.cli.add_command(cli)

    def _make_limiter(self, config: ShieldConfig, store: Store) -> TokenRateLimiter:
        """The per-token limiter: built even with no default limit, for ``@shield.limit``.

        Its storage: the app's Limiter, else ``JWT_SHIELD_RATE_LIMIT_STORAGE_URI``, else the
        store's own Redis (so every host counts one budget per token), else this process.
        """
        K = ConfigKey
        if self._limiter is not None and config.rate_limit_storage_uri is not None:
            raise ConfigurationError(
                f"{K.RATE_LIMIT_STORAGE_URI} is set, but JWTShield(limiter=...) shares that Limiter's"
                f" storage: remove one of the two."
            )
        try:
            adaptive = (
                AdaptiveSettings(factor=config.adaptive_factor, floor=config.adaptive_floor,
                                 sustain=config.adaptive_sustain)
                if config.adaptive
                else None
            )
            spike = config.spike_threshold or default_spike_threshold(config.rate_limit)
            uri = None
            options = None
            if self._limiter is None:
                uri = config.rate_limit_storage_uri or getattr(store, "rate_limit_storage_uri", None) or "memory://"
                if not uri.startswith("memory"):
                    options = {"socket_timeout": config.redis_timeout,
                               "socket_connect_timeout": config.redis_connect_timeout}  # fmt: skip
            return TokenRateLimiter(
                config.rate_limit,
                strategy=config.rate_limit_strategy,
                storage_uri=uri,
                storage_options=options,
                limiter=self._limiter,
                spike_threshold=spike,
                spike_sustain=config.spike_sustain,
                adaptive=adaptive,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"Rate limiting ({K.RATE_LIMIT}, {K.RATE_LIMIT_STORAGE_URI}, {K.SPIKE_THRESHOLD},"
                f" {K.ADAPTIVE_FLOOR}, {K.ADAPTIVE_SUSTAIN}, or JWTShield(limiter=...)): {exc}"
            ) from None

    def _pipeline(self) -> Pipeline:
        try:
            pipeline: Pipeline = current_app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                "JWTShield is not initialised on this app. Did you forget to call"
                " 'shield.init_app(app)'?"
            ) from None
        return pipeline

    # -- decorators ----------------------------------------------------------------------

    def exempt(self, view: F) -> F:
        """Serve this view without a token (login, refresh, health checks).

        Holds under other decorators that use :func:`functools.wraps` (the shield follows
        ``__wrapped__``), whichever order they are applied in.
        """
        self._registry.exempt_views.add(view)
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
            self._registry.view_limits[view] = limits
            return view

        return decorator

    def revocation_checker(self, callback: T_revocation_checker) -> T_revocation_checker:
        """Register ``callback(claims) -> bool``; any ``True`` means the token is revoked.

        Called after the built-in checks, for every request. A callback that raises is
        treated as an unreachable store (``JWT_SHIELD_FAIL_MODE``), never as "not revoked".
        """
        self._registry.revocation_checkers.append(callback)
        return callback

    # -- issuing -------------------------------------------------------------------------

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
        pipeline = self._pipeline()
        _refuse_in_resource_server_mode(pipeline, "create_access_token")
        ttl = pipeline.config.access_token_ttl if expires_in is None else expires_in
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"expires_in must be a positive number of seconds, not {expires_in!r}.")
        try:
            iat = _issue_time(pipeline, sub)
        except StoreError as exc:
            pipeline.store_failed(exc, None)
            iat = time.time()
        payload = pipeline.codec.claims_for(sub, ttl=ttl, extra=claims, iat=iat)
        return pipeline.codec.encode(payload, ACCESS_TYPE)

    def issue_tokens(
        self, sub: str, claims: t.Mapping[str, t.Any] | None = None, *, cookies: bool = False
    ) -> TokenPair:
        """Start a session for ``sub`` (after the app checked the password).

        Returns an access token and a refresh token sharing a new family id ``sid``.

        With :data:`JWT_SHIELD_DPOP` on, a valid proof in the request's ``DPoP`` header
        binds the session to the client's key (``cnf.jkt`` in both tokens, ``token_type``
        ``"DPoP"``); a bad proof is refused with 400 ``invalid_dpop_proof``, and so is a
        missing one when DPoP is ``"required"``.

        :param cookies: the pair is for :meth:`set_cookies` (a browser): its tokens are
            bound to a new fingerprint cookie instead of a DPoP key. Needs ``"cookies"``
            in :data:`JWT_SHIELD_TOKEN_LOCATIONS`.
        """
        pipeline = self._pipeline()
        _refuse_in_resource_server_mode(pipeline, "issue_tokens")
        config = pipeline.config
        ip = request.remote_addr if has_request_context() else None
        extra = dict(claims or {})
        codec = pipeline.codec
        codec.claims_for(sub, ttl=1, extra=extra)  # validates sub and claims before any write
        binding: dict[str, t.Any] = {}
        fingerprint = nonce = None
        if cookies:
            if "cookies" not in config.token_locations:
                raise RuntimeError(
                    f"issue_tokens(..., cookies=True) needs 'cookies' in {ConfigKey.TOKEN_LOCATIONS}."
                )
            fingerprint = new_fingerprint()
            binding["fgp"] = fingerprint_hash(fingerprint)
        else:
            jkt, nonce = pipeline.token_request_proof(required=config.dpop == "required")
            if jkt is not None:
                binding["cnf"] = {"jkt": jkt}  # RFC 9449 §6.1
        country, new_country = pipeline.login_geo(sub, ip)
        sid = secrets.token_urlsafe(16)
        refresh_jti = secrets.token_urlsafe(16)
        dropped: list[str] = []
        session_claims = {**extra, **binding}
        try:
            iat = _issue_time(pipeline, sub)
            family = new_family(config, sid=sid, sub=sub, refresh_jti=refresh_jti, now=iat, ip=ip, country=country,
                                claims=session_claims)  # fmt: skip
            dropped = pipeline.store.create_family(
                family,
                max_sessions=config.max_sessions,
                idle_ttl=config.refresh_idle_ttl,
                until=family.expires_at + config.access_token_ttl,
            )
        except StoreError as exc:
            # Without the store no session can be recorded, so none can be refreshed: in
            # "open" mode the login still succeeds and the user logs in again later.
            pipeline.store_failed(exc, None)
            iat = time.time()
            family = new_family(config, sid=sid, sub=sub, refresh_jti=refresh_jti, now=iat, ip=ip, country=country,
                                claims=session_claims)  # fmt: skip
        for old in dropped:
            pipeline.record("family-revoked", None, subject=sub, sid=old, action="revoke_family",
                         detail={"reason": "max-sessions"})  # fmt: skip
        pair = sign_pair(pipeline.codec, config, family, access_iat=iat, country=country, new_country=new_country,
                         fingerprint=fingerprint)  # fmt: skip
        detail: dict[str, t.Any] = {"new_country": new_country} if new_country else {}
        if binding:
            detail["bound"] = "dpop" if "cnf" in binding else "fingerprint"
        pipeline.record("session-started", None, subject=sub, sid=sid, jti=refresh_jti, country=country,
                        detail=detail)  # fmt: skip
        if nonce is not None:
            send_nonce(nonce)
        return pair

    def refresh(self, refresh_token: str | None = None) -> TokenPair:
        """Spend ``refresh_token`` and return a new pair in the same session.

        A refresh token presented a second time is reuse: the whole family is revoked and
        :class:`~flask_jwt_shield.InvalidGrant` is raised (400 ``invalid_grant``).

        Without ``refresh_token``, and with cookies in :data:`JWT_SHIELD_TOKEN_LOCATIONS`,
        the refresh cookie is read (and an unsafe request needs the ``X-CSRF-Token``
        header). A session bound to a DPoP key needs a proof by that key in the ``DPoP``
        header; one bound to a fingerprint needs the fingerprint cookie.
        """
        pipeline = self._pipeline()
        _refuse_in_resource_server_mode(pipeline, "refresh")
        config = pipeline.config
        ip = request.remote_addr if has_request_context() else None
        from_cookie = False
        if refresh_token is None and "cookies" in config.token_locations and has_request_context():
            refresh_token = request.cookies.get(REFRESH_COOKIE)
            from_cookie = refresh_token is not None
            if from_cookie and request.method not in SAFE_METHODS:
                try:
                    check_csrf(request, request.environ)
                except InvalidRequest as exc:
                    pipeline.record("token-rejected", None, action="deny",
                                    detail={"reason": exc.reason, "status": 400, "grant": "refresh_token"})  # fmt: skip
                    raise
        if not isinstance(refresh_token, str):
            raise InvalidGrant("A refresh token is required.", reason="missing")
        try:
            claims, kid = pipeline.codec.verify(refresh_token, REFRESH_TYPE)
        except InvalidToken as exc:
            pipeline.record("token-rejected", None, action="deny",
                         detail={"reason": exc.reason, "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant(exc.description, reason=exc.reason) from None
        try:
            pipeline.check_revocation(claims, kid)
        except RevokedToken as exc:
            pipeline.record("token-rejected", claims, action="deny",
                         detail={"reason": exc.reason, "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant("The refresh token was revoked.", reason=exc.reason) from None
        nonce = self._check_refresh_binding(pipeline, claims, from_cookie)
        sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
        country = None
        if pipeline.geo is not None:
            # A refresh is a use too: allowed countries, the country the refresh token was
            # issued in, and travel are checked before anything is rotated.
            try:
                pipeline.check_geo(claims, ip)
            except RevokedToken as exc:
                raise InvalidGrant(exc.description, reason=exc.reason) from None
            location = pipeline.geo.locate(ip)
            country = location.country if location is not None else None
        try:
            new_iat = _issue_time(pipeline, sub)
            rotation = pipeline.store.rotate(
                sid, jti, new_jti=secrets.token_urlsafe(16), new_iat=new_iat, now=time.time(),
                idle_ttl=config.refresh_idle_ttl, grace=config.refresh_reuse_grace, ip=ip,
                country=country, until=time.time() + config.refresh_token_ttl + config.access_token_ttl,
            )  # fmt: skip
        except StoreError as exc:
            # Rotation cannot be proven single without the store: refuse in both modes,
            # or a stolen refresh token would mint sessions for the whole outage.
            pipeline.store_failed(exc, claims)
            raise StoreUnavailable() from None
        family = rotation.family
        if rotation.outcome in ("rotated", "grace") and family is not None:
            pair = sign_pair(pipeline.codec, config, family, access_iat=new_iat, country=country)
            pipeline.record("token-refreshed", claims, detail={"grace": rotation.outcome == "grace"})
            if nonce is not None:
                send_nonce(nonce)
            return pair
        if rotation.outcome == "reused":
            first, mode = rotation.first_use, config.event_ip
            pipeline.record("refresh-reused", claims, action="revoke_family", detail={
                "first_use": {"at": first.at, "ip": mask_ip(first.ip, mode)} if first else None,
                "second_use": {"at": time.time(), "ip": mask_ip(ip, mode)},
            })  # fmt: skip
            pipeline.record("family-revoked", claims, action="revoke_family", detail={"reason": "refresh-reused"})
            raise InvalidGrant(REFUSALS["reused"], reason="refresh-reused")
        pipeline.record("token-rejected", claims, action="deny", detail={
            "reason": f"session-{rotation.outcome}", "status": 400, "grant": "refresh_token",
        })  # fmt: skip
        raise InvalidGrant(REFUSALS.get(rotation.outcome, "The refresh token is invalid."),
                           reason=f"session-{rotation.outcome}")

    @staticmethod
    def _check_refresh_binding(pipeline: Pipeline, claims: Claims, from_cookie: bool) -> str | None:
        """Before anything rotates: the session's fingerprint and DPoP key. Returns a DPoP
        nonce to send back, if any."""
        fgp = claims.get("fgp")
        if (fgp is not None or from_cookie) and not (has_request_context() and fingerprint_matches(request, fgp)):
            pipeline.record("token-rejected", claims, action="deny", detail={
                "reason": "fingerprint-mismatch", "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant("The refresh token's fingerprint cookie is missing or does not match.",
                               reason="fingerprint-mismatch")  # fmt: skip
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is not None:
            return pipeline.token_request_proof(bound=jkt, claims=claims)[1]
        if pipeline.config.dpop == "required" and fgp is None:
            # A session from before DPoP was required: it cannot become bound on the way.
            pipeline.record("dpop-rejected", claims, action="deny",
                            detail={"reason": "dpop-required", "status": 400, "grant": "refresh_token"})  # fmt: skip
            raise InvalidGrant("This session is not DPoP-bound; log in again with a DPoP proof.",
                               reason="dpop-required", error="invalid_dpop_proof")  # fmt: skip
        return None

    # -- cookies (browsers) ------------------------------------------------------------

    def set_cookies(self, response: ResponseT, pair: TokenPair) -> ResponseT:
        """Put ``pair`` in cookies on ``response`` and return it (for browsers).

        The access token goes in ``__Host-jws_access`` (HttpOnly, Secure, SameSite per
        :data:`JWT_SHIELD_COOKIE_SAMESITE`), the refresh token in ``__Host-jws_refresh``
        (HttpOnly, Secure, SameSite=Strict); after a login also the fingerprint
        (``__Host-jws_fgp``, HttpOnly) and the CSRF value (``jws_csrf``, readable by the
        page's script, to be echoed in the ``X-CSRF-Token`` header on unsafe requests).
        ``pair`` must come from ``issue_tokens(..., cookies=True)`` or from
        :meth:`refresh` of such a session. Needs an app context.
        """
        config = self._pipeline().config
        if "cookies" not in config.token_locations:
            raise RuntimeError(f"set_cookies() needs 'cookies' in {ConfigKey.TOKEN_LOCATIONS}.")
        if not pair.cookie_bound:
            raise ValueError(
                "This pair is not bound to a fingerprint, so a copy of its tokens would work anywhere:"
                " issue it with shield.issue_tokens(sub, cookies=True)."
            )
        ends = pair.refresh_expires_at
        refresh_max_age = max(0, math.floor(ends - time.time())) if ends is not None else config.refresh_token_ttl
        transport.set_cookies(response, access_token=pair.access_token, access_max_age=pair.expires_in,
                              refresh_token=pair.refresh_token, refresh_max_age=refresh_max_age,
                              fingerprint=pair.fingerprint, samesite=config.cookie_samesite)  # fmt: skip
        return response

    def unset_cookies(self, response: ResponseT) -> ResponseT:
        """Expire every cookie :meth:`set_cookies` sets (log-out in the browser) and
        return ``response``. Revoke the session too: :meth:`revoke_family`."""
        transport.unset_cookies(response)
        return response

    # -- revoking ------------------------------------------------------------------------

    def revoke_token(self, token_or_jti: str) -> str:
        """Revoke one token, given as the token itself or its ``jti``. Returns the ``jti``."""
        return self._pipeline().revoke_token(token_or_jti)

    def revoke_family(self, sid: str) -> None:
        """Revoke one session: its refresh token and every access token carrying its ``sid``."""
        self._pipeline().revoke_family(sid)

    def revoke_subject(self, sub: str) -> None:
        """Reject every token issued to ``sub`` before now ("log out everywhere").

        Tokens issued afterwards work, also within the same clock tick.
        """
        self._pipeline().revoke_subject(sub)

    def revoke_key(self, kid: str) -> None:
        """Reject every token signed with key ``kid`` (a compromised key).

        The signing key cannot be revoked while it signs: put a new key first in
        ``JWT_SHIELD_KEYS`` and deploy, then revoke the old one.
        """
        self._pipeline().revoke_key(kid)

    # -- reading -----------------------------------------------------------------------

    def sessions(self, sub: str) -> list[Session]:
        """The subject's live sessions (refresh families), oldest first."""
        pipeline = self._pipeline()
        families = pipeline.store.families(sub, now=time.time(), idle_ttl=pipeline.config.refresh_idle_ttl)
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
        return _events.query(self._pipeline().store, subject=subject, jti=jti, sid=sid, kind=kind, since=since,
                             limit=limit)  # fmt: skip

    def alerts(self) -> AlertSink | None:
        """This app's webhook alert sink in this process, ``None`` without
        :data:`JWT_SHIELD_ALERT_WEBHOOK`. Needs an app context.

        ``shield.alerts().stats()`` counts what was delivered, given up on (``failed``) and
        dropped because the queue was full; ``flush(timeout)`` waits (bounded) until the queue
        is empty. See :doc:`alerts`.
        """
        return self._pipeline().recorder.alerts

    def jwks(self) -> dict[str, list[dict[str, t.Any]]]:
        """The public keys as a JWK Set (empty for HMAC keys, which are secret)."""
        return self._pipeline().keys.jwks()

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

    def security_events_blueprint(
        self,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        jwks_url: str | None = None,
        algorithms: t.Sequence[str] = ("RS256", "ES256"),
        resolve_subject: SubjectResolver | None = None,
        authorize: Authorizer | None = None,
        max_age: float = 7 * 86400,
        url: str = "/security-events",
        name: str = "jwt_shield_security_events",
    ) -> Blueprint:
        """A blueprint that receives the identity provider's Security Event Tokens (RFC 8417)
        pushed per RFC 8935 at ``url`` (exempt from the token pipeline).

        CAEP ``session-revoked`` revokes that session (its ``sid``); CAEP ``credential-change``
        and RISC ``sessions-revoked``, ``account-disabled`` and ``account-purged`` revoke every
        token of the subject. See :doc:`resource-server`.

        :param issuer: the SET Issuer, default :data:`JWT_SHIELD_ISSUER`.
        :param audience: the SET Audience (this recipient), default :data:`JWT_SHIELD_AUDIENCE`.
        :param jwks_url: the SET Issuer's JWK Set; default: resource-server mode's.
        :param algorithms: the signing algorithms accepted with ``jwks_url``.
        :param resolve_subject: ``fn(subject) -> sub | None`` for subject identifiers other
            than an ``iss_sub`` of the tokens' issuer (``email``, ``opaque`` ...).
        :param authorize: ``fn() -> bool``, run in the request to authenticate the
            transmitter (an ``Authorization`` header, say); ``False`` answers 401.
        :param max_age: seconds a SET's ``jti`` is remembered; older SETs are refused.
        """
        client = None
        if jwks_url is not None:
            try:
                client = JWKSClient(jwks_url, allowed=frozenset(algorithms))
            except ValueError as exc:
                raise ConfigurationError(f"security_events_blueprint(jwks_url=...): {exc}") from None
        settings = ReceiverSettings(issuer=issuer, audience=audience, max_age=float(max_age),
                                    resolve_subject=resolve_subject, authorize=authorize)  # fmt: skip
        return make_blueprint(name, url, SecurityEventReceiver(settings, client), self._pipeline, self.exempt)

    def dashboard_blueprint(
        self,
        *,
        authorize: t.Callable[[], bool],
        name: str = "jwt_shield_dashboard",
        login_url: str | None = None,
    ) -> Blueprint:
        """The admin dashboard: recent events, a subject's sessions and timeline, the keys,
        with buttons that revoke a session, a token, a subject or a key.

        Register it under a prefix of your choice::

            app.register_blueprint(shield.dashboard_blueprint(authorize=is_admin), url_prefix="/shield")

        :param authorize: called in every dashboard request; anything but ``True`` is 403.
            The pages are exempt from the token pipeline: the app decides how admins log in
            (a session cookie, an SSO proxy ...).
        :param login_url: linked from the 403 page, where an admin logs in.

        Every form posts a ``csrf_token`` tied to a cookie and signed with a key derived
        from the app's ``SECRET_KEY`` (or, without one, from the shield's signing key).
        """
        from .dashboard import build

        return build(exempt=self.exempt, authorize=authorize, name=name, login_url=login_url)

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
        endpoint = TokenEndpoint(self._pipeline, self.refresh, authenticate_client)

        def token() -> Response:
            _refuse_in_resource_server_mode(self._pipeline(), "token_view")
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


def _refuse_in_resource_server_mode(pipeline: Pipeline, method: str) -> None:
    if pipeline.config.resource_server:
        raise RuntimeError(
            f"shield.{method}() is not available in resource-server mode ({ConfigKey.JWKS_URL}):"
            " the identity provider issues and refreshes the tokens, and owns the sessions"
            " (refresh-token reuse detection is its job). Send users to the provider to log in."
        )


def _issue_time(pipeline: Pipeline, sub: str) -> float:
    """Now, but strictly after any ``revoke_subject`` of ``sub`` (even within one clock tick)."""
    now = time.time()
    not_before = pipeline.store.not_before(sub, now)
    if not_before is not None and now <= not_before:
        now = math.nextafter(not_before, math.inf)
    return now


__all__ = ["ConfigurationError", "JWTShield", "Session", "TokenPair"]
