"""The case domain: citizens' cases, their numbers and statuses (no knowledge of calls or telephony)."""
from .model import Case, CaseNotFound, CaseStatus, CaseStoreError, NewCase, TranscriptStatus
from .store import CaseStore

__all__ = [
    "Case",
    "CaseNotFound",
    "CaseStatus",
    "CaseStore",
    "CaseStoreError",
    "NewCase",
    "TranscriptStatus",
]
