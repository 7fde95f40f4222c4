"""The receiver's side of a stream: set up from a transmitter's SSF discovery document and
kept fed by RFC 8936 polling, from configuration only (``JWT_SHIELD_SSF_RECEIVE_*``).

One thread per process (started by ``init_app``, again in a child after ``fork``):

1. reads ``{JWT_SHIELD_SSF_RECEIVE_FROM}/.well-known/ssf-configuration`` (SSF 1.0 §7.2; the
   issuer must match it exactly) for the stream management endpoint and the ``jwks_uri``
   that verifies the SETs;
2. finds this receiver's stream there (``GET`` the configuration endpoint) with the
   configured delivery method, or creates one (``POST``), presenting
   ``JWT_SHIELD_SSF_RECEIVE_TOKEN`` as a bearer token;
3. polls (RFC 8936 §2.4): each SET is verified and applied like a pushed one
   (:meth:`~.receiver.SecurityEventReceiver.accept`: signature, ``iss``, ``aud`` = the
   stream's, replay), acknowledged in the next poll, or returned in ``setErrs`` when it is
   refused for good. A SET that could not be applied now (keys or store unreachable) is
   not acknowledged, so the transmitter hands it out again.

With ``JWT_SHIELD_SSF_RECEIVE_DELIVERY = "push"`` the stream is a push stream to
``JWT_SHIELD_SSF_RECEIVE_PUSH_URL`` (served by ``security_events_blueprint()`` with no
arguments, which then takes its settings from this connection), and the thread still polls
the transmitter's ``poll_endpoint_url`` when the stream names one (a shield transmitter
does): what a push could not deliver while this app was down, slow or failing arrives that
way.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import ssl
import threading
import typing as t
import urllib.parse
import weakref

from flask import Flask
from flask import Response

from ..config import SSFSettings
from ..config import check_url
from ..errors import KeysUnavailable
from ..errors import StoreUnavailable
from ..jose import RESOURCE_SERVER_ALGORITHMS
from ..jwks import JWKSClient
from ..masking import mask_url
from ..state import EXTENSION_KEY
from ..state import ShieldState
from . import vocabulary as v
from .receiver import ACTIONS
from .receiver import CONNECTION_KEY
from .receiver import ReceiverSettings
from .receiver import SecurityEventReceiver
from .receiver import SETError
from .receiver import error_response

logger = logging.getLogger("flask_jwt_shield")

_MAX_RESPONSE = 4 * 1024 * 1024
_MAX_BACKOFF = 60.0
#: What a poll asks for at most.
MAX_EVENTS = 100
#: A long poll waits this long for the transmitter's answer (its wait is at most 60 s).
_LONG_POLL_TIMEOUT = 70.0


class TransmitterUnreachable(Exception):
    """The transmitter could not be reached or answered something unusable."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionStats:
    """One process's view of its stream."""

    #: the stream's id, once it is set up
    stream_id: str | None
    #: polls answered
    polls: int
    #: SETs applied (pushed or polled), replays not counted
    applied: int
    #: SETs refused for good (sent back in ``setErrs``)
    refused: int
    #: why the last attempt failed, ``None`` after a success
    last_error: str | None


class Connection:
    """One app's stream with one transmitter, in one process."""

    def __init__(self, app: Flask, settings: SSFSettings, *, timeout: float = 5.0) -> None:
        assert settings.ssf_receive_from is not None
        self._app = weakref.ref(app)
        self.settings = settings
        self.issuer = settings.ssf_receive_from
        self.timeout = timeout
        #: Set once the stream is found or created.
        self.ready = threading.Event()
        self.receiver: SecurityEventReceiver | None = None
        self.stream: dict[str, t.Any] | None = None
        self._poll_url: str | None = None
        self._acks: list[str] = []
        self._errors: dict[str, dict[str, str]] = {}
        self._polls = self._applied = self._refused = 0
        self._last_error: str | None = None
        self._ssl = ssl.create_default_context()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart(ref))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="jwt-shield-ssf-receiver", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self.start()

    def stats(self) -> ConnectionStats:
        stream_id = self.stream.get("stream_id") if self.stream else None
        return ConnectionStats(
            stream_id=stream_id if isinstance(stream_id, str) else None,
            polls=self._polls,
            applied=self._applied,
            refused=self._refused,
            last_error=self._last_error,
        )

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.settings.ssf_receive_poll_interval
        while not self._stop.is_set():
            try:
                if not self.ready.is_set():
                    self.connect()
                if self._poll_url is None:
                    return  # push only, and the transmitter offers no poll endpoint
                more = self.poll_once(wait=self.settings.ssf_receive_delivery == "poll")
                self._last_error = None
                backoff = self.settings.ssf_receive_poll_interval
                if more:
                    continue
                if self.settings.ssf_receive_delivery == "push" and self._stop.wait(
                    self.settings.ssf_receive_poll_interval
                ):
                    return
            except (TransmitterUnreachable, KeysUnavailable, StoreUnavailable) as exc:
                reason = str(exc) or type(exc).__name__
                if reason != self._last_error:
                    logger.warning("SSF receiver: %s (transmitter %s); retrying", reason, mask_url(self.issuer))
                self._last_error = reason
                if self._stop.wait(backoff * random.uniform(0.8, 1.0)):  # noqa: S311 (jitter)
                    return
                backoff = min(_MAX_BACKOFF, backoff * 2)
            except Exception:  # the thread must outlive any bug in one round
                logger.exception("SSF receiver: unexpected error; retrying")
                if self._stop.wait(_MAX_BACKOFF):
                    return

    # -- setting up ----------------------------------------------------------------------------

    def connect(self) -> None:
        """Read the discovery document, find or create the stream, build the verifier."""
        app = self._app()
        if app is None:
            self._stop.set()
            return
        state: ShieldState = app.extensions[EXTENSION_KEY]
        document = self.discover()
        streams_url = _url(document, "configuration_endpoint")
        jwks_uri = _url(document, "jwks_uri")
        method = v.PUSH if self.settings.ssf_receive_delivery == "push" else v.POLL
        stream = self.find_stream(streams_url, method)
        if stream is None:
            delivery: dict[str, t.Any] = {"method": method}
            if method == v.PUSH:
                delivery["endpoint_url"] = self.settings.ssf_receive_push_url
            body = {
                "delivery": delivery,
                "events_requested": sorted(ACTIONS),
                "description": "Flask-JWT-Shield receiver",
            }
            stream = self._request("POST", streams_url, body)
            if not isinstance(stream, dict):
                raise TransmitterUnreachable("the transmitter's answer to creating a stream is not a stream")
        aud = stream.get("aud")
        if isinstance(aud, list) and aud:
            aud = aud[0]
        if not isinstance(aud, str) or not isinstance(stream.get("stream_id"), str):
            raise TransmitterUnreachable("the transmitter's stream has no 'stream_id' or 'aud'")
        given = stream.get("delivery")
        poll_url = stream.get("poll_endpoint_url")
        if method == v.POLL and isinstance(given, dict):
            poll_url = given.get("endpoint_url", poll_url)
        if poll_url is not None:
            poll_url = _checked(poll_url, "the stream's poll endpoint")
        tokens_issuer = state.config.keys.issuer
        settings = ReceiverSettings(
            issuer=self.issuer,
            audience=aud,
            # A shield transmitter's sessions are the tokens' sid claims: revoke exactly those.
            session_fallback="none" if self.issuer == tokens_issuer else "subject",
        )
        try:
            jwks = JWKSClient(jwks_uri, allowed=RESOURCE_SERVER_ALGORITHMS)
        except ValueError as exc:
            raise TransmitterUnreachable(f"the transmitter's jwks_uri: {exc}") from None
        self.receiver = SecurityEventReceiver(settings, jwks)
        self.stream, self._poll_url = stream, poll_url
        self.ready.set()
        logger.info("SSF receiver: stream %s with %s (%s)", stream["stream_id"], mask_url(self.issuer), method)

    def discover(self) -> dict[str, t.Any]:
        parts = urllib.parse.urlsplit(self.issuer)
        url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, "/.well-known/ssf-configuration" + parts.path.rstrip("/"), "", "")
        )
        document = self._request("GET", url, None, auth=False)
        if not isinstance(document, dict):
            raise TransmitterUnreachable("the SSF discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            # SSF 1.0 §7.2.1: the issuer in the document must be the one it was read for.
            raise TransmitterUnreachable(
                f"the discovery document names issuer {document.get('issuer')!r}, not {self.issuer!r}"
            )
        return document

    def find_stream(self, streams_url: str, method: str) -> dict[str, t.Any] | None:
        found = self._request("GET", streams_url, None)
        streams = found if isinstance(found, list) else [found] if isinstance(found, dict) else []
        for stream in streams:
            delivery = stream.get("delivery") if isinstance(stream, dict) else None
            if not isinstance(delivery, dict) or delivery.get("method") != method:
                continue
            if method == v.PUSH and delivery.get("endpoint_url") != self.settings.ssf_receive_push_url:
                continue
            return t.cast(dict[str, t.Any], stream)
        return None

    # -- polling -------------------------------------------------------------------------------

    def poll_once(self, *, wait: bool = False) -> bool:
        """One RFC 8936 poll: acknowledge what was applied, apply what arrives. Returns
        whether the transmitter has more."""
        assert self._poll_url is not None and self.receiver is not None
        app = self._app()
        if app is None:
            return False
        acks, errors = self._acks, self._errors
        body: dict[str, t.Any] = {"maxEvents": MAX_EVENTS, "returnImmediately": not wait}
        if acks:
            body["ack"] = acks
        if errors:
            body["setErrs"] = errors
        answer = self._request("POST", self._poll_url, body, timeout=_LONG_POLL_TIMEOUT if wait else None)
        self._acks, self._errors = [], {}  # the transmitter has them now
        self._polls += 1
        if not isinstance(answer, dict) or not isinstance(answer.get("sets", {}), dict):
            raise TransmitterUnreachable("the poll answer is not an RFC 8936 object")
        sets = answer.get("sets", {})
        with app.app_context():
            state: ShieldState = app.extensions[EXTENSION_KEY]
            for jti, token in sets.items():
                if not isinstance(jti, str) or not isinstance(token, str):
                    continue
                self._receive(state, jti, token)
        return bool(answer.get("moreAvailable")) or bool(self._acks or self._errors)

    def _receive(self, state: ShieldState, jti: str, token: str) -> None:
        assert self.receiver is not None
        try:
            self.receiver.accept(state, token)
        except SETError as exc:
            if "received before" in exc.description:
                self._acks.append(jti)  # applied already (pushed, or another process polled it)
                return
            if exc.status == 503:  # another delivery is applying it: leave it to come again
                return
            self._refused += 1
            logger.warning("SSF receiver: SET %s refused: %s (%s)", jti, exc.err, exc.description)
            self._errors[jti] = {"err": exc.err, "description": exc.description}
            return
        # KeysUnavailable / StoreUnavailable propagate: not acknowledged, delivered again.
        self._applied += 1
        self._acks.append(jti)

    # -- push ------------------------------------------------------------------------------------

    def handle_push(self, state: ShieldState) -> Response:
        """The push endpoint of ``security_events_blueprint()`` when it follows this
        connection: 503 until the stream is set up (the transmitter retries)."""
        receiver = self.receiver
        if receiver is None:
            response = error_response("temporarily_unavailable", "This recipient is still setting up its stream.", 503)
            response.headers["Retry-After"] = "5"
            return response
        response = receiver.handle(state)
        if response.status_code == 202:
            self._applied += 1
        return response

    # -- HTTP --------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: t.Any, *, auth: bool = True, timeout: float | None = None) -> t.Any:
        parts = urllib.parse.urlsplit(url)
        headers = {"Accept": "application/json", "User-Agent": "Flask-JWT-Shield-SSF"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.settings.ssf_receive_token is not None:
            headers["Authorization"] = "Bearer " + self.settings.ssf_receive_token
        wait = timeout or self.timeout
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=wait, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=wait)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read(_MAX_RESPONSE + 1)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            raise TransmitterUnreachable(f"{method} {_where(url)}: {type(exc).__name__}") from None
        finally:
            conn.close()
        if len(payload) > _MAX_RESPONSE:
            raise TransmitterUnreachable(f"{method} {_where(url)}: the answer is too large")
        if not 200 <= status < 300:
            raise TransmitterUnreachable(f"{method} {_where(url)}: HTTP {status}")
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise TransmitterUnreachable(f"{method} {_where(url)}: the answer is not JSON") from None


def _where(url: str) -> str:
    return mask_url(url)


def _checked(url: t.Any, what: str) -> str:
    if not isinstance(url, str):
        raise TransmitterUnreachable(f"{what} is not a URL")
    try:
        return check_url(url, what)
    except ValueError as exc:
        raise TransmitterUnreachable(str(exc)) from None


def _url(document: dict[str, t.Any], name: str) -> str:
    if name not in document:
        raise TransmitterUnreachable(f"the SSF discovery document has no {name!r}")
    return _checked(document[name], name)


def _restart(ref: weakref.ReferenceType[Connection]) -> None:
    connection = ref()
    if connection is not None and connection._thread is not None:
        connection._after_fork()


def connection_of(app: Flask) -> Connection | None:
    """The app's connection to a transmitter, ``None`` without ``JWT_SHIELD_SSF_RECEIVE_FROM``."""
    found: Connection | None = app.extensions.get(CONNECTION_KEY)
    return found


def install(app: Flask, settings: SSFSettings) -> Connection:
    """Build the app's connection and start its thread."""
    connection = Connection(app, settings)
    app.extensions[CONNECTION_KEY] = connection
    connection.start()
    return connection
