"""What the console needs from the other domains (duck-typed; the real services are passed in)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CaseLike(Protocol):
    """A case: `.to_dict()` gives case_number, caller_number, category, priority, status, menu_path,
    transcript, transcript_status, recording_path, source_ref, agent, notes (the note texts, one per line),
    created_at, updated_at."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class CaseEventLike(Protocol):
    """One change of a case: `.to_dict()` gives id, case_number, at (ISO string), actor, kind, data."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class CasesService(Protocol):
    """The cases domain; every method raises a LookupError subclass (cases.CaseNotFound) for unknown numbers."""

    async def list_recent(self, limit: int = 50, status: str | None = None) -> Sequence[CaseLike]: ...

    async def get(self, case_number: str) -> CaseLike: ...

    async def events(self, case_number: str) -> Sequence[CaseEventLike]: ...

    async def add_note(self, case_number: str, text: str, *, actor: str) -> CaseLike: ...


@runtime_checkable
class LiveCallsService(Protocol):
    """Calls in progress as mappings (queueing.LiveCall in the hotline): linkedid, caller_number, state
    ('ivr'|'queued'|'ringing'|'connected'…), ivr_path, category, case_number, transcript, queue, agent,
    started_at (a datetime; ISO string once through the console's JSON)."""

    async def list_calls(self) -> Sequence[Mapping[str, Any]]: ...

    async def get_call(self, linkedid: str) -> Mapping[str, Any] | None: ...


@runtime_checkable
class CallRecordLike(Protocol):
    """A finished call: `.to_dict()` gives linkedid, caller_number, case_number, ivr_path, queue,
    queue_wait_seconds, agent, talk_seconds, hangup_cause, outcome, started_at, answered_at, ended_at."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class CallRecordsService(Protocol):
    """The call-records domain."""

    async def list_recent(self, limit: int = 50) -> Sequence[CallRecordLike]: ...


# Returns {"ok": bool, "components": {...}}; may be a plain or an async callable.
HealthCheck = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any]]"]
