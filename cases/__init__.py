"""The case domain: citizens' cases, their statuses and allowed moves, and each case's history of events (no
knowledge of calls or telephony)."""
from .durable import (
    DurableCases,
    OpenedCase,
    is_provisional,
    normalise_caller_number,
    normalise_menu_path,
    resolve_case_number,
)
from .errors import CaseNotFound, CaseStoreError, CaseTransitionError
from .events import ACTOR_IVR, ACTOR_SYSTEM, CaseEvent, CaseEventKind
from .model import Case, NewCase
from .statuses import (
    ALLOWED_TRANSITIONS,
    CaseStatus,
    TranscriptStatus,
    can_move,
    check_transition,
)
from .store import CaseStore

__all__ = [
    "ACTOR_IVR",
    "ACTOR_SYSTEM",
    "ALLOWED_TRANSITIONS",
    "Case",
    "CaseEvent",
    "CaseEventKind",
    "CaseNotFound",
    "CaseStatus",
    "CaseStore",
    "CaseStoreError",
    "CaseTransitionError",
    "DurableCases",
    "NewCase",
    "OpenedCase",
    "TranscriptStatus",
    "can_move",
    "check_transition",
    "is_provisional",
    "normalise_caller_number",
    "normalise_menu_path",
    "resolve_case_number",
]
