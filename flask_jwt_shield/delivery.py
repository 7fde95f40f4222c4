"""Outbound delivery off the request path: one bounded queue and one worker thread per
process, POSTs with retries and exponential backoff that honour ``Retry-After``, and drops
that are counted and logged, never silent.

Two users share it: the webhook alert sink (:mod:`.alerts`) and the Shared Signals
transmitter (:mod:`.ssf.transmitter`). Each hands :meth:`Courier.submit` a :class:`Job`
(what to send, where, and what to do when it is delivered or given up); ``submit`` only
puts it in the queue and returns, so nothing on the request path waits on the network. A
slow, hung, refusing or vanished receiver therefore costs requests nothing; while it is
away the queue fills, and jobs that find it full are dropped and counted
(:meth:`Courier.stats`).

The worker starts at the first job and again in a child after ``fork`` (every gunicorn
worker sends its own); the jobs still queued in the parent are the parent's to send.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import http.client
import logging
import os
import queue
import random
import ssl
import threading
import time
import typing as t
import urllib.parse
import weakref
from collections.abc import Mapping

from .masking import mask_url

logger = logging.getLogger("flask_jwt_shield")

#: A retry waits at most this long, however many retries came before.
MAX_RETRY_DELAY = 300.0
# Drops are logged at once, then at most once per this many seconds (with the count since).
_DROP_LOG_INTERVAL = 60.0
# What is read of a receiver's answer: the status matters, the body is discarded.
_MAX_RESPONSE_BYTES = 65536
_STOP = object()


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryStats:
    """What one process's queue has done since it started (or since its ``fork``)."""

    #: jobs waiting in the queue now (including the one being sent)
    queued: int
    #: jobs the receiver accepted (a 2xx answer)
    delivered: int
    #: jobs given up on: every attempt failed, or the receiver refused the payload (4xx)
    failed: int
    #: jobs that found the queue full and were never sent
    dropped: int
    #: attempts after the first, over all jobs
    retries: int


class Outcome(t.NamedTuple):
    """How one attempt ended. ``retry``: worth trying again (network error, 408, 425, 429,
    5xx); ``retry_after``: seconds the receiver asked for, if any."""

    ok: bool
    retry: bool
    reason: str
    retry_after: float | None = None


class Job(t.Protocol):
    """One delivery: :meth:`attempt` is called until it succeeds, says not to retry, or the
    retries are spent; then :meth:`done` once, with the last outcome."""

    def attempt(self) -> Outcome: ...

    def done(self, outcome: Outcome) -> None: ...

    def describe(self) -> str:
        """Names the job in log lines (``"alert token-revoked 1f3a…"``); never a token."""
        ...


class Endpoint:
    """One receiver URL, POSTed to over HTTP(S) with bounded waits. Redirects are not
    followed, so a payload never goes where it was not sent. Credentials in the URL's
    user-info become HTTP Basic authentication."""

    def __init__(self, url: str, *, timeout: float, user_agent: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.timeout = timeout
        self.user_agent = user_agent
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        #: The URL as logs may show it (no user-info, no path: either may hold a secret).
        self.where = mask_url(url, keep_path=False)
        self._ssl = ssl.create_default_context() if self._https else None

    def post(self, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """One POST of ``body``. Never raises.

        ``timeout`` bounds each network operation (connect, send, each read), so a receiver
        that accepts and never answers costs one timeout per attempt.
        """
        sent = {"User-Agent": self.user_agent, **headers}
        if self._auth is not None and "Authorization" not in sent:
            sent["Authorization"] = self._auth
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.request("POST", self._path, body=body, headers=sent)
            response = conn.getresponse()
            response.read(_MAX_RESPONSE_BYTES)
            status = response.status
            retry_after = retry_after_seconds(response.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, TLS
            return Outcome(False, True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            conn.close()
        if 200 <= status < 300:
            return Outcome(True, False, str(status))
        # 3xx: redirects are not followed, so the payload never goes where it was not sent.
        retry = status in (408, 425, 429) or status >= 500
        return Outcome(False, retry, f"HTTP {status}", retry_after if retry else None)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds; ``None`` for an HTTP date or nonsense (the
    doubling delay does then)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_DELAY else None


class Courier:
    """A bounded queue and its worker thread, in one process. Safe to call from any thread.

    :param name: what the jobs are (``"alert"``), for thread names and log lines.
    :param queue_size: jobs waiting at most; more are dropped and counted.
    :param retries: attempts after the first.
    :param retry_delay: seconds before the first retry, doubled for each further one
        (capped at :data:`MAX_RETRY_DELAY`), or the receiver's ``Retry-After`` if longer.
    """

    def __init__(self, *, name: str, queue_size: int, retries: int, retry_delay: float) -> None:
        self.name = name
        self.queue_size = queue_size
        self.retries = retries
        self.retry_delay = retry_delay
        self._start()
        _COURIERS.add(self)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart(ref))

    def _start(self) -> None:
        """Fresh per-process state: in ``__init__`` and in a child right after ``fork``.

        A child inherits neither the parent's thread nor a usable copy of its locks, and the
        jobs still queued in the parent are the parent's to send.
        """
        self._pid = os.getpid()
        self._queue: queue.Queue[t.Any] = queue.Queue(self.queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._delivered = self._failed = self._dropped = self._retries = 0
        self._dropped_unlogged = 0
        self._last_drop_log = -_DROP_LOG_INTERVAL

    @property
    def closed(self) -> bool:
        return self._stopping.is_set()

    # -- the request side ------------------------------------------------------------------

    def submit(self, job: Job, *, where: str = "") -> bool:
        """Queue ``job``. Never blocks and never raises for the receiver's sake. Returns
        whether it was queued; ``False`` after :meth:`close` or when the queue is full (the
        drop is counted and logged; ``where`` names the receiver in that line)."""
        if self._stopping.is_set():
            return False
        if self._thread is None:
            self._spawn()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count_drop(job, where)
            return False
        return True

    def _spawn(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._work, args=(self._queue,), name=f"jwt-shield-{self.name}s", daemon=True
                )
                thread.start()
                self._thread = thread

    def _count_drop(self, job: Job, where: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._dropped += 1
            self._dropped_unlogged += 1
            if now - self._last_drop_log < _DROP_LOG_INTERVAL:
                return
            count, self._dropped_unlogged, self._last_drop_log = self._dropped_unlogged, 0, now
        logger.warning(
            "%s queue full (%d %ss waiting for %s): dropped %d %s(s), the last one %s;"
            " %d dropped in this process so far",
            self.name,
            self.queue_size,
            self.name,
            where or "the receiver",
            count,
            self.name,
            job.describe(),
            self._dropped,
        )

    # -- reading -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Jobs dropped in this process because the queue was full."""
        return self._dropped

    def stats(self) -> DeliveryStats:
        """This process's counters."""
        return DeliveryStats(
            queued=self._queue.unfinished_tasks,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            retries=self._retries,
        )

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every queued job to be delivered or given up.

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
        """Stop taking jobs and stop the worker (after the job in flight, bounded)."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker sees the stop flag after the current job
        thread.join(timeout)

    # -- the worker thread ----------------------------------------------------------------

    def _work(self, jobs: queue.Queue[t.Any]) -> None:
        while not self._stopping.is_set():
            job = jobs.get()
            try:
                if job is not _STOP:
                    self._deliver(job)
            except Exception:  # the worker must outlive any bug in one delivery
                self._failed += 1
                logger.exception("%s worker: unexpected error, job given up (the worker keeps running)", self.name)
            finally:
                jobs.task_done()
        # Closed: what is left is discarded, not sent (close() could not always queue _STOP).
        while True:
            try:
                jobs.get_nowait()
            except queue.Empty:
                return
            jobs.task_done()

    def _deliver(self, job: Job) -> None:
        delay = self.retry_delay
        attempts = self.retries + 1
        outcome = Outcome(False, False, "not sent")
        for attempt in range(attempts):
            if attempt:
                self._retries += 1
            outcome = job.attempt()
            if outcome.ok:
                self._delivered += 1
                job.done(outcome)
                return
            if not outcome.retry or attempt == attempts - 1:
                break
            wait = delay if outcome.retry_after is None else max(delay, outcome.retry_after)
            # Jitter: many workers that lost the same receiver do not come back in step.
            if self._stopping.wait(min(MAX_RETRY_DELAY, wait) * random.uniform(0.8, 1.0)):  # noqa: S311
                break
            delay = min(MAX_RETRY_DELAY, delay * 2)
        self._failed += 1
        job.done(outcome)


def _restart(ref: weakref.ReferenceType[Courier]) -> None:
    courier = ref()
    if courier is not None:
        courier._start()


_COURIERS: weakref.WeakSet[Courier] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # Jobs queued just before a normal exit (a worker restart, a deploy) get two seconds in
    # all; a hung receiver must not hold up a shutdown.
    end = time.monotonic() + 2.0
    for courier in list(_COURIERS):
        if courier._pid == os.getpid() and courier._thread is not None and not courier._stopping.is_set():
            courier.flush(max(0.0, end - time.monotonic()))
