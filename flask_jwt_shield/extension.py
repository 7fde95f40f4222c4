"""The :class:`JWTShield` extension: the face users read.

``init_app``, the decorators, and thin methods that validate their arguments and delegate:
issuing and refreshing to :mod:`.sessions`, revoking to :mod:`.revocation`. ``init_app``
builds the app's :class:`~flask_jwt_shield.state.ShieldState` and its request pipeline
(:mod:`.pipeline`), which only this module builds.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
import typing as t

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from . import dbsc as _dbsc
from . import events as _events
from . import geocheck
from . import revocation
from . import sessions as _sessions
from . import transport
from .alerts import AlertSink
from .cli import cli
from .config import ConfigKey
from .config import duration_seconds
from .context import serialise_current_claims
from .errors import ConfigurationError
from .events import SecurityEvent
from .global_logout import GlobalTokenRevocation
from .introspection import Authorizer as IntrospectionAuthorizer
from .introspection import make_view as make_introspection_view
from .jwks import JWKSClient
from .metadata import make_blueprint as metadata_blueprint
from .oauth import ALL_METHODS
from .oauth import ClientAuthenticator
from .oauth import TokenEndpoint
from .oauth import role
from .pipeline import Pipeline
from .ratelimit import parse_limits
from .sessions import Session
from .sessions import TokenPair
from .ssf import SESSION_FALLBACKS
from .ssf import Authorizer
from .ssf import ReceiverSettings
from .ssf import SecurityEventReceiver
from .ssf import SessionFallback
from .ssf import make_blueprint
from .ssf.connection import Connection
from .ssf.connection import connection_of
from .ssf.connection import install as install_connection
from .ssf.endpoints import StreamAuthorizer
from .ssf.endpoints import make_blueprint as ssf_blueprint
from .ssf.transmitter import Transmitter
from .ssf.transmitter import install as install_transmitter
from .ssf.transmitter import transmitter_of
from .state import EXTENSION_KEY
from .state import Registry
from .state import ShieldState
from .state import current_state
from .statuslist.endpoint import make_blueprint as status_list_blueprint
from .stores import Store
from .subjects import SubjectResolver
from .token_revocation import make_view as make_revocation_view
from .tokens import Claims

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

logger = logging.getLogger("flask_jwt_shield")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
B = t.TypeVar("B", bound=Blueprint)
ResponseT = t.TypeVar("ResponseT", bound=BaseResponse)
T_revocation_checker = t.TypeVar("T_revocation_checker", bound=t.Callable[[Claims], bool])


class JWTShield:
    """The Flask extension.

    :param app: an application to initialise now (or call :meth:`init_app` later).
    :param limiter: an app's existing ``flask_limiter.Limiter`` whose storage the per-token
        limits share (keys never collide with the app's own).
    :param store: a store instance to use instead of ``JWT_SHIELD_STORE_URI``.
    """

    def __init__(self, app: Flask | None = None, *, limiter: Limiter | None = None, store: Store | None = None) -> None:
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
        state = ShieldState.build(app, self._registry, limiter=self._limiter, store=self._store)
        app.extensions[EXTENSION_KEY] = state
        _install_ssf(app, state)
        serialise_current_claims(app)
        if state.config.request.enabled:
            run = Pipeline(state).run

            # A plain function rather than the bound method or a partial: Flask asks on
            # every request whether a hook is a coroutine, and unwrapping those costs more.
            def jwt_shield_guard() -> None:
                run()

            app.before_request(jwt_shield_guard)
        if "jwt-shield" not in app.cli.commands:
            app.cli.add_command(cli)

    # -- decorators ----------------------------------------------------------------------

    @t.overload
    def exempt(self, view: F) -> F: ...
    @t.overload
    def exempt(self, view: B) -> B: ...
    def exempt(self, view: F | B) -> F | B:
        """Serve this view -- or every view of this blueprint -- without a token (login,
        refresh, health checks).

        Holds under other decorators that use :func:`functools.wraps` (the shield follows
        ``__wrapped__``), whichever order they are applied in. A blueprint counts wherever
        it is registered, under any name, nested too.
        """
        if isinstance(view, Blueprint):
            self._registry.exempt_blueprints.add(view)
        else:
            self._registry.exempt_views.add(view)
        return view

    def optional(self, view: F) -> F:
        """Serve this view with or without a token (Flask-JWT-Extended's
        ``@jwt_required(optional=True)``).

        Without a token the view runs with no claims (``get_claims(optional=True)`` is
        empty); a token that is present is checked like anywhere else, so a bad, expired or
        revoked one is still refused.
        """
        self._registry.optional_views.add(view)
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
        Registering the same function again (an app factory that defines and registers its
        checker on every call) replaces the earlier one.
        """
        checkers = self._registry.revocation_checkers
        # An app factory that registers its checker on every call defines the same function
        # again each time: the new one replaces the old instead of piling up.
        code = getattr(callback, "__code__", None)
        checkers[:] = [c for c in checkers if code is None or getattr(c, "__code__", None) is not code]
        checkers.append(callback)
        return callback

    # -- issuing -------------------------------------------------------------------------

    def create_access_token(
        self,
        sub: str,
        claims: t.Mapping[str, t.Any] | None = None,
        expires_in: int | datetime.timedelta | None = None,
    ) -> str:
        """Sign an access token (``typ`` ``at+jwt``) for ``sub``. Needs an app context.

        :param claims: extra claims; registered ones (``sub``, ``exp``, ``jti`` ...) are
            written by the shield and may not be given.
        :param expires_in: whole seconds or a :class:`~datetime.timedelta`, default
            ``JWT_SHIELD_ACCESS_TOKEN_TTL``.
        """
        if isinstance(expires_in, datetime.timedelta):
            expires_in = int(duration_seconds(expires_in, "expires_in", whole=True))
        return _sessions.create_access_token(current_state(), _text("sub", sub), claims, expires_in)

    def issue_tokens(
        self,
        sub: str,
        claims: t.Mapping[str, t.Any] | None = None,
        *,
        cookies: bool = False,
        acr: str | None = None,
        auth_time: float | None = None,
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
        :param acr: how the person authenticated (an authentication context class
            reference such as ``"mfa"``), written as the ``acr`` claim; ``None`` for none.
        :param auth_time: when the person last actively authenticated (epoch seconds; by
            default now), written as the ``auth_time`` claim.

        Both live in the session: every refreshed access token carries them unchanged, so a
        refresh never makes an authentication more recent. The ``step_up`` action
        (RFC 9470) judges them; a client answered 401 ``insufficient_user_authentication``
        authenticates the person again and gets a new pair from this method. A ``step_up``
        finding at login itself judges the ``acr`` and ``auth_time`` given here and raises
        :class:`~flask_jwt_shield.InsufficientUserAuthentication` when they do not pass.
        """
        return _sessions.issue_tokens(
            current_state(), _text("sub", sub), claims, cookies=cookies, acr=acr, auth_time=auth_time
        )

    def refresh(self, refresh_token: str | None = None) -> TokenPair:
        """Spend ``refresh_token`` and return a new pair in the same session.

        A refresh token presented a second time is reuse: the whole family is revoked and
        :class:`~flask_jwt_shield.InvalidGrant` is raised (400 ``invalid_grant``).

        Without ``refresh_token``, and with cookies in :data:`JWT_SHIELD_TOKEN_LOCATIONS`,
        the refresh cookie is read (and an unsafe request needs the ``X-CSRF-Token``
        header). A session bound to a DPoP key needs a proof by that key in the ``DPoP``
        header; one bound to a fingerprint needs the fingerprint cookie.
        """
        return _sessions.refresh(current_state(), refresh_token)

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
        config = current_state().config
        if "cookies" not in config.request.token_locations:
            raise RuntimeError(f"set_cookies() needs 'cookies' in {ConfigKey.TOKEN_LOCATIONS}.")
        if not pair.cookie_bound:
            raise ValueError(
                "This pair is not bound to a fingerprint, so a copy of its tokens would work anywhere:"
                " issue it with shield.issue_tokens(sub, cookies=True)."
            )
        ends = pair.refresh_expires_at
        refresh_max_age = (
            max(0, math.floor(ends - time.time())) if ends is not None else config.sessions.refresh_token_ttl
        )
        transport.set_cookies(
            response,
            access_token=pair.access_token,
            access_max_age=pair.expires_in,
            refresh_token=pair.refresh_token,
            refresh_max_age=refresh_max_age,
            fingerprint=pair.fingerprint,
            samesite=config.request.cookie_samesite,
        )
        if pair.fingerprint is not None and config.request.dbsc != "off":  # a login: offer DBSC
            _dbsc.offer_registration(response, pair.sid, self._dbsc_register)
        return response

    # -- Device Bound Session Credentials (browsers that keep a key) -------------------

    #: The registration endpoint's name, once :meth:`dbsc_blueprint` made it.
    _dbsc_register: str | None = None

    def dbsc_blueprint(self, *, url: str = "/dbsc", name: str = "jwt_shield_dbsc") -> Blueprint:
        """The DBSC endpoints (exempt from the pipeline): ``POST {url}/register`` and
        ``POST {url}/refresh``. With :data:`JWT_SHIELD_DBSC` on, :meth:`set_cookies` at a
        login invites the browser to register there; see :ref:`dbsc`."""
        bp = Blueprint(name, __name__)
        refresh_endpoint = f"{name}.refresh"

        def register() -> Response:
            return _dbsc.register(refresh_endpoint)

        def refresh() -> Response:
            return _dbsc.refresh(refresh_endpoint)

        bp.add_url_rule(f"{url}/register", "register", self.exempt(register), methods=["POST"])
        bp.add_url_rule(f"{url}/refresh", "refresh", self.exempt(refresh), methods=["POST"])
        self._dbsc_register = f"{name}.register"
        return bp

    def unset_cookies(self, response: ResponseT) -> ResponseT:
        """Expire every cookie :meth:`set_cookies` sets (log-out in the browser) and
        return ``response``. Revoke the session too: :meth:`revoke_family`."""
        transport.unset_cookies(response)
        if current_state().config.request.dbsc != "off":
            response.delete_cookie(transport.DBSC_COOKIE, path="/", secure=True, httponly=True)
        return response

    # -- revoking ------------------------------------------------------------------------

    def revoke_token(self, token_or_jti: str) -> str:
        """Revoke one token, given as the token itself or its ``jti``. Returns the ``jti``."""
        return revocation.revoke_token(current_state(), _text("token_or_jti", token_or_jti))

    def revoke_family(self, sid: str) -> None:
        """Revoke one session: its refresh token and every access token carrying its ``sid``."""
        revocation.revoke_family(current_state(), _text("sid", sid))

    def revoke_subject(self, sub: str) -> None:
        """Reject every token issued to ``sub`` before now ("log out everywhere").

        Tokens issued afterwards work, also within the same clock tick.
        """
        revocation.revoke_subject(current_state(), _text("sub", sub))

    def revoke_key(self, kid: str) -> None:
        """Reject every token signed with key ``kid`` (a compromised key).

        The signing key cannot be revoked while it signs: put a new key first in
        ``JWT_SHIELD_KEYS`` and deploy, then revoke the old one.
        """
        revocation.revoke_key(current_state(), _text("kid", kid))

    def forget_places(self, sub: str) -> None:
        """Clear what the GeoIP detectors remember of ``sub`` -- the recent countries and
        the last place seen -- after a false alarm (a login from a VPN, a trip): the next
        login is judged like a first one. Sessions and revocations are untouched."""
        geocheck.forget_places(current_state(), _text("sub", sub))

    # -- reading -----------------------------------------------------------------------

    def sessions(self, sub: str) -> list[Session]:
        """The subject's live sessions (refresh families), oldest first."""
        return _sessions.sessions(current_state(), _text("sub", sub))

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
        for name, value in (("subject", subject), ("jti", jti), ("sid", sid), ("kind", kind)):
            if value is not None:
                _text(name, value)
        return _events.query(
            current_state().store, subject=subject, jti=jti, sid=sid, kind=kind, since=since, limit=limit
        )

    def alerts(self) -> AlertSink | None:
        """This app's webhook alert sink in this process, ``None`` without
        :data:`JWT_SHIELD_ALERT_WEBHOOK`. Needs an app context.

        ``shield.alerts().stats()`` counts what was delivered, given up on (``failed``) and
        dropped because the queue was full; ``flush(timeout)`` waits (bounded) until the queue
        is empty. See :doc:`alerts`.
        """
        return current_state().alerts

    def jwks(self) -> dict[str, list[dict[str, t.Any]]]:
        """The public keys as a JWK Set (empty for HMAC keys, which are secret)."""
        return current_state().keys.jwks()

    def jwks_blueprint(self, name: str = "jwt_shield_jwks") -> Blueprint:
        """A blueprint serving the JWK Set at ``/.well-known/jwks.json`` (exempt)."""
        bp = Blueprint(name, __name__)

        def jwks() -> ResponseReturnValue:
            response = jsonify(self.jwks())
            response.cache_control.public = True
            response.cache_control.max_age = 300
            return response

        bp.add_url_rule("/.well-known/jwks.json", "jwks", self.exempt(role(jwks, "jwks_uri")), methods=["GET"])
        return bp

    def status_list_blueprint(
        self, *, aggregation_url: str | None = "/statuslists", name: str = "jwt_shield_status_list"
    ) -> Blueprint:
        """A blueprint serving the app's Token Status List (draft-ietf-oauth-status-list;
        exempt): the signed Status List Token (``application/statuslist+jwt``) at the path
        of :data:`JWT_SHIELD_STATUS_LIST_URI`, which every access token names in its
        ``status`` claim, and the Status List Aggregation at ``aggregation_url`` (``None``
        leaves it out), which the RFC 8414 metadata then names.

        Register it after :meth:`init_app`, without a URL prefix, with
        :data:`JWT_SHIELD_STATUS_LIST` on. See :doc:`status-list`.
        """
        return status_list_blueprint(name, self.exempt, aggregation_url=aggregation_url)

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
        session_fallback: SessionFallback = "subject",
        url: str = "/security-events",
        name: str = "jwt_shield_security_events",
    ) -> Blueprint:
        """A blueprint that receives the identity provider's Security Event Tokens (RFC 8417)
        pushed per RFC 8935 at ``url`` (exempt from the token pipeline).

        CAEP ``session-revoked`` revokes that session; CAEP ``credential-change``
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
        :param session_fallback: what CAEP ``session-revoked`` revokes when the session is not
            one the store knows (resource-server mode: the provider's ``sid``, which some
            providers' tokens do not carry): ``"subject"`` (default) every token of the user,
            ``"none"`` only the tokens whose ``sid`` claim names it.
        """
        if session_fallback not in SESSION_FALLBACKS:
            raise ConfigurationError(
                f"security_events_blueprint(session_fallback=...) must be one of {SESSION_FALLBACKS}"
            )
        client = None
        if jwks_url is not None:
            try:
                client = JWKSClient(jwks_url, allowed=frozenset(algorithms))
            except ValueError as exc:
                raise ConfigurationError(f"security_events_blueprint(jwks_url=...): {exc}") from None
        settings = ReceiverSettings(
            issuer=issuer,
            audience=audience,
            max_age=float(max_age),
            resolve_subject=resolve_subject,
            authorize=authorize,
            session_fallback=session_fallback,
        )
        follow = issuer is None and audience is None and jwks_url is None
        receiver = SecurityEventReceiver(settings, client, follow_connection=follow)
        return make_blueprint(name, url, receiver, self.exempt)

    def ssf_blueprint(
        self, *, authorize: StreamAuthorizer | None = None, base: str = "/ssf", name: str = "jwt_shield_ssf"
    ) -> Blueprint:
        """The Shared Signals transmitter's endpoints (exempt from the token pipeline; needs
        :data:`JWT_SHIELD_SSF_TRANSMIT`): ``/.well-known/ssf-configuration`` and, under
        ``base``, ``streams``, ``status``, ``verify`` and ``poll/<stream_id>``. Register it
        without a URL prefix. See :doc:`shared-signals`.

        :param authorize: ``fn() -> str | None``, run in each management and poll request:
            the receiver's name (its streams' owner and their SETs' ``aud``), or ``None``
            (401). Without it every call but discovery is refused (403).
            :func:`~flask_jwt_shield.ssf.bearer_receivers` builds one from shared secrets.
        """
        return ssf_blueprint(name, base, authorize, self.exempt)

    def ssf_transmitter(self) -> Transmitter | None:
        """This app's Shared Signals transmitter in this process (``stats()``, the
        queue's ``courier.flush(timeout)``), ``None`` without
        :data:`JWT_SHIELD_SSF_TRANSMIT`. Needs an app context."""
        current_state()
        return transmitter_of(current_app)

    def ssf_connection(self) -> Connection | None:
        """This app's stream with a transmitter in this process (``ready``, ``stats()``),
        ``None`` without :data:`JWT_SHIELD_SSF_RECEIVE_FROM`. Needs an app context."""
        current_state()
        return connection_of(current_app)

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
        endpoint = TokenEndpoint(self.refresh, authenticate_client)

        def token() -> Response:
            _sessions.refuse_in_resource_server_mode(current_state(), "token_view")
            return endpoint()

        return self.exempt(role(token, "token_endpoint", ALL_METHODS))

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

    # -- revocation, introspection, metadata, the provider's logout (see :doc:`oauth`) -----

    def revocation_view(self, *, authenticate_client: ClientAuthenticator | None = None) -> t.Callable[[], Response]:
        """A ready RFC 7009 token revocation endpoint (``POST``, exempt; clients checked by the
        hook of :meth:`token_view`). A refresh token ends its session, an access token only
        itself; another client's token is not revoked (400 ``invalid_grant``), one issued
        without a ``client_id`` is the app's; an unknown token gets 200. See :doc:`oauth`."""
        return self.exempt(make_revocation_view(authenticate_client))

    def introspection_view(
        self,
        *,
        authenticate_client: ClientAuthenticator | None = None,
        authorize: IntrospectionAuthorizer | None = None,
    ) -> t.Callable[[], Response]:
        """A ready RFC 7662 token introspection endpoint (``POST``, exempt): ``{"active":
        true, "scope", "client_id", "sub", "exp", "iat", "nbf", "iss", "aud", "jti",
        "token_type", "cnf"}`` for a token the shield would accept now (every revocation,
        expiry, and for a refresh token the session's lifetimes and the reuse grace), else
        ``{"active": false}``. Rate limited per caller (:data:`JWT_SHIELD_INTROSPECTION_RATE_LIMIT`).

        :param authenticate_client: the hook of :meth:`token_view`; a public client never introspects.
        :param authorize: ``fn() -> bool`` for callers without client credentials. One of the two is required.
        """
        return self.exempt(make_introspection_view(authenticate_client, authorize))

    def global_token_revocation_view(
        self,
        *,
        issuer: str,
        jwks_url: str,
        audience: str | None = None,
        algorithms: t.Sequence[str] = ("RS256", "ES256"),
        resolve_subject: SubjectResolver | None = None,
        max_age: float = 300,
    ) -> t.Callable[[], Response]:
        """The endpoint an identity provider calls to log a user out of this app
        (draft-parecki-oauth-global-token-revocation, as Okta Universal Logout sends it;
        ``POST``, exempt): ``{"sub_id": {...}}`` (RFC 9493) with the provider's signed JWT as
        ``Authorization: Bearer``; the subject loses every session and token. 204, or 400,
        401, 404, 503 as the draft says.

        :param issuer: the provider's issuer (the JWT's ``iss``).
        :param jwks_url: the provider's JWK Set, which verifies the JWT (``algorithms``).
        :param audience: the JWT's ``aud``; default: this endpoint's URL.
        :param resolve_subject: ``fn(sub_id) -> sub | None`` for identifiers other than an
            ``iss_sub`` of :data:`JWT_SHIELD_ISSUER`; ``None`` answers 404.
        :param max_age: seconds the JWT may be old (its ``iat``).
        """
        endpoint = GlobalTokenRevocation.create(
            issuer=issuer,
            jwks_url=jwks_url,
            audience=audience,
            algorithms=algorithms,
            resolve_subject=resolve_subject,
            max_age=max_age,
        )
        return self.exempt(endpoint.view())

    def metadata_blueprint(
        self,
        *,
        resource: str | None = None,
        authorization_servers: t.Sequence[str] | None = None,
        scopes: t.Sequence[str] | None = None,
        response_types: t.Sequence[str] = ("none",),
        authorization_endpoint: str | None = None,
        name: str = "jwt_shield_metadata",
    ) -> Blueprint:
        """The metadata documents (exempt), generated on each request from the configuration
        and the shield endpoints the app mounted: ``/.well-known/oauth-authorization-server``
        (RFC 8414, issuing app) and ``/.well-known/oauth-protected-resource`` (RFC 9728, also
        path-suffixed), which every ``WWW-Authenticate`` challenge then names.

        Register it after :meth:`init_app`, without a URL prefix. The parameters are those of
        :class:`~flask_jwt_shield.metadata.AuthorizationServerMetadata` and
        :class:`~flask_jwt_shield.metadata.ResourceMetadata`.
        """
        return metadata_blueprint(
            name,
            self.exempt,
            resource=resource,
            authorization_servers=authorization_servers,
            scopes=scopes,
            response_types=response_types,
            authorization_endpoint=authorization_endpoint,
        )

    def oauth_blueprint(
        self,
        *,
        authenticate_client: ClientAuthenticator | None = None,
        authorize_introspection: IntrospectionAuthorizer | None = None,
        token_url: str = "/oauth/token",  # noqa: S107 -- a path, not a secret
        revocation_url: str = "/oauth/revoke",
        introspection_url: str = "/oauth/introspect",
        resource: str | None = None,
        scopes: t.Sequence[str] | None = None,
        name: str = "jwt_shield_oauth",
    ) -> Blueprint:
        """Every OAuth endpoint at once: :meth:`token_view`, :meth:`revocation_view`,
        :meth:`introspection_view` (when ``authenticate_client`` or
        ``authorize_introspection`` is given) and :meth:`metadata_blueprint`'s documents,
        which list them. Register it without a URL prefix."""
        bp = self.metadata_blueprint(resource=resource, scopes=scopes, name=name)
        bp.add_url_rule(token_url, "token", self.token_view(authenticate_client=authenticate_client), methods=["POST"])
        bp.add_url_rule(
            revocation_url,
            "revocation",
            self.revocation_view(authenticate_client=authenticate_client),
            methods=["POST"],
        )
        if authenticate_client is not None or authorize_introspection is not None:
            view = self.introspection_view(authenticate_client=authenticate_client, authorize=authorize_introspection)
            bp.add_url_rule(introspection_url, "introspection", view, methods=["POST"])
        return bp


def _install_ssf(app: Flask, state: ShieldState) -> None:
    """The transmitter (``JWT_SHIELD_SSF_TRANSMIT``) and the connection to a transmitter
    (``JWT_SHIELD_SSF_RECEIVE_FROM``) of ``app``, when configured."""
    settings = state.config.ssf
    if settings.ssf_transmit:
        signing = state.keys.signing_key
        if signing is None or signing.symmetric:
            raise ConfigurationError(
                f"{ConfigKey.SSF_TRANSMIT} needs an asymmetric signing key (RS256, ES256, EdDSA ...): receivers"
                " verify the SETs with the published JWK Set, and an HMAC secret cannot be published. Configure"
                f" {ConfigKey.PRIVATE_KEY} or {ConfigKey.KEYS} ('flask jwt-shield keys generate --alg ES256')."
            )
        assert state.config.keys.issuer is not None  # checked with the settings
        install_transmitter(
            app, Transmitter(settings, issuer=state.config.keys.issuer, codec=state.codec, store=state.store)
        )
    if settings.ssf_receive_from is not None:
        install_connection(app, settings)


def _text(name: str, value: str) -> str:
    """``value``, refused with a clear :class:`ValueError` when it is a string that cannot be
    stored (not valid Unicode: a lone surrogate such as ``"\\ud800"`` cannot be encoded).
    Other types are left to the checks further down."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{name} is not valid Unicode text (it holds a lone surrogate) and cannot be stored;"
            " refuse such input where it enters the app."
        ) from None
    return value


__all__ = ["ConfigurationError", "JWTShield", "Session", "TokenPair"]
