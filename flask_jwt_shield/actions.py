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


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A detector's verdict: the event ``kind``, the configured ``action`` and what to say."""

    kind: str
    action: str
    description: str
    country: str | None = None
    detail: dict[str, t.Any] = dataclasses.field(default_factory=dict)
