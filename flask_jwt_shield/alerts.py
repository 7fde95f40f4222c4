"""The webhook alert sink: security events POSTed as JSON to an operator's receiver.

:class:`~flask_jwt_shield.events.EventRecorder` hands every event of a kind listed in
``JWT_SHIELD_ALERT_EVENTS`` to :meth:`AlertSink.submit`, which only puts it in a bounded
queue and returns: nothing on the request path waits on the network. One worker thread per
process (started at the first alert, started again in a child after ``fork``, so every
gunicorn worker sends its own alerts) takes the events in order and POSTs each one, with
retries and exponential backoff. A slow, hung, refusing or vanished receiver therefore costs
requests nothing; while it is away the queue fills, and alerts that find it full are
dropped, counted (:meth:`AlertSink.stats`) and logged, never silently.

Each POST may be signed: ``X-JWT-Shield-Signature: sha256=<hex>``, an HMAC-SHA256 under
``JWT_SHIELD_ALERT_SECRET`` of ``<timestamp>.<body>``, with the timestamp (epoch seconds) in
``X-JWT-Shield-Timestamp``. The receiver recomputes it, compares in constant time, and
refuses old timestamps (replays). See the "Alerts" docs page.

Events name tokens by ``jti`` and never carry one; as a second line of defence every string
in the payload that looks like a compact JWT is replaced by ``"[redacted token]"`` before it
leaves the process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import socket
import time
import typing as t
from collections.abc import Mapping

from .config import AlertSettings
from .delivery import Courier
from .delivery import DeliveryStats
from .delivery import Endpoint
from .delivery import Outcome

logger = logging.getLogger("flask_jwt_shield")

#: The request headers of an alert POST.
SIGNATURE_HEADER = "X-JWT-Shield-Signature"
TIMESTAMP_HEADER = "X-JWT-Shield-Timestamp"
DELIVERY_HEADER = "X-JWT-Shield-Delivery"
EVENT_HEADER = "X-JWT-Shield-Event"

#: The longest string an alert carries: a longer one (a User-Agent, a ``detail`` that a client
#: can fill) is cut to this many characters, after redaction, and marked with how much was cut.
MAX_STRING_LENGTH = 4096
# A run of base64url characters and dots: where a compact JWS or JWE can be. Matching runs is
# linear (each character is looked at once); the token inside a run is found by splitting it.
_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_REDACTED = "[redacted token]"


#: What one process's alert sink has done since it started (or since its ``fork``).
AlertStats = DeliveryStats


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-JWT-Shield-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300, now: float | None = None
) -> bool:
    """What a receiver does: ``True`` when ``signature`` is right and ``timestamp`` recent.

    The same code is shown on the "Alerts" docs page for receivers that do not import this
    package. ``tolerance``: seconds a timestamp may lie in the past or future.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def redact(value: t.Any) -> t.Any:
    """``value`` with every token-shaped substring of every string replaced.

    Token-shaped: ``eyJ`` (the base64url of a JSON header's ``{"``), then base64url, a dot,
    a non-empty base64url segment, a dot, and the rest of the run of base64url characters and
    dots. Each string is then cut to :data:`MAX_STRING_LENGTH` characters. The work is linear
    in the length of the strings, whatever they hold.
    """
    if isinstance(value, str):
        if "eyJ" in value:
            value = _RUN.sub(_redact_run, value)
        if len(value) > MAX_STRING_LENGTH:
            # Cut after redacting: a token cut in two would no longer look like one.
            value = f"{value[:MAX_STRING_LENGTH]}[{len(value) - MAX_STRING_LENGTH} characters cut]"
        return value
    if isinstance(value, Mapping):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _redact_run(match: re.Match[str]) -> str:
    # A regex for the token shape (eyJ[b64]*\.[b64]+\.[b64.]*) backtracks from every "eyJ" to
    # the end of its run: quadratic, about a second of CPU for 60 KB of "eyJeyJ...". Splitting
    # the run at its dots finds the same leftmost match in one pass: the token starts at the
    # first "eyJ" of a segment that is followed by a non-empty segment and one more dot.
    run = match.group()
    if "eyJ" not in run:
        return run
    segments = run.split(".")
    for i, segment in enumerate(segments):
        start = segment.find("eyJ")
        if start >= 0 and i + 2 < len(segments) and segments[i + 1]:
            return ".".join([*segments[:i], segment[:start]]) + _REDACTED
    return run


class AlertSink:
    """The webhook sink of one app in one process. Safe to call from any thread.

    Read its counters with :meth:`stats` (or :attr:`dropped`); :meth:`flush` waits, bounded,
    for the queue to empty. The queue, worker and retries are :class:`~.delivery.Courier`'s.
    """

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.kinds = settings.events
        self._endpoint = Endpoint(settings.webhook, timeout=settings.timeout, user_agent="Flask-JWT-Shield-Alerts")
        self._where = self._endpoint.where
        self._source = {"host": socket.gethostname()}
        self._courier = Courier(
            name="alert", queue_size=settings.queue_size, retries=settings.retries, retry_delay=settings.retry_delay
        )

    # -- the request side ------------------------------------------------------------------

    def submit(self, app_name: str, event: Mapping[str, t.Any]) -> bool:
        """Queue ``event`` (a :meth:`SecurityEvent.to_dict` dict) if its kind is alerted on.

        Never blocks and never raises for the receiver's sake. Returns whether it was
        queued; ``False`` for another kind, after :meth:`close`, or when the queue is full
        (the drop is counted and logged).
        """
        if event.get("kind") not in self.kinds:
            return False
        return self._courier.submit(_Alert(self, app_name, event), where=self._where)

    # -- reading -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Alerts dropped in this process because the queue was full."""
        return self._courier.dropped

    def stats(self) -> AlertStats:
        """This process's counters."""
        return self._courier.stats()

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every queued alert to be delivered or given up.

        Returns whether the queue is empty.
        """
        return self._courier.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking alerts and stop the worker (after the alert in flight, bounded)."""
        self._courier.close(timeout)

    # -- sending ---------------------------------------------------------------------------

    def _post(self, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """One POST of ``body``, signed when a secret is set. Never raises."""
        timestamp = str(int(time.time()))
        sent = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp, **headers}
        if self.settings.secret is not None:
            sent[SIGNATURE_HEADER] = sign(self.settings.secret, timestamp, body)
        return self._endpoint.post(body, sent)

    def ping(self, app_name: str) -> str | None:
        """Send one ``{"type": "ping"}`` POST now, in this thread; the error, or ``None``."""
        payload = {"type": "ping", "app": app_name, "source": {**self._source, "pid": os.getpid()}, "event": None}
        body = json.dumps(payload, sort_keys=True).encode()
        outcome = self._post(body, {EVENT_HEADER: "ping", DELIVERY_HEADER: "ping"})
        return None if outcome.ok else outcome.reason


class _Alert:
    """One alert on its way (a :class:`~.delivery.Job`): built once, POSTed per attempt."""

    def __init__(self, sink: AlertSink, app_name: str, event: Mapping[str, t.Any]) -> None:
        self.sink = sink
        self.app_name = app_name
        self.event = event
        self._body: bytes | None = None

    def describe(self) -> str:
        return f"{self.event.get('kind')} {self.event.get('id')}"

    def attempt(self) -> Outcome:
        if self._body is None:  # in the worker: redacting is not the request's work
            payload = {
                "type": "alert",
                "app": self.app_name,
                "source": {**self.sink._source, "pid": os.getpid()},
                "event": redact(self.event),
            }
            self._body = json.dumps(payload, sort_keys=True, default=str).encode()
        headers = {EVENT_HEADER: str(self.event.get("kind")), DELIVERY_HEADER: str(self.event.get("id"))}
        return self.sink._post(self._body, headers)

    def done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            logger.warning("alert %s not delivered to %s: %s", self.describe(), self.sink._where, outcome.reason)
