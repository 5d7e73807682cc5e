"""CaseStore: open citizens' cases, change them through named operations, read them and their history.

Every operation checks its move against the transition table, updates the case row (the current snapshot) and
appends its event(s) to case_events in one transaction: either both are stored or neither is."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import dialect_insert, finish_on_cancel

from .errors import CaseNotFound, CaseStoreError
from .events import ACTOR_SYSTEM, CaseEvent, CaseEventKind, check_actor
from .model import (
    Case,
    NewCase,
    check_caller_number,
    check_category,
    check_limit,
    check_menu_path,
    check_note,
    check_priority,
    check_source_ref,
    check_status,
    check_text,
    clip_reason,
)
from .statuses import BEING_WORKED_ON, CaseStatus, TranscriptStatus, check_transition
from .tables import CaseAppliedOpRow, CaseCounterRow, CaseEventRow, CaseRow

_cases = CaseRow.__table__
_counters = CaseCounterRow.__table__
_events = CaseEventRow.__table__
_applied = CaseAppliedOpRow.__table__

# How a call ended, as the call side reports it to end_call (anything else: the caller was heard).
ABANDONED_IN_QUEUE = "abandoned_in_queue"
ABANDONED_IN_IVR = "abandoned_in_ivr"
INTERRUPTED = "interrupted"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_case(row: Row[Any], notes: list[str]) -> Case:
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
        notes="\n".join(notes) if notes else None,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


@dataclass
class _Change:
    """What one operation does to a case: new column values and the events that say so."""

    values: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[CaseEventKind, dict[str, Any]]] = field(default_factory=list)


# A decision made on the case as it is inside the transaction: the change, or None to leave the case as it is.
_Decide = Callable[[Case], _Change | None]


def _move(case: Case, target: CaseStatus, kind: CaseEventKind, **data: Any) -> _Change:
    """A status change the transition table allows (CaseTransitionError otherwise), with its event."""
    check_transition(case.case_number, case.status, target)
    return _Change({"status": target.value}, [(kind, {"from": case.status.value, "to": target.value, **data})])


def _abandon_in_queue(case: Case) -> _Change | None:
    if case.status is CaseStatus.ABANDONED_IN_QUEUE:
        return None  # the hang-up reported twice (a rebuild after a reconnect)
    return _move(case, CaseStatus.ABANDONED_IN_QUEUE, CaseEventKind.ABANDONED_IN_QUEUE)


def _abandon_in_ivr(case: Case) -> _Change | None:
    # Both the IVR and the call tracker see a hang-up in the IVR, in either order; only a case still being
    # collected is abandoned there (one that got further keeps its status).
    if case.status is not CaseStatus.NEW:
        return None
    return _move(case, CaseStatus.ABANDONED_IN_IVR, CaseEventKind.ABANDONED_IN_IVR)


def _interrupt(case: Case, reason: str) -> _Change | None:
    # Only a case still being collected was cut off in the IVR; one that got further (or was already settled,
    # say by the IVR seeing the caller hang up) keeps its status.
    if case.status is not CaseStatus.NEW:
        return None
    change = _move(case, CaseStatus.INTERRUPTED, CaseEventKind.INTERRUPTED, reason=reason)
    change.events.append((CaseEventKind.NOTE, {"text": f"call interrupted by a system failure: {reason}"}))
    return change


def _await_dispatch(case: Case, outcome: str) -> _Change | None:
    # The caller was heard (answered, a callback booked, a description left): the case awaits dispatch. A case
    # already open, closed or abandoned is left as it is (its call's end arrives late or twice).
    if case.status not in (CaseStatus.NEW, CaseStatus.QUEUED, CaseStatus.IN_PROGRESS):
        return None
    return _move(case, CaseStatus.OPEN, CaseEventKind.CALL_ENDED, outcome=outcome)


@finish_on_cancel
class CaseStore:
    """Stores citizens' cases and their events; safe to use from many tasks at once (each call is its own
    transaction)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = _utcnow,
        day_zone: tzinfo = UTC,
    ) -> None:
        # clock: returns the current tz-aware time (tests pass a fake one).
        # day_zone: the zone whose calendar day starts each case number (YYMMDD); pass the city's zone.
        insert_ = dialect_insert(engine)
        if insert_ is None:
            raise CaseStoreError(f"unsupported database dialect {engine.dialect.name!r}; use SQLite or PostgreSQL")
        self._upsert = insert_
        self._engine = engine
        self._clock = clock
        self._day_zone = day_zone
        self._op: tuple[str, datetime] | None = None  # set on the copies idempotent() hands out

    def idempotent(self, op_id: str, at: datetime) -> CaseStore:
        """This store for one journaled write: its change is stamped `at` and applied at most once per op_id
        (a repeat finds the id recorded with the first and changes nothing)."""
        check_text("op_id", op_id, max_len=64, optional=False)
        if at.tzinfo is None:
            raise CaseStoreError("idempotent() needs a timezone-aware time")
        view = copy.copy(self)
        view._op = (op_id, at)
        return view

    async def _first_time(self, conn: AsyncConnection) -> bool:
        """Record this copy's op id in the open transaction; False if an earlier attempt already did."""
        if self._op is None:
            return True
        stmt = (self._upsert(_applied).values(op_id=self._op[0], applied_at=self._op[1])
                .on_conflict_do_nothing(index_elements=[_applied.c.op_id]).returning(_applied.c.op_id))
        return (await conn.execute(stmt)).scalar_one_or_none() is not None

    def _now(self) -> datetime:
        if self._op is not None:
            return self._op[1].astimezone(UTC)
        now = self._clock()
        if now.tzinfo is None:
            raise CaseStoreError("the case store clock returned a naive datetime; it must be timezone-aware")
        return now.astimezone(UTC)

    # --- opening ---------------------------------------------------------------------------------

    async def reserve_numbers(self, count: int) -> list[str]:
        """Hand out `count` case numbers of today at once (for opening cases while the database is away)."""
        check_limit(count)
        day = self._now().astimezone(self._day_zone).strftime("%y%m%d")
        bump = (
            self._upsert(_counters)
            .values(day=day, last_seq=count)
            .on_conflict_do_update(index_elements=[_counters.c.day],
                                   set_={"last_seq": _counters.c.last_seq + count})
            .returning(_counters.c.last_seq)
        )
        async with self._engine.begin() as conn:
            last = (await conn.execute(bump)).scalar_one()
        return [f"{day}{seq:04d}" for seq in range(last - count + 1, last + 1)]

    async def open(self, new: NewCase, *, actor: str, case_number: str | None = None) -> Case:
        """Store a new case (status NEW, event `opened`) and allocate its case number: YYMMDD + a daily sequence
        of 4+ digits (or take `case_number`, one reserve_numbers() handed out)."""
        if not isinstance(new, NewCase):
            raise CaseStoreError(f"open() takes a NewCase, got {type(new).__name__}")
        actor = check_actor(actor)
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
        # database write lock (SQLite) is held until commit, so concurrent opens get distinct
        # numbers, and a failed insert rolls the number back with it.
        bump = (
            self._upsert(_counters)
            .values(day=day, last_seq=1)
            .on_conflict_do_update(index_elements=[_counters.c.day], set_={"last_seq": _counters.c.last_seq + 1})
            .returning(_counters.c.last_seq)
        )
        opened = {k: values[k] for k in ("caller_number", "category", "source_ref", "menu_path")}
        if case_number is not None:
            check_text("case_number", case_number, max_len=20, optional=False)
        try:
            async with self._engine.begin() as conn:
                if not await self._first_time(conn):  # an earlier attempt of this write opened it
                    if case_number is not None:
                        where = _cases.c.case_number == case_number
                    elif values["source_ref"] is not None:
                        where = _cases.c.source_ref == values["source_ref"]
                    else:
                        raise CaseStoreError("a repeated open() needs a case_number or a source_ref")
                    return _to_case((await conn.execute(select(_cases).where(where))).one(), [])
                if case_number is None:
                    seq = (await conn.execute(bump)).scalar_one()
                    case_number = f"{day}{seq:04d}"
                row = (
                    await conn.execute(
                        insert(_cases)
                        .values(case_number=case_number, created_at=now, updated_at=now, **values)
                        .returning(_cases)
                    )
                ).one()
                await self._append(conn, row.id, now, actor, [(CaseEventKind.OPENED, opened)])
        except IntegrityError as exc:
            if "source_ref" in _first_line(exc):
                raise CaseStoreError(f"a case already exists for source_ref {values['source_ref']!r}") from None
            raise CaseStoreError(f"could not store the new case: {_first_line(exc)}") from None
        return _to_case(row, [])

    # --- what the IVR learns ---------------------------------------------------------------------

    async def classify(self, case_number: str, *, category: str | None = None, priority: int | None = None,
                       menu_path: list[str] | None = None, actor: str = ACTOR_SYSTEM) -> Case:
        """Set the category and/or priority (with the menu path that led there); event `classified`."""
        wanted: dict[str, Any] = {}
        if category is not None:
            wanted["category"] = check_category(category)
        if priority is not None:
            wanted["priority"] = check_priority(priority)
        if menu_path is not None:
            wanted["menu_path"] = check_menu_path(menu_path)

        def decide(case: Case) -> _Change | None:
            changed = {k: v for k, v in wanted.items() if getattr(case, k) != v}
            return _Change(changed, [(CaseEventKind.CLASSIFIED, changed)]) if changed else None

        return await self._apply(case_number, actor, decide)

    async def record_menu_path(self, case_number: str, menu_path: list[str], *, actor: str = ACTOR_SYSTEM) -> Case:
        """Keep the IVR choices the caller made so far; event `menu_path_recorded` (none if unchanged)."""
        path = check_menu_path(menu_path)

        def decide(case: Case) -> _Change | None:
            if case.menu_path == path:
                return None
            return _Change({"menu_path": path}, [(CaseEventKind.MENU_PATH_RECORDED, {"menu_path": path})])

        return await self._apply(case_number, actor, decide)

    async def add_note(self, case_number: str, text: str, *, actor: str) -> Case:
        """Append a note (event `note`); concurrent notes are all kept, none overwrites another."""
        note = check_note(text)
        return await self._apply(case_number, actor,
                                 lambda case: _Change(events=[(CaseEventKind.NOTE, {"text": note})]))

    # --- the caller's recorded description ---------------------------------------------------------

    async def attach_recording(self, case_number: str, recording_path: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The case's description is (being) recorded here; its transcript is now pending. Event
        `recording_attached`."""
        path = check_text("recording_path", recording_path, max_len=1024, optional=False)
        return await self._apply(case_number, actor, lambda case: _Change(
            {"recording_path": path, "transcript_status": TranscriptStatus.PENDING.value},
            [(CaseEventKind.RECORDING_ATTACHED, {"recording_path": path})]))

    async def drop_recording(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The recording named on the case was never made: forget it, the transcript failed; events
        `recording_dropped` and a `note` giving the reason."""
        why = clip_reason(reason)
        return await self._apply(case_number, actor, lambda case: _Change(
            {"recording_path": None, "transcript_status": TranscriptStatus.FAILED.value},
            [(CaseEventKind.RECORDING_DROPPED, {"recording_path": case.recording_path, "reason": why}),
             (CaseEventKind.NOTE, {"text": why})]))

    async def transcript_pending(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The transcript is to be (re)tried; event `transcript_pending` (none if it already is)."""

        def decide(case: Case) -> _Change | None:
            if case.transcript_status is TranscriptStatus.PENDING:
                return None
            return _Change({"transcript_status": TranscriptStatus.PENDING.value},
                           [(CaseEventKind.TRANSCRIPT_PENDING, {})])

        return await self._apply(case_number, actor, decide)

    async def record_transcript(self, case_number: str, text: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """Store the description's transcript (transcript done); event `transcript_recorded`."""
        transcript = check_text("transcript", text, optional=False)
        return await self._apply(case_number, actor, lambda case: _Change(
            {"transcript": transcript, "transcript_status": TranscriptStatus.DONE.value},
            [(CaseEventKind.TRANSCRIPT_RECORDED, {"text": transcript})]))

    async def transcript_failed(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The description cannot be transcribed (the recording is kept); events `transcript_failed` and a
        `note` giving the reason."""
        why = clip_reason(reason)
        return await self._apply(case_number, actor, lambda case: _Change(
            {"transcript_status": TranscriptStatus.FAILED.value},
            [(CaseEventKind.TRANSCRIPT_FAILED, {"reason": why}), (CaseEventKind.NOTE, {"text": why})]))

    # --- the case's call through the queue -------------------------------------------------------

    async def mark_queued(self, case_number: str, queue: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller joined (or rejoined) a queue; event `queued`."""
        name = check_text("queue", queue, max_len=64, optional=False)
        return await self._apply(case_number, actor,
                                 lambda case: _move(case, CaseStatus.QUEUED, CaseEventKind.QUEUED, queue=name))

    async def assign_agent(self, case_number: str, agent: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """An agent answered: the case is theirs (in progress); event `agent_assigned` (none if it already is)."""
        name = check_text("agent", agent, max_len=64, optional=False)

        def decide(case: Case) -> _Change | None:
            if case.status is CaseStatus.IN_PROGRESS and case.agent == name:
                return None  # the same answer reported twice
            change = _move(case, CaseStatus.IN_PROGRESS, CaseEventKind.AGENT_ASSIGNED, agent=name)
            change.values["agent"] = name
            return change

        return await self._apply(case_number, actor, decide)

    async def mark_abandoned_in_queue(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller hung up while waiting in a queue; event `abandoned_in_queue` (none if already so)."""
        return await self._apply(case_number, actor, _abandon_in_queue)

    async def mark_abandoned_in_ivr(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller hung up in the IVR: a case still NEW is abandoned there (event `abandoned_in_ivr`); any
        other case is returned unchanged."""
        return await self._apply(case_number, actor, _abandon_in_ivr)

    async def mark_interrupted(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The hotline failed while the case was being collected (its IVR session was lost, not hung up by the
        caller): a case still NEW is interrupted (events `interrupted` and a `note` with the reason); any other
        case is returned unchanged."""
        why = clip_reason(reason)
        return await self._apply(case_number, actor, lambda case: _interrupt(case, why))

    async def end_call(self, case_number: str, outcome: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The case's call ended with this outcome: 'abandoned_in_queue' and 'abandoned_in_ivr' say where the
        caller gave up, 'interrupted' that the hotline failed (see mark_interrupted); any other outcome means they
        were heard and a case still new, queued or in progress is now open (event `call_ended`). Late or repeated
        ends leave the case as it is."""
        how = check_text("outcome", outcome, max_len=32, optional=False)
        assert how is not None
        if how == ABANDONED_IN_QUEUE:
            return await self._apply(case_number, actor, _abandon_in_queue)
        if how == ABANDONED_IN_IVR:
            return await self._apply(case_number, actor, _abandon_in_ivr)
        if how == INTERRUPTED:
            return await self._apply(case_number, actor,
                                     lambda case: _interrupt(case, "the call ended while the hotline had lost it"))
        return await self._apply(case_number, actor, lambda case: _await_dispatch(case, how))

    async def close(self, case_number: str, *, actor: str, resolution: str | None = None) -> Case:
        """Close an open case (event `closed`, with the resolution if given); closing a closed case is a no-op."""
        text = check_text("resolution", resolution, max_len=4000)

        def decide(case: Case) -> _Change | None:
            if case.status is CaseStatus.CLOSED:
                return None
            data = {"resolution": text} if text else {}
            return _move(case, CaseStatus.CLOSED, CaseEventKind.CLOSED, **data)

        return await self._apply(case_number, actor, decide)

    # --- reading ---------------------------------------------------------------------------------

    async def get(self, case_number: str) -> Case:
        """The case with this number; CaseNotFound if there is none."""
        check_text("case_number", case_number, optional=False)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_cases).where(_cases.c.case_number == case_number))).one_or_none()
            if row is None:
                raise CaseNotFound(f"no case with number {case_number!r}")
            notes = await self._notes(conn, [row.id])
        return _to_case(row, notes.get(row.id, []))

    async def events(self, case_number: str) -> list[CaseEvent]:
        """The case's history, oldest first; CaseNotFound if there is no such case."""
        check_text("case_number", case_number, optional=False)
        async with self._engine.connect() as conn:
            case_id = (await conn.execute(select(_cases.c.id).where(_cases.c.case_number == case_number))).scalar()
            if case_id is None:
                raise CaseNotFound(f"no case with number {case_number!r}")
            rows = (await conn.execute(select(_events).where(_events.c.case_id == case_id)
                                       .order_by(_events.c.id))).all()
        return [CaseEvent(id=r.id, case_number=case_number, at=r.at, actor=r.actor, kind=CaseEventKind(r.kind),
                          data=dict(r.data or {})) for r in rows]

    async def find_by_source(self, source_ref: str) -> Case | None:
        """The case opened for this source reference, or None."""
        check_text("source_ref", source_ref, optional=False)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_cases).where(_cases.c.source_ref == source_ref))).one_or_none()
            if row is None:
                return None
            notes = await self._notes(conn, [row.id])
        return _to_case(row, notes.get(row.id, []))

    async def list_recent(self, limit: int = 50, status: CaseStatus | str | None = None) -> list[Case]:
        """Cases newest first, optionally only those with one status."""
        stmt = select(_cases).order_by(_cases.c.created_at.desc(), _cases.c.id.desc()).limit(check_limit(limit))
        if status is not None:
            stmt = stmt.where(_cases.c.status == check_status(status).value)
        return await self._cases_with_notes(stmt)

    async def has_open_case(self, caller_number: str, exclude_case: str | None = None) -> bool:
        """True if this caller has a case still being worked on (queued, in progress or open), other than one."""
        stmt = select(_cases.c.id).where(
            _cases.c.caller_number == check_caller_number(caller_number),
            _cases.c.status.in_([s.value for s in BEING_WORKED_ON]),
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
        return await self._cases_with_notes(stmt)

    # --- inside ----------------------------------------------------------------------------------

    async def _apply(self, case_number: str, actor: str, decide: _Decide) -> Case:
        """Run one named operation: decide on the locked case, update its row and append its events, atomically."""
        check_text("case_number", case_number, optional=False)
        actor = check_actor(actor)
        now = self._now()
        async with self._engine.begin() as conn:
            # A write that changes nothing, first: it takes the row lock (PostgreSQL) or the write lock (SQLite)
            # before the case is read, so no concurrent operation can move the case between decision and write.
            locked = (await conn.execute(
                update(_cases).where(_cases.c.case_number == case_number)
                .values(updated_at=_cases.c.updated_at).returning(_cases)
            )).one_or_none()
            if locked is None:
                raise CaseNotFound(f"no case with number {case_number!r}")
            change = decide(_to_case(locked, [])) if await self._first_time(conn) else None
            row = locked
            if change is not None:
                row = (await conn.execute(
                    update(_cases).where(_cases.c.id == locked.id)
                    .values(**change.values, updated_at=now).returning(_cases)
                )).one()
                await self._append(conn, locked.id, now, actor, change.events)
            notes = await self._notes(conn, [locked.id])
        return _to_case(row, notes.get(locked.id, []))

    @staticmethod
    async def _append(conn: AsyncConnection, case_id: int, at: datetime, actor: str,
                      events: Iterable[tuple[CaseEventKind, dict[str, Any]]]) -> None:
        rows = [{"case_id": case_id, "at": at, "actor": actor, "kind": kind.value, "data": data}
                for kind, data in events]
        if rows:
            await conn.execute(insert(_events), rows)

    @staticmethod
    async def _notes(conn: AsyncConnection, case_ids: list[int]) -> dict[int, list[str]]:
        """The note texts of these cases, oldest first."""
        if not case_ids:
            return {}
        stmt = (
            select(_events.c.case_id, _events.c.data)
            .where(_events.c.kind == CaseEventKind.NOTE.value, _events.c.case_id.in_(case_ids))
            .order_by(_events.c.case_id, _events.c.id)
        )
        notes: dict[int, list[str]] = {}
        for case_id, data in (await conn.execute(stmt)).all():
            notes.setdefault(case_id, []).append(str((data or {}).get("text", "")))
        return notes

    async def _cases_with_notes(self, stmt: Any) -> list[Case]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            notes = await self._notes(conn, [r.id for r in rows])
        return [_to_case(r, notes.get(r.id, [])) for r in rows]
