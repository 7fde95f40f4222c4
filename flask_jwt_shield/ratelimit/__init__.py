"""Per-token rate limits, spike detection and adaptive per-session baselines (re-exports only).

The rate step of the request pipeline (DESIGN.md, step 6), one job per module:
:mod:`.syntax` (limit strings), :mod:`.limiter` (:class:`TokenRateLimiter`),
:mod:`.adaptive` (the baseline rule and its Lua twin), :mod:`.storage` (storages and their
errors), :mod:`.decision` (what a check decides), :mod:`.leases` (the leased mode: counters
kept in the process, settled with Redis in the background).
"""

from __future__ import annotations

from .adaptive import AdaptiveSettings
from .decision import AnomalyReport
from .decision import RateDecision
from .decision import SpikeReport
from .endpoint import KeyedLimit
from .limiter import TokenRateLimiter
from .storage import LimiterStorageError
from .syntax import default_spike_threshold
from .syntax import parse_limits
from .syntax import scale_limit_string
from .syntax import validate_limit_string

__all__ = [
    "AdaptiveSettings",
    "AnomalyReport",
    "KeyedLimit",
    "LimiterStorageError",
    "RateDecision",
    "SpikeReport",
    "TokenRateLimiter",
    "default_spike_threshold",
    "parse_limits",
    "scale_limit_string",
    "validate_limit_string",
]
