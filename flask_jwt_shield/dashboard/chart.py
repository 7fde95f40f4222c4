"""The events-per-hour chart: stacked bars by kind, drawn as SVG on the server.

No script and no external asset: the page's Content-Security-Policy allows none. Colours are
SVG presentation attributes (not ``style``), which that policy permits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import typing as t
from collections import Counter

from ..events import SecurityEvent

#: Kinds in the order they are stacked (bottom first) and their colours; alerts are warm.
PALETTE: dict[str, str] = {
    "session-started": "#8fb8de",
    "token-refreshed": "#b7d3ea",
    "token-rejected": "#f2c14e",
    "rate-limited": "#f29e4c",
    "family-revoked": "#9b7fd1",
    "token-revoked": "#b9a3e3",
    "subject-revoked": "#7a5cc2",
    "key-revoked": "#5b3fa6",
    "new-country": "#e0685a",
    "country-changed": "#ec8f83",
    "impossible-travel": "#c0392b",
    "country-denied": "#a93226",
    "refresh-reused": "#d35400",
    "traffic-spike": "#e67e22",
    "traffic-anomaly": "#f5a05a",
    "dpop-rejected": "#b03a6f",
    "store-unavailable": "#4d5560",
    "jwks-unavailable": "#6b7480",
    "status-list-unavailable": "#858d99",
}
OTHER = "#c5cad1"

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 28


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, label (hours)
    grid: list[tuple[float, str]]  # y, label (counts)
    legend: list[tuple[str, str, int]]  # kind, colour, total
    total: int
    hours: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom


def hourly(events: t.Iterable[SecurityEvent], *, now: float, hours: int = 24) -> Chart:
    """Count ``events`` per UTC hour for the last ``hours`` hours (the current one last)."""
    end_hour = math.floor(now / 3600) + 1  # the hour after the current one starts
    start = (end_hour - hours) * 3600
    counts: list[Counter[str]] = [Counter() for _ in range(hours)]
    for e in events:
        slot = math.floor((e.at - start) / 3600)
        if 0 <= slot < hours:
            counts[slot][e.kind] += 1
    totals: Counter[str] = Counter()
    for c in counts:
        totals.update(c)
    order = [k for k in PALETTE if totals[k]] + sorted(k for k in totals if k not in PALETTE)
    peak = max((sum(c.values()) for c in counts), default=0)
    scale_max = _nice(peak)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot_w = plot_w / hours
    bars: list[Bar] = []
    for i, c in enumerate(counts):
        y = float(HEIGHT - BOTTOM)
        label = _hour_label(start + i * 3600)
        for kind in order:
            n = c[kind]
            if not n:
                continue
            h = plot_h * n / scale_max
            y -= h
            bars.append(
                Bar(
                    x=round(LEFT + i * slot_w + 2, 1),
                    y=round(y, 1),
                    width=round(slot_w - 4, 1),
                    height=round(h, 1),
                    colour=PALETTE.get(kind, OTHER),
                    title=f"{label} UTC: {n} {kind}",
                )
            )
    ticks = [(round(LEFT + i * slot_w + slot_w / 2, 1), _hour_label(start + i * 3600)) for i in range(0, hours, 3)]
    grid = [(round(HEIGHT - BOTTOM - plot_h * v / scale_max, 1), str(v)) for v in (0, scale_max // 2, scale_max)]
    legend = [(k, PALETTE.get(k, OTHER), totals[k]) for k in order]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        ticks=ticks,
        grid=grid,
        legend=legend,
        total=sum(totals.values()),
        hours=hours,
        plot=(LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM),
    )


def _nice(peak: int) -> int:
    """The axis maximum: the first of 1, 2, 4, 6, 8, 10 times a power of ten at or above
    ``peak`` (at least 2, so the half-way line is a whole number)."""
    if peak <= 2:
        return 2
    magnitude: int = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 4, 6, 8):
        if step * magnitude >= peak and step * magnitude % 2 == 0:
            return step * magnitude
    return 10 * magnitude


def _hour_label(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:00")
