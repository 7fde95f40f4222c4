"""What one rate check decides: allowed or not, the window's figures, the detectors' reports."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem

from .syntax import format_limit

__all__ = ["AnomalyReport", "RateDecision", "SpikeReport", "WindowSource"]

#: A limit with the key parts it is counted under.
Target = tuple[RateLimitItem, tuple[str, ...]]


class WindowSource(Protocol):
    """Reads the window statistics of an allowed request on demand (the limiter)."""

    def tightest_window(self, targets: tuple[Target, ...]) -> tuple[RateLimitItem, int, float]:
        """The binding limit among ``targets``: (item, requests left, epoch of its reset)."""
        ...


@dataclass(frozen=True, slots=True)
class SpikeReport:
    """The spike threshold was crossed; reported once per window of the crossed limit.

    ``count`` attempts (rejected ones included) arrived within ``window`` seconds; the window
    opened ``elapsed`` seconds before the crossing attempt, so ``count / elapsed`` is the
    observed rate. ``threshold`` is the crossed limit.
    """

    identity: str
    threshold: RateLimitItem
    count: int
    window: int
    elapsed: float
    #: True for the sustained form: ``count`` distinct minutes with refused attempts
    #: within ``window`` seconds, ``threshold`` being the ``spike_sustain`` setting.
    sustained: bool = False

    def as_detail(self) -> dict[str, object]:
        """The observed rate as a JSON-ready dict for a ``traffic-spike`` event's detail."""
        if self.sustained:
            return {
                "pattern": "sustained",
                "sustain": f"{self.threshold.amount}/{self.window} seconds",
                "refused_minutes": self.count,
                "window_seconds": self.window,
            }
        return {
            "threshold": format_limit(self.threshold, self.threshold.amount),
            "count": self.count,
            "window_seconds": self.window,
            "elapsed_seconds": round(self.elapsed, 3),
        }


@dataclass(frozen=True, slots=True)
class AnomalyReport:
    """A session's rate is above ``factor`` x its baseline and above the floor -- or, the
    second signal (``scope == "subject"``), only its subject's total is.

    Reported at most once per bucket. ``count`` requests of the session arrived in the
    current bucket of ``bucket_seconds``; ``baseline`` is what that count was compared with:
    the session's learned requests per bucket, or during its warm-up (``warmup``) the cap
    its subject's view sets. ``subject_count`` and ``subject_baseline`` are the subject's
    total and learned rate. ``floor`` is the floor scaled to one bucket.
    """

    subject: str
    count: int
    bucket_seconds: int
    baseline: float
    factor: float
    floor: float
    #: anomalous buckets of this session within the sustain span, this one included
    anomalous_buckets: int = 1
    #: True once ``anomalous_buckets`` reached the ``sustain`` count: apply the action
    sustained: bool = True
    #: the session (``sid``, or the ``jti`` of a token without one) whose traffic it is
    session: str | None = None
    #: "session": that session's traffic is anomalous (the action lands on it);
    #: "subject": only the subject's total is (recorded, never acted upon)
    scope: str = "session"
    #: True while the session is still learning its own pace
    warmup: bool = False
    subject_count: int = 0
    subject_baseline: float = 0.0

    def as_detail(self) -> dict[str, object]:
        """The observed and normal rate as a JSON-ready dict for a ``traffic-anomaly`` event."""
        if self.scope == "subject":
            return {
                "scope": "subject",
                "count": self.subject_count,
                "bucket_seconds": self.bucket_seconds,
                "baseline": round(self.subject_baseline, 3),
                "factor": self.factor,
                "floor": self.floor,
                "sustained": False,
            }
        return {
            "scope": "session",
            "count": self.count,
            "bucket_seconds": self.bucket_seconds,
            "baseline": round(self.baseline, 3),
            "warmup": self.warmup,
            "factor": self.factor,
            "floor": self.floor,
            "subject_count": self.subject_count,
            "subject_baseline": round(self.subject_baseline, 3),
            "anomalous_buckets": self.anomalous_buckets,
            "sustained": self.sustained,
        }


class RateDecision:
    """The outcome of one :meth:`TokenRateLimiter.check`.

    ``allowed`` is False when a limit is exceeded. ``spike`` and ``anomaly`` are set on the
    one attempt that crossed a detector's threshold in its window or bucket, whether or not
    the request is allowed.

    The window statistics (:attr:`limit`, :attr:`remaining`, :attr:`reset_at`) of a refused
    request are read during the check. Those of an allowed request are read from the storage
    on first access only (one more storage read per limit), so a pipeline that sends no
    headers on success pays nothing for them; that first access may raise
    :class:`LimiterStorageError`.
    """

    __slots__ = ("_limiter", "_stats", "_targets", "allowed", "anomaly", "exempt", "spike")

    # By position on the request path (about half the cost of keywords), by keyword elsewhere.
    def __init__(
        self,
        allowed: bool,
        exempt: bool = False,
        spike: SpikeReport | None = None,
        anomaly: AnomalyReport | None = None,
        stats: tuple[RateLimitItem, int, float] | None = None,
        limiter: WindowSource | None = None,
        targets: tuple[Target, ...] = (),
    ) -> None:
        #: False when a limit is exceeded: answer 429
        self.allowed = allowed
        #: True when the endpoint is exempt from per-token limits (or none are configured)
        self.exempt = exempt
        #: set on the attempt that crossed the spike threshold
        self.spike = spike
        #: set on the attempt that crossed the adaptive baseline
        self.anomaly = anomaly
        self._stats = stats
        self._limiter = limiter
        self._targets = targets

    def _window(self) -> tuple[RateLimitItem, int, float] | None:
        if self._stats is None and self._limiter is not None and self._targets:
            self._stats = self._limiter.tightest_window(self._targets)
        return self._stats

    @property
    def limit(self) -> RateLimitItem | None:
        """The binding limit: the exceeded one, else the one with the fewest requests left."""
        window = self._window()
        return None if window is None else window[0]

    @property
    def remaining(self) -> int | None:
        """Requests left in the binding limit's window (0 when refused)."""
        window = self._window()
        return None if window is None else window[1]

    @property
    def reset_at(self) -> float | None:
        """Epoch seconds at which the binding limit's window resets."""
        window = self._window()
        return None if window is None else window[2]

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before retrying: at least 1 when refused, 0 when allowed."""
        if self.allowed:
            return 0
        reset_at = self.reset_at
        assert reset_at is not None  # a refusal always carries its window
        return max(1, math.ceil(reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (+ ``Retry-After``).

        ``RateLimit-Reset`` is in seconds from now, as in the IETF draft that defines these
        three fields (draft-ietf-httpapi-ratelimit-headers-07); ``Retry-After`` is only
        present when the request is refused. Empty for an exempt request.
        """
        window = self._window()
        if window is None:
            return {}
        item, remaining, reset_at = window
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(max(0, math.ceil(reset_at - time.time()))),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def __repr__(self) -> str:
        return (
            f"RateDecision(allowed={self.allowed}, exempt={self.exempt},"
            f" spike={self.spike!r}, anomaly={self.anomaly!r})"
        )
