"""Restarting the bridge while calls wait: Asterisk (run by the test, as in production) keeps the callers in
app_queue; the restarted bridge rebuilds the live state from Asterisk so it matches the truth again, and the
agents' membership survives."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore, create_engine_from_url
from telephony import AsteriskConfig, AsteriskProcess
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command
from tests.support.sipp import AgentPhone, CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

BASE_PORT = 37200
WORK = PROJECT_ROOT / "var" / "test-queueing-restart"
AGENT_PASSWORD = "rs-agent-secret"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge() -> AsyncIterator[tuple[HotlineUnderTest, AsteriskProcess]]:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    h = HotlineUnderTest(WORK / "run", base_port=BASE_PORT, env={
        "HOTLINE_MANAGE_ASTERISK": "false",
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-rs-{os.getpid()}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{WORK / 'hotline.db'}",
        "HOTLINE_RTP_PORT_START": str(BASE_PORT + 600),
        "HOTLINE_RTP_PORT_END": str(BASE_PORT + 799),
    })
    h.run_dir.mkdir(parents=True)
    settings = h.settings()  # writes the secrets both the bridge and this Asterisk use
    asterisk = AsteriskProcess(dataclasses.replace(AsteriskConfig.from_settings(settings), agents=()))
    await asterisk.start()
    try:
        await h.start(keep_run_dir=True)
        yield h, asterisk
        assert await h.stop() == 0, h.log_tail()
    finally:
        await asterisk.stop()


async def _until(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


async def test_bridge_restart_while_calls_wait(bridge: tuple[HotlineUnderTest, AsteriskProcess],
                                               tmp_path: Path) -> None:
    hotline, asterisk = bridge
    settings = hotline.settings()
    prefix = settings.redis_key_prefix
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    engine = create_engine_from_url(settings.database_url)
    cases = CaseStore(engine)

    async def waiting() -> list[dict[str, Any]]:
        raw = await redis.hgetall(f"{prefix}:queue:inquiries:waiting")
        return sorted((json.loads(v) for v in raw.values()), key=lambda e: e["position"])

    code, _, err = await run_hotline_command(["agents", "add", "rsagent", "--password", AGENT_PASSWORD, "--queue",
                                              "inquiries"], hotline.env)
    assert code == 0, err[-1000:]
    code, _, err = await run_hotline_command(["agents", "login", "rsagent"], hotline.env)
    assert code == 0, err[-1000:]
    leaver, stayer = "01055504001", "01055504002"
    sip = settings.sip_port
    call_leaver = CitizenCall(sip_port=sip, number=settings.hotline_number, from_user=leaver, work_dir=tmp_path / "x",
                              name="leaver", steps=[("pause", 1500), ("dtmf", "2"), ("pause", 24000)],
                              hangup="caller", timeout=90)
    call_stayer = CitizenCall(sip_port=sip, number=settings.hotline_number, from_user=stayer, work_dir=tmp_path / "y",
                              name="stayer", steps=[("pause", 4000), ("dtmf", "2"), ("pause", 100000)],
                              hangup="wait", wait_bye_ms=100000, timeout=180)
    task_leaver = asyncio.create_task(call_leaver.run())
    task_stayer = asyncio.create_task(call_stayer.run())
    try:
        both = await _until(lambda: _callers(waiting, 2), timeout=40, what="both callers waiting")
        assert [e["caller"] for e in both] == [leaver, stayer]
        stayer_case = both[1]["case_number"]

        # The bridge goes away; Asterisk keeps both callers; one of them gives up meanwhile.
        assert await hotline.stop() == 0
        result_leaver = await task_leaver
        assert result_leaver.answered and result_leaver.hung_up_by == "caller", result_leaver.describe()
        assert len(await waiting()) == 2  # Redis still shows what was true before the bridge stopped
        await hotline.start(keep_run_dir=True)

        after = await _until(lambda: _callers(waiting, 1, exact=True), timeout=20, what="live state rebuilt")
        assert after[0]["caller"] == stayer and after[0]["position"] == 1 and after[0]["case_number"] == stayer_case
        leaver_case = await _until(lambda: _case(cases, leaver, "abandoned_in_queue"), timeout=20,
                                   what="the leaver's case closed")
        assert leaver_case.agent is None
        state = await redis.hgetall(f"{prefix}:agent:rsagent")
        assert state["state"] == "unreachable", state  # still a member after the restart, phone not registered

        async with AgentPhone("rsagent", AGENT_PASSWORD, sip, talk_ms=3000, work_dir=tmp_path / "agent",
                              timeout=60) as phone:
            result_stayer = await task_stayer
            await phone.wait_call(timeout=30)
            assert phone.answered
        assert result_stayer.answered and result_stayer.hung_up_by == "asterisk", result_stayer.describe()
        case = await _until(lambda: _case(cases, stayer, "open"), what="the stayer's case open")
        assert case.agent == "rsagent"
    finally:
        for task in (task_leaver, task_stayer):
            if not task.done():
                task.cancel()
        await asyncio.gather(task_leaver, task_stayer, return_exceptions=True)
        await redis.aclose()
        await engine.dispose()


async def _callers(waiting: Any, count: int, exact: bool = False) -> list[dict[str, Any]] | None:
    found = await waiting()
    ok = len(found) == count if exact else len(found) >= count
    return found if ok else None


async def _case(cases: CaseStore, caller: str, status: str) -> Any:
    for c in await cases.list_recent(limit=50):
        if c.caller_number == caller and c.status == status:
            return c
    return None
