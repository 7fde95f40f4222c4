"""The validated settings of one app, in sections: each section reads its own keys.

:class:`ShieldConfig` is what :meth:`JWTShield.init_app <flask_jwt_shield.JWTShield.init_app>`
reads once; a module takes the section it works with (``config.rate``, ``config.geo`` ...).
The checks that span sections (resource-server mode and the key ring, DPoP and cookies) are
made where the sections meet, in :meth:`ShieldConfig.from_mapping`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing as t
import urllib.parse
from collections.abc import Mapping
from typing import Final

from ..actions import ACTIONS
from ..actions import Action
from ..errors import ConfigurationError
from ..jose import DEFAULT_PROOF_ALGORITHMS
from ..jose import PROOF_ALGORITHMS
from ..jose import RESOURCE_SERVER_ALGORITHMS
from ..jose import SIGNING_ALGORITHMS
from ..signals import BY_KIND
from .keys import ConfigKey
from .read import Reader
from .read import bad_algorithm
from .read import check_url
from .read import flask_jwt_extended_warnings
from .read import refuse_unknown_keys

logger = logging.getLogger("flask_jwt_shield")

_RESOURCE_SERVER_DEFAULT_ALGORITHMS = ("RS256", "ES256")

#: Token profiles for ``JWT_SHIELD_ACCEPTED_TYPES`` (DESIGN.md "Resource-server mode"):
#: ``at+jwt`` is RFC 9068 (header ``typ`` ``at+jwt``); ``keycloak`` is header ``typ`` ``JWT``
#: with the claim ``typ`` exactly ``Bearer``; ``entra`` is header ``typ`` ``JWT`` with the
#: claims ``ver`` ``"2.0"``, ``azp``, and ``scp`` or ``roles`` (Microsoft Entra ID v2.0).
PROFILES = frozenset({"at+jwt", "keycloak", "entra"})

KeyMaterial = str | bytes

#: ``JWT_SHIELD_ALERT_EVENTS`` by default: the kinds that mean "someone may hold a stolen
#: token" or "the shield cannot do its job", not the routine ones (logins, refreshes).
DEFAULT_ALERT_EVENTS: Final = (
    "refresh-reused",
    "traffic-spike",
    "traffic-anomaly",
    "impossible-travel",
    "country-denied",
    "dpop-rejected",
    "store-unavailable",
)


@dataclasses.dataclass(frozen=True, slots=True)
class KeySpec:
    """One entry of the key ring as configured (validated and parsed by ``keys.py``)."""

    kid: str | None
    alg: str
    key: KeyMaterial | None  # secret (HS*) or private PEM
    public_key: KeyMaterial | None  # public PEM, verify-only entries


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteSettings:
    """Resource-server mode: the identity provider whose JWK Set verifies the tokens."""

    jwks_url: str | None
    oidc_discovery: bool
    jwks_cache_ttl: float
    jwks_min_refetch: float
    jwks_timeout: float
    accepted_types: frozenset[str]
    #: Token Status Lists (draft-ietf-oauth-status-list) a token may name: URI prefixes.
    status_list_allowed_uris: tuple[str, ...] = ()
    status_list_min_ttl: float = 10.0
    status_list_max_ttl: float = 300.0
    status_list_max_stale: float = 60.0
    status_list_fail_mode: str = "closed"
    status_list_max_bytes: int = 4 * 1024 * 1024

    @property
    def enabled(self) -> bool:
        """True when tokens come from an external identity provider (its JWK Set)."""
        return self.jwks_url is not None or self.oidc_discovery

    @classmethod
    def read(cls, r: Reader) -> RemoteSettings:
        K = ConfigKey
        jwks_url = r.optional_string(K.JWKS_URL, None)
        discovery = r.boolean(K.OIDC_DISCOVERY, False)
        resource_server = jwks_url is not None or discovery
        if resource_server:
            _check_resource_server(
                r, jwks_url, discovery, r.optional_string(K.ISSUER, None), r.optional_string(K.AUDIENCE, None)
            )
        return cls(
            jwks_url=jwks_url,
            oidc_discovery=discovery,
            jwks_cache_ttl=r.number(K.JWKS_CACHE_TTL, 300, minimum=1),
            jwks_min_refetch=r.number(K.JWKS_MIN_REFETCH, 30, minimum=1),
            jwks_timeout=r.number(K.JWKS_TIMEOUT, 3, minimum=0.1),
            accepted_types=_accepted_types(r, resource_server),
            **_status_list_settings(r, resource_server),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class KeySettings:
    """Signing and verifying: the key ring, the algorithms, the issuer and the audience."""

    algorithm: str
    keys: tuple[KeySpec, ...]
    issuer: str | None
    audience: str | None
    allowed_algorithms: tuple[str, ...] | None
    leeway: float

    @classmethod
    def read(cls, r: Reader, *, resource_server: bool) -> KeySettings:
        K = ConfigKey
        algorithm = r.choice(K.ALGORITHM, "HS256", SIGNING_ALGORITHMS, hint="'HS256' or 'ES256'")
        keys = () if resource_server else _key_specs(r, algorithm)
        allowed = r.string_list(K.ALLOWED_ALGORITHMS, None)
        if resource_server:
            allowed = list(_RESOURCE_SERVER_DEFAULT_ALGORITHMS) if allowed is None else allowed
            refused = [a for a in allowed if a not in RESOURCE_SERVER_ALGORITHMS]
            if refused or not allowed:
                raise ConfigurationError(
                    f"{K.ALLOWED_ALGORITHMS} is {allowed!r}; in resource-server mode ({K.JWKS_URL}) only"
                    f" asymmetric algorithms can be verified: {sorted(RESOURCE_SERVER_ALGORITHMS)}."
                    " HS* is never accepted there (its key would be a secret published to everyone)."
                )
        elif allowed is not None:
            unknown = [a for a in allowed if a not in SIGNING_ALGORITHMS]
            if unknown or not allowed:
                raise ConfigurationError(
                    f"{K.ALLOWED_ALGORITHMS} must list algorithms of the key ring (for example"
                    f" ['HS256']); {unknown or 'an empty list'} cannot be used. 'none' is never"
                    " allowed."
                )
        return cls(
            algorithm=algorithm,
            keys=keys,
            issuer=r.optional_string(K.ISSUER, None),
            audience=r.optional_string(K.AUDIENCE, None),
            allowed_algorithms=tuple(allowed) if allowed is not None else None,
            leeway=r.number(K.LEEWAY, 0, minimum=0),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSettings:
    """Token lifetimes and sessions (refresh families)."""

    access_token_ttl: int
    refresh_token_ttl: int
    refresh_idle_ttl: int
    refresh_reuse_grace: float
    max_sessions: int

    @property
    def longest_ttl(self) -> int:
        """Seconds after which no token issued now can still be accepted."""
        return max(self.access_token_ttl, self.refresh_token_ttl)

    @classmethod
    def read(cls, r: Reader) -> SessionSettings:
        K = ConfigKey
        access_ttl = r.integer(K.ACCESS_TOKEN_TTL, 900, minimum=1)
        refresh_ttl = r.integer(K.REFRESH_TOKEN_TTL, 2_592_000, minimum=1)
        idle_ttl = r.integer(K.REFRESH_IDLE_TTL, 1_209_600, minimum=1)
        if idle_ttl > refresh_ttl:
            raise ConfigurationError(
                f"{K.REFRESH_IDLE_TTL} ({idle_ttl}) is longer than {K.REFRESH_TOKEN_TTL}"
                f" ({refresh_ttl}): a session can never be idle longer than it lives. Lower"
                f" {K.REFRESH_IDLE_TTL} or raise {K.REFRESH_TOKEN_TTL}."
            )
        if access_ttl > idle_ttl:
            raise ConfigurationError(
                f"{K.ACCESS_TOKEN_TTL} ({access_ttl}) is longer than {K.REFRESH_IDLE_TTL}"
                f" ({idle_ttl}): access tokens would outlive the sessions that issued them."
                f" Lower {K.ACCESS_TOKEN_TTL}."
            )
        return cls(
            access_token_ttl=access_ttl,
            refresh_token_ttl=refresh_ttl,
            refresh_idle_ttl=idle_ttl,
            refresh_reuse_grace=r.number(K.REFRESH_REUSE_GRACE, 0, minimum=0),
            max_sessions=r.integer(K.MAX_SESSIONS, 200, minimum=1),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RequestSettings:
    """What the pipeline does with a request: on or off, exemptions, where tokens come from."""

    enabled: bool
    monitor_only: bool
    max_token_bytes: int
    token_cache_size: int
    exempt_endpoints: frozenset[str]
    realm: str
    token_locations: frozenset[str]
    cookie_samesite: str
    #: Device Bound Session Credentials for cookie sessions: ``"off"`` or ``"optional"``.
    dbsc: str
    #: Seconds the DBSC bound cookie lives before the browser must prove its key again.
    dbsc_cookie_ttl: int

    @classmethod
    def read(cls, r: Reader) -> RequestSettings:
        K = ConfigKey
        locations = r.string_list(K.TOKEN_LOCATIONS, ["headers"]) or []
        if not locations or not {"headers", "cookies"}.issuperset(locations):
            raise ConfigurationError(
                f"{K.TOKEN_LOCATIONS} must list 'headers', 'cookies' or both (for example"
                f" ['headers', 'cookies']), not {locations!r}. The query string and the form body"
                " are never token locations."
            )
        dbsc = r.choice(K.DBSC, "off", frozenset({"off", "optional"}), hint="'optional'")
        if dbsc != "off" and "cookies" not in locations:
            raise ConfigurationError(f"{K.DBSC} binds cookie sessions: it needs 'cookies' in {K.TOKEN_LOCATIONS}.")
        return cls(
            enabled=r.boolean(K.ENABLED, True),
            monitor_only=r.boolean(K.MONITOR_ONLY, False),
            max_token_bytes=r.integer(K.MAX_TOKEN_BYTES, 8192, minimum=256),
            token_cache_size=r.integer(K.TOKEN_CACHE_SIZE, 10_000, minimum=0),
            exempt_endpoints=frozenset(r.string_list(K.EXEMPT_ENDPOINTS, []) or ()),
            realm=r.string(K.REALM, "api"),
            token_locations=frozenset(locations),
            cookie_samesite=r.choice(K.COOKIE_SAMESITE, "Lax", frozenset({"Lax", "Strict"}), hint="'Lax'"),
            dbsc=dbsc,
            dbsc_cookie_ttl=r.integer(K.DBSC_COOKIE_TTL, 300, minimum=10),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where state lives, and what happens while it cannot be reached."""

    store_uri: str
    fail_mode: str
    redis_connect_timeout: float
    redis_timeout: float
    revocation_max_delay: float

    @classmethod
    def read(cls, r: Reader) -> StoreSettings:
        K = ConfigKey
        return cls(
            store_uri=r.string(K.STORE_URI, "memory://"),
            fail_mode=r.choice(K.FAIL_MODE, "closed", frozenset({"closed", "open"}), hint="'closed'"),
            redis_connect_timeout=r.seconds(K.REDIS_CONNECT_TIMEOUT, 0.5, maximum=30),
            redis_timeout=r.seconds(K.REDIS_TIMEOUT, 0.5, maximum=30),
            revocation_max_delay=r.number(K.REVOCATION_MAX_DELAY, 1.0, minimum=0),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RateSettings:
    """Per-token limits, the token and introspection endpoints' limits, spike, sustain and
    adaptive detection."""

    rate_limit: str | None
    rate_limit_key: str
    rate_limit_headers: bool
    refresh_rate_limit: str | None
    refresh_address_rate_limit: str | None
    rate_limit_strategy: str
    rate_limit_storage_uri: str | None
    rate_limit_mode: str
    rate_limit_sync_interval: float
    introspection_rate_limit: str | None
    spike_threshold: str | None
    spike_action: Action
    spike_sustain: str | None
    adaptive: bool
    adaptive_factor: float
    adaptive_floor: str
    adaptive_action: Action
    adaptive_sustain: str | None

    @classmethod
    def read(cls, r: Reader) -> RateSettings:
        K = ConfigKey
        return cls(
            rate_limit=r.limit(K.RATE_LIMIT, "300/minute"),
            rate_limit_key=r.choice(K.RATE_LIMIT_KEY, "jti", frozenset({"jti", "sub"}), hint="'jti'"),
            # Flask-Limiter's own switch is the default: an app that sends its headers gets ours.
            rate_limit_headers=r.boolean(K.RATE_LIMIT_HEADERS, bool(r.raw("RATELIMIT_HEADERS_ENABLED") or False)),
            refresh_rate_limit=r.limit(K.REFRESH_RATE_LIMIT, "12/minute"),
            refresh_address_rate_limit=r.limit(K.REFRESH_ADDRESS_RATE_LIMIT, "300/minute"),
            rate_limit_strategy=r.choice(
                K.RATE_LIMIT_STRATEGY,
                "fixed-window",
                frozenset({"fixed-window", "moving-window", "sliding-window-counter"}),
                hint="'fixed-window'",
            ),
            rate_limit_storage_uri=r.optional_string(K.RATE_LIMIT_STORAGE_URI, None),
            rate_limit_mode=r.choice(K.RATE_LIMIT_MODE, "exact", frozenset({"exact", "leased"}), hint="'leased'"),
            rate_limit_sync_interval=_sync_interval(r, K.RATE_LIMIT_SYNC_INTERVAL),
            introspection_rate_limit=r.limit(K.INTROSPECTION_RATE_LIMIT, "600/minute"),
            spike_threshold=r.limit(K.SPIKE_THRESHOLD, None),
            spike_action=r.action(K.SPIKE_ACTION, "flag", ladder=_NO_STEP_UP),
            spike_sustain=r.sustain(K.SPIKE_SUSTAIN, "3/10 minutes"),
            adaptive=r.boolean(K.ADAPTIVE, False),
            adaptive_factor=r.number(K.ADAPTIVE_FACTOR, 10.0, minimum=1.0),
            adaptive_floor=t.cast(str, r.limit(K.ADAPTIVE_FLOOR, "60/minute", nullable=False)),
            adaptive_action=r.action(K.ADAPTIVE_ACTION, "flag"),
            adaptive_sustain=r.sustain(K.ADAPTIVE_SUSTAIN, "3/10 minutes"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class GeoSettings:
    """The GeoIP database and the geo detectors."""

    geoip_database: str | None
    country_history: int
    new_country_action: Action
    country_change_action: Action
    impossible_travel_kmh: float
    impossible_travel_action: Action
    allowed_countries: frozenset[str] | None
    denied_countries: frozenset[str] | None

    @classmethod
    def read(cls, r: Reader) -> GeoSettings:
        K = ConfigKey
        return cls(
            geoip_database=r.optional_string(K.GEOIP_DATABASE, None),
            country_history=r.integer(K.COUNTRY_HISTORY, 10, minimum=1),
            new_country_action=r.action(K.NEW_COUNTRY_ACTION, "flag", ladder=("flag", "step_up", "deny")),
            country_change_action=r.action(K.COUNTRY_CHANGE_ACTION, "flag"),
            impossible_travel_kmh=r.number(K.IMPOSSIBLE_TRAVEL_KMH, 805, minimum=1),
            impossible_travel_action=r.action(K.IMPOSSIBLE_TRAVEL_ACTION, "flag"),
            allowed_countries=r.countries(K.ALLOWED_COUNTRIES),
            denied_countries=r.countries(K.DENIED_COUNTRIES),
        )


def _sync_interval(r: Reader, key: str) -> float:
    """Δ of the leased mode: short enough to matter, long enough to batch."""
    value = r.number(key, 0.1, minimum=0.005)
    if value > 10:
        raise ConfigurationError(
            f"{key} must be 0.005 to 10 seconds (for example 0.1), not {value!r}: it is how often each"
            " process settles its leased rate limit counters with Redis."
        )
    return value


# A spike is one token's volume: a fresh authentication says nothing about who sends it, and
# a token that passed the step-up would keep hammering. The rate limit and revoke answer it.
_NO_STEP_UP: tuple[Action, ...] = tuple(a for a in ACTIONS if a != "step_up")

# RFC 9470 §3 / RFC 6750 §3: an auth-param value is a quoted-string of %x20-21 / %x23-5B /
# %x5D-7E; acr_values separates its values by spaces, so one value holds no space.
_ACR_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


@dataclasses.dataclass(frozen=True, slots=True)
class StepUpSettings:
    """What a token needs to pass the ``step_up`` rung, and what its challenge asks for
    (RFC 9470): ``JWT_SHIELD_STEP_UP_ACR_VALUES`` and ``JWT_SHIELD_STEP_UP_MAX_AGE``."""

    acr_values: tuple[str, ...] | None = None
    max_age: int | None = None

    @classmethod
    def read(cls, r: Reader) -> StepUpSettings:
        K = ConfigKey
        acr = r.raw(K.STEP_UP_ACR_VALUES)
        if isinstance(acr, str):
            acr = acr.split()
        if acr is not None:
            if (
                not isinstance(acr, (list, tuple))
                or not acr
                or not all(isinstance(v, str) and v and set(v) <= _ACR_CHARS for v in acr)
            ):
                raise ConfigurationError(
                    f"{K.STEP_UP_ACR_VALUES} must be a non-empty list of authentication context class"
                    " references such as ['mfa', 'phr'] (or one space-separated string), each printable"
                    f" ASCII without spaces or quotes, or None; not {r.raw(K.STEP_UP_ACR_VALUES)!r}."
                )
            acr = tuple(acr)
        # Seconds since the person last authenticated (or a timedelta); RFC 9470 §3: whole.
        max_age = None if r.raw(K.STEP_UP_MAX_AGE) is None else r.integer(K.STEP_UP_MAX_AGE, 0, minimum=0)
        keys = (K.NEW_COUNTRY_ACTION, K.COUNTRY_CHANGE_ACTION, K.IMPOSSIBLE_TRAVEL_ACTION, K.ADAPTIVE_ACTION)
        using = [k for k in keys if r.raw(k) == "step_up"]
        if using and acr is None and max_age is None:
            raise ConfigurationError(
                f"{', '.join(using)} {'is' if len(using) == 1 else 'are'} 'step_up', which needs"
                f" {K.STEP_UP_MAX_AGE} (seconds since the last login that pass, e.g. 300) and/or"
                f" {K.STEP_UP_ACR_VALUES} (the acr values that pass, e.g. ['mfa']): without either"
                " no token could ever pass it."
            )
        return cls(acr_values=acr, max_age=max_age)


@dataclasses.dataclass(frozen=True, slots=True)
class DPoPSettings:
    """Sender-constrained tokens (RFC 9449)."""

    dpop: str
    dpop_max_age: float
    dpop_algorithms: tuple[str, ...]
    dpop_nonce_ttl: float | None

    @classmethod
    def read(cls, r: Reader) -> DPoPSettings:
        K = ConfigKey
        dpop_algorithms = r.string_list(K.DPOP_ALGORITHMS, list(DEFAULT_PROOF_ALGORITHMS)) or []
        if not dpop_algorithms or not PROOF_ALGORITHMS.issuperset(dpop_algorithms):
            raise ConfigurationError(
                f"{K.DPOP_ALGORITHMS} must list asymmetric algorithms from {sorted(PROOF_ALGORITHMS)}"
                f" (for example ['ES256', 'EdDSA']); {dpop_algorithms or 'an empty list'} cannot be used."
                " A DPoP proof is never unsigned or signed with a shared secret."
            )
        nonce_ttl = r.raw(K.DPOP_NONCE_TTL)
        if nonce_ttl is not None:
            nonce_ttl = r.number(K.DPOP_NONCE_TTL, 0, minimum=1)
        dpop = r.choice(K.DPOP, "off", frozenset({"off", "optional", "required"}), hint="'optional'")
        if nonce_ttl is not None and dpop == "off":
            raise ConfigurationError(
                f"{K.DPOP_NONCE_TTL} is set while {K.DPOP} is 'off': nonces are part of DPoP. Set"
                f" {K.DPOP} to 'optional' or 'required', or remove {K.DPOP_NONCE_TTL}."
            )
        return cls(
            dpop=dpop,
            dpop_max_age=r.number(K.DPOP_MAX_AGE, 60, minimum=1),
            dpop_algorithms=tuple(dpop_algorithms),
            dpop_nonce_ttl=nonce_ttl,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class EventSettings:
    """Security events: how many are kept, how addresses are recorded, the audit logger."""

    event_retention: int
    event_ip: str
    audit_logger: str

    @classmethod
    def read(cls, r: Reader) -> EventSettings:
        K = ConfigKey
        return cls(
            event_retention=r.integer(K.EVENT_RETENTION, 10_000, minimum=1),
            event_ip=r.choice(K.EVENT_IP, "full", frozenset({"full", "truncated", "none"}), hint="'truncated'"),
            audit_logger=r.string(K.AUDIT_LOGGER, "flask_jwt_shield.audit"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AlertSettings:
    """The webhook alert settings (``JWT_SHIELD_ALERT_*``), present only with a webhook URL."""

    webhook: str
    events: frozenset[str]
    secret: bytes | None
    timeout: float
    retries: int
    retry_delay: float
    queue_size: int

    @classmethod
    def read(cls, r: Reader) -> AlertSettings | None:
        """The webhook settings, ``None`` without ``JWT_SHIELD_ALERT_WEBHOOK``."""
        K = ConfigKey
        url = r.optional_string(K.ALERT_WEBHOOK, None)
        events = r.string_list(K.ALERT_EVENTS, list(DEFAULT_ALERT_EVENTS))
        secret = r.raw(K.ALERT_SECRET)
        timeout = r.seconds(K.ALERT_TIMEOUT, 5.0, maximum=60, waits_on="the alert receiver")
        retries = r.integer(K.ALERT_RETRIES, 4, minimum=0)
        delay = r.number(K.ALERT_RETRY_DELAY, 1.0, minimum=0)
        queue_size = r.integer(K.ALERT_QUEUE_SIZE, 1000, minimum=1)
        if url is None:
            for key in (
                K.ALERT_EVENTS,
                K.ALERT_SECRET,
                K.ALERT_TIMEOUT,
                K.ALERT_RETRIES,
                K.ALERT_RETRY_DELAY,
                K.ALERT_QUEUE_SIZE,
            ):
                if r.raw(key) is not None:
                    raise ConfigurationError(
                        f"{key} is set but {K.ALERT_WEBHOOK} is not, so no alert would ever be sent. Set"
                        f" {K.ALERT_WEBHOOK} to the receiver's URL (https://...), or remove {key}."
                    )
            return None
        try:
            check_url(url, K.ALERT_WEBHOOK, why="an alert sent over plain HTTP can be read and forged on the path")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        assert events is not None
        unknown = sorted(set(events) - set(BY_KIND))
        if unknown or not events:
            close = [m for u in unknown for m in difflib.get_close_matches(u, list(BY_KIND), n=1)]
            hint = f" Did you mean {close}?" if close else ""
            raise ConfigurationError(
                f"{K.ALERT_EVENTS} names {unknown or 'no kind'}; list event kinds from {sorted(BY_KIND)}"
                f" (default {list(DEFAULT_ALERT_EVENTS)}). To send no alerts, unset {K.ALERT_WEBHOOK}.{hint}"
            )
        if secret is not None:
            if not isinstance(secret, (str, bytes)):
                raise ConfigurationError(f"{K.ALERT_SECRET} must be str or bytes, not {type(secret).__name__}.")
            secret = secret.encode() if isinstance(secret, str) else secret
            if len(secret) < 32:
                raise ConfigurationError(
                    f"{K.ALERT_SECRET} has {len(secret)} bytes; a signing secret needs at least 32 random"
                    " bytes (e.g. secrets.token_urlsafe(32)), shared with the receiver only."
                )
        if delay > 300:
            raise ConfigurationError(
                f"{K.ALERT_RETRY_DELAY} is {delay!r}; it is the first retry's delay in seconds (doubled for"
                " each further retry, capped at 5 minutes). Use a value from 0 to 300, e.g. 1."
            )
        return cls(
            webhook=url,
            events=frozenset(events),
            secret=secret,
            timeout=timeout,
            retries=retries,
            retry_delay=delay,
            queue_size=queue_size,
        )


#: The status list's production defaults: a revocation reaches the services that verify the
#: tokens within a minute (plus one fetch), for one small GET per service per minute.
STATUS_LIST_TTL: Final = 60
STATUS_LIST_SIZE: Final = 1 << 20
STATUS_LIST_MAX_SIZE: Final = 1 << 27
STATUS_LIST_PATH: Final = "/statuslists/1"


@dataclasses.dataclass(frozen=True, slots=True)
class StatusListSettings:
    """The shield as Token Status List issuer and provider (draft-ietf-oauth-status-list):
    ``JWT_SHIELD_STATUS_LIST`` and the keys beside it."""

    status_list: bool = False
    status_list_ttl: int = STATUS_LIST_TTL
    status_list_size: int = STATUS_LIST_SIZE
    status_list_uri: str | None = None

    @classmethod
    def read(cls, r: Reader, *, issuer: str | None, resource_server: bool) -> StatusListSettings:
        K = ConfigKey
        enabled = r.boolean(K.STATUS_LIST, False)
        ttl = r.integer(K.STATUS_LIST_TTL, STATUS_LIST_TTL, minimum=1)
        size = r.integer(K.STATUS_LIST_SIZE, STATUS_LIST_SIZE, minimum=8)
        if size % 8 or size > STATUS_LIST_MAX_SIZE:
            raise ConfigurationError(
                f"{K.STATUS_LIST_SIZE} is {size!r}; it must be a multiple of 8 (whole bytes, as the draft"
                f" recommends) and at most {STATUS_LIST_MAX_SIZE}, e.g. {STATUS_LIST_SIZE}. Make it at least"
                " twice the number of access tokens alive at once."
            )
        uri = r.optional_string(K.STATUS_LIST_URI, None)
        if not enabled:
            return cls(status_list_ttl=ttl, status_list_size=size, status_list_uri=uri)
        if resource_server:
            raise ConfigurationError(
                f"{K.STATUS_LIST} is on in resource-server mode ({K.JWKS_URL}): status lists are"
                " published by the app that issues the tokens. Turn it off here."
            )
        if uri is None:
            if issuer is None or not issuer.startswith(("https://", "http://")):
                raise ConfigurationError(
                    f"{K.STATUS_LIST} needs the absolute URL that tokens name for their status list:"
                    f" set {K.ISSUER} to this app's https:// URL (the list is then served at"
                    f" '{STATUS_LIST_PATH}' below it) or {K.STATUS_LIST_URI} to the full URL."
                )
            uri = issuer.rstrip("/") + STATUS_LIST_PATH
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(
                f"{K.STATUS_LIST_URI} is {uri!r}; it must be an absolute https:// URL without query or"
                f" fragment, e.g. 'https://auth.example.com{STATUS_LIST_PATH}'."
            )
        if len(parts.path.strip("/")) == 0:
            raise ConfigurationError(
                f"{K.STATUS_LIST_URI} is {uri!r}; give it a path (the list is served there), e.g."
                f" 'https://auth.example.com{STATUS_LIST_PATH}'."
            )
        return cls(status_list=True, status_list_ttl=ttl, status_list_size=size, status_list_uri=uri)

    @property
    def path(self) -> str:
        """Where this app serves the list (the path of :attr:`status_list_uri`)."""
        return urllib.parse.urlsplit(self.status_list_uri or STATUS_LIST_PATH).path or STATUS_LIST_PATH


#: ``JWT_SHIELD_SSF_RECEIVE_DELIVERY``: the RFC 8936 and RFC 8935 delivery methods.
SSF_DELIVERIES = frozenset({"poll", "push"})


@dataclasses.dataclass(frozen=True, slots=True)
class SSFSettings:
    """Shared Signals: the transmitter (``JWT_SHIELD_SSF_TRANSMIT`` and the bounds of its
    streams and deliveries) and the receiver's connection to a transmitter
    (``JWT_SHIELD_SSF_RECEIVE_*``)."""

    ssf_transmit: bool = False
    ssf_retention: float = 3 * 86400.0
    ssf_max_pending: int = 10_000
    ssf_max_streams: int = 100
    ssf_push_timeout: float = 5.0
    ssf_push_retries: int = 3
    ssf_push_retry_delay: float = 1.0
    ssf_queue_size: int = 10_000
    ssf_poll_wait: float = 10.0
    ssf_receive_from: str | None = None
    ssf_receive_token: str | None = None
    ssf_receive_delivery: str = "poll"
    ssf_receive_push_url: str | None = None
    ssf_receive_poll_interval: float = 5.0

    @classmethod
    def read(cls, r: Reader, *, resource_server: bool, issuer: str | None) -> SSFSettings:
        K = ConfigKey
        transmit = r.boolean(K.SSF_TRANSMIT, False)
        retention = r.number(K.SSF_RETENTION, 3 * 86400.0, minimum=60)
        if retention > 7 * 86400:
            raise ConfigurationError(
                f"{K.SSF_RETENTION} is {retention!r} seconds; a receiver refuses SETs older than its replay"
                " window (7 days by default), so keep undelivered SETs at most 7 days (604800)."
            )
        settings = cls(
            ssf_transmit=transmit,
            ssf_retention=retention,
            ssf_max_pending=r.integer(K.SSF_MAX_PENDING, 10_000, minimum=1),
            ssf_max_streams=r.integer(K.SSF_MAX_STREAMS, 100, minimum=1),
            ssf_push_timeout=r.seconds(K.SSF_PUSH_TIMEOUT, 5.0, maximum=60, waits_on="a receiver answering a push"),
            ssf_push_retries=r.integer(K.SSF_PUSH_RETRIES, 3, minimum=0),
            ssf_push_retry_delay=r.number(K.SSF_PUSH_RETRY_DELAY, 1.0, minimum=0),
            ssf_queue_size=r.integer(K.SSF_QUEUE_SIZE, 10_000, minimum=1),
            ssf_poll_wait=r.number(K.SSF_POLL_WAIT, 10.0, minimum=0),
            ssf_receive_from=r.optional_string(K.SSF_RECEIVE_FROM, None),
            ssf_receive_token=r.optional_string(K.SSF_RECEIVE_TOKEN, None),
            ssf_receive_delivery=r.choice(K.SSF_RECEIVE_DELIVERY, "poll", SSF_DELIVERIES, hint="'poll'"),
            ssf_receive_push_url=r.optional_string(K.SSF_RECEIVE_PUSH_URL, None),
            ssf_receive_poll_interval=r.number(K.SSF_RECEIVE_POLL_INTERVAL, 5.0, minimum=0.05),
        )
        if settings.ssf_push_retry_delay > 300:
            raise ConfigurationError(
                f"{K.SSF_PUSH_RETRY_DELAY} is {settings.ssf_push_retry_delay!r}; it is the first retry's delay in"
                " seconds (doubled for each further retry, capped at 5 minutes). Use 0 to 300, e.g. 1."
            )
        if settings.ssf_poll_wait > 60:
            raise ConfigurationError(
                f"{K.SSF_POLL_WAIT} is {settings.ssf_poll_wait!r}; a long poll holds a worker this many seconds at"
                " most. Use 0 to 60, e.g. 10."
            )
        if transmit:
            if resource_server:
                raise ConfigurationError(
                    f"{K.SSF_TRANSMIT} is on in resource-server mode: the identity provider issues the tokens"
                    " and transmits their revocations, this app has nothing of its own to transmit."
                )
            if issuer is None:
                raise ConfigurationError(
                    f"{K.SSF_TRANSMIT} needs {K.ISSUER}: it is the SETs' 'iss' and the transmitter's"
                    " issuer in its discovery document (e.g. 'https://auth.example.com')."
                )
            try:
                check_url(issuer, f"{K.ISSUER} (the SSF transmitter's issuer)")
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        else:
            for key in (
                K.SSF_RETENTION,
                K.SSF_MAX_PENDING,
                K.SSF_MAX_STREAMS,
                K.SSF_PUSH_TIMEOUT,
                K.SSF_PUSH_RETRIES,
                K.SSF_PUSH_RETRY_DELAY,
                K.SSF_QUEUE_SIZE,
                K.SSF_POLL_WAIT,
            ):
                if r.raw(key) is not None:
                    raise ConfigurationError(
                        f"{key} is set but {K.SSF_TRANSMIT} is not True, so it would never apply. Set"
                        f" {K.SSF_TRANSMIT} = True, or remove {key}."
                    )
        if settings.ssf_receive_from is None:
            for key in (
                K.SSF_RECEIVE_TOKEN,
                K.SSF_RECEIVE_DELIVERY,
                K.SSF_RECEIVE_PUSH_URL,
                K.SSF_RECEIVE_POLL_INTERVAL,
            ):
                if r.raw(key) is not None:
                    raise ConfigurationError(
                        f"{key} is set but {K.SSF_RECEIVE_FROM} is not, so no stream would ever be set up."
                        f" Set {K.SSF_RECEIVE_FROM} to the transmitter's issuer URL, or remove {key}."
                    )
            return settings
        try:
            check_url(
                settings.ssf_receive_from,
                K.SSF_RECEIVE_FROM,
                why="the stream's bearer token and SETs would travel in clear",
            )
            if settings.ssf_receive_push_url is not None:
                check_url(
                    settings.ssf_receive_push_url, K.SSF_RECEIVE_PUSH_URL, why="SETs pushed over plain HTTP can be read"
                )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if settings.ssf_receive_delivery == "push" and settings.ssf_receive_push_url is None:
            raise ConfigurationError(
                f"{K.SSF_RECEIVE_DELIVERY} is 'push', which needs {K.SSF_RECEIVE_PUSH_URL}: the full URL of this"
                " app's security_events_blueprint() endpoint (e.g. 'https://api.example.com/security-events')."
            )
        if settings.ssf_receive_delivery == "poll" and settings.ssf_receive_push_url is not None:
            raise ConfigurationError(
                f"{K.SSF_RECEIVE_PUSH_URL} is set but {K.SSF_RECEIVE_DELIVERY} is 'poll'; set it to 'push' or"
                f" remove {K.SSF_RECEIVE_PUSH_URL}."
            )
        return settings


@dataclasses.dataclass(frozen=True, slots=True)
class ShieldConfig:
    """The validated ``JWT_SHIELD_*`` settings of one app, by section. Build with
    :meth:`from_mapping`."""

    keys: KeySettings
    remote: RemoteSettings
    sessions: SessionSettings
    request: RequestSettings
    store: StoreSettings
    rate: RateSettings
    geo: GeoSettings
    dpop: DPoPSettings
    events: EventSettings
    alerts: AlertSettings | None
    step_up: StepUpSettings = StepUpSettings()
    status_list: StatusListSettings = StatusListSettings()
    ssf: SSFSettings = SSFSettings()

    @classmethod
    def from_mapping(cls, config: Mapping[str, t.Any], *, warn: bool = True) -> ShieldConfig:
        """Read and validate every key from ``config`` (an ``app.config``).

        With ``warn``, log a WARNING for each Flask-JWT-Extended setting that has a shield
        equivalent (:func:`~flask_jwt_shield.config.flask_jwt_extended_warnings`); they are
        never refused.
        """
        refuse_unknown_keys(config)
        if warn:
            for warning in flask_jwt_extended_warnings(config):
                logger.warning("%s", warning)
        r = Reader(config)
        remote = RemoteSettings.read(r)
        request = RequestSettings.read(r)
        dpop = DPoPSettings.read(r)
        K = ConfigKey
        if dpop.dpop == "required" and "cookies" in request.token_locations:
            raise ConfigurationError(
                f"{K.DPOP} is 'required' but {K.TOKEN_LOCATIONS} includes 'cookies': cookie tokens are"
                f" bound to a fingerprint, not to a DPoP key, so every one would be refused. Use"
                f" {K.DPOP} = 'optional' (DPoP for API clients, cookies for browsers) or drop 'cookies'."
            )
        keys = KeySettings.read(r, resource_server=remote.enabled)
        return cls(
            keys=keys,
            remote=remote,
            sessions=SessionSettings.read(r),
            request=request,
            store=StoreSettings.read(r),
            rate=RateSettings.read(r),
            geo=GeoSettings.read(r),
            dpop=dpop,
            events=EventSettings.read(r),
            alerts=AlertSettings.read(r),
            step_up=StepUpSettings.read(r),
            status_list=StatusListSettings.read(r, issuer=keys.issuer, resource_server=remote.enabled),
            ssf=SSFSettings.read(r, resource_server=remote.enabled, issuer=keys.issuer),
        )

    @property
    def resource_server(self) -> bool:
        """True when tokens come from an external identity provider (its JWK Set)."""
        return self.remote.enabled

    def setting(self, name: str) -> t.Any:
        """The value read into the field ``name`` (``"access_token_ttl"``) of whichever section
        holds it, ``None`` when none does (what ``check-config`` lists)."""
        for section in (
            self.keys,
            self.remote,
            self.sessions,
            self.request,
            self.store,
            self.rate,
            self.geo,
            self.dpop,
            self.events,
            self.step_up,
            self.status_list,
            self.ssf,
        ):
            if name in section.__dataclass_fields__:
                return getattr(section, name)
        return None

    @property
    def longest_ttl(self) -> int:
        """Seconds after which no token issued now can still be accepted."""
        return self.sessions.longest_ttl


def _check_resource_server(
    r: Reader, jwks_url: str | None, discovery: bool, issuer: str | None, audience: str | None
) -> None:
    K = ConfigKey
    mode = f"resource-server mode ({K.JWKS_URL if jwks_url is not None else K.OIDC_DISCOVERY})"
    if jwks_url is not None and discovery:
        raise ConfigurationError(
            f"{K.JWKS_URL} and {K.OIDC_DISCOVERY} are both set: give the JWK Set URL, or let"
            f" discovery find it from {K.ISSUER}, not both."
        )
    for key, example in ((K.ISSUER, "'https://tenant.eu.auth0.com/'"), (K.AUDIENCE, "'https://api.example.com'")):
        if r.raw(key) is None:
            raise ConfigurationError(
                f"{key} is required in {mode}: without it a token the identity provider issued for"
                f" another tenant or another API would be accepted. Set it, e.g. {key} = {example}."
            )
    try:
        if jwks_url is not None:
            check_url(jwks_url, K.JWKS_URL)
        else:
            assert issuer is not None
            check_url(issuer, f"{K.ISSUER} (for {K.OIDC_DISCOVERY})")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    for key in (K.SECRET_KEY, K.PRIVATE_KEY, K.PUBLIC_KEY, K.KEYS, K.ALGORITHM):
        if r.raw(key) is not None:
            hint = f" List the accepted algorithms in {K.ALLOWED_ALGORITHMS}." if key == K.ALGORITHM else ""
            raise ConfigurationError(
                f"{key} is set, but in {mode} the identity provider's published keys verify every"
                f" token and this app issues none: remove {key}.{hint}"
            )


def _status_list_settings(r: Reader, resource_server: bool) -> dict[str, t.Any]:
    """The ``JWT_SHIELD_STATUS_LIST_*`` keys: how a resource server consumes the issuer's
    Token Status Lists (:mod:`flask_jwt_shield.statuslist.client`)."""
    K = ConfigKey
    own = (
        K.STATUS_LIST_ALLOWED_URIS,
        K.STATUS_LIST_MIN_TTL,
        K.STATUS_LIST_MAX_TTL,
        K.STATUS_LIST_MAX_STALE,
        K.STATUS_LIST_FAIL_MODE,
        K.STATUS_LIST_MAX_BYTES,
    )
    given = [key for key in own if r.raw(key) is not None]
    if given and not resource_server:
        raise ConfigurationError(
            f"{given[0]} applies to resource-server mode ({K.JWKS_URL}), where the identity provider's"
            " tokens may name a Token Status List; this app checks its own tokens in its store. Remove it."
        )
    min_ttl = r.number(K.STATUS_LIST_MIN_TTL, 10, minimum=1)
    max_ttl = r.number(K.STATUS_LIST_MAX_TTL, 300, minimum=1)
    if max_ttl < min_ttl:
        raise ConfigurationError(
            f"{K.STATUS_LIST_MAX_TTL} ({max_ttl:g} s) is below {K.STATUS_LIST_MIN_TTL} ({min_ttl:g} s): a"
            " status list is cached for its 'ttl' raised to the minimum and cut to the maximum. Raise"
            f" {K.STATUS_LIST_MAX_TTL} or lower {K.STATUS_LIST_MIN_TTL}."
        )
    store_mode = r.raw(K.FAIL_MODE)
    fail_mode = r.choice(
        K.STATUS_LIST_FAIL_MODE,
        store_mode if store_mode in ("closed", "open") else "closed",
        frozenset({"closed", "open"}),
        hint=f"'closed'; unset, it follows {K.FAIL_MODE}",
    )
    max_bytes = r.integer(K.STATUS_LIST_MAX_BYTES, 4 * 1024 * 1024, minimum=1024)
    uris = r.string_list(K.STATUS_LIST_ALLOWED_URIS, None)
    prefixes: tuple[str, ...] = ()
    if uris is not None:
        try:
            prefixes = tuple(status_list_prefix(uri, K.STATUS_LIST_ALLOWED_URIS) for uri in uris)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    elif resource_server:
        issuer = r.optional_string(K.ISSUER, None)
        parts = urllib.parse.urlsplit(issuer or "")
        if parts.scheme and parts.netloc:
            # By default a token may name status lists of its issuer's origin only, so that
            # no token can make this server fetch another host's URL.
            try:
                prefixes = (status_list_prefix(f"{parts.scheme}://{parts.netloc}/", K.ISSUER),)
            except ValueError:
                prefixes = ()  # an issuer that is no https URL: set the prefixes explicitly
    return {
        "status_list_allowed_uris": prefixes,
        "status_list_min_ttl": min_ttl,
        "status_list_max_ttl": max_ttl,
        "status_list_max_stale": r.number(K.STATUS_LIST_MAX_STALE, 60, minimum=0),
        "status_list_fail_mode": fail_mode,
        "status_list_max_bytes": max_bytes,
    }


def status_list_prefix(uri: str, what: str) -> str:
    """``uri`` as a status list URI prefix: HTTPS (or HTTP to this host), no user info, no
    query or fragment; a bare origin gets its ``/``. Raises :class:`ValueError` saying why."""
    check_url(uri, what, why="a status list fetched over plain HTTP can be withheld by anyone on the path")
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(
            f"{what} lists {uri!r}; a status list URI prefix is scheme, host and path only, e.g."
            " 'https://idp.example.com/statuslists/'."
        )
    return uri if parts.path else uri + "/"


def _accepted_types(r: Reader, resource_server: bool) -> frozenset[str]:
    K = ConfigKey
    types = r.string_list(K.ACCEPTED_TYPES, ["at+jwt"])
    assert types is not None
    unknown = [p for p in types if p not in PROFILES]
    if unknown or not types:
        raise ConfigurationError(
            f"{K.ACCEPTED_TYPES} names {unknown or 'no profile'}; the profiles are {sorted(PROFILES)}"
            " (see the page 'Protecting an API behind an identity provider')."
        )
    if not resource_server and set(types) != {"at+jwt"}:
        raise ConfigurationError(
            f"{K.ACCEPTED_TYPES} other than ['at+jwt'] applies to tokens of an external identity"
            f" provider ({K.JWKS_URL}); the tokens this app issues are always 'at+jwt'."
        )
    return frozenset(types)


def _key_specs(r: Reader, algorithm: str) -> tuple[KeySpec, ...]:
    K = ConfigKey
    ring = r.raw(K.KEYS)
    if ring is not None:
        if not isinstance(ring, (list, tuple)) or not ring:
            raise ConfigurationError(
                f"{K.KEYS} must be a non-empty list of dicts such as"
                ' [{"kid": "2026-11", "alg": "ES256", "key": "<PEM>"}]; the first entry signs.'
            )
        specs = []
        for i, entry in enumerate(ring):
            where = f"{K.KEYS}[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be a dict with 'kid', 'alg' and 'key'.")
            extra = set(entry) - {"kid", "alg", "key", "public_key"}
            if extra:
                raise ConfigurationError(
                    f"{where} has unknown fields {sorted(extra)}; use 'kid', 'alg', 'key', 'public_key'."
                )
            kid = entry.get("kid")
            if kid is not None and (not isinstance(kid, str) or not kid):
                raise ConfigurationError(f"{where}['kid'] must be a non-empty string.")
            alg = entry.get("alg", algorithm)
            if alg not in SIGNING_ALGORITHMS:
                raise ConfigurationError(bad_algorithm(f"{where}['alg']", alg))
            key, public = entry.get("key"), entry.get("public_key")
            for name, value in (("key", key), ("public_key", public)):
                if value is not None and not isinstance(value, (str, bytes)):
                    raise ConfigurationError(f"{where}[{name!r}] must be str or bytes (PEM or secret).")
            if key is None and public is None:
                raise ConfigurationError(f"{where} needs 'key' (signing) or 'public_key' (verify only).")
            specs.append(KeySpec(kid=kid, alg=alg, key=key, public_key=public))
        kids = [s.kid for s in specs if s.kid is not None]
        if len(kids) != len(set(kids)):
            raise ConfigurationError(f"{K.KEYS} has duplicate 'kid' values; each key needs its own.")
        return tuple(specs)
    if algorithm.startswith("HS"):
        secret = r.raw(K.SECRET_KEY)
        source = K.SECRET_KEY
        if secret is None:
            secret, source = r.raw("SECRET_KEY"), "SECRET_KEY"
        if secret is None:
            raise ConfigurationError(
                f"No signing secret: set {K.SECRET_KEY} (or the app's SECRET_KEY) to at least 32"
                " random bytes, e.g. secrets.token_urlsafe(48)."
            )
        if not isinstance(secret, (str, bytes)):
            raise ConfigurationError(f"{source} must be str or bytes, not {type(secret).__name__}.")
        return (KeySpec(kid=None, alg=algorithm, key=secret, public_key=None),)
    private, public = r.raw(K.PRIVATE_KEY), r.raw(K.PUBLIC_KEY)
    for name, value in ((K.PRIVATE_KEY, private), (K.PUBLIC_KEY, public)):
        if value is not None and not isinstance(value, (str, bytes)):
            raise ConfigurationError(f"{name} must be a PEM string or bytes, not {type(value).__name__}.")
    if private is None and public is None:
        raise ConfigurationError(
            f"{K.ALGORITHM} is {algorithm!r}, which needs {K.PRIVATE_KEY} (PEM) to sign, or at"
            f" least {K.PUBLIC_KEY} to verify. Generate one with 'flask jwt-shield keys generate"
            f" --alg {algorithm}'."
        )
    return (KeySpec(kid=None, alg=algorithm, key=private, public_key=public),)
