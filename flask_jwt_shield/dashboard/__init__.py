"""The admin dashboard: a blueprint of server-rendered pages to look and to act from.

Built by :meth:`JWTShield.dashboard_blueprint <flask_jwt_shield.JWTShield.dashboard_blueprint>`.
Pages: recent events with an events-per-hour chart (``/``), one subject (``/subject``: its
sessions, country history and timeline, with revoke buttons), the keys (``/keys``). Every
view is exempt from the token state -- the app's ``authorize()`` decides who may look --
so the dashboard costs nothing on protected requests. Every form is a POST carrying a
``csrf_token`` (:mod:`.csrf`). No script, no external asset; a strict
Content-Security-Policy on every page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import typing as t
import urllib.parse

from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Conflict
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import NotFound
from werkzeug.exceptions import ServiceUnavailable

from .. import events as _events
from .. import geocheck
from .. import revocation
from ..errors import StoreError
from ..events import KINDS
from ..events import SecurityEvent
from ..masking import mask_url
from ..state import ShieldState
from ..state import current_state as _state
from ..stores import Family
from . import chart as _chart
from . import csrf

#: ``authorize()``: runs in the request, True lets the request in.
Authorize = t.Callable[[], bool]
Exempt = t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]

PER_PAGE = 50
MAX_PAGE = 200
MAX_ID = 512
TIMELINE = 200
ALERTS_SHOWN = 8
SINCE_CHOICES = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "all": None}
_DURATION = re.compile(r"(\d{1,6})([mhd])")
_UNITS = {"m": 60, "h": 3600, "d": 86_400}

#: How each kind is shown: "alert" (someone may be a thief), "action" (something was
#: revoked), "warn" (refused), "info".
_ALERTS = (
    "refresh-reused",
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
)
SEVERITY: dict[str, str] = {
    **dict.fromkeys(_ALERTS, "alert"),
    **dict.fromkeys(("token-revoked", "family-revoked", "subject-revoked", "key-revoked"), "action"),
    **dict.fromkeys(("token-rejected", "rate-limited"), "warn"),
}

#: What a session's tokens are bound to, as the events' ``bound`` detail names it.
BOUND = {"dpop": "a DPoP key", "fingerprint": "a browser cookie"}

DONE = {
    "session": "Session {id} revoked: its refresh token and every access token from it are refused from now on.",
    "token": "Token {id} revoked.",
    "subject": "Every token of {id} issued until now is revoked (log out everywhere). New logins work.",
    "key": "Key {id} revoked: every token it signed is refused.",
    "places": "The places of {id} are forgotten: the next login is judged like a first one.",
}

#: The value of the ``confirm`` field that the "Log out everywhere" confirmation posts.
CONFIRM = "log-out-everywhere"
#: The longest ``next`` path the 403 page hands to the app's login page.
MAX_NEXT = 2048

# The query parameters of the dashboard's pages, the only ones ``next`` carries over.
_PAGE_ARGS = frozenset({"kind", "subject", "since", "page", "sub"})
# A compact JWS or JWE (its header is a JSON object, so base64url "eyJ..."): never echoed.
_TOKEN_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.")

_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def build(*, exempt: Exempt, authorize: Authorize, name: str, login_url: str | None) -> Blueprint:
    """The dashboard blueprint (see :meth:`JWTShield.dashboard_blueprint`)."""
    if not callable(authorize):
        raise TypeError("dashboard_blueprint(authorize=...) needs a function that returns True for an admin.")
    bp = Blueprint(name, __name__, template_folder="templates", static_folder="static", static_url_path="/static")

    def view(rule: str, methods: tuple[str, ...] = ("GET",)) -> t.Callable[[t.Callable[..., t.Any]], t.Any]:
        def register(fn: t.Callable[..., t.Any]) -> t.Any:
            bp.add_url_rule(rule, fn.__name__, exempt(fn), methods=list(methods))
            return fn

        return register

    @bp.before_request
    def guard() -> None:
        if request.endpoint == f"{name}.static":
            return  # the stylesheet is public, so the refusal page itself is styled
        if authorize() is not True:
            raise Forbidden("You are not allowed to see the shield's dashboard.")
        if request.method == "POST":
            key = _csrf_key()
            if not csrf.valid(key, request.form.get(csrf.FIELD)):
                raise BadRequest(
                    "This form has expired or did not come from this dashboard: go back, reload the page and try again."
                )

    @bp.after_request
    def headers(response: t.Any) -> t.Any:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != f"{name}.static":
            response.headers["Cache-Control"] = "no-store"
        csrf.set_cookie(response, _cookie_path())
        return response

    @bp.errorhandler(HTTPException)
    def error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        back = _with_next(login_url, _here()) if code == 403 and login_url else None
        return render_template(
            "jwt_shield_dashboard/error.html",
            code=code,
            title=exc.name,
            message=exc.description,
            login_url=back,
            **_common(),
        ), code

    @bp.errorhandler(StoreError)
    def store_error(exc: StoreError) -> ResponseReturnValue:
        return error(ServiceUnavailable("The shield's store cannot be reached right now; try again in a moment."))

    @bp.context_processor
    def helpers() -> dict[str, t.Any]:
        return {
            "when": _when,
            "ago": _ago,
            "severity": lambda kind: SEVERITY.get(kind, "info"),
            "summary": _summary,
            "short": _short,
        }

    # -- pages -------------------------------------------------------------------------

    @view("/")
    def index() -> ResponseReturnValue:
        state = _state()
        kind = _arg_choice("kind", KINDS)
        subject = _arg_id("subject")
        since_label, since = _arg_since()
        page = _arg_page()
        now = time.time()
        found = _events.query(state.store, subject=subject, kind=kind, since=since, limit=page * PER_PAGE + 1)
        rows = found[(page - 1) * PER_PAGE : page * PER_PAGE]
        day = _events.query(
            state.store, subject=subject, kind=kind, since=now - 86_400, limit=state.config.events.event_retention
        )
        alerts = [e for e in day if SEVERITY.get(e.kind) == "alert"]
        filters: dict[str, t.Any] = {
            k: v for k, v in (("kind", kind), ("subject", subject), ("since", since_label)) if v
        }
        return render_template(
            "jwt_shield_dashboard/events.html",
            events=rows,
            kinds=KINDS,
            kind=kind,
            subject=subject,
            since=since_label,
            since_choices=list(SINCE_CHOICES),
            page=page,
            next_url=url_for(".index", **filters, page=page + 1) if len(found) > page * PER_PAGE else None,
            prev_url=url_for(".index", **filters, page=page - 1) if page > 1 else None,
            chart=_chart.hourly(day, now=now),
            alerts=alerts[:ALERTS_SHOWN],
            alerts_more=max(0, len(alerts) - ALERTS_SHOWN),
            **_common(),
        )

    @view("/subject")
    def subject() -> ResponseReturnValue:
        state = _state()
        sub = _arg_id("sub")
        if sub is None:
            raise BadRequest("Say which subject: /subject?sub=<user id>.")
        now = time.time()
        families = state.store.families(sub, now=now, idle_ttl=state.config.sessions.refresh_idle_ttl)
        profile = state.store.get_profile(sub) or {}
        timeline = _events.query(state.store, subject=sub, limit=TIMELINE)
        if not families and not profile and not timeline:
            raise NotFound(f"The shield knows nothing about the subject {sub!r}: no session, no event.")
        started = {e.sid: e for e in timeline if e.kind == "session-started" and e.sid}
        sessions = [_session_row(f, started.get(f.sid)) for f in reversed(families)]  # newest first
        countries = [c for c in profile.get("countries", ()) if isinstance(c, str)]
        last = profile.get("last") if isinstance(profile.get("last"), dict) else None
        return render_template(
            "jwt_shield_dashboard/subject.html",
            sub=sub,
            sessions=sessions,
            countries=list(reversed(countries)),
            last=last,
            timeline=timeline,
            timeline_max=TIMELINE,
            **_common(),
        )

    @view("/keys")
    def keys() -> ResponseReturnValue:
        state = _state()
        now = time.time()
        ring = []
        for i, key in enumerate(state.keys.keys):
            signs = i == 0 and key.signing is not None
            ring.append({"kid": key.kid, "alg": key.alg, "signs": signs, "revoked": _key_revoked(state, key.kid, now)})
        remote = state.codec.remote
        remote_kids = sorted(remote.key_set.kids) if remote is not None and remote.key_set is not None else []
        remote_rows = [{"kid": kid, "revoked": _key_revoked(state, kid, now)} for kid in remote_kids]
        jwks_url = state.config.remote.jwks_url
        return render_template(
            "jwt_shield_dashboard/keys.html",
            ring=ring,
            remote=remote_rows,
            resource_server=state.config.resource_server,
            jwks_url=mask_url(jwks_url) if jwks_url else None,
            **_common(),
        )

    # -- actions -----------------------------------------------------------------------

    @view("/revoke/session", methods=("POST",))
    def revoke_session() -> ResponseReturnValue:
        state = _state()
        sid = _form_id("sid")
        family = state.store.get_family(sid)
        if family is None:
            raise NotFound(f"There is no session {sid!r}.")
        revocation.revoke_family(state, sid, by="dashboard")
        return _done("session", sid, url_for(".subject", sub=family.sub), anchor=f"session-{sid}")

    @view("/revoke/token", methods=("POST",))
    def revoke_token() -> ResponseReturnValue:
        state = _state()
        jti = _form_id("jti")
        seen = _events.query(state.store, jti=jti, limit=1)
        if not seen:
            raise NotFound(f"No event names a token {jti!r}; the dashboard revokes tokens it has seen.")
        revocation.revoke_token(state, jti, by="dashboard")
        who = seen[0].subject
        return _done("token", jti, url_for(".subject", sub=who) if who else url_for(".index"))

    @view("/revoke/subject", methods=("POST",))
    def revoke_subject() -> ResponseReturnValue:
        state = _state()
        sub = _form_id("sub")
        families = state.store.families(sub, now=time.time(), idle_ttl=state.config.sessions.refresh_idle_ttl)
        known = families or state.store.get_profile(sub) or _events.query(state.store, subject=sub, limit=1)
        if not known:
            raise NotFound(f"The shield knows nothing about the subject {sub!r}.")
        if request.form.get("confirm") != CONFIRM:
            # Log out everywhere ends every session of the user at once: a second, deliberate
            # POST (no script needed) rather than one stray click.
            return render_template(
                "jwt_shield_dashboard/confirm.html", sub=sub, sessions=len(families), confirm=CONFIRM, **_common()
            )
        revocation.revoke_subject(state, sub, by="dashboard")
        return _done("subject", sub, url_for(".subject", sub=sub))

    @view("/forget-places", methods=("POST",))
    def forget_places() -> ResponseReturnValue:
        state = _state()
        sub = _form_id("sub")
        geocheck.forget_places(state, sub, by="dashboard")
        return _done("places", sub, url_for(".subject", sub=sub))

    @view("/revoke/key", methods=("POST",))
    def revoke_key() -> ResponseReturnValue:
        state = _state()
        kid = _form_id("kid")
        remote = state.codec.remote
        known = kid in state.keys.by_kid or (
            remote is not None and remote.key_set is not None and kid in remote.key_set.kids
        )
        if not known:
            raise NotFound(f"There is no key {kid!r} in the key ring.")
        try:
            revocation.revoke_key(state, kid, by="dashboard")
        except ValueError as exc:  # the signing key
            raise Conflict(str(exc)) from None
        return _done("key", kid, url_for(".keys"))

    def _common() -> dict[str, t.Any]:
        key = _csrf_key(required=False)
        return {"csrf_token": csrf.form_token(key) if key is not None else "", "bp": name, "done": _done_message()}

    def _cookie_path() -> str:
        return urllib.parse.urlsplit(url_for(".index")).path.rstrip("/") or "/"

    bp.record_once(_check_csrf_key)
    return bp


# -- helpers -----------------------------------------------------------------------------


def _csrf_key(*, required: bool = True) -> t.Any:
    key = csrf.key_for(current_app, _state())
    if key is None and required:
        raise ServiceUnavailable("The dashboard needs the app's SECRET_KEY to protect its forms; set it.")
    return key


def _check_csrf_key(setup: t.Any) -> None:
    """At registration: an app with no key for the CSRF tokens is told how to fix it."""
    app: Flask = setup.app
    state = app.extensions.get("jwt_shield")
    if not app.secret_key and isinstance(state, ShieldState) and state.keys.signing_key is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            "The shield's dashboard signs its forms' CSRF tokens with the app's SECRET_KEY, and this"
            " app has none (and no signing key to derive one from): set SECRET_KEY."
        )


def _arg_choice(name: str, choices: t.Iterable[str]) -> str | None:
    value = request.args.get(name, "")
    if not value:
        return None
    if value not in choices:
        raise BadRequest(f"Unknown {name} {value[:60]!r}.")
    return value


def _arg_id(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    _check_id(name, value)
    return value


def _form_id(name: str) -> str:
    value = request.form.get(name, "")
    if not value:
        raise BadRequest(f"The form is missing {name}.")
    _check_id(name, value)
    return value


def _check_id(name: str, value: str) -> None:
    if len(value) > MAX_ID or not value.isprintable():
        raise BadRequest(f"That {name} is not a valid identifier.")


def _arg_since() -> tuple[str | None, float | None]:
    """``since``: one of the menu's choices, a duration (``90m``), or an ISO 8601 instant."""
    value = request.args.get("since", "").strip()
    if not value:
        value = "24h"
    if value in SINCE_CHOICES:
        seconds = SINCE_CHOICES[value]
        return value, (time.time() - seconds if seconds is not None else None)
    match = _DURATION.fullmatch(value)
    if match:
        return value, time.time() - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"since={value[:60]!r} is neither a duration (90m, 24h, 7d) nor an ISO 8601 time.") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return value, instant.timestamp()


def _arg_page() -> int:
    value = request.args.get("page", "1")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(f"page must be a number from 1 to {MAX_PAGE}.")
    return int(value)


def _done(what: str, ident: str, url: str, *, anchor: str | None = None) -> ResponseReturnValue:
    sep = "&" if "?" in url else "?"
    target = f"{url}{sep}{urllib.parse.urlencode({'done': what, 'id': ident})}"
    if anchor:
        target += f"#{anchor}"
    return redirect(target, code=303)


def _done_message() -> str | None:
    what = request.args.get("done")
    ident = request.args.get("id", "")
    if what not in DONE or not ident or len(ident) > MAX_ID:
        return None
    return DONE[what].format(id=_short(ident) if what in ("session", "token") else ident)


def _key_revoked(state: ShieldState, kid: str, now: float) -> bool | None:
    # Asked of the store itself: a process's local "not revoked" view answers per token,
    # and knows nothing about keys. None when the store is away.
    try:
        return state.store.is_revoked("kid", kid, now=now)
    except StoreError:
        return None


def is_local_path(value: str | None) -> bool:
    """Whether ``value`` is a path on this site, safe to redirect to after a login.

    The 403 page links to the app's ``login_url`` with ``next=<the page asked for>``; the
    login view redirects there only when this says yes, so ``next`` is never an open
    redirect: no scheme, no host, no ``//host`` or ``/\\host`` (browsers read both as
    another site), no control characters or spaces.
    """
    if not value or len(value) > MAX_NEXT or not value.startswith("/"):
        return False
    if any(c.isspace() or not c.isprintable() for c in value):
        return False
    if value[1:2] in ("/", "\\"):
        return False
    parts = urllib.parse.urlsplit(value.replace("\\", "/"))
    return not parts.scheme and not parts.netloc


def _here() -> str:
    """The page that was asked for, as a local path (``next``) -- a GET's own URL, else the
    dashboard's start page.

    Only the dashboard's own query parameters are carried over, and none that looks like a
    token: the query string is whatever the client sent (``?refresh_token=...``), and a
    token must never be echoed into a page.
    """
    if request.method != "GET":
        return url_for(".index")
    kept = [
        (k, v)
        for k, v in request.args.items(multi=True)
        if k in _PAGE_ARGS and len(v) <= MAX_ID and not _TOKEN_SHAPE.search(v)
    ]
    path = request.script_root + request.path + (f"?{urllib.parse.urlencode(kept)}" if kept else "")
    return path if is_local_path(path) else url_for(".index")


def _with_next(login_url: str, next_path: str) -> str:
    """``login_url`` with ``next=next_path`` added to its query string."""
    parts = urllib.parse.urlsplit(login_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != "next"] + [("next", next_path)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRow:
    sid: str
    created_at: float
    last_used_at: float
    expires_at: float
    last_ip: str | None
    last_country: str | None
    started_country: str | None
    new_country: bool
    bound: str | None
    client_id: str | None


def _session_row(family: Family, started: SecurityEvent | None) -> SessionRow:
    claims = family.claims or {}
    bound = "DPoP key" if "cnf" in claims else ("browser cookie" if "fgp" in claims else None)
    client = claims.get("client_id")
    return SessionRow(
        sid=family.sid,
        created_at=family.created_at,
        last_used_at=family.last_used_at,
        expires_at=family.expires_at,
        last_ip=family.last_ip,
        last_country=family.last_country,
        started_country=started.country if started is not None else None,
        new_country=bool(started is not None and started.detail.get("new_country")),
        bound=bound,
        client_id=client if isinstance(client, str) else None,
    )


def _when(at: float | None) -> str:
    if not isinstance(at, (int, float)):
        return "—"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(at: float | None) -> str:
    if not isinstance(at, (int, float)):
        return ""
    seconds = time.time() - at
    if seconds < 0:
        return "in the future"
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _short(ident: str | None) -> str:
    if not ident:
        return ""
    return ident if len(ident) <= 12 else f"{ident[:8]}…"


def _summary(event: SecurityEvent) -> str:
    """One line of the event's detail a person can read."""
    d = event.detail or {}
    kind = event.kind
    if kind == "impossible-travel":
        a, b = d.get("from") or {}, d.get("to") or {}
        speed = d.get("speed_kmh")
        limit = d.get("limit_kmh")
        return (
            f"{_place(a)} → {_place(b)}"
            + (f", {speed:,.0f} km/h" if isinstance(speed, (int, float)) else "")
            + (f" (limit {limit:,.0f} km/h)" if isinstance(limit, (int, float)) and limit else "")
        )
    if kind == "new-country":
        history = d.get("history") or []
        return f"new: {event.country or '?'}; before: {', '.join(map(str, history)) or 'none'}"
    if kind == "country-changed":
        return f"issued in {d.get('issued_in') or '?'}, used in {event.country or '?'}"
    if kind == "refresh-reused":
        return "a spent refresh token came back: the session was revoked"
    if kind in ("traffic-spike", "traffic-anomaly"):
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in d.items() if isinstance(v, (int, float, str))]
        return ", ".join(parts[:4])
    reason = d.get("reason")
    parts = []
    if reason:
        parts.append(str(reason))
    if d.get("status"):
        parts.append(f"answered {d['status']}")
    if d.get("new_country"):
        parts.append("from a new country")
    if d.get("bound"):
        parts.append(f"bound to {BOUND.get(str(d['bound']), 'a ' + str(d['bound']))}")
    if d.get("by"):
        parts.append(f"by the {d['by']}")
    if d.get("monitor_only"):
        parts.append(f"monitor only (would {d.get('intended_action')})")
    return ", ".join(parts)


def _place(p: t.Mapping[str, t.Any]) -> str:
    city, country = p.get("city"), p.get("country")
    return ", ".join(str(x) for x in (city, country) if x) or "?"


__all__ = ["Authorize", "build", "is_local_path"]
