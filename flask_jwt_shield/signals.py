"""Blinker signals, one per security event kind, plus ``token-verified``.

Every signal is sent with the application (``current_app._get_current_object()``) as
sender. Event signals carry the :class:`~flask_jwt_shield.events.SecurityEvent` as
``event=``. Connect with ``signals.refresh_reused.connect(handler)``.
"""

from __future__ import annotations

import typing as t

from blinker import NamedSignal
from blinker import Namespace

_namespace = Namespace()

#: Sent for each request whose token passed every check, with ``claims=`` (the verified
#: claims). A signal only: no stored event and no audit line, since it fires per request.
token_verified = _namespace.signal("token-verified")

#: A request's token was refused; ``event.detail["reason"]`` says why.
token_rejected = _namespace.signal("token-rejected")
#: One token was revoked (``revoke_token`` or a detector's ``revoke`` action).
token_revoked = _namespace.signal("token-revoked")
#: A refresh family (one session) was revoked.
family_revoked = _namespace.signal("family-revoked")
#: Every token of a subject issued before now was revoked.
subject_revoked = _namespace.signal("subject-revoked")
#: Every token signed with a key was revoked.
key_revoked = _namespace.signal("key-revoked")
#: ``issue_tokens`` started a session (a new refresh family).
session_started = _namespace.signal("session-started")
#: ``refresh`` rotated a refresh token (``detail["grace"]`` when the predecessor was used).
token_refreshed = _namespace.signal("token-refreshed")
#: A spent refresh token was presented again; the family was revoked. ``detail`` holds
#: both uses.
refresh_reused = _namespace.signal("refresh-reused")
#: A request went over its token's rate limit.
rate_limited = _namespace.signal("rate-limited")
#: A token crossed the spike threshold; ``detail`` holds the observed rate.
traffic_spike = _namespace.signal("traffic-spike")
#: A subject's rate went far above its own learned baseline (adaptive mode).
traffic_anomaly = _namespace.signal("traffic-anomaly")
#: A login came from a country not in the subject's history.
new_country = _namespace.signal("new-country")
#: A token was used from another country than the one it was issued in.
country_changed = _namespace.signal("country-changed")
#: Two uses by one subject were farther apart than anyone can travel in the time between.
impossible_travel = _namespace.signal("impossible-travel")
#: A request or login came from a country outside the allowed (or inside the denied) list.
country_denied = _namespace.signal("country-denied")
#: A DPoP proof was refused, on a request or at a token endpoint (``issue_tokens``,
#: ``refresh``); ``event.detail["reason"]`` says why (``"dpop-replayed"`` ...).
dpop_rejected = _namespace.signal("dpop-rejected")
#: The store or the limiter storage could not be reached.
store_unavailable = _namespace.signal("store-unavailable")
#: Resource-server mode: no usable key of the identity provider is known, so tokens get 503;
#: ``detail`` has the ``error``. At most one every 5 seconds.
jwks_unavailable = _namespace.signal("jwks-unavailable")
#: Resource-server mode: a token names a Token Status List that cannot be had (never
#: fetched, or out of date past ``JWT_SHIELD_STATUS_LIST_MAX_STALE``); ``detail`` has
#: ``status_list``, ``error`` and ``fail_mode``. At most one every 5 seconds.
status_list_unavailable = _namespace.signal("status-list-unavailable")

#: The introspection endpoint answered for a token (``jti`` names it, when it has one);
#: ``detail`` has ``client_id`` and ``active``. Once a minute per caller and token.
token_introspected = _namespace.signal("token-introspected")
#: The global token revocation endpoint was called by the identity provider; ``detail``
#: has the provider's ``issuer``, the subject identifier's ``format`` and ``status``.
global_logout = _namespace.signal("global-logout")
#: The kind of a security event: the name of its signal. A misspelt kind is a type error.
EventKind = t.Literal[
    "token-rejected",
    "token-revoked",
    "family-revoked",
    "subject-revoked",
    "key-revoked",
    "session-started",
    "token-refreshed",
    "refresh-reused",
    "rate-limited",
    "traffic-spike",
    "traffic-anomaly",
    "new-country",
    "country-changed",
    "impossible-travel",
    "country-denied",
    "dpop-rejected",
    "store-unavailable",
    "jwks-unavailable",
    "status-list-unavailable",
    "token-introspected",
    "global-logout",
]

#: Event kind → signal.
BY_KIND: dict[EventKind, NamedSignal] = {
    t.cast(EventKind, signal.name): signal
    for signal in (
        token_rejected,
        token_revoked,
        family_revoked,
        subject_revoked,
        key_revoked,
        session_started,
        token_refreshed,
        refresh_reused,
        rate_limited,
        traffic_spike,
        traffic_anomaly,
        new_country,
        country_changed,
        impossible_travel,
        country_denied,
        dpop_rejected,
        store_unavailable,
        jwks_unavailable,
        status_list_unavailable,
        token_introspected,
        global_logout,
    )
}

# One vocabulary: the Literal (for mypy) and the signals (at run time) name the same kinds.
if tuple(BY_KIND) != t.get_args(EventKind):  # pragma: no cover - a typo here fails every import
    raise AssertionError(f"EventKind and BY_KIND disagree: {sorted(set(t.get_args(EventKind)) ^ set(BY_KIND))}")
