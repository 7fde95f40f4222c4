"""The typed vocabularies (``Literal``s) name exactly what the code uses at run time."""

from __future__ import annotations

import typing as t

from flask_jwt_shield import signals
from flask_jwt_shield.actions import ACTIONS
from flask_jwt_shield.actions import FindingKind
from flask_jwt_shield.events import KINDS


def test_event_kinds_are_the_signals() -> None:
    assert set(t.get_args(signals.EventKind)) == set(signals.BY_KIND) == set(KINDS)
    assert len(t.get_args(signals.EventKind)) == len(signals.BY_KIND)
    assert all(signals.BY_KIND[kind].name == kind for kind in signals.BY_KIND)


def test_finding_kinds_are_event_kinds() -> None:
    assert set(t.get_args(FindingKind)) <= set(t.get_args(signals.EventKind))


def test_actions_are_the_ladder() -> None:
    assert ACTIONS == ("flag", "step_up", "deny", "revoke", "revoke_family", "revoke_subject")
