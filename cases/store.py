"""CaseStore: create, read and update citizens' cases in SQLite or PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import dialect_insert, finish_on_cancel

from .model import (
    Case,
    CaseNotFound,
    CaseStatus,
    CaseStoreError,
    NewCase,
    TranscriptStatus,
    check_caller_number,
    check_category,
    check_limit,
    check_menu_path,
    check_priority,
    check_source_ref,
    check_status,
    check_text,
    check_transcript_status,
)
from .tables import CaseCounterRow, CaseRow

_cases = CaseRow.__table__
_counters = CaseCounterRow.__table__

# Fields update() may change, each with its validator. Anything else (id, case_number, times,
# source_ref, caller_number) is fixed when the case is created.
_MUTABLE: dict[str, Callable[[Any], Any]] = {
    "status": lambda v: check_status(v).value,
    "category": check_category,
    "priority": check_priority,
    "menu_path": check_menu_path,
    "transcript": lambda v: check_text("transcript", v),
    "transcript_status": lambda v: check_transcript_status(v).value,
    "recording_path": lambda v: check_text("recording_path", v, max_len=1024),
    "agent": lambda v: check_text("agent", v, max_len=64),
    "notes": lambda v: check_text("notes", v, max_len=20_000),
}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_case(row: Row[Any]) -> Case:
    m = row._mapping
    return Case(
        id=m["id"],
        case_number=m["case_number"],
        caller_number=m["caller_number"],
        category=m["category"],
        priority=m["priority"],
        status=CaseStatus(m["status"]),
        menu_path=list(m["menu_path"] or []),
        transcript=m["transcript"],
        transcript_status=TranscriptStatus(m["transcript_status"]),
        recording_path=m["recording_path"],
        source_ref=m["source_ref"],
        agent=m["agent"],
        notes=m["notes"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


@finish_on_cancel
class CaseStore:
    """Stores citizens' cases; safe to use from many tasks at once (each call is its own transaction)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = _utcnow,
        day_zone: tzinfo = timezone.utc,
    ) -> None:
        # clock: returns the current tz-aware time (tests pass a fake one).
        # day_zone: the zone whose calendar day starts each case number (YYMMDD); pass the city's zone.
        insert = dialect_insert(engine)
        if insert is None:
            raise CaseStoreError(f"unsupported database dialect {engine.dialect.name!r}; use SQLite or PostgreSQL")
        self._upsert = insert
        self._engine = engine
        self._clock = clock
        self._day_zone = day_zone

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise CaseStoreError("the case store clock returned a naive datetime; it must be timezone-aware")
        return now.astimezone(timezone.utc)

    async def create(self, new: NewCase) -> Case:
        """Store a new case (status NEW) and allocate its case number: YYMMDD + daily sequence of 4+ digits."""
        if not isinstance(new, NewCase):
            raise CaseStoreError(f"create() takes a NewCase, got {type(new).__name__}")
        values = {
            "caller_number": check_caller_number(new.caller_number),
            "category": check_category(new.category),
            "source_ref": check_source_ref(new.source_ref),
            "menu_path": check_menu_path(new.menu_path),
            "priority": 0,
            "status": CaseStatus.NEW.value,
            "transcript_status": TranscriptStatus.NONE.value,
        }
        now = self._now()
        day = now.astimezone(self._day_zone).strftime("%y%m%d")
        # The counter row is bumped and read in one statement; its row lock (PostgreSQL) or the
        # database write lock (SQLite) is held until commit, so concurrent creates get distinct
        # numbers, and a failed insert rolls the number back with it.
        bump = (
            self._upsert(_counters)
            .values(day=day, last_seq=1)
            .on_conflict_do_update(index_elements=[_counters.c.day], set_={"last_seq": _counters.c.last_seq + 1})
            .returning(_counters.c.last_seq)
        )
        try:
            async with self._engine.begin() as conn:
                seq = (await conn.execute(bump)).scalar_one()
                case_number = f"{day}{seq:04d}"
                row = (
                    await conn.execute(
                        insert(_cases)
                        .values(case_number=case_number, created_at=now, updated_at=now, **values)
                        .returning(_cases)
                    )
                ).one()
        except IntegrityError as exc:
            if "source_ref" in _first_line(exc):
                raise CaseStoreError(f"a case already exists for source_ref {values['source_ref']!r}") from None
            raise CaseStoreError(f"could not store the new case: {_first_line(exc)}") from None
        return _to_case(row)

    async def get(self, case_number: str) -> Case:
        """The case with this number; CaseNotFound if there is none."""
        check_text("case_number", case_number, optional=False)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_cases).where(_cases.c.case_number == case_number))).one_or_none()
        if row is None:
            raise CaseNotFound(f"no case with number {case_number!r}")
        return _to_case(row)

    async def find_by_source(self, source_ref: str) -> Case | None:
        """The case opened for this source reference, or None."""
        check_text("source_ref", source_ref, optional=False)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_cases).where(_cases.c.source_ref == source_ref))).one_or_none()
        return None if row is None else _to_case(row)

    async def update(self, case_number: str, **fields: Any) -> Case:
        """Change mutable fields of a case (and bump updated_at); CaseStoreError naming any unknown field."""
        check_text("case_number", case_number, optional=False)
        unknown = sorted(set(fields) - set(_MUTABLE))
        if unknown:
            raise CaseStoreError(
                f"cannot update case field(s) {', '.join(unknown)}; mutable fields are {', '.join(_MUTABLE)}"
            )
        values = {name: _MUTABLE[name](value) for name, value in fields.items()}
        values["updated_at"] = self._now()
        stmt = update(_cases).where(_cases.c.case_number == case_number).values(**values).returning(_cases)
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        if row is None:
            raise CaseNotFound(f"no case with number {case_number!r}")
        return _to_case(row)

    async def list_recent(self, limit: int = 50, status: CaseStatus | None = None) -> list[Case]:
        """Cases newest first, optionally only those with one status."""
        stmt = select(_cases).order_by(_cases.c.created_at.desc(), _cases.c.id.desc()).limit(check_limit(limit))
        if status is not None:
            stmt = stmt.where(_cases.c.status == check_status(status).value)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_to_case(r) for r in rows]

    async def has_open_case(self, caller_number: str, exclude_case: str | None = None) -> bool:
        """True if this caller has a case still being worked on (queued, in progress or open), other than one."""
        stmt = select(_cases.c.id).where(
            _cases.c.caller_number == check_caller_number(caller_number),
            _cases.c.status.in_([CaseStatus.QUEUED.value, CaseStatus.IN_PROGRESS.value, CaseStatus.OPEN.value]),
        ).limit(1)
        if exclude_case:
            stmt = stmt.where(_cases.c.case_number != exclude_case)
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def list_pending_transcripts(self, limit: int = 100) -> list[Case]:
        """Cases whose transcription is pending, oldest first (to retry them after a restart)."""
        stmt = (
            select(_cases)
            .where(_cases.c.transcript_status == TranscriptStatus.PENDING.value)
            .order_by(_cases.c.created_at.asc(), _cases.c.id.asc())
            .limit(check_limit(limit))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_to_case(r) for r in rows]
