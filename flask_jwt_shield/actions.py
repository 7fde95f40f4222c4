"""The action ladder: what a detector may ask for, and :class:`Finding`, what it reports.

A leaf: detectors (geo, rate limiting) build findings, the pipeline applies their actions.
Neither side imports the other.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .signals import EventKind

#: The detectors' answers, weakest first (DESIGN.md "the action ladder").
Action = t.Literal["flag", "deny", "revoke", "revoke_family", "revoke_subject"]

#: :data:`Action` in ladder order.
ACTIONS: tuple[Action, ...] = t.get_args(Action)


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A detector's verdict: the event ``kind``, the configured ``action`` and what to say."""

    kind: EventKind
    action: Action
    description: str
    country: str | None = None
    detail: dict[str, t.Any] = dataclasses.field(default_factory=dict)
