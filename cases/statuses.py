"""A case's statuses and the one table of moves between them."""
from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from .errors import CaseTransitionError


class CaseStatus(StrEnum):
    """Where a case is in its life."""

    NEW = "new"  # being collected in the IVR
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"  # an agent has it
    ABANDONED_IN_IVR = "abandoned_in_ivr"
    ABANDONED_IN_QUEUE = "abandoned_in_queue"
    # The hotline failed during the call (the bridge died, the IVR crashed): not the caller's doing, so it is not
    # counted as the caller giving up; a supervisor follows it up.
    INTERRUPTED = "interrupted"
    OPEN = "open"  # after the call, awaiting dispatch
    CLOSED = "closed"


class TranscriptStatus(StrEnum):
    """Whether the caller's recorded description has been transcribed."""

    NONE = "none"
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


_S = CaseStatus

# Every move a case may make; anything else is refused with CaseTransitionError.
ALLOWED_TRANSITIONS: Mapping[CaseStatus, frozenset[CaseStatus]] = {
    _S.NEW: frozenset({
        _S.QUEUED,
        # An agent answers or the caller leaves the queue without the join having been seen (the bridge was
        # reconnecting to Asterisk while the caller joined).
        _S.IN_PROGRESS,
        _S.ABANDONED_IN_QUEUE,
        _S.ABANDONED_IN_IVR,
        _S.INTERRUPTED,
        _S.OPEN,  # the call ended past the IVR without a queue (a transfer)
    }),
    _S.QUEUED: frozenset({
        _S.QUEUED,  # back in line: overflow to another queue, or a callback asked for too early
        _S.IN_PROGRESS,
        _S.ABANDONED_IN_QUEUE,
        _S.OPEN,  # the caller left the line keeping the case (a callback booked, a description recorded)
    }),
    _S.IN_PROGRESS: frozenset({
        _S.IN_PROGRESS,  # handed on to another agent
        _S.QUEUED,  # the agent put the caller back in a queue
        _S.OPEN,
    }),
    _S.OPEN: frozenset({_S.CLOSED}),
    _S.ABANDONED_IN_IVR: frozenset(),
    _S.ABANDONED_IN_QUEUE: frozenset(),
    _S.INTERRUPTED: frozenset({_S.CLOSED}),  # closed once a supervisor has followed it up
    _S.CLOSED: frozenset(),
}

# The statuses of a case someone is still working on (a repeat caller's earlier case, say).
BEING_WORKED_ON: frozenset[CaseStatus] = frozenset({_S.QUEUED, _S.IN_PROGRESS, _S.OPEN})


def can_move(current: CaseStatus, target: CaseStatus) -> bool:
    """True if the table lets a case go from current to target."""
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(case_number: str, current: CaseStatus, target: CaseStatus) -> None:
    """Refuse a move the table does not allow (CaseTransitionError naming both statuses)."""
    if not can_move(current, target):
        raise CaseTransitionError(case_number, current.value, target.value)
