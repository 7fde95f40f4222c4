"""What :meth:`JWTShield.init_app <flask_jwt_shield.JWTShield.init_app>` builds for one app.

One :class:`ShieldState` per app lives in ``app.extensions["jwt_shield"]``: the config, the
key ring and token codec (and, in resource-server mode, the status list client), the store,
the limiter, the GeoIP detectors, the event log, the
DPoP verifier and the registry of what the app registered through the extension's
decorators. Everything that needs them outside the request pipeline -- issuing and
refreshing, the operators' revocations, the CLI, the dashboard, the endpoints -- reaches
them through :func:`current_state`, never through the pipeline or the face.

The state also carries the few rules every caller shares: how an event is recorded (and
throttled when it repeats), and the fail mode when the store (or, in resource-server mode,
a Token Status List) cannot be reached.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import math
import time
import typing as t

from cryptography.hazmat.primitives import serialization
from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import has_request_context
from flask import request

from .alerts import AlertSink
from .cache import bounded_put
from .config import ConfigKey
from .config import ShieldConfig
from .dpop import Nonces
from .dpop import ProofVerifier
from .errors import ConfigurationError
from .errors import StoreError
from .errors import StoreUnavailable
from .events import EventRecorder
from .events import SecurityEvent
from .geo import GeoGuard
from .jwks import JWKSClient
from .keys import KeyRing
from .masking import mask_url
from .ratelimit import AdaptiveSettings
from .ratelimit import KeyedLimit
from .ratelimit import TokenRateLimiter
from .ratelimit import default_spike_threshold
from .signals import EventKind
from .statuslist.client import StatusListClient
from .statuslist.client import StatusListUnavailable
from .statuslist.issuer import StatusIssuer
from .stores import Store
from .stores import store_from_uri
from .tokens import Claims
from .tokens import TokenCodec

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

logger = logging.getLogger("flask_jwt_shield")

#: Where :meth:`JWTShield.init_app <flask_jwt_shield.JWTShield.init_app>` keeps the state.
EXTENSION_KEY = "jwt_shield"

# One store-unavailable event per this many seconds per app, not one per request.
OUTAGE_EVENT_INTERVAL = 5.0
# Repeated refusals of one token (or client address) for one reason are recorded once per
# this many seconds: a hammering client must not turn into one stored event per request.
# The limiter and the spike detector still count every attempt.
REPEAT_INTERVAL = 60.0

R = t.TypeVar("R")
#: How many (token, address) pairs and repeated refusals one process remembers.
SEEN_MAX = 100_000
#: ``callback(claims) -> bool``: a registered ``@shield.revocation_checker``.
Checker = t.Callable[[Claims], bool]


@dataclasses.dataclass(eq=False)
class Registry:
    """What an app registered through the extension's decorators.

    Owned by the :class:`~flask_jwt_shield.JWTShield` instance (decorators run before and
    after ``init_app``, for every app it serves) and read by each app's state.
    """

    exempt_views: set[t.Callable[..., t.Any]] = dataclasses.field(default_factory=set)
    exempt_blueprints: set[Blueprint] = dataclasses.field(default_factory=set)
    optional_views: set[t.Callable[..., t.Any]] = dataclasses.field(default_factory=set)
    view_limits: dict[t.Callable[..., t.Any], str | None] = dataclasses.field(default_factory=dict)
    revocation_checkers: list[Checker] = dataclasses.field(default_factory=list)


class ShieldState:
    """The per-app objects of one app, and the rules every caller shares."""

    def __init__(
        self,
        *,
        registry: Registry,
        config: ShieldConfig,
        keys: KeyRing,
        codec: TokenCodec,
        store: Store,
        limiter: TokenRateLimiter | None,
        geo: GeoGuard | None,
        status_list_client: StatusListClient | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.keys = keys
        self.codec = codec
        self.store = store
        self.recorder = EventRecorder(config, store)
        self.limiter = limiter
        self.geo = geo
        #: Resource-server mode: the issuer's Token Status Lists, else ``None``.
        self.status_list_client = status_list_client
        #: The token endpoint's own limits (per session, per client address), or ``None``.
        storage = limiter.storage if limiter is not None else None
        self.refresh_limits = tuple(
            KeyedLimit(storage, text, f"jwt-shield-refresh-{name}") if storage is not None and text else None
            for name, text in (
                ("session", config.rate.refresh_rate_limit),
                ("address", config.rate.refresh_address_rate_limit),
            )
        )
        #: The introspection endpoint's limit per caller (``JWT_SHIELD_INTROSPECTION_RATE_LIMIT``).
        self.introspection_limit = (
            KeyedLimit(storage, config.rate.introspection_rate_limit, "jwt-shield-introspection")
            if storage is not None and config.rate.introspection_rate_limit
            else None
        )
        #: The DPoP proof verifier, or ``None`` with ``JWT_SHIELD_DPOP = "off"``.
        self.dpop = _proof_verifier(config, keys, store)
        # Outage event kind -> when it was last recorded (outage_event_due).
        self._last_outage: dict[str, float] = {}
        self._recent: dict[tuple[str, ...], float] = {}
        #: (jti, address) -> when that token last passed the geo step from that address.
        self.geo_seen: dict[tuple[str, str], float] = {}
        #: The status list issuer (``JWT_SHIELD_STATUS_LIST``), or ``None``.
        self.status_list = (
            StatusIssuer(config.status_list, store, codec, leeway=config.keys.leeway)
            if config.status_list.status_list
            else None
        )
        #: ``fn() -> URL`` of the app's RFC 9728 protected resource metadata, set when a
        #: metadata blueprint is registered; every challenge then names it.
        self.resource_metadata: t.Callable[[], str] | None = None

    @classmethod
    def build(
        cls, app: Flask, registry: Registry, *, limiter: Limiter | None = None, store: Store | None = None
    ) -> ShieldState:
        """Read and validate the app's ``JWT_SHIELD_*`` configuration and build its objects.

        Raises :class:`~flask_jwt_shield.ConfigurationError` for a bad setting. Nothing
        connects here: stores and limiter storages connect on first use.
        """
        config = ShieldConfig.from_mapping(app.config)
        keys = KeyRing.from_config(config)
        if store is None:
            if config.store.store_uri.startswith("memory") and not app.testing:
                logger.warning(
                    "JWT_SHIELD_STORE_URI is 'memory://': revocations and sessions live in this process"
                    " only and are lost on restart. Use 'sqlite:///shield.db' in production."
                )
            store = store_from_uri(
                config.store.store_uri,
                instance_path=app.instance_path,
                connect_timeout=config.store.redis_connect_timeout,
                timeout=config.store.redis_timeout,
                max_delay=config.store.revocation_max_delay,
            )
        if config.status_list.status_list and not hasattr(store, "status_claim"):
            raise ConfigurationError(
                f"{ConfigKey.STATUS_LIST} needs a store that keeps a status list ({type(store).__name__}"
                " has no status_claim): use one of the shield's stores, or turn the status list off."
            )
        remote = JWKSClient.from_config(config) if config.resource_server else None
        return cls(
            registry=registry,
            config=config,
            keys=keys,
            codec=TokenCodec(config, keys, remote),
            store=store,
            limiter=_make_limiter(config, store, limiter),
            geo=GeoGuard.from_config(config),
            status_list_client=StatusListClient.from_config(config, remote) if remote is not None else None,
        )

    def config_exempts(self, endpoint: str) -> bool:
        """Whether ``JWT_SHIELD_EXEMPT_ENDPOINTS`` names ``endpoint`` (a name, or a pattern
        with ``*``, ``?`` or ``[...]`` such as ``"health.*"``)."""
        return any(fnmatch.fnmatchcase(endpoint, entry) for entry in self.config.request.exempt_endpoints)

    def unmatched_exemptions(self, app: Flask) -> list[str]:
        """Entries of ``JWT_SHIELD_EXEMPT_ENDPOINTS`` that name no endpoint of ``app`` (typos)."""
        endpoints = list(app.view_functions)
        return [e for e in sorted(self.config.request.exempt_endpoints) if not fnmatch.filter(endpoints, e)]

    def warn_unmatched_exemptions(self, app: Flask) -> None:
        """Log each entry of ``JWT_SHIELD_EXEMPT_ENDPOINTS`` that names no endpoint: a typo
        there protects the endpoint that was meant to be public, or worse, the other way
        round. Runs at the app's first request, when its routes are all registered."""
        endpoints = list(app.view_functions)
        for entry in self.unmatched_exemptions(app):
            close = difflib.get_close_matches(entry, endpoints, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            logger.warning(
                "%s lists %r, which names no endpoint of this app.%s", ConfigKey.EXEMPT_ENDPOINTS, entry, hint
            )

    @property
    def alerts(self) -> AlertSink | None:
        """The webhook sink, ``None`` without ``JWT_SHIELD_ALERT_WEBHOOK``."""
        return self.recorder.alerts

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

    def first_in_a_while(self, key: tuple[str, ...]) -> bool:
        """True (and remembered) unless ``key`` was seen in the last ``REPEAT_INTERVAL`` seconds.

        How every refusal that repeats (a hammering client, a replayed SET) is recorded
        once a minute per process instead of once per request.
        """
        now = time.time()
        last = self._recent.get(key)
        if last is not None and now - last < REPEAT_INTERVAL:
            return False
        bounded_put(self._recent, key, now, SEEN_MAX)
        return True

    # -- the fail mode ---------------------------------------------------------------------

    def outage_event_due(self, kind: str) -> bool:
        """True (and remembered) unless an outage event ``kind`` was recorded in the last
        :data:`OUTAGE_EVENT_INTERVAL` seconds: one event per outage interval, not per request."""
        now = time.time()
        if now - self._last_outage.get(kind, -math.inf) < OUTAGE_EVENT_INTERVAL:
            return False
        self._last_outage[kind] = now
        return True

    def store_failed(self, exc: Exception, claims: Claims | None) -> None:
        """Apply ``JWT_SHIELD_FAIL_MODE``: raise 503 (closed) or return (open)."""
        if self.outage_event_due("store-unavailable"):
            self.record(
                "store-unavailable",
                claims,
                action="deny" if self.config.store.fail_mode == "closed" else "flag",
                detail={"error": type(exc).__name__, "fail_mode": self.config.store.fail_mode},
            )
        if self.config.store.fail_mode == "closed":
            raise StoreUnavailable()

    def status_list_failed(self, exc: StatusListUnavailable, claims: Claims) -> None:
        """Resource-server mode, no usable Token Status List for the token:
        ``JWT_SHIELD_STATUS_LIST_FAIL_MODE`` -- raise 503 (closed) or return (open); a
        ``status-list-unavailable`` event either way, one per outage interval."""
        mode = self.config.remote.status_list_fail_mode
        if self.outage_event_due("status-list-unavailable"):
            self.record(
                "status-list-unavailable",
                claims,
                action="deny" if mode == "closed" else "flag",
                detail={"status_list": mask_url(exc.uri), "error": exc.error, "fail_mode": mode},
            )
        if mode == "closed":
            raise StoreUnavailable(
                "The token's status list is unavailable; try again shortly.",
                retry_after=exc.retry_after,
                reason="status-list-unavailable",
            )

    @staticmethod
    def write(operation: t.Callable[[], R]) -> R:
        """Run an operator's store write (a revocation): 503 when it fails, in both modes."""
        try:
            return operation()
        except StoreError:
            # An operator's revocation must never be lost silently, whatever the fail mode.
            raise StoreUnavailable() from None

    def revocation_horizon(self, now: float) -> float:
        """Until when a revocation made at ``now`` must be kept: past the longest token."""
        return now + self.config.longest_ttl + self.config.keys.leeway + 1


def current_state() -> ShieldState:
    """The current app's :class:`ShieldState`; a clear error when the shield is not set up."""
    try:
        state: ShieldState = current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "JWTShield is not initialised on this app. Did you forget to call 'shield.init_app(app)'?"
        ) from None
    return state


def _make_limiter(config: ShieldConfig, store: Store, app_limiter: Limiter | None) -> TokenRateLimiter:
    """The per-token limiter: built even with no default limit, for ``@shield.limit``.

    Its storage: the app's Limiter, else ``JWT_SHIELD_RATE_LIMIT_STORAGE_URI``, else the
    store's own Redis (so every host counts one budget per token), else this process.
    """
    K = ConfigKey
    if app_limiter is not None and config.rate.rate_limit_storage_uri is not None:
        raise ConfigurationError(
            f"{K.RATE_LIMIT_STORAGE_URI} is set, but JWTShield(limiter=...) shares that Limiter's"
            f" storage: remove one of the two."
        )
    try:
        adaptive = (
            AdaptiveSettings(
                factor=config.rate.adaptive_factor,
                floor=config.rate.adaptive_floor,
                sustain=config.rate.adaptive_sustain,
            )
            if config.rate.adaptive
            else None
        )
        spike = config.rate.spike_threshold or default_spike_threshold(config.rate.rate_limit)
        uri = None
        options = None
        if app_limiter is None:
            uri = config.rate.rate_limit_storage_uri or getattr(store, "rate_limit_storage_uri", None) or "memory://"
            if not uri.startswith("memory"):
                options = {
                    "socket_timeout": config.store.redis_timeout,
                    "socket_connect_timeout": config.store.redis_connect_timeout,
                }
        return TokenRateLimiter(
            config.rate.rate_limit,
            strategy=config.rate.rate_limit_strategy,
            storage_uri=uri,
            storage_options=options,
            limiter=app_limiter,
            spike_threshold=spike,
            spike_sustain=config.rate.spike_sustain,
            adaptive=adaptive,
            mode=config.rate.rate_limit_mode,
            sync_interval=config.rate.rate_limit_sync_interval,
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"Rate limiting ({K.RATE_LIMIT}, {K.RATE_LIMIT_STORAGE_URI}, {K.RATE_LIMIT_STRATEGY},"
            f" {K.RATE_LIMIT_MODE}, {K.SPIKE_THRESHOLD}, {K.ADAPTIVE_FLOOR}, {K.ADAPTIVE_SUSTAIN},"
            f" or JWTShield(limiter=...)): {exc}"
        ) from None


def _proof_verifier(config: ShieldConfig, keys: KeyRing, store: Store) -> ProofVerifier | None:
    if config.dpop.dpop == "off":
        return None
    nonces = None
    if config.dpop.dpop_nonce_ttl is not None:
        signing = keys.signing_key
        if signing is None:
            raise ConfigurationError(
                f"{ConfigKey.DPOP_NONCE_TTL} needs a signing key (its nonces are keyed with it); this"
                " app only verifies. Remove the setting, or configure the signing key."
            )
        material = signing.signing
        if not isinstance(material, bytes):
            material = material.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        nonces = Nonces(material, config.dpop.dpop_nonce_ttl)
    return ProofVerifier(
        algorithms=config.dpop.dpop_algorithms,
        max_age=config.dpop.dpop_max_age,
        leeway=config.keys.leeway,
        store=store,
        max_bytes=config.request.max_token_bytes,
        nonces=nonces,
    )
