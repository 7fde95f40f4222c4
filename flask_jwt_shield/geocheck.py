"""The geo checks of a use (a request, a refresh) and of a login.

The detectors (:mod:`.geo`) only compare; this module gives them the subject's places from
the store, writes the new place back, and sends each finding up the action ladder
(:func:`.revocation.act`). The request pipeline (step 7) and the sessions (a refresh is a
use, a login is a use too) call it.
"""

from __future__ import annotations

import logging
import time
import typing as t

from .actions import Finding
from .cache import bounded_put
from .errors import StoreError
from .events import mask_ip
from .revocation import act
from .state import SEEN_MAX
from .state import ShieldState
from .tokens import Claims

logger = logging.getLogger("flask_jwt_shield")

# A token seen again from the same address within this many seconds skips the geo step:
# no store read or write per request in steady state, one event per minute at most.
RECHECK = 60.0


def on_use(state: ShieldState, claims: Claims, ip: str | None) -> None:
    """Allowed countries, the country the token was issued in, travel speed."""
    guard = state.geo
    if guard is None or ip is None:
        return
    key = (claims["jti"], ip)
    now = time.time()
    seen = state.geo_seen.get(key)
    if seen is not None and now - seen < RECHECK:
        return  # this token from this address passed a minute ago: no lookup, no store
    location = guard.locate(ip)
    if location is None:  # no known place: never flagged, never denied
        bounded_put(state.geo_seen, key, now, SEEN_MAX)
        return
    issued_in = claims.get("ctry")
    # step_up findings wait for the others: a recent login passes step_up, and must never
    # shield a thief from a stronger answer (travel that revokes) found on the same use.
    waiting: list[Finding] = []
    for finding in guard.on_request(location, issued_in):
        _act_or_wait(state, finding, claims, waiting)
    # An identity provider's token has no ctry: judged against the subject's history.
    by_history = issued_in is None and state.config.resource_server and location.country is not None
    if location.has_coordinates or by_history:
        sub = claims["sub"]
        try:
            profile = state.store.get_profile(sub) or {}
        except StoreError as exc:
            state.store_failed(exc, claims)
            _act_all(state, waiting, claims)
            return
        updated = dict(profile)
        if by_history:
            for finding in guard.on_provider_token(location, updated):
                _act_or_wait(state, finding, claims, waiting)  # raises above flag: the country is not stored
        travel, last = guard.travel(location, mask_ip(ip, state.config.events.event_ip), now, profile)
        if travel is not None:
            # Raises for every action above flag, before the new place is stored: the
            # last place stays the owner's, so the owner's next request is not flagged.
            _act_or_wait(state, travel, claims, waiting)
        _act_all(state, waiting, claims)
        _keep_place(state, sub, profile, updated, last, claims)
    else:
        _act_all(state, waiting, claims)
    bounded_put(state.geo_seen, key, now, SEEN_MAX)


def on_login(
    state: ShieldState, sub: str, ip: str | None, authn: t.Mapping[str, t.Any] | None = None
) -> tuple[str | None, bool]:
    """The login-side checks: allowed countries, new country, travel (a login is a use).

    ``authn``: the ``acr`` and ``auth_time`` being issued, which a ``step_up`` finding
    judges. Returns the country (for the ``ctry`` claim) and whether it is new for the
    subject.
    """
    guard = state.geo
    location = guard.locate(ip) if guard is not None else None
    if guard is None or location is None or ip is None:
        return None, False
    try:
        profile = state.store.get_profile(sub) or {}
    except StoreError as exc:
        state.store_failed(exc, None)
        return location.country, False
    before = dict(profile)
    findings = guard.on_login(location, profile)
    travel, last = guard.travel(location, mask_ip(ip, state.config.events.event_ip), time.time(), profile, login=True)
    if travel is not None:
        findings.append(travel)
    findings.sort(key=lambda f: f.action == "step_up")  # the weakest refusal last, as on a use
    for finding in findings:  # any action above flag raises: nothing issued, nothing stored
        act(state, finding, None, subject=sub, login=authn)
    _keep_place(state, sub, before, profile, last, None)
    return location.country, any(f.kind == "new-country" for f in findings)


def _keep_place(
    state: ShieldState,
    sub: str,
    before: dict[str, t.Any],
    after: dict[str, t.Any],
    last: dict[str, t.Any] | None,
    claims: Claims | None,
) -> None:
    """Store the subject's places when the checks changed them (the last place seen, the
    countries): one write at most, none in steady state."""
    if last is not None:
        after["last"] = last
    if after != before:
        try:
            state.store.put_profile(sub, after)
        except StoreError as exc:
            state.store_failed(exc, claims)


def _act_or_wait(state: ShieldState, finding: Finding, claims: Claims, waiting: list[Finding]) -> None:
    if finding.action == "step_up":
        waiting.append(finding)
    else:
        act(state, finding, claims)


def _act_all(state: ShieldState, findings: list[Finding], claims: Claims) -> None:
    for finding in findings:
        act(state, finding, claims)


def forget_places(state: ShieldState, sub: str, *, by: str | None = None) -> None:
    """Clear what the geo detectors remember of ``sub`` (recent countries, last place): after
    a false alarm, the subject's next login is judged like a first one. An operator's write:
    503 when the store cannot take it."""
    state.write(lambda: state.store.put_profile(sub, {}))
    logger.info("geo history of subject %r cleared%s", sub, f" by {by}" if by else "")
