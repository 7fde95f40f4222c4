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

import atexit
import base64
import dataclasses
import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import random
import re
import socket
import ssl
import threading
import time
import typing as t
import urllib.parse
import weakref
from collections.abc import Mapping

from .config import AlertSettings
from .masking import mask_url

logger = logging.getLogger("flask_jwt_shield")

#: The request headers of an alert POST.
SIGNATURE_HEADER = "X-JWT-Shield-Signature"
TIMESTAMP_HEADER = "X-JWT-Shield-Timestamp"
DELIVERY_HEADER = "X-JWT-Shield-Delivery"
EVENT_HEADER = "X-JWT-Shield-Event"

#: A retry waits at most this long, however many retries came before.
MAX_RETRY_DELAY = 300.0
# Drops are logged at once, then at most once per this many seconds (with the count since).
_DROP_LOG_INTERVAL = 60.0
# What is read of a receiver's answer: the status matters, the body is discarded.
_MAX_RESPONSE_BYTES = 65536
#: The longest string an alert carries: a longer one (a User-Agent, a ``detail`` that a client
#: can fill) is cut to this many characters, after redaction, and marked with how much was cut.
MAX_STRING_LENGTH = 4096
# A run of base64url characters and dots: where a compact JWS or JWE can be. Matching runs is
# linear (each character is looked at once); the token inside a run is found by splitting it.
_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_REDACTED = "[redacted token]"
_STOP = object()


@dataclasses.dataclass(frozen=True, slots=True)
class AlertStats:
    """What one process's alert sink has done since it started (or since its ``fork``)."""

    #: alerts waiting in the queue now (including the one being sent)
    queued: int
    #: alerts the receiver accepted (a 2xx answer)
    delivered: int
    #: alerts given up on: every attempt failed, or the receiver refused the payload (4xx)
    failed: int
    #: alerts that found the queue full and were never sent
    dropped: int
    #: attempts after the first, over all alerts
    retries: int


class _Outcome(t.NamedTuple):
    ok: bool
    retry: bool
    reason: str
    retry_after: float | None = None


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
    for the queue to empty.
    """

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.kinds = settings.events
        parts = urllib.parse.urlsplit(settings.webhook)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        self._where = mask_url(settings.webhook, keep_path=False)
        self._ssl = ssl.create_default_context() if self._https else None
        self._source = {"host": socket.gethostname()}
        self._start()
        _SINKS.add(self)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart(ref))

    def _start(self) -> None:
        """Fresh per-process state: in ``__init__`` and in a child right after ``fork``.

        A child inherits neither the parent's thread nor a usable copy of its locks, and the
        alerts still queued in the parent are the parent's to send.
        """
        self._pid = os.getpid()
        self._queue: queue.Queue[t.Any] = queue.Queue(self.settings.queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._delivered = self._failed = self._dropped = self._retries = 0
        self._dropped_unlogged = 0
        self._last_drop_log = -_DROP_LOG_INTERVAL

    # -- the request side ------------------------------------------------------------------

    def submit(self, app_name: str, event: Mapping[str, t.Any]) -> bool:
        """Queue ``event`` (a :meth:`SecurityEvent.to_dict` dict) if its kind is alerted on.

        Never blocks and never raises for the receiver's sake. Returns whether it was
        queued; ``False`` for another kind, after :meth:`close`, or when the queue is full
        (the drop is counted and logged).
        """
        if event.get("kind") not in self.kinds or self._stopping.is_set():
            return False
        if self._thread is None:
            self._spawn()
        try:
            self._queue.put_nowait((app_name, event))
        except queue.Full:
            self._count_drop(event)
            return False
        return True

    def _spawn(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._work, args=(self._queue,), name="jwt-shield-alerts", daemon=True)
                thread.start()
                self._thread = thread

    def _count_drop(self, event: Mapping[str, t.Any]) -> None:
        now = time.monotonic()
        with self._lock:
            self._dropped += 1
            self._dropped_unlogged += 1
            if now - self._last_drop_log < _DROP_LOG_INTERVAL:
                return
            count, self._dropped_unlogged, self._last_drop_log = self._dropped_unlogged, 0, now
        logger.warning(
            "alert queue full (%d alerts waiting for %s): dropped %d alert(s), the last one %s %s;"
            " %d dropped in this process so far",
            self.settings.queue_size,
            self._where,
            count,
            event.get("kind"),
            event.get("id"),
            self._dropped,
        )

    # -- reading -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Alerts dropped in this process because the queue was full."""
        return self._dropped

    def stats(self) -> AlertStats:
        """This process's counters."""
        return AlertStats(
            queued=self._queue.unfinished_tasks,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            retries=self._retries,
        )

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every queued alert to be delivered or given up.

        Returns whether the queue is empty.
        """
        end = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking alerts and stop the worker (after the alert in flight, bounded)."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker sees the stop flag after the current alert
        thread.join(timeout)

    # -- the worker thread ----------------------------------------------------------------

    def _work(self, jobs: queue.Queue[t.Any]) -> None:
        while not self._stopping.is_set():
            job = jobs.get()
            try:
                if job is not _STOP:
                    app_name, event = job
                    self._deliver(app_name, event)
            except Exception:  # the worker must outlive any bug in one delivery
                self._failed += 1
                logger.exception("alert worker: unexpected error, alert given up (the worker keeps running)")
            finally:
                jobs.task_done()
        # Closed: what is left is discarded, not sent (close() could not always queue _STOP).
        while True:
            try:
                jobs.get_nowait()
            except queue.Empty:
                return
            jobs.task_done()

    def _deliver(self, app_name: str, event: Mapping[str, t.Any]) -> None:
        payload = {
            "type": "alert",
            "app": app_name,
            "source": {**self._source, "pid": os.getpid()},
            "event": redact(event),
        }
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        headers = {EVENT_HEADER: str(event.get("kind")), DELIVERY_HEADER: str(event.get("id"))}
        delay = self.settings.retry_delay
        attempts = self.settings.retries + 1
        outcome = _Outcome(False, False, "not sent")
        for attempt in range(attempts):
            if attempt:
                self._retries += 1
            outcome = self._post(body, headers)
            if outcome.ok:
                self._delivered += 1
                return
            if not outcome.retry or attempt == attempts - 1:
                break
            wait = delay if outcome.retry_after is None else max(delay, outcome.retry_after)
            # Jitter: many workers that lost the same receiver do not come back in step.
            if self._stopping.wait(min(MAX_RETRY_DELAY, wait) * random.uniform(0.8, 1.0)):  # noqa: S311
                break
            delay = min(MAX_RETRY_DELAY, delay * 2)
        self._failed += 1
        logger.warning(
            "alert %s %s not delivered to %s: %s", event.get("kind"), event.get("id"), self._where, outcome.reason
        )

    def _post(self, body: bytes, headers: Mapping[str, str]) -> _Outcome:
        """One POST of ``body``, signed when a secret is set. Never raises.

        ``JWT_SHIELD_ALERT_TIMEOUT`` bounds each network operation (connect, send, each
        read), so a receiver that accepts and never answers costs one timeout per attempt.
        """
        timestamp = str(int(time.time()))
        sent = {
            "Content-Type": "application/json",
            "User-Agent": "Flask-JWT-Shield-Alerts",
            TIMESTAMP_HEADER: timestamp,
            **headers,
        }
        if self.settings.secret is not None:
            sent[SIGNATURE_HEADER] = sign(self.settings.secret, timestamp, body)
        if self._auth is not None:
            sent["Authorization"] = self._auth
        conn: http.client.HTTPConnection
        timeout = self.settings.timeout
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.request("POST", self._path, body=body, headers=sent)
            response = conn.getresponse()
            response.read(_MAX_RESPONSE_BYTES)
            status = response.status
            retry_after = _retry_after(response.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, TLS
            return _Outcome(False, True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            conn.close()
        if 200 <= status < 300:
            return _Outcome(True, False, str(status))
        # 3xx: redirects are not followed, so the payload never goes where it was not sent.
        retry = status in (408, 425, 429) or status >= 500
        return _Outcome(False, retry, f"HTTP {status}", retry_after if retry else None)

    def ping(self, app_name: str) -> str | None:
        """Send one ``{"type": "ping"}`` POST now, in this thread; the error, or ``None``."""
        payload = {"type": "ping", "app": app_name, "source": {**self._source, "pid": os.getpid()}, "event": None}
        body = json.dumps(payload, sort_keys=True).encode()
        outcome = self._post(body, {EVENT_HEADER: "ping", DELIVERY_HEADER: "ping"})
        return None if outcome.ok else outcome.reason


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: the doubling delay will do
    return seconds if 0 <= seconds <= MAX_RETRY_DELAY else None


def _restart(ref: weakref.ReferenceType[AlertSink]) -> None:
    sink = ref()
    if sink is not None:
        sink._start()


_SINKS: weakref.WeakSet[AlertSink] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # Alerts queued just before a normal exit (a worker restart, a deploy) get two seconds
    # in all; a hung receiver must not hold up a shutdown.
    end = time.monotonic() + 2.0
    for sink in list(_SINKS):
        if sink._pid == os.getpid() and sink._thread is not None and not sink._stopping.is_set():
            sink.flush(max(0.0, end - time.monotonic()))
