"""SETs out: the shield's revocations as Shared Signals events (CAEP 1.0, RISC 1.0).

The transmitter listens to the security events every revocation records
(:mod:`flask_jwt_shield.signals`), whichever path made it -- ``revoke_*``, the CLI, the
dashboard, a detector's action, refresh-token reuse, ``MAX_SESSIONS``, global token
revocation -- and maps each to the events below:

=============================  ===========================================================
shield event                   SET (one event per SET, as the CAEP interoperability
                               profile asks), ``sub_id`` per SSF 1.0 §3
=============================  ===========================================================
``family-revoked`` (revoke,    CAEP ``session-revoked``; ``sub_id`` a complex subject:
refresh reuse, MAX_SESSIONS)   ``session`` (opaque: the ``sid``) and ``user`` (iss_sub)
``subject-revoked`` (log out   RISC ``sessions-revoked`` (``sub_id`` iss_sub); to a stream
everywhere)                    that did not ask for it, CAEP ``session-revoked`` of the
                               user (complex subject with ``user`` only: every session)
``token-revoked``              the shield's ``token-revoked`` (``jti``): CAEP and RISC
                               name no single token
``key-revoked``                the shield's ``key-revoked`` (``kid``)
=============================  ===========================================================

A revocation that a received SET caused (``detail["reason"] == "security-event"``) is not
transmitted again, so two apps that receive from each other never echo one event forever.

Nothing on the request path waits: the signal handler only queues the event
(:class:`~flask_jwt_shield.delivery.Courier`). The worker thread signs one SET per stream
that asked for the event type, keeps it in the store (:mod:`.streams`) and then, for push
streams, POSTs it (RFC 8935) with retries and backoff that honours ``Retry-After``. A SET
leaves the store only once the receiver accepted it (a push answered 2xx, or a poll that
acknowledges it): a receiver that is down, slow or answering 5xx finds every SET still
there when it polls (RFC 8936), within the retention bounds of :mod:`.streams`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t
import uuid

from flask import Flask

from ..config import SSFSettings
from ..delivery import Courier
from ..delivery import DeliveryStats
from ..delivery import Endpoint
from ..delivery import Outcome
from ..errors import StoreError
from ..events import SecurityEvent
from ..signals import BY_KIND
from ..signals import EventKind
from ..stores import Store
from ..tokens import TokenCodec
from . import vocabulary as v
from .streams import Stream
from .streams import StreamStore

logger = logging.getLogger("flask_jwt_shield")

#: The SET header ``typ`` (RFC 8417 §2.3).
SET_TYPE = "secevent+jwt"
#: What the transmitter can send (``events_supported`` of every stream).
EVENTS_SUPPORTED = (
    v.SESSION_REVOKED,
    v.SESSIONS_REVOKED,
    v.TOKEN_REVOKED,
    v.KEY_REVOKED,
)
#: Seconds a stream's receiver is not pushed to after a push to it was given up.
UNREACHABLE_FOR = 30.0
_SKIPPED = "its receiver failed a moment ago"
#: The event kinds the transmitter listens to.
KINDS: tuple[EventKind, ...] = ("family-revoked", "subject-revoked", "token-revoked", "key-revoked")


@dataclasses.dataclass(frozen=True, slots=True)
class TransmitterStats:
    """One process's counters: the queue's (:class:`~flask_jwt_shield.delivery.DeliveryStats`
    over events taken in and SETs pushed) and the undelivered SETs dropped over the bound."""

    delivery: DeliveryStats
    #: SETs signed and kept for their streams
    created: int
    #: SETs a receiver accepted by push
    pushed: int
    #: undelivered SETs dropped because a stream held ``JWT_SHIELD_SSF_MAX_PENDING``
    dropped: int


class Transmitter:
    """The transmitter of one app in one process. Safe to call from any thread."""

    def __init__(self, settings: SSFSettings, *, issuer: str, codec: TokenCodec, store: Store) -> None:
        self.settings = settings
        self.issuer = issuer
        self.codec = codec
        self.streams = StreamStore(store, settings)
        self.courier = Courier(
            name="SET",
            queue_size=settings.ssf_queue_size,
            retries=settings.ssf_push_retries,
            retry_delay=settings.ssf_push_retry_delay,
        )
        self._endpoints: dict[str, Endpoint] = {}
        #: stream id -> until when its receiver is taken for unreachable (monotonic clock)
        self._unreachable: dict[str, float] = {}
        self._lock = threading.Lock()
        self._created = 0
        self._pushed = 0

    def stats(self) -> TransmitterStats:
        return TransmitterStats(
            delivery=self.courier.stats(), created=self._created, pushed=self._pushed, dropped=self.streams.dropped
        )

    # -- in: the signal handler's side ---------------------------------------------------------

    def submit(self, event: SecurityEvent) -> bool:
        """Queue ``event`` when it maps to a SET; never blocks, never raises."""
        if event.kind not in KINDS or event.detail.get("reason") == "security-event":
            return False
        return self.courier.submit(_Intake(self, event), where="the SSF streams")

    # -- mapping -------------------------------------------------------------------------------

    def events_for(self, event: SecurityEvent, stream: Stream) -> list[tuple[str, dict[str, t.Any], dict[str, t.Any]]]:
        """``(event type, event payload, sub_id)`` for each SET that ``event`` makes on
        ``stream`` (only the types the stream gets)."""
        wanted = stream.delivered(EVENTS_SUPPORTED)
        at = int(event.at)
        base: dict[str, t.Any] = {"event_timestamp": at}
        reason = event.detail.get("reason")
        if event.kind == "family-revoked" and event.sid and v.SESSION_REVOKED in wanted:
            payload = {**base, "initiating_entity": _initiator(event)}
            if isinstance(reason, str):
                payload["reason_admin"] = {"en": reason}
            return [(v.SESSION_REVOKED, payload, v.session(self.issuer, event.subject, event.sid))]
        if event.kind == "subject-revoked" and event.subject:
            # The shield's extension member: the exact instant of the revocation at the
            # issuer (tokens issued at or before it are revoked, none after, as here).
            instant = event.detail.get("not_before")
            if isinstance(instant, (int, float)):
                base["not_before"] = instant
            if v.SESSIONS_REVOKED in wanted:
                return [(v.SESSIONS_REVOKED, base, v.iss_sub(self.issuer, event.subject))]
            if v.SESSION_REVOKED in wanted:
                payload = {**base, "initiating_entity": _initiator(event)}
                return [(v.SESSION_REVOKED, payload, v.user(self.issuer, event.subject))]
        if event.kind == "token-revoked" and event.jti and v.TOKEN_REVOKED in wanted:
            sub_id = v.user(self.issuer, event.subject) if event.subject else v.opaque(event.jti)
            return [(v.TOKEN_REVOKED, {**base, "jti": event.jti}, sub_id)]
        if event.kind == "key-revoked" and event.kid and v.KEY_REVOKED in wanted:
            return [(v.KEY_REVOKED, {**base, "kid": event.kid}, v.opaque(event.kid))]
        return []

    # -- out -------------------------------------------------------------------------------------

    def sign(
        self,
        stream: Stream,
        event_type: str,
        payload: dict[str, t.Any],
        sub_id: dict[str, t.Any],
        txn: str | None = None,
    ) -> tuple[str, str]:
        """A SET for ``stream`` (RFC 8417 §2.2, SSF 1.0 §4): ``(jti, compact JWS)``."""
        jti = uuid.uuid4().hex
        claims: dict[str, t.Any] = {
            "iss": self.issuer,
            "aud": stream.aud,
            "jti": jti,
            "iat": int(time.time()),
            "sub_id": sub_id,
            "events": {event_type: payload},
        }
        if txn is not None:
            claims["txn"] = txn
        return jti, self.codec.encode(claims, SET_TYPE)

    def emit(
        self,
        stream: Stream,
        event_type: str,
        payload: dict[str, t.Any],
        sub_id: dict[str, t.Any],
        txn: str | None = None,
    ) -> str:
        """Sign one SET, keep it for ``stream``, and queue its push (push streams that are
        enabled). Returns its ``jti``. Raises :class:`~flask_jwt_shield.errors.StoreError`."""
        jti, token = self.sign(stream, event_type, payload, sub_id, txn)
        self.streams.hold(stream.stream_id, jti, token)
        with self._lock:
            self._created += 1
        if stream.method == v.PUSH and stream.status == "enabled":
            self.courier.submit(_Push(self, stream, jti, token), where=self._endpoint(stream).where)
        return jti

    def push_pending(self, stream: Stream) -> int:
        """Queue a push of every SET ``stream`` still holds (after it is enabled again).
        Returns how many."""
        if stream.method != v.PUSH or stream.status != "enabled":
            return 0
        held = self.streams.pending(stream.stream_id, self.settings.ssf_max_pending)
        for jti, token in held:
            self.courier.submit(_Push(self, stream, jti, token), where=self._endpoint(stream).where)
        return len(held)

    def _endpoint(self, stream: Stream) -> Endpoint:
        assert stream.endpoint_url is not None
        with self._lock:
            endpoint = self._endpoints.get(stream.endpoint_url)
            if endpoint is None:
                endpoint = Endpoint(
                    stream.endpoint_url, timeout=self.settings.ssf_push_timeout, user_agent="Flask-JWT-Shield-SSF"
                )
                if len(self._endpoints) > 1000:
                    self._endpoints.clear()
                self._endpoints[stream.endpoint_url] = endpoint
            return endpoint

    def _pushed_one(self, stream: Stream) -> None:
        with self._lock:
            self._pushed += 1
            was_down = self._unreachable.pop(stream.stream_id, None) is not None
        if was_down:
            # Back: what waited while it was away goes out now (a SET it polled meanwhile
            # is refused as a replay and forgotten).
            try:
                self.push_pending(stream)
            except StoreError as exc:
                logger.warning(
                    "SSF: stream %s is back, its held SETs wait for a poll (store: %s)", stream.stream_id, exc
                )

    def reachable(self, stream: Stream) -> bool:
        """Whether pushes to ``stream`` are tried: not while its receiver failed every
        attempt of a push in the last :data:`UNREACHABLE_FOR` seconds, so one receiver that
        is down or hung does not hold every other stream's SETs up with its retries. Its
        SETs wait in the store meanwhile (poll), and the first push after that time that
        succeeds sends them all."""
        with self._lock:
            until = self._unreachable.get(stream.stream_id)
        return until is None or time.monotonic() >= until

    def _gave_up(self, stream: Stream) -> None:
        with self._lock:
            self._unreachable[stream.stream_id] = time.monotonic() + UNREACHABLE_FOR


def _initiator(event: SecurityEvent) -> str:
    """CAEP 1.0 §2 ``initiating_entity``: an operator (``admin``), the user logging out
    everywhere (``user``), or the shield's own rules (``policy``)."""
    reason = event.detail.get("reason")
    if event.detail.get("by") == "global-token-revocation":
        return "user"
    if isinstance(reason, str) and reason:
        return "policy"  # refresh-reused, max-sessions, a detector's finding
    return "admin"


class _Intake:
    """One shield event on its way to the streams (a :class:`~flask_jwt_shield.delivery.Job`):
    a SET per stream that wants it. A store failure is retried; the streams already served
    are not served twice."""

    def __init__(self, transmitter: Transmitter, event: SecurityEvent) -> None:
        self.transmitter = transmitter
        self.event = event
        self.served: set[str] = set()

    def describe(self) -> str:
        return f"event {self.event.kind} {self.event.id}"

    def attempt(self) -> Outcome:
        tx = self.transmitter
        try:
            for stream in tx.streams.all():
                if stream.stream_id in self.served or stream.status == "disabled":
                    continue
                for event_type, payload, sub_id in tx.events_for(self.event, stream):
                    tx.emit(stream, event_type, payload, sub_id, txn=self.event.id)
                self.served.add(stream.stream_id)
        except StoreError as exc:
            return Outcome(False, True, f"store: {exc}")
        return Outcome(True, False, "held")

    def done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            logger.error("SSF: no SET made for %s: %s", self.describe(), outcome.reason)


class _Push:
    """One SET POSTed to a push stream's receiver (RFC 8935 §2)."""

    def __init__(self, transmitter: Transmitter, stream: Stream, jti: str, token: str) -> None:
        self.transmitter = transmitter
        self.stream = stream
        self.jti = jti
        self.token = token

    def describe(self) -> str:
        return f"SET {self.jti} of stream {self.stream.stream_id}"

    def attempt(self) -> Outcome:
        if not self.transmitter.reachable(self.stream):
            return Outcome(False, False, _SKIPPED)
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if self.stream.authorization_header:
            headers["Authorization"] = self.stream.authorization_header
        return self.transmitter._endpoint(self.stream).post(self.token.encode("ascii"), headers)

    def done(self, outcome: Outcome) -> None:
        tx = self.transmitter
        refused = outcome.reason == "HTTP 400"
        if outcome.ok:
            tx._pushed_one(self.stream)
        elif refused:
            # RFC 8935 §2.4: the recipient refused this SET for good (a replay of one it
            # polled already, or an error of ours); polling it would be refused again.
            logger.warning("SSF: the receiver of stream %s refused %s (400)", self.stream.stream_id, self.describe())
        else:
            if outcome.reason == _SKIPPED:
                return  # said when the receiver was given up on
            if outcome.retry:  # every attempt failed: leave this receiver alone for a while
                tx._gave_up(self.stream)
            logger.warning(
                "SSF: %s not pushed (%s); it waits in the store for the receiver to poll",
                self.describe(),
                outcome.reason,
            )
            return
        try:
            tx.streams.forget(self.stream.stream_id, [self.jti])
        except StoreError as exc:  # kept: a poll may deliver it again, and the receiver drops the replay
            logger.warning("SSF: %s delivered but still held (store: %s)", self.describe(), exc)


#: Where :func:`install` keeps an app's transmitter.
EXTENSION_KEY = "jwt_shield_ssf_transmitter"


def install(app: Flask, transmitter: Transmitter) -> None:
    """Make ``transmitter`` the app's, listening to the revocation events' signals."""
    app.extensions[EXTENSION_KEY] = transmitter
    for kind in KINDS:
        BY_KIND[kind].connect(_forward, weak=False)  # once for every app: blinker keeps one


def transmitter_of(app: Flask) -> Transmitter | None:
    """The app's transmitter, ``None`` without ``JWT_SHIELD_SSF_TRANSMIT``."""
    found: Transmitter | None = app.extensions.get(EXTENSION_KEY)
    return found


def _forward(sender: t.Any, event: SecurityEvent | None = None, **_: t.Any) -> None:
    # A signal handler on the request path: it queues, and never lets a bug of ours break
    # the revocation that is being recorded.
    try:
        extensions = getattr(sender, "extensions", None)
        transmitter = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
        if transmitter is not None and event is not None:
            transmitter.submit(event)
    except Exception:
        logger.exception("SSF: could not queue the event for the transmitter")
