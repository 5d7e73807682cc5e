"""A database that is locked does not lose or double a call's case writes (real SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from cases import ACTOR_IVR, CaseEventKind, CaseNotFound, CaseStatus, CaseStore, DurableCases, NewCase
from storage import Outbox, create_engine_from_url, migrate_database
from tests.support.databases import pg_unreachable_reason, scratch_pg_database


@contextlib.asynccontextmanager
async def _database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
        return
    async with scratch_pg_database(pg_unreachable_reason()) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str, AsyncEngine]]:
    """(kind, URL, engine) of a freshly migrated database."""
    async with _database(request.param, tmp_path) as url:
        await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
        engine = create_engine_from_url(url)
        try:
            yield request.param, url, engine
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def locked(kind: str, url: str) -> AsyncIterator[None]:
    """Hold the database's write lock (SQLite) or the case tables' exclusive locks (PostgreSQL) from outside."""
    if kind == "sqlite":
        conn = sqlite3.connect(make_url(url).database or "", isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    parsed = make_url(url)
    pg = await asyncpg.connect(host=parsed.host, port=parsed.port or 5432, user=parsed.username,
                               database=parsed.database)
    tx = pg.transaction()
    await tx.start()
    await pg.execute("LOCK TABLE cases, case_events, case_counters IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await tx.rollback()
        await pg.close()


@contextlib.contextmanager
def _elapsed() -> Iterator[list[float]]:
    out: list[float] = []
    start = asyncio.get_running_loop().time()
    yield out
    out.append(asyncio.get_running_loop().time() - start)


async def test_a_call_goes_on_while_the_case_tables_are_locked_and_every_write_lands_once(
        db: tuple[str, str, AsyncEngine], tmp_path: Path) -> None:
    kind, url, engine = db
    store = CaseStore(engine)
    outbox = Outbox(tmp_path / "outbox", write_timeout=0.5, retry_min=0.1, retry_max=0.5)
    cases = DurableCases(store, outbox, read_timeout=0.5)
    cases.register()
    await outbox.start()
    await cases.refill()
    try:
        async with locked(kind, url):
            with _elapsed() as took:
                opened = await cases.open(NewCase(caller_number="9" * 70, category="unclassified",
                                                  source_ref="call-1"), actor=ACTOR_IVR)
                await cases.record_menu_path(opened.case_number, ["menu:1"] * 40, actor=ACTOR_IVR)
                await cases.mark_abandoned_in_ivr(opened.case_number, actor=ACTOR_IVR)
            # The caller waited one write timeout, not the lock: every later write queued behind the journal.
            assert took[0] < 3.0
            assert not opened.provisional and opened.case_number.isdigit()
            assert outbox.pending == 3
            assert outbox.health_report()["pending"] == 3
            await asyncio.sleep(1.0)  # the replayer keeps trying against the lock
            assert outbox.pending == 3
        assert await outbox.wait_drained(40), outbox.health_report()
        case = await store.get(opened.case_number)
        assert case.status is CaseStatus.ABANDONED_IN_IVR
        assert case.caller_number == "9" * 64  # cut to what a case holds, not a reason to drop the call
        assert len(case.menu_path) == 32 and case.menu_path[-1] == "...+9"
        kinds = [e.kind for e in await store.events(opened.case_number)]
        assert kinds.count(CaseEventKind.OPENED) == 1
        assert len(kinds) == len(set(kinds)), kinds  # nothing written twice
    finally:
        await cases.aclose()
        await outbox.aclose()


async def test_the_journal_survives_a_restart_and_is_written_by_the_next_process(
        db: tuple[str, str, AsyncEngine], tmp_path: Path) -> None:
    kind, url, engine = db
    store = CaseStore(engine)
    first = Outbox(tmp_path / "outbox", write_timeout=0.3, retry_min=0.1, retry_max=0.2)
    cases = DurableCases(store, first, read_timeout=0.3)
    cases.register()
    await first.start()
    await cases.refill()
    async with locked(kind, url):
        opened = await cases.open(NewCase(caller_number="0212345678", category="unclassified", source_ref="call-2"),
                                  actor=ACTOR_IVR)
        await cases.mark_queued(opened.case_number, "complaints")
        await cases.aclose()
        await first.aclose()  # the process stops with both writes still waiting
    assert first.pending == 2
    second = Outbox(tmp_path / "outbox", write_timeout=2.0, retry_min=0.1, retry_max=0.2)
    again = DurableCases(store, second)
    again.register()
    await second.start()
    try:
        assert await second.wait_drained(40), second.health_report()
        case = await store.get(opened.case_number)
        assert case.status is CaseStatus.QUEUED
        kinds = [e.kind for e in await store.events(opened.case_number)]
        assert kinds.count(CaseEventKind.OPENED) == 1 and kinds.count(CaseEventKind.QUEUED) == 1
    finally:
        await again.aclose()
        await second.aclose()


async def test_one_write_applied_twice_changes_the_case_once(db: tuple[str, str, AsyncEngine]) -> None:
    _, _, engine = db
    store = CaseStore(engine)
    case = await store.open(NewCase(caller_number="01012345678", category="complaint"), actor=ACTOR_IVR)
    at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    once = store.idempotent("op-1", at)
    await once.mark_queued(case.case_number, "complaints")
    await store.idempotent("op-1", at).mark_queued(case.case_number, "complaints")  # the replay of a late commit
    events = await store.events(case.case_number)
    queued = [e for e in events if e.kind is CaseEventKind.QUEUED]
    assert len(queued) == 1 and queued[0].at == at  # stamped when it happened, not when it was replayed
    numbers = await store.reserve_numbers(3)
    assert len(set(numbers)) == 3 and case.case_number not in numbers


async def test_thirty_calls_at_once_all_get_real_distinct_numbers(db: tuple[str, str, AsyncEngine],
                                                                   tmp_path: Path) -> None:
    _, _, engine = db
    store = CaseStore(engine)
    outbox = Outbox(tmp_path / "outbox", write_timeout=5.0)
    cases = DurableCases(store, outbox, pool_size=20)
    cases.register()
    await outbox.start()
    try:
        opened = await asyncio.gather(*(
            cases.open(NewCase(caller_number=f"0105550{i:04d}", category="unclassified", source_ref=f"burst-{i}"),
                       actor=ACTOR_IVR) for i in range(30)))
        numbers = [o.case_number for o in opened]
        assert not any(o.provisional for o in opened), numbers  # the pool is waited for, not given up on
        assert len(set(numbers)) == 30
        assert await outbox.wait_drained(30)
        for number in numbers:
            assert (await store.get(number)).status is CaseStatus.NEW
    finally:
        await cases.aclose()
        await outbox.aclose()


async def test_a_transcript_queued_under_a_provisional_reference_reaches_its_case(
        db: tuple[str, str, AsyncEngine]) -> None:
    from cases import resolve_case_number

    _, _, engine = db
    store = CaseStore(engine)
    case = await store.open(NewCase(caller_number="0212345678", category="complaint", source_ref="1733300000.7"),
                            actor=ACTOR_IVR)
    assert await resolve_case_number(store, "ref:1733300000.7") == case.case_number
    assert await resolve_case_number(store, case.case_number) == case.case_number
    with pytest.raises(CaseNotFound, match="no case opened for 'ref:nope' yet"):
        await resolve_case_number(store, "ref:nope")
