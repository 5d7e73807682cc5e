"""Case store, call detail records and migrations, on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from cases import (
    ALLOWED_TRANSITIONS,
    CaseEvent,
    CaseEventKind,
    CaseNotFound,
    CaseStatus,
    CaseStore,
    CaseStoreError,
    CaseTransitionError,
    NewCase,
    TranscriptStatus,
    check_transition,
)
from hotline.schema import TABLE_MODULES
from queueing.records import CallRecord, CallRecordError, CallRecordStore
from storage import StorageError, UTCDateTime, alembic_config, create_engine_from_url, migrate_database
from tests.support.databases import pg_unreachable_reason, scratch_pg_database

START = datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)


class TickingClock:
    """A fake clock that moves on one second each time it is read, so every write has its own time."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, f"error message is not one line: {message!r}"
    return message


async def in_executor(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------- database fixtures


@pytest.fixture(scope="session")
def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (checked once per session), or None when it is there."""
    reason = pg_unreachable_reason()
    if reason:
        print(f"\n{reason}")
    return reason


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path: Path, pg_unreachable: str | None) -> AsyncIterator[str]:
    """URL of an empty database (the SQLite file sits in a directory that does not exist yet)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'not-yet' / 'hotline.db'}"
    else:
        async with scratch_pg_database(pg_unreachable) as url:
            yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a freshly migrated database."""
    await in_executor(migrate_database, db_url)
    eng = create_engine_from_url(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def store(engine: AsyncEngine, clock: TickingClock) -> CaseStore:
    return CaseStore(engine, clock=clock)


@pytest.fixture
def records(engine: AsyncEngine, clock: TickingClock) -> CallRecordStore:
    return CallRecordStore(engine, clock=clock)


# ---------------------------------------------------------------- cases


async def test_open_get_change_and_list_recent(store: CaseStore) -> None:
    first = await store.open(NewCase("01012345678", "complaint", "call-1", ["1"]), actor="ivr")
    assert first.case_number == "2611290001"
    assert first.case_number.isdigit()
    assert first.status is CaseStatus.NEW
    assert first.transcript_status is TranscriptStatus.NONE
    assert first.priority == 0 and first.menu_path == ["1"] and first.source_ref == "call-1"
    assert first.notes is None
    assert first.created_at == first.updated_at and first.created_at.tzinfo is not None
    assert first.created_at.utcoffset() == timedelta(0)

    second = await store.open(NewCase("0212345678", "inquiry", None, ["2", "1"]), actor="ivr")
    third = await store.open(NewCase("", "operator", "call-3", []), actor="ivr")
    assert [second.case_number, third.case_number] == ["2611290002", "2611290003"]

    assert await store.get(first.case_number) == first

    await store.classify(first.case_number, priority=2, menu_path=["1", "3"], actor="ivr")
    await store.attach_recording(first.case_number, "/rec/2611290001.wav", actor="ivr")
    await store.mark_queued(first.case_number, "complaints")
    changed = await store.assign_agent(first.case_number, "agent1")
    assert changed.status is CaseStatus.IN_PROGRESS and changed.agent == "agent1" and changed.priority == 2
    assert changed.transcript_status is TranscriptStatus.PENDING and changed.menu_path == ["1", "3"]
    assert changed.created_at == first.created_at and changed.updated_at > first.updated_at
    assert await store.get(first.case_number) == changed

    noted = await store.add_note(first.case_number, "called back", actor="agent1")
    assert noted.notes == "called back" and noted.agent == "agent1"

    recent = await store.list_recent()
    assert [c.case_number for c in recent] == [third.case_number, second.case_number, first.case_number]
    assert recent[2].notes == "called back"
    assert [c.case_number for c in await store.list_recent(limit=2)] == [third.case_number, second.case_number]
    in_progress = await store.list_recent(status=CaseStatus.IN_PROGRESS)
    assert [c.case_number for c in in_progress] == [first.case_number]
    assert await store.list_recent(status=CaseStatus.CLOSED) == []

    as_json = json.loads(json.dumps(changed.to_dict()))
    assert as_json["status"] == "in_progress" and as_json["transcript_status"] == "pending"
    assert datetime.fromisoformat(as_json["created_at"]) == changed.created_at


async def test_operations_refuse_bad_values_and_change_nothing(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "complaint", None, []), actor="ivr")
    with pytest.raises(CaseStoreError) as exc:
        await store.classify(case.case_number, category="Complaint!")
    assert "category" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.classify(case.case_number, priority="high")  # type: ignore[arg-type]
    assert "priority" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.record_menu_path(case.case_number, "1,2")  # type: ignore[arg-type]
    assert "menu_path" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.add_note(case.case_number, "   ", actor="agent1")
    assert "note" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.add_note(case.case_number, "x" * 4001, actor="agent1")
    assert "note is longer than 4000 characters" == one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.add_note(case.case_number, "hello", actor="")
    assert "actor" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.list_recent(status="lost")  # type: ignore[arg-type]
    assert "status" in one_line(exc)
    assert await store.get(case.case_number) == case  # nothing was half-applied
    assert [e.kind for e in await store.events(case.case_number)] == [CaseEventKind.OPENED]


async def test_new_case_input_is_validated(store: CaseStore) -> None:
    with pytest.raises(CaseStoreError) as exc:
        await store.open(NewCase("01012345678", "Complaint!", None, []), actor="ivr")
    assert "category" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.open(NewCase(1234, "complaint", None, []), actor="ivr")  # type: ignore[arg-type]
    assert "caller_number" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.open(NewCase("01012345678", "complaint", None, [1]), actor="ivr")  # type: ignore[list-item]
    assert "menu_path" in one_line(exc)
    assert await store.list_recent() == []


async def test_missing_case_raises_case_not_found(store: CaseStore) -> None:
    with pytest.raises(CaseNotFound) as exc:
        await store.get("2611299999")
    assert one_line(exc) == "no case with number '2611299999'"
    with pytest.raises(CaseNotFound) as exc:
        await store.mark_queued("2611299999", "complaints")
    assert "2611299999" in one_line(exc)
    assert isinstance(exc.value, CaseStoreError) and isinstance(exc.value, LookupError)
    with pytest.raises(CaseNotFound):
        await store.events("2611299999")
    with pytest.raises(CaseNotFound):
        await store.add_note("2611299999", "anyone there?", actor="agent1")


async def test_concurrent_creates_get_distinct_numbers(store: CaseStore) -> None:
    created = await asyncio.gather(
        *(store.open(NewCase(f"0101234{i:04d}", "complaint", f"call-{i}", []), actor="ivr") for i in range(20))
    )
    numbers = [c.case_number for c in created]
    assert len(set(numbers)) == 20
    assert sorted(numbers) == [f"261129{seq:04d}" for seq in range(1, 21)]
    assert len(await store.list_recent(limit=100)) == 20


async def test_case_numbers_restart_each_day_in_the_given_zone(engine: AsyncEngine) -> None:
    clock = TickingClock(datetime(2026, 11, 28, 14, 59, 58, tzinfo=UTC))
    seoul = timezone(timedelta(hours=9))
    store = CaseStore(engine, clock=clock, day_zone=seoul)
    late = await store.open(NewCase("1", "inquiry", None, []), actor="ivr")  # 23:59:58 in Seoul
    later = await store.open(NewCase("2", "inquiry", None, []), actor="ivr")  # 23:59:59
    next_day = await store.open(NewCase("3", "inquiry", None, []), actor="ivr")  # 00:00:00 the next day
    assert [late.case_number, later.case_number, next_day.case_number] == ["2611280001", "2611280002", "2611290001"]


async def test_find_by_source_and_one_case_per_source(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "complaint", "1700000000.42", ["1"]), actor="ivr")
    assert await store.find_by_source("1700000000.42") == case
    assert await store.find_by_source("no-such-call") is None
    with pytest.raises(CaseStoreError) as exc:
        await store.open(NewCase("01012345678", "inquiry", "1700000000.42", []), actor="ivr")
    assert "source_ref" in one_line(exc)
    # The refused create must not have used up a case number.
    following = await store.open(NewCase("01012345678", "inquiry", "1700000000.43", []), actor="ivr")
    assert following.case_number == "2611290002"


async def test_pending_transcripts_are_listed_oldest_first(store: CaseStore) -> None:
    cases = [await store.open(NewCase(f"0{i}", "complaint", None, []), actor="ivr") for i in range(4)]
    for case in (cases[2], cases[0], cases[3]):
        await store.attach_recording(case.case_number, "/r.wav")
    await store.record_transcript(cases[3].case_number, "street light broken")
    pending = await store.list_pending_transcripts()
    assert [c.case_number for c in pending] == [cases[0].case_number, cases[2].case_number]
    assert all(c.recording_path == "/r.wav" for c in pending)
    assert [c.case_number for c in await store.list_pending_transcripts(limit=1)] == [cases[0].case_number]
    with pytest.raises(CaseStoreError) as exc:
        await store.list_pending_transcripts(limit=0)
    assert "limit" in one_line(exc)


# ---------------------------------------------------------------- statuses, operations and events


S = CaseStatus


def test_every_move_the_table_lacks_is_refused_naming_both_statuses() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(CaseStatus)
    refused = 0
    for current in CaseStatus:
        for target in CaseStatus:
            if target in ALLOWED_TRANSITIONS[current]:
                check_transition("2612030001", current, target)  # allowed: no error
                continue
            with pytest.raises(CaseTransitionError) as exc:
                check_transition("2612030001", current, target)
            assert one_line(exc) == f"case 2612030001 cannot go from {current.value} to {target.value}"
            assert isinstance(exc.value, CaseStoreError)
            refused += 1
    assert refused > 0
    # What the hotline does today, as the table says it.
    assert ALLOWED_TRANSITIONS[S.NEW] >= {S.QUEUED, S.ABANDONED_IN_IVR, S.OPEN}
    assert ALLOWED_TRANSITIONS[S.QUEUED] >= {S.QUEUED, S.IN_PROGRESS, S.ABANDONED_IN_QUEUE, S.OPEN}
    assert ALLOWED_TRANSITIONS[S.IN_PROGRESS] >= {S.OPEN}
    assert ALLOWED_TRANSITIONS[S.OPEN] == {S.CLOSED}
    assert ALLOWED_TRANSITIONS[S.CLOSED] == frozenset()


async def test_an_illegal_move_through_the_store_is_refused_and_writes_nothing(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "complaint", None, []), actor="ivr")
    with pytest.raises(CaseTransitionError) as exc:
        await store.close(case.case_number, actor="agent1")
    assert one_line(exc) == f"case {case.case_number} cannot go from new to closed"
    gone = await store.end_call(case.case_number, "abandoned_in_queue")
    assert gone.status is S.ABANDONED_IN_QUEUE
    with pytest.raises(CaseTransitionError) as exc:
        await store.mark_queued(case.case_number, "complaints")
    assert one_line(exc) == f"case {case.case_number} cannot go from abandoned_in_queue to queued"
    with pytest.raises(CaseTransitionError) as exc:
        await store.assign_agent(case.case_number, "agent1")
    assert one_line(exc) == f"case {case.case_number} cannot go from abandoned_in_queue to in_progress"
    assert await store.get(case.case_number) == gone
    assert [e.kind for e in await store.events(case.case_number)] == [CaseEventKind.OPENED,
                                                                       CaseEventKind.ABANDONED_IN_QUEUE]


async def test_a_call_walks_the_case_through_queue_agent_and_close(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "unclassified", "call-1", []), actor="ivr")
    number = case.case_number
    assert (await store.mark_queued(number, "complaints")).status is S.QUEUED
    assert (await store.mark_queued(number, "overflow")).status is S.QUEUED  # overflow: back in line elsewhere
    answered = await store.assign_agent(number, "agent1")
    assert (answered.status, answered.agent) == (S.IN_PROGRESS, "agent1")
    assert await store.assign_agent(number, "agent1") == answered  # reported twice: no change, no event
    ended = await store.end_call(number, "completed")
    assert ended.status is S.OPEN and ended.agent == "agent1"
    assert await store.end_call(number, "completed") == ended  # a late second end leaves it open
    assert await store.mark_abandoned_in_ivr(number) == ended
    closed = await store.close(number, actor="agent1", resolution="crew fixed the light")
    assert closed.status is S.CLOSED
    assert await store.close(number, actor="agent1") == closed
    assert await store.end_call(number, "abandoned_in_ivr") == closed

    events = await store.events(number)
    assert all(isinstance(e, CaseEvent) and e.case_number == number for e in events)
    assert [(e.kind, e.actor) for e in events] == [
        (CaseEventKind.OPENED, "ivr"),
        (CaseEventKind.QUEUED, "system"),
        (CaseEventKind.QUEUED, "system"),
        (CaseEventKind.AGENT_ASSIGNED, "system"),
        (CaseEventKind.CALL_ENDED, "system"),
        (CaseEventKind.CLOSED, "agent1"),
    ]
    assert events[0].data == {"caller_number": "01012345678", "category": "unclassified", "source_ref": "call-1",
                              "menu_path": []}
    assert events[1].data == {"from": "new", "to": "queued", "queue": "complaints"}
    assert events[2].data == {"from": "queued", "to": "queued", "queue": "overflow"}
    assert events[3].data == {"from": "queued", "to": "in_progress", "agent": "agent1"}
    assert events[4].data == {"from": "in_progress", "to": "open", "outcome": "completed"}
    assert events[5].data == {"from": "open", "to": "closed", "resolution": "crew fixed the light"}
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.at.tzinfo is not None for e in events) and events[0].at == case.created_at
    assert events[-1].at == closed.updated_at
    as_json = json.loads(json.dumps([e.to_dict() for e in events]))
    assert as_json[3]["kind"] == "agent_assigned" and datetime.fromisoformat(as_json[3]["at"]) == events[3].at


async def test_hang_ups_say_where_the_caller_gave_up_and_late_ones_change_nothing(store: CaseStore) -> None:
    in_ivr = await store.open(NewCase("1", "unclassified", None, []), actor="ivr")
    gone = await store.mark_abandoned_in_ivr(in_ivr.case_number, actor="ivr")
    assert gone.status is S.ABANDONED_IN_IVR
    # The call tracker sees the same hang-up after the IVR did: nothing more happens.
    assert await store.end_call(in_ivr.case_number, "abandoned_in_ivr") == gone
    assert len(await store.events(in_ivr.case_number)) == 2

    queued = await store.open(NewCase("2", "complaint", None, []), actor="ivr")
    await store.mark_queued(queued.case_number, "complaints")
    # A hang-up the IVR reports late, once the caller is already waiting: the case stays queued.
    assert (await store.mark_abandoned_in_ivr(queued.case_number)).status is S.QUEUED
    left = await store.end_call(queued.case_number, "abandoned_in_queue")
    assert left.status is S.ABANDONED_IN_QUEUE
    assert await store.mark_abandoned_in_queue(queued.case_number) == left  # a rebuild reports it again
    assert [e.kind for e in await store.events(queued.case_number)] == [
        CaseEventKind.OPENED, CaseEventKind.QUEUED, CaseEventKind.ABANDONED_IN_QUEUE]

    # A caller who booked a callback and hung up while queued leaves an open case for the callback.
    booked = await store.open(NewCase("3", "inquiry", None, []), actor="ivr")
    await store.mark_queued(booked.case_number, "inquiries")
    assert (await store.end_call(booked.case_number, "queued")).status is S.OPEN
    # Transferred out of the IVR (no queue): the caller was heard, the case is open.
    transferred = await store.open(NewCase("4", "inquiry", None, []), actor="ivr")
    assert (await store.end_call(transferred.case_number, "completed")).status is S.OPEN
    assert await store.has_open_case("3") and await store.has_open_case("4")
    assert not await store.has_open_case("1") and not await store.has_open_case("2")


async def test_what_the_ivr_and_transcription_learn_is_kept_with_its_events(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "unclassified", None, []), actor="ivr")
    number = case.case_number
    classified = await store.classify(number, category="complaint", priority=3, menu_path=["1"], actor="ivr")
    assert (classified.category, classified.priority, classified.menu_path) == ("complaint", 3, ["1"])
    assert await store.classify(number, category="complaint", actor="ivr") == classified  # nothing new
    assert (await store.record_menu_path(number, ["1", "recorded"], actor="ivr")).menu_path == ["1", "recorded"]
    assert await store.record_menu_path(number, ["1", "recorded"], actor="ivr") == await store.get(number)

    attached = await store.attach_recording(number, "/rec/a.wav", actor="ivr")
    assert (attached.recording_path, attached.transcript_status) == ("/rec/a.wav", TranscriptStatus.PENDING)
    assert await store.transcript_pending(number) == attached  # already pending: no event
    failed = await store.transcript_failed(number, "transcription failed: too short")
    assert failed.transcript_status is TranscriptStatus.FAILED and failed.recording_path == "/rec/a.wav"
    assert failed.notes == "transcription failed: too short"
    assert (await store.transcript_pending(number)).transcript_status is TranscriptStatus.PENDING
    done = await store.record_transcript(number, "the street light is broken")
    assert (done.transcript, done.transcript_status) == ("the street light is broken", TranscriptStatus.DONE)

    other = await store.open(NewCase("0212345678", "unclassified", None, []), actor="ivr")
    await store.attach_recording(other.case_number, "/rec/b.wav", actor="ivr")
    dropped = await store.drop_recording(other.case_number, "no recording was made", actor="ivr")
    assert (dropped.recording_path, dropped.transcript_status) == (None, TranscriptStatus.FAILED)
    assert dropped.notes == "no recording was made"
    noted = await store.add_note(other.case_number, "[2026-11-29 09:00 agent1] called back", actor="agent1")
    assert noted.notes == "no recording was made\n[2026-11-29 09:00 agent1] called back"

    events = await store.events(number)
    assert [(e.kind, e.actor, e.data) for e in events[1:]] == [
        (CaseEventKind.CLASSIFIED, "ivr", {"category": "complaint", "priority": 3, "menu_path": ["1"]}),
        (CaseEventKind.MENU_PATH_RECORDED, "ivr", {"menu_path": ["1", "recorded"]}),
        (CaseEventKind.RECORDING_ATTACHED, "ivr", {"recording_path": "/rec/a.wav"}),
        (CaseEventKind.TRANSCRIPT_FAILED, "system", {"reason": "transcription failed: too short"}),
        (CaseEventKind.NOTE, "system", {"text": "transcription failed: too short"}),
        (CaseEventKind.TRANSCRIPT_PENDING, "system", {}),
        (CaseEventKind.TRANSCRIPT_RECORDED, "system", {"text": "the street light is broken"}),
    ]
    assert [(e.kind, e.actor) for e in await store.events(other.case_number)][-3:] == [
        (CaseEventKind.RECORDING_DROPPED, "ivr"), (CaseEventKind.NOTE, "ivr"), (CaseEventKind.NOTE, "agent1")]


async def test_concurrent_notes_are_all_kept(store: CaseStore) -> None:
    case = await store.open(NewCase("01012345678", "complaint", None, []), actor="ivr")
    await asyncio.gather(*(store.add_note(case.case_number, f"note {i}", actor=f"agent{i % 3}") for i in range(20)))
    notes = (await store.get(case.case_number)).notes
    assert notes is not None and sorted(notes.splitlines()) == sorted(f"note {i}" for i in range(20))
    events = [e for e in await store.events(case.case_number) if e.kind is CaseEventKind.NOTE]
    assert sorted(e.data["text"] for e in events) == sorted(f"note {i}" for i in range(20))
    assert [e.data["text"] for e in events] == notes.splitlines()  # the notes read in the events' order


def _fail_event_inserts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every INSERT INTO case_events fails, as a full disk or a lost connection would make it."""
    execute = AsyncConnection.execute

    async def failing(self: AsyncConnection, statement, *args, **kwargs):
        if isinstance(statement, Insert) and statement.table.name == "case_events":
            raise OSError("disk I/O error")
        return await execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(AsyncConnection, "execute", failing)


async def test_a_failing_event_write_leaves_neither_case_row_nor_event(store: CaseStore,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    case = await store.open(NewCase("01012345678", "complaint", "call-1", []), actor="ivr")
    with monkeypatch.context() as patched:
        _fail_event_inserts(patched)
        with pytest.raises(OSError):
            await store.open(NewCase("0212345678", "inquiry", "call-2", []), actor="ivr")
        with pytest.raises(OSError):
            await store.mark_queued(case.case_number, "complaints")
        with pytest.raises(OSError):
            await store.add_note(case.case_number, "lost?", actor="agent1")
    assert await store.find_by_source("call-2") is None
    assert await store.get(case.case_number) == case  # still new, same updated_at, no note
    assert [e.kind for e in await store.events(case.case_number)] == [CaseEventKind.OPENED]
    # The refused open did not use up a case number.
    assert (await store.open(NewCase("0212345678", "inquiry", "call-2", []), actor="ivr")).case_number == \
        "2611290002"


# ---------------------------------------------------------------- call detail records


async def test_call_record_upsert_is_idempotent(records: CallRecordStore) -> None:
    started = datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)
    first = await records.upsert("1700000000.1", caller_number="01012345678", started_at=started)
    again = await records.upsert("1700000000.1", caller_number="01012345678", started_at=started)
    assert first == again
    assert first == CallRecord(
        linkedid="1700000000.1",
        caller_number="01012345678",
        case_number=None,
        ivr_path=[],
        queue=None,
        queue_wait_seconds=None,
        agent=None,
        talk_seconds=None,
        hangup_cause=None,
        outcome="in_ivr",
        started_at=started,
        answered_at=None,
        ended_at=None,
    )
    assert await records.upsert("1700000000.1") == first  # no fields: nothing changes
    assert await records.get("1700000000.1") == first
    assert await records.get("missing") is None
    assert len(await records.list_recent()) == 1


async def test_call_record_out_of_order_partial_updates(records: CallRecordStore) -> None:
    t0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)
    # The hangup is the first event stored for this call.
    await records.upsert(
        "1700000000.2", outcome="completed", ended_at=t0 + timedelta(seconds=95), hangup_cause="16", talk_seconds=60.0
    )
    # Then earlier events arrive, one of them twice.
    await records.upsert("1700000000.2", outcome="answered", agent="agent1", answered_at=t0 + timedelta(seconds=35))
    await records.upsert("1700000000.2", outcome="queued", queue="complaints", queue_wait_seconds=20)
    await records.upsert("1700000000.2", outcome="queued", queue="complaints", queue_wait_seconds=20)
    await records.upsert(
        "1700000000.2", caller_number="0212345678", ivr_path=["1"], case_number="2611290001", started_at=t0
    )
    rec = await records.get("1700000000.2")
    assert rec is not None
    assert rec.outcome == "completed"  # later stages are never undone by late events
    assert (rec.caller_number, rec.case_number, rec.ivr_path) == ("0212345678", "2611290001", ["1"])
    assert (rec.queue, rec.queue_wait_seconds, rec.agent, rec.talk_seconds) == ("complaints", 20.0, "agent1", 60.0)
    assert (rec.started_at, rec.answered_at, rec.ended_at) == (
        t0,
        t0 + timedelta(seconds=35),
        t0 + timedelta(seconds=95),
    )
    assert rec.hangup_cause == "16"

    # A call that is still going moves forward normally.
    await records.upsert("1700000000.3", caller_number="1", started_at=t0)
    assert (await records.upsert("1700000000.3", outcome="queued")).outcome == "queued"
    assert (await records.upsert("1700000000.3", outcome="abandoned_in_queue")).outcome == "abandoned_in_queue"

    recent = await records.list_recent()
    assert [r.linkedid for r in recent] == ["1700000000.3", "1700000000.2"]
    assert json.loads(json.dumps(rec.to_dict()))["started_at"] == t0.isoformat()


async def test_call_record_bad_input(records: CallRecordStore) -> None:
    with pytest.raises(CallRecordError) as exc:
        await records.upsert("x", colour="red")
    assert "colour" in one_line(exc)
    with pytest.raises(CallRecordError) as exc:
        await records.upsert("x", outcome="exploded")
    assert "outcome" in one_line(exc)
    with pytest.raises(CallRecordError) as exc:
        await records.upsert("x", started_at=datetime(2026, 1, 1))
    assert "started_at" in one_line(exc)
    assert await records.get("x") is None


# ---------------------------------------------------------------- migrations


async def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    await in_executor(migrate_database, db_url)
    eng = create_engine_from_url(db_url)
    try:
        case = await CaseStore(eng).open(NewCase("01012345678", "complaint", None, []), actor="ivr")
        await in_executor(migrate_database, db_url)
        head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        async with eng.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert versions == [head]
        assert await CaseStore(eng).get(case.case_number) == case
    finally:
        await eng.dispose()


async def test_concurrent_migrations_take_turns(db_url: str) -> None:
    # e.g. `hotline db upgrade` while `hotline run` starts: nobody fails, nobody hangs.
    await asyncio.wait_for(asyncio.gather(*(in_executor(migrate_database, db_url) for _ in range(3))), 60)
    eng = create_engine_from_url(db_url)
    try:
        assert (await CaseStore(eng).open(NewCase("1", "inquiry", None, []), actor="ivr")).case_number.isdigit()
    finally:
        await eng.dispose()


async def test_models_and_migrations_agree(db_url: str) -> None:
    await in_executor(migrate_database, db_url)
    # Raises AutogenerateDiffsDetected if the models need a revision the migrations lack.
    await in_executor(command.check, alembic_config(db_url, TABLE_MODULES))


_CASES_AT_0006 = sa.table(
    "cases",
    sa.column("id", sa.Integer()), sa.column("case_number", sa.String()), sa.column("caller_number", sa.String()),
    sa.column("category", sa.String()), sa.column("priority", sa.Integer()), sa.column("status", sa.String()),
    sa.column("menu_path", sa.JSON()), sa.column("transcript_status", sa.String()), sa.column("notes", sa.Text()),
    sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()),
)


async def test_revision_0007_moves_notes_into_events_and_back(db_url: str) -> None:
    config = alembic_config(db_url)
    await in_executor(command.upgrade, config, "0006")
    eng = create_engine_from_url(db_url)
    try:
        notes = {"2611290001": "[2026-11-29 09:10 agent1] called back\n[2026-11-29 09:20 agent2] crew sent",
                 "2611290002": None, "2611290003": "   ", "2611290004": "callback requested to 0101"}
        async with eng.begin() as conn:
            for i, (number, text_) in enumerate(notes.items()):
                await conn.execute(sa.insert(_CASES_AT_0006).values(
                    id=i + 1, case_number=number, caller_number="0101", category="complaint", priority=0,
                    status="open", menu_path=["1"], transcript_status="none", notes=text_,
                    created_at=START, updated_at=START + timedelta(minutes=i)))

        await in_executor(migrate_database, db_url)
        store = CaseStore(eng)
        first = await store.events("2611290001")
        assert [(e.kind, e.actor, e.at, e.data) for e in first] == [
            (CaseEventKind.NOTE, "system", START, {"text": notes["2611290001"]})]
        assert (await store.get("2611290001")).notes == notes["2611290001"]
        assert await store.events("2611290002") == [] and await store.events("2611290003") == []
        assert (await store.get("2611290003")).notes is None  # blank notes were nothing to keep
        assert [e.at for e in await store.events("2611290004")] == [START + timedelta(minutes=3)]
        async with eng.connect() as conn:
            columns = await conn.run_sync(lambda c: [col["name"] for col in sa.inspect(c).get_columns("cases")])
        assert "notes" not in columns
        await store.add_note("2611290004", "crew on site", actor="agent1")

        await in_executor(command.downgrade, config, "0006")
        async with eng.connect() as conn:
            rows = dict((await conn.execute(sa.select(_CASES_AT_0006.c.case_number, _CASES_AT_0006.c.notes))).all())
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        assert rows == {"2611290001": notes["2611290001"], "2611290002": None, "2611290003": None,
                        "2611290004": "callback requested to 0101\ncrew on site"}
        assert "case_events" not in tables
    finally:
        await eng.dispose()


async def test_migrate_database_refuses_to_block_the_event_loop(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as exc:
        migrate_database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert "run_in_executor" in one_line(exc)


# ---------------------------------------------------------------- engines


def test_unsupported_database_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(StorageError) as exc:
        create_engine_from_url("mysql+aiomysql://root@localhost/hotline")
    assert "mysql+aiomysql" in one_line(exc) and one_line(exc).startswith("database_url: ")
    with pytest.raises(StorageError) as exc:
        create_engine_from_url("")
    assert one_line(exc).startswith("database_url: ")


async def test_sqlite_engine_makes_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "hotline.db"
    eng = create_engine_from_url(f"sqlite:///{path}")  # the plain scheme gets the async driver
    try:
        assert eng.dialect.driver == "aiosqlite"
        async with eng.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 1000
        assert path.exists()
    finally:
        await eng.dispose()


async def test_a_write_whose_caller_is_cancelled_finishes_and_the_database_stays_usable(store: CaseStore) -> None:
    """Shutdown or a hang-up cancels the task mid-write: the case is still stored whole, the cancel still
    reaches the caller, and the next writer is not left waiting on a lock nobody releases (SQLite)."""
    random = __import__("random").Random(12345)
    for i in range(40):
        source = f"cancelled-{i}"

        async def write_then_more(source: str = source) -> None:
            created = await store.open(NewCase("01012345678", "complaint", source, ["1"]), actor="ivr")
            await store.classify(created.case_number, category="inquiry", menu_path=["1", "2"])

        task = asyncio.create_task(write_then_more())
        await asyncio.sleep(0)  # the create has started
        await asyncio.sleep(random.random() * 0.01)  # ... and is cancelled somewhere in it, or in the update
        task.cancel()
        outcome = await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() or outcome == [None]  # the cancel is not swallowed
        async with asyncio.timeout(3):  # not SQLite's 30 s busy timeout
            case = await store.find_by_source(source)
            assert case is not None and case.menu_path in (["1"], ["1", "2"]), case
            assert (case.category, case.menu_path) in (("complaint", ["1"]), ("inquiry", ["1", "2"]))
            await store.add_note(case.case_number, "still writable", actor="agent1")
