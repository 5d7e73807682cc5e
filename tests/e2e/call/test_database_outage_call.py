"""A locked database does not drop a citizen's call: real SIPp calls into the project's Asterisk and `hotline
run`, with the SQLite file locked from outside for the whole call; the case lands once when the lock goes."""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from cases import CaseStore
from queueing import CallRecordStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.sipp import AgentPhone, CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-db-outage", ports=PORTS)
    async with running_hotline(h):
        yield h


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[threading.Event]:
    """Hold SQLite's write lock from another connection until the block ends (set the event to release early)."""
    release = threading.Event()
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(120)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, name="sqlite-lock", daemon=True)
    thread.start()
    assert locked.wait(30), "could not lock the database"
    try:
        yield release
    finally:
        release.set()
        thread.join(30)


async def test_a_call_made_while_the_database_is_locked_reaches_the_agent_and_its_case_is_written_once(
        hotline: HotlineUnderTest, tmp_path: Path) -> None:
    settings = hotline.settings()
    agent = settings.agents[0]
    caller = "01055507001"
    db_file = hotline.run_dir / "hotline.db"
    async with AgentPhone(agent.name, agent.sip_secret, settings.sip_port, talk_ms=2000,
                          work_dir=tmp_path / "agent") as phone:
        with sqlite_locked(db_file):
            call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                               work_dir=tmp_path / "caller", name="locked",
                               steps=[("pause", 2500), ("dtmf", "2")], hangup="wait", wait_bye_ms=60000,
                               timeout=90)
            result = await call.run()
            assert result.answered and result.ok, result.describe()
            assert result.hung_up_by == "asterisk", result.describe()  # the agent's phone hung up after talking
            await phone.wait_call(timeout=30)
            assert phone.answered, "the call did not reach the agent while the database was locked"
            during = await hotline.health()
            assert during is not None and during["components"]["outbox"]["pending"] > 0, during
        # The lock is gone: the journal is written in order, each write once.
        engine = create_engine_from_url(settings.database_url)
        try:
            cases = CaseStore(engine)
            deadline = asyncio.get_running_loop().time() + 60
            mine: list = []
            while asyncio.get_running_loop().time() < deadline:
                mine = [c for c in await cases.list_recent(limit=100) if c.caller_number == caller]
                if mine and mine[0].status == "open":
                    break
                await asyncio.sleep(0.5)
            assert len(mine) == 1, mine  # written once, not lost, not doubled
            case = mine[0]
            assert case.status == "open" and case.agent == agent.name, case
            assert case.menu_path[:1] == ["2"] and case.category == "inquiry", case
            kinds = [e.kind.value for e in await cases.events(case.case_number)]
            assert [kinds.count(k) for k in ("opened", "queued", "agent_assigned")] == [1, 1, 1], kinds
            record = await CallRecordStore(engine).get(str(case.source_ref))
            assert record is not None and record.case_number == case.case_number and record.agent == agent.name
        finally:
            await engine.dispose()
        after = await hotline.health()
        assert after is not None and after["components"]["outbox"]["pending"] == 0, after
