"""The transmitter's HTTP side (OpenID SSF 1.0 §7-§8, RFC 8936).

:meth:`JWTShield.ssf_blueprint <flask_jwt_shield.JWTShield.ssf_blueprint>` serves, exempt
from the token pipeline:

==========================================  ===================================================
``GET /.well-known/ssf-configuration``      the transmitter's metadata (public)
``POST|GET|PATCH|PUT|DELETE {base}/streams``  stream management (SSF 1.0 §8.1.1)
``GET|POST {base}/status``                  a stream's status (§8.1.2)
``POST {base}/verify``                      ask for a verification event (§8.1.4)
``POST {base}/poll/<stream_id>``            RFC 8936 poll delivery
==========================================  ===================================================

Every endpoint but the metadata runs the application's ``authorize()`` callback first: it
names the receiver (a string), or returns ``None`` (401). Without a callback every call is
refused with 403 and a message that says how to register one: a transmitter hands out who
logged out and when, so it is closed until the application says who may read it. Each
receiver sees and changes only its own streams (another's answer 404), and the ``aud`` of
its SETs is its name.

Bad input of any kind answers 4xx with ``{"error", "error_description"}`` (the poll
endpoint also with RFC 8936's ``err`` and ``description``), never a 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import typing as t
import uuid
from collections.abc import Mapping

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import request
from flask import url_for

from ..config import check_url
from ..errors import ConfigurationError
from ..errors import StoreError
from ..metadata import mounted_endpoints
from ..state import EXTENSION_KEY
from ..state import current_state
from . import vocabulary as v
from .streams import METHODS
from .streams import STATUSES
from .streams import Stream
from .transmitter import EVENTS_SUPPORTED
from .transmitter import Transmitter
from .transmitter import transmitter_of

logger = logging.getLogger("flask_jwt_shield")

DISCOVERY_PATH = "/.well-known/ssf-configuration"
#: ``authorize() -> receiver name | None``: runs in the request; ``None`` answers 401.
StreamAuthorizer = t.Callable[[], "str | None"]
_MAX_BODY = 64 * 1024
#: A poll returns at most this many SETs, whatever ``maxEvents`` asks.
MAX_EVENTS = 1000
_POLL_STEP = 0.1


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def bearer_receivers(tokens: Mapping[str, str]) -> StreamAuthorizer:
    """An ``authorize`` callback for :meth:`JWTShield.ssf_blueprint
    <flask_jwt_shield.JWTShield.ssf_blueprint>`: receiver name -> the secret it presents as
    ``Authorization: Bearer <secret>`` (at least 32 characters each), compared in constant
    time."""
    pairs = []
    for name, secret in tokens.items():
        if not isinstance(name, str) or not name or not isinstance(secret, str) or len(secret) < 32:
            raise ValueError(
                "bearer_receivers() takes {receiver name: secret}, each secret at least 32 random characters"
                " (secrets.token_urlsafe(32))."
            )
        pairs.append((name, ("Bearer " + secret).encode()))

    def authorize() -> str | None:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        found = None
        for name, expected in pairs:  # every pair, so the time says nothing about which
            if hmac.compare_digest(given, expected):
                found = name
        return found

    return authorize


def _json(body: t.Any, status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(exc: _Refused, *, poll: bool = False) -> Response:
    body = {"error": exc.error, "error_description": exc.description}
    if poll:  # RFC 8936 §2.4.4 names them err and description; the shield's clients read error
        body.update(err=exc.error, description=exc.description)
    response = _json(body, exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ssf"'
    if exc.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _body() -> dict[str, t.Any]:
    if request.mimetype != "application/json":
        raise _Refused(400, "invalid_request", "The body must be JSON (Content-Type: application/json).")
    length = request.content_length
    data = request.stream.read(_MAX_BODY + 1) if length is None or length <= _MAX_BODY else b"x" * (_MAX_BODY + 1)
    if len(data) > _MAX_BODY:
        raise _Refused(400, "invalid_request", "The body is too large.")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _Refused(400, "invalid_request", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise _Refused(400, "invalid_request", "The body must be a JSON object.")
    return body


def _no_constant(name: str) -> t.NoReturn:
    raise ValueError(name)


def _short(value: t.Any, what: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _Refused(400, "invalid_request", f"{what} must be a printable string of 1 to {limit} characters.")
    return value


class TransmitterEndpoints:
    """The views; one instance per blueprint."""

    def __init__(self, authorize: StreamAuthorizer | None, name: str) -> None:
        self.authorize = authorize
        self.name = name

    # -- plumbing ---------------------------------------------------------------------------

    def transmitter(self) -> Transmitter:
        current_state()  # a clear error when the shield is not initialised
        found = transmitter_of(current_app)
        if found is None:  # checked when the blueprint is registered; kept for type checkers
            raise _Refused(404, "not_found", "This app does not transmit Shared Signals.")
        return found

    def receiver(self) -> str:
        if self.authorize is None:
            raise _Refused(
                403,
                "access_denied",
                "This transmitter has no authorize callback, so no receiver may manage or read streams."
                " Register one: shield.ssf_blueprint(authorize=fn), fn() returning the receiver's name or None.",
            )
        who = self.authorize()
        if who is None:
            raise _Refused(401, "invalid_client", "The receiver could not be authenticated.")
        if not isinstance(who, str) or not who:
            raise TypeError("ssf_blueprint(authorize=...) must return the receiver's name (a string) or None")
        return who

    def url(self, endpoint: str, **values: t.Any) -> str:
        return url_for(f"{self.name}.{endpoint}", _external=True, **values)

    def stream(self, owner: str, stream_id: t.Any) -> Stream:
        stream_id = _short(stream_id, "stream_id", 64)
        stream = self.transmitter().streams.get(stream_id)
        if stream is None or not hmac.compare_digest(stream.owner, owner):
            raise _Refused(404, "not_found", "No such stream.")
        return stream

    def configuration(self, stream: Stream, tx: Transmitter) -> dict[str, t.Any]:
        """SSF 1.0 §8.1.1: the stream as the receiver reads it."""
        poll_url = self.url("poll", stream_id=stream.stream_id)
        delivery = {
            "method": stream.method,
            "endpoint_url": stream.endpoint_url if stream.method == v.PUSH else poll_url,
        }
        body: dict[str, t.Any] = {
            "stream_id": stream.stream_id,
            "iss": tx.issuer,
            "aud": stream.aud,
            "events_supported": list(EVENTS_SUPPORTED),
            "events_delivered": stream.delivered(EVENTS_SUPPORTED),
            "delivery": delivery,
            # The shield's extension: where SETs a push could not deliver can be polled.
            "poll_endpoint_url": poll_url,
        }
        if stream.events_requested is not None:
            body["events_requested"] = stream.events_requested
        if stream.description is not None:
            body["description"] = stream.description
        return body

    def guarded(self, view: t.Callable[..., Response], *, poll: bool = False) -> t.Callable[..., Response]:
        def run(**kwargs: t.Any) -> Response:
            try:
                return view(**kwargs)
            except _Refused as exc:
                return _error(exc, poll=poll)
            except StoreError:
                return _error(
                    _Refused(503, "temporarily_unavailable", "The store is unavailable; retry later."), poll=poll
                )

        run.__name__ = view.__name__
        return run

    # -- discovery --------------------------------------------------------------------------

    def discovery(self, suffix: str | None = None) -> Response:
        tx = self.transmitter()
        issuer_path = tx.issuer.split("://", 1)[-1].partition("/")[2].rstrip("/")
        if (suffix or "").rstrip("/") != issuer_path:
            raise _Refused(404, "not_found", "No transmitter at this path.")
        body: dict[str, t.Any] = {
            "spec_version": "1_0",
            "issuer": tx.issuer,
            "delivery_methods_supported": list(METHODS),
            "configuration_endpoint": self.url("streams"),
            "status_endpoint": self.url("status"),
            "verification_endpoint": self.url("verify"),
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
            "default_subjects": "ALL",
        }
        jwks = mounted_endpoints().get("jwks_uri")
        if jwks is not None:
            body["jwks_uri"] = jwks[0]
        response = _json(body)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # -- streams ----------------------------------------------------------------------------

    def streams(self) -> Response:
        owner = self.receiver()
        tx = self.transmitter()
        if request.method == "GET":
            stream_id = request.args.get("stream_id")
            if stream_id is not None:
                return _json(self.configuration(self.stream(owner, stream_id), tx))
            mine = [s for s in tx.streams.all() if hmac.compare_digest(s.owner, owner)]
            return _json([self.configuration(s, tx) for s in mine])
        if request.method == "DELETE":
            stream = self.stream(owner, request.args.get("stream_id"))
            tx.streams.delete(stream.stream_id)
            return Response(status=204)
        body = _body()
        if request.method == "POST":
            if len(tx.streams.all()) >= tx.settings.ssf_max_streams:
                raise _Refused(409, "conflict", "This transmitter holds as many streams as it may; delete one first.")
            stream = Stream(stream_id=uuid.uuid4().hex, owner=owner, aud=owner, method=v.POLL, created_at=time.time())
            self.change(stream, body, replace=True)
            tx.streams.put(stream)
            return _json(self.configuration(stream, tx), 201)
        stream = self.stream(owner, body.get("stream_id"))
        self.change(stream, body, replace=request.method == "PUT")
        tx.streams.put(stream)
        return _json(self.configuration(stream, tx))

    def change(self, stream: Stream, body: dict[str, t.Any], *, replace: bool) -> None:
        """Apply the receiver-supplied fields of ``body`` (SSF 1.0 §8.1.1.1); transmitter-
        supplied ones (``iss``, ``aud``, ``events_supported`` ...) are ignored."""
        if "delivery" in body or replace:
            delivery = body.get("delivery", {})
            if not isinstance(delivery, dict):
                raise _Refused(400, "invalid_request", "delivery must be an object.")
            method = delivery.get("method", v.POLL)
            if method not in METHODS:
                raise _Refused(400, "invalid_request", f"delivery.method must be one of {list(METHODS)}.")
            endpoint_url = authorization = None
            if method == v.PUSH:
                endpoint_url = _short(delivery.get("endpoint_url"), "delivery.endpoint_url", 2048)
                try:
                    check_url(endpoint_url, "delivery.endpoint_url", why="SETs pushed over plain HTTP can be read")
                except ValueError as exc:
                    raise _Refused(400, "invalid_request", str(exc)) from None
                if endpoint_url.lower().startswith("http:") and not self.transmitter().issuer.startswith("http:"):
                    # Plain HTTP to this host is for a transmitter that runs on this host
                    # itself (development): a receiver must not point a production
                    # transmitter at the services listening on its loopback.
                    raise _Refused(400, "invalid_request", "delivery.endpoint_url must use https://.")
                if delivery.get("authorization_header") is not None:
                    authorization = _short(delivery["authorization_header"], "delivery.authorization_header", 4096)
            stream.method, stream.endpoint_url, stream.authorization_header = method, endpoint_url, authorization
        if "events_requested" in body or replace:
            events = body.get("events_requested")
            if events is not None and (
                not isinstance(events, list)
                or len(events) > 64
                or not all(isinstance(e, str) and 0 < len(e) <= 255 for e in events)
            ):
                raise _Refused(400, "invalid_request", "events_requested must be a list of event type URIs.")
            stream.events_requested = events
        if "description" in body or replace:
            description = body.get("description")
            if description is not None:
                description = _short(description, "description", 1024)
            stream.description = description

    # -- status -----------------------------------------------------------------------------

    def status(self) -> Response:
        owner = self.receiver()
        tx = self.transmitter()
        if request.method == "GET":
            stream = self.stream(owner, request.args.get("stream_id"))
        else:
            body = _body()
            stream = self.stream(owner, body.get("stream_id"))
            status, reason = body.get("status"), body.get("reason")
            if status not in STATUSES:
                raise _Refused(400, "invalid_request", f"status must be one of {list(STATUSES)}.")
            if reason is not None:
                reason = _short(reason, "reason", 1024)
            changed = status != stream.status
            stream.status, stream.reason = t.cast(str, status), reason
            tx.streams.put(stream)
            if changed:
                payload: dict[str, t.Any] = {"status": status}
                if reason is not None:
                    payload["reason"] = reason
                if status != "disabled":
                    tx.emit(stream, v.STREAM_UPDATED, payload, v.opaque(stream.stream_id))
                tx.push_pending(stream)
        body = {"stream_id": stream.stream_id, "status": stream.status}
        if stream.reason is not None:
            body["reason"] = stream.reason
        return _json(body)

    # -- verification -----------------------------------------------------------------------

    def verify(self) -> Response:
        owner = self.receiver()
        body = _body()
        stream = self.stream(owner, body.get("stream_id"))
        payload: dict[str, t.Any] = {}
        if body.get("state") is not None:
            payload["state"] = _short(body["state"], "state", 1024)
        if stream.status == "disabled":
            raise _Refused(400, "invalid_request", "The stream is disabled.")
        self.transmitter().emit(stream, v.VERIFICATION, payload, v.opaque(stream.stream_id))
        return Response(status=204)

    # -- RFC 8936 poll ----------------------------------------------------------------------

    def poll(self, stream_id: str) -> Response:
        owner = self.receiver()
        tx = self.transmitter()
        stream = self.stream(owner, stream_id)
        body = _body()
        max_events = body.get("maxEvents", MAX_EVENTS)
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
            raise _Refused(400, "invalid_request", "maxEvents must be a non-negative integer.")
        immediately = body.get("returnImmediately", False)
        if not isinstance(immediately, bool):
            raise _Refused(400, "invalid_request", "returnImmediately must be true or false.")
        acks = body.get("ack", [])
        if not isinstance(acks, list) or not all(isinstance(a, str) and 0 < len(a) <= 255 for a in acks):
            raise _Refused(400, "invalid_request", "ack must be a list of jti strings.")
        errors = body.get("setErrs", {})
        if not isinstance(errors, dict) or not all(
            isinstance(k, str) and len(k) <= 255 and isinstance(e, dict) for k, e in errors.items()
        ):
            raise _Refused(400, "invalid_request", "setErrs must map jti strings to {err, description} objects.")
        if len(acks) + len(errors) > 10 * MAX_EVENTS:
            raise _Refused(400, "invalid_request", "Too many acknowledgements in one poll.")
        for jti, error in errors.items():
            # RFC 8936 §2.4.2: the receiver refused it for good; it is not delivered again.
            logger.warning(
                "SSF: the receiver of stream %s refused SET %s: %s",
                stream.stream_id,
                jti,
                str(error.get("err"))[:64],
            )
        if acks or errors:
            tx.streams.forget(stream.stream_id, [*acks, *errors])
        limit = min(max_events, MAX_EVENTS)
        sets: list[tuple[str, str]] = []
        if limit and stream.status == "enabled":
            # RFC 8936 §2.4: without returnImmediately, wait (bounded) for a first SET.
            deadline = time.monotonic() + (0.0 if immediately else tx.settings.ssf_poll_wait)
            while True:
                sets = tx.streams.pending(stream.stream_id, limit + 1)
                if sets or time.monotonic() >= deadline:
                    break
                time.sleep(_POLL_STEP)
        more = len(sets) > limit
        return _json({"sets": dict(sets[:limit]), "moreAvailable": more})


def make_blueprint(
    name: str,
    base: str,
    authorize: StreamAuthorizer | None,
    exempt: t.Callable[[t.Callable[..., Response]], t.Callable[..., Response]],
) -> Blueprint:
    """The transmitter's blueprint (register it without a URL prefix)."""
    views = TransmitterEndpoints(authorize, name)
    bp = Blueprint(name, __name__)
    base = "/" + base.strip("/")
    discovery = views.guarded(views.discovery)
    bp.add_url_rule(DISCOVERY_PATH, "discovery", exempt(discovery), methods=["GET"])
    bp.add_url_rule(DISCOVERY_PATH + "/<path:suffix>", "discovery_suffixed", exempt(discovery), methods=["GET"])
    bp.add_url_rule(
        f"{base}/streams",
        "streams",
        exempt(views.guarded(views.streams)),
        methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
    )
    bp.add_url_rule(f"{base}/status", "status", exempt(views.guarded(views.status)), methods=["GET", "POST"])
    bp.add_url_rule(f"{base}/verify", "verify", exempt(views.guarded(views.verify)), methods=["POST"])
    bp.add_url_rule(f"{base}/poll/<stream_id>", "poll", exempt(views.guarded(views.poll, poll=True)), methods=["POST"])

    def check(setup: t.Any) -> None:
        app: Flask = setup.app
        if EXTENSION_KEY in app.extensions and transmitter_of(app) is None:
            raise ConfigurationError(
                "ssf_blueprint() serves a Shared Signals transmitter, which needs JWT_SHIELD_SSF_TRANSMIT = True"
                " (with JWT_SHIELD_ISSUER and an asymmetric signing key)."
            )

    bp.record_once(check)
    return bp
