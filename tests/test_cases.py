"""Case store, call detail records and migrations, on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from cases import (
    CaseNotFound,
    CaseStatus,
    CaseStore,
    CaseStoreError,
    NewCase,
    TranscriptStatus,
)
from storage import create_engine_from_url, migrate_database
from hotline.schema import TABLE_MODULES
from storage import StorageError, alembic_config
from queueing.records import CallRecord, CallRecordError, CallRecordStore

PG_URL = os.environ.get("HOTLINE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
START = datetime(2026, 11, 29, 9, 0, 0, tzinfo=timezone.utc)


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
    url = make_url(PG_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        reason = f"PostgreSQL not reachable at {host}:{port} ({exc}); set HOTLINE_TEST_PG_URL to test it"
        print(f"\n{reason}")
        return reason
    return None


@contextlib.asynccontextmanager
async def _scratch_pg_database(pg_unreachable: str | None) -> AsyncIterator[str]:
    """A fresh, uniquely named database per test: reruns and parallel runs never see each other's tables."""
    if pg_unreachable:
        pytest.skip(pg_unreachable)
    name = f"hotline_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path: Path, pg_unreachable: str | None) -> AsyncIterator[str]:
    """URL of an empty database (the SQLite file sits in a directory that does not exist yet)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'not-yet' / 'hotline.db'}"
    else:
        async with _scratch_pg_database(pg_unreachable) as url:
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


async def test_create_get_update_and_list_recent(store: CaseStore) -> None:
    first = await store.create(NewCase("01012345678", "complaint", "call-1", ["1"]))
    assert first.case_number == "2611290001"
    assert first.case_number.isdigit()
    assert first.status is CaseStatus.NEW
    assert first.transcript_status is TranscriptStatus.NONE
    assert first.priority == 0 and first.menu_path == ["1"] and first.source_ref == "call-1"
    assert first.created_at == first.updated_at and first.created_at.tzinfo is not None
    assert first.created_at.utcoffset() == timedelta(0)

    second = await store.create(NewCase("0212345678", "inquiry", None, ["2", "1"]))
    third = await store.create(NewCase("", "operator", "call-3", []))
    assert [second.case_number, third.case_number] == ["2611290002", "2611290003"]

    assert await store.get(first.case_number) == first

    changed = await store.update(
        first.case_number,
        status=CaseStatus.IN_PROGRESS,
        agent="agent1",
        priority=2,
        transcript_status="pending",
        menu_path=["1", "3"],
    )
    assert changed.status is CaseStatus.IN_PROGRESS and changed.agent == "agent1" and changed.priority == 2
    assert changed.transcript_status is TranscriptStatus.PENDING and changed.menu_path == ["1", "3"]
    assert changed.created_at == first.created_at and changed.updated_at > first.updated_at
    assert await store.get(first.case_number) == changed

    cleared = await store.update(first.case_number, agent=None, notes="called back")
    assert cleared.agent is None and cleared.notes == "called back"

    recent = await store.list_recent()
    assert [c.case_number for c in recent] == [third.case_number, second.case_number, first.case_number]
    assert [c.case_number for c in await store.list_recent(limit=2)] == [third.case_number, second.case_number]
    in_progress = await store.list_recent(status=CaseStatus.IN_PROGRESS)
    assert [c.case_number for c in in_progress] == [first.case_number]
    assert await store.list_recent(status=CaseStatus.CLOSED) == []

    as_json = json.loads(json.dumps(changed.to_dict()))
    assert as_json["status"] == "in_progress" and as_json["transcript_status"] == "pending"
    assert datetime.fromisoformat(as_json["created_at"]) == changed.created_at


async def test_update_rejects_unknown_fields_and_bad_values(store: CaseStore) -> None:
    case = await store.create(NewCase("01012345678", "complaint", None, []))
    with pytest.raises(CaseStoreError) as exc:
        await store.update(case.case_number, colour="red", status="open")
    assert "colour" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.update(case.case_number, created_at=START)
    assert "created_at" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.update(case.case_number, status="lost")
    assert "status" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.update(case.case_number, priority="high")
    assert "priority" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.update(case.case_number, menu_path="1,2")
    assert "menu_path" in one_line(exc)
    assert await store.get(case.case_number) == case  # nothing was half-applied


async def test_new_case_input_is_validated(store: CaseStore) -> None:
    with pytest.raises(CaseStoreError) as exc:
        await store.create(NewCase("01012345678", "Complaint!", None, []))
    assert "category" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.create(NewCase(1234, "complaint", None, []))  # type: ignore[arg-type]
    assert "caller_number" in one_line(exc)
    with pytest.raises(CaseStoreError) as exc:
        await store.create(NewCase("01012345678", "complaint", None, [1]))  # type: ignore[list-item]
    assert "menu_path" in one_line(exc)
    assert await store.list_recent() == []


async def test_missing_case_raises_case_not_found(store: CaseStore) -> None:
    with pytest.raises(CaseNotFound) as exc:
        await store.get("2611299999")
    assert one_line(exc) == "no case with number '2611299999'"
    with pytest.raises(CaseNotFound) as exc:
        await store.update("2611299999", status="open")
    assert "2611299999" in one_line(exc)
    assert isinstance(exc.value, CaseStoreError) and isinstance(exc.value, LookupError)


async def test_concurrent_creates_get_distinct_numbers(store: CaseStore) -> None:
    created = await asyncio.gather(
        *(store.create(NewCase(f"0101234{i:04d}", "complaint", f"call-{i}", [])) for i in range(20))
    )
    numbers = [c.case_number for c in created]
    assert len(set(numbers)) == 20
    assert sorted(numbers) == [f"261129{seq:04d}" for seq in range(1, 21)]
    assert len(await store.list_recent(limit=100)) == 20


async def test_case_numbers_restart_each_day_in_the_given_zone(engine: AsyncEngine) -> None:
    clock = TickingClock(datetime(2026, 11, 28, 14, 59, 58, tzinfo=timezone.utc))
    seoul = timezone(timedelta(hours=9))
    store = CaseStore(engine, clock=clock, day_zone=seoul)
    late = await store.create(NewCase("1", "inquiry", None, []))  # 23:59:58 in Seoul
    later = await store.create(NewCase("2", "inquiry", None, []))  # 23:59:59
    next_day = await store.create(NewCase("3", "inquiry", None, []))  # 00:00:00 the next day
    assert [late.case_number, later.case_number, next_day.case_number] == ["2611280001", "2611280002", "2611290001"]


async def test_find_by_source_and_one_case_per_source(store: CaseStore) -> None:
    case = await store.create(NewCase("01012345678", "complaint", "1700000000.42", ["1"]))
    assert await store.find_by_source("1700000000.42") == case
    assert await store.find_by_source("no-such-call") is None
    with pytest.raises(CaseStoreError) as exc:
        await store.create(NewCase("01012345678", "inquiry", "1700000000.42", []))
    assert "source_ref" in one_line(exc)
    # The refused create must not have used up a case number.
    following = await store.create(NewCase("01012345678", "inquiry", "1700000000.43", []))
    assert following.case_number == "2611290002"


async def test_pending_transcripts_are_listed_oldest_first(store: CaseStore) -> None:
    cases = [await store.create(NewCase(f"0{i}", "complaint", None, [])) for i in range(4)]
    for case in (cases[2], cases[0], cases[3]):
        await store.update(case.case_number, transcript_status=TranscriptStatus.PENDING, recording_path="/r.wav")
    await store.update(cases[3].case_number, transcript_status="done", transcript="street light broken")
    pending = await store.list_pending_transcripts()
    assert [c.case_number for c in pending] == [cases[0].case_number, cases[2].case_number]
    assert all(c.recording_path == "/r.wav" for c in pending)
    assert [c.case_number for c in await store.list_pending_transcripts(limit=1)] == [cases[0].case_number]
    with pytest.raises(CaseStoreError) as exc:
        await store.list_pending_transcripts(limit=0)
    assert "limit" in one_line(exc)


# ---------------------------------------------------------------- call detail records


async def test_call_record_upsert_is_idempotent(records: CallRecordStore) -> None:
    started = datetime(2026, 11, 29, 9, 0, 0, tzinfo=timezone.utc)
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
    t0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=timezone.utc)
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
        case = await CaseStore(eng).create(NewCase("01012345678", "complaint", None, []))
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
        assert (await CaseStore(eng).create(NewCase("1", "inquiry", None, []))).case_number.isdigit()
    finally:
        await eng.dispose()


async def test_models_and_migrations_agree(db_url: str) -> None:
    await in_executor(migrate_database, db_url)
    # Raises AutogenerateDiffsDetected if the models need a revision the migrations lack.
    await in_executor(command.check, alembic_config(db_url, TABLE_MODULES))


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
            created = await store.create(NewCase("01012345678", "complaint", source, ["1"]))
            await store.update(created.case_number, category="inquiry", menu_path=["1", "2"])

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
            await store.update(case.case_number, notes="still writable")
