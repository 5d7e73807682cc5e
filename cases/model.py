"""Case value types and input checks: what callers of the case store see."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import CaseStoreError
from .statuses import CaseStatus, TranscriptStatus

_CATEGORY = re.compile(r"^[a-z][a-z_]{0,31}$")
_MAX_SHORT = 64
_MAX_SOURCE_REF = 255
_MAX_MENU_STEPS = 32
# What a case holds of a call: the caller ID and each menu step at most this long, at most this many steps.
MAX_CALLER_NUMBER = _MAX_SHORT
MAX_MENU_STEP = _MAX_SHORT
MAX_MENU_STEPS = _MAX_MENU_STEPS
MAX_NOTE_LENGTH = 4000


@dataclass
class NewCase:
    """What is known about a citizen's case when it is first opened."""

    caller_number: str
    category: str  # 'complaint' | 'inquiry' | 'operator' (any lowercase word is accepted)
    source_ref: str | None = None  # opaque link to whatever produced the case
    menu_path: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """A stored citizen case: the current snapshot (change it with CaseStore's named operations; its history is
    CaseStore.events)."""

    id: int
    case_number: str
    caller_number: str
    category: str
    priority: int
    status: CaseStatus
    menu_path: list[str]
    transcript: str | None
    transcript_status: TranscriptStatus
    recording_path: str | None
    source_ref: str | None
    agent: str | None
    notes: str | None  # the texts of the case's note events, oldest first, one per line (None: no notes)
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: enums as their values, times as ISO 8601 strings."""
        return {
            "id": self.id,
            "case_number": self.case_number,
            "caller_number": self.caller_number,
            "category": self.category,
            "priority": self.priority,
            "status": self.status.value,
            "menu_path": list(self.menu_path),
            "transcript": self.transcript,
            "transcript_status": self.transcript_status.value,
            "recording_path": self.recording_path,
            "source_ref": self.source_ref,
            "agent": self.agent,
            "notes": self.notes,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


# --- validation: each returns the clean value or raises CaseStoreError naming the field ---


def check_category(value: Any) -> str:
    """A category is a short lowercase word."""
    if not isinstance(value, str) or not _CATEGORY.match(value):
        raise CaseStoreError(f"category must be a lowercase word like 'complaint', got {value!r}")
    return value


def check_text(name: str, value: Any, *, max_len: int | None = None, optional: bool = True) -> str | None:
    """A plain string (or None when optional), at most max_len characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise CaseStoreError(f"{name} must be a string{' or None' if optional else ''}, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise CaseStoreError(f"{name} is longer than {max_len} characters")
    return value


def check_caller_number(value: Any) -> str:
    """Caller ID as received: may be empty (withheld) but must be a short printable string."""
    text = check_text("caller_number", value, max_len=_MAX_SHORT, optional=False)
    assert text is not None
    if not text.isprintable():
        raise CaseStoreError(f"caller_number contains control characters: {text!r}")
    return text


def check_source_ref(value: Any) -> str | None:
    """An opaque, non-empty reference or None."""
    text = check_text("source_ref", value, max_len=_MAX_SOURCE_REF)
    if text == "":
        raise CaseStoreError("source_ref must be None or a non-empty string")
    return text


def check_menu_path(value: Any) -> list[str]:
    """The IVR choices the caller made, in order."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(step, str) for step in value):
        raise CaseStoreError(f"menu_path must be a list of strings, got {value!r}")
    if len(value) > _MAX_MENU_STEPS or any(len(step) > _MAX_SHORT for step in value):
        raise CaseStoreError(f"menu_path is too long (at most {_MAX_MENU_STEPS} steps of {_MAX_SHORT} characters)")
    return list(value)


def check_priority(value: Any) -> int:
    """Priority is a plain integer (higher is more urgent)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CaseStoreError(f"priority must be an integer, got {value!r}")
    if not -1000 <= value <= 1000:
        raise CaseStoreError(f"priority must be between -1000 and 1000, got {value}")
    return value


def check_status(value: Any) -> CaseStatus:
    """One of CaseStatus (the enum or its string value)."""
    try:
        return CaseStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in CaseStatus)
        raise CaseStoreError(f"status must be one of {allowed}; got {value!r}") from None


def check_note(value: Any) -> str:
    """A note is a non-empty string of at most MAX_NOTE_LENGTH characters."""
    if not isinstance(value, str) or not value.strip():
        raise CaseStoreError(f"note must be a non-empty string, got {value!r}")
    if len(value) > MAX_NOTE_LENGTH:
        raise CaseStoreError(f"note is longer than {MAX_NOTE_LENGTH} characters")
    return value


def clip_reason(value: Any) -> str:
    """A reason the hotline gives itself (an error message): kept, but never longer than a note may be."""
    text = str(value).strip() or "no reason given"
    return text if len(text) <= MAX_NOTE_LENGTH else text[: MAX_NOTE_LENGTH - 1] + "…"


def check_limit(value: Any, *, maximum: int = 1000) -> int:
    """A page size: a positive integer up to maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise CaseStoreError(f"limit must be an integer from 1 to {maximum}, got {value!r}")
    return value
