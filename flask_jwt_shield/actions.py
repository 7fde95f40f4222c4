"""The action ladder: what a detector may ask for, and :class:`Finding`, what it reports.

A leaf: detectors (geo, rate limiting) build findings, the pipeline applies their actions.
Neither side imports the other.
"""

from __future__ import annotations

import dataclasses
import typing as t

#: The detectors' answers, weakest first (DESIGN.md "the action ladder"). ``step_up``
#: (RFC 9470) sits below ``deny``: it refuses the request only when the token's
#: authentication is too old or too weak, so a token issued just after a login passes it,
#: while ``deny`` refuses every such request whatever the token.
Action = t.Literal["flag", "step_up", "deny", "revoke", "revoke_family", "revoke_subject"]

#: :data:`Action` in ladder order.
ACTIONS: tuple[Action, ...] = t.get_args(Action)

#: The event kinds a detector reports: a part of :data:`~flask_jwt_shield.signals.EventKind`
#: (spelt out here so that this module stays a leaf; a test checks the two agree).
FindingKind = t.Literal[
    "traffic-spike",
    "traffic-anomaly",
    "new-country",
    "country-changed",
    "impossible-travel",
    "country-denied",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A detector's verdict: the event ``kind``, the configured ``action`` and what to say."""

    kind: FindingKind
    action: Action
    description: str
    country: str | None = None
    detail: dict[str, t.Any] = dataclasses.field(default_factory=dict)
