"""The case store: citizens' cases, their numbers and statuses (no knowledge of calls or telephony)."""
from .engine import create_engine_from_url, dialect_insert, finish_on_cancel
from .migration import migrate_database
from .model import Case, CaseNotFound, CaseStatus, CaseStoreError, NewCase, TranscriptStatus
from .store import CaseStore
from .tables import NAMING_CONVENTION, UTCDateTime, metadata

__all__ = [
    "NAMING_CONVENTION",
    "UTCDateTime",
    "Case",
    "CaseNotFound",
    "CaseStatus",
    "CaseStore",
    "CaseStoreError",
    "NewCase",
    "TranscriptStatus",
    "create_engine_from_url",
    "dialect_insert",
    "finish_on_cancel",
    "metadata",
    "migrate_database",
]
