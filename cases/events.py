"""The case's history: one append-only event per change, who made it and what it carried."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import CaseStoreError

# Who changes a case: a console user (their username), the IVR, or the hotline itself.
ACTOR_IVR = "ivr"
ACTOR_SYSTEM = "system"
_MAX_ACTOR = 64


class CaseEventKind(StrEnum):
    """What happened to a case (one per named operation of CaseStore)."""

    OPENED = "opened"
    CLASSIFIED = "classified"
    MENU_PATH_RECORDED = "menu_path_recorded"
    RECORDING_ATTACHED = "recording_attached"
    RECORDING_DROPPED = "recording_dropped"
    TRANSCRIPT_PENDING = "transcript_pending"
    TRANSCRIPT_RECORDED = "transcript_recorded"
    TRANSCRIPT_FAILED = "transcript_failed"
    NOTE = "note"
    QUEUED = "queued"
    AGENT_ASSIGNED = "agent_assigned"
    ABANDONED_IN_QUEUE = "abandoned_in_queue"
    ABANDONED_IN_IVR = "abandoned_in_ivr"
    INTERRUPTED = "interrupted"
    CALL_ENDED = "call_ended"
    CLOSED = "closed"


@dataclass(frozen=True)
class CaseEvent:
    """One stored change of a case (events are never changed or removed)."""

    id: int
    case_number: str
    at: datetime
    actor: str
    kind: CaseEventKind
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: the kind as its value, the time as an ISO 8601 string."""
        return {
            "id": self.id,
            "case_number": self.case_number,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "kind": self.kind.value,
            "data": dict(self.data),
        }


def check_actor(value: Any) -> str:
    """An actor is a username, 'ivr' or 'system': a short printable string without spaces."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ACTOR or not value.isprintable() \
            or any(c.isspace() for c in value):
        raise CaseStoreError(f"actor must be a username, {ACTOR_IVR!r} or {ACTOR_SYSTEM!r}; got {value!r}")
    return value
