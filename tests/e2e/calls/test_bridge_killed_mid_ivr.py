"""The bridge killed (SIGKILL) while a citizen is in the IVR, through the real parts: Asterisk (run by the test, as
in production) drops the call when its FastAGI session dies; the restarted bridge records the case as
`interrupted` by a system failure — not `abandoned_in_ivr` — while a citizen who really hung up in the IVR is
still `abandoned_in_ivr`."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStatus, CaseStore
from queueing import CallRecordStore
from storage import create_engine_from_url
from telephony import AGI_SECRET_ENV, AsteriskConfig, AsteriskProcess
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest
from tests.support.ports import module_ports
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
WORK = PROJECT_ROOT / "var" / "test-bridge-killed-ivr"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge() -> AsyncIterator[tuple[HotlineUnderTest, AsteriskProcess]]:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    h = HotlineUnderTest(WORK / "run", ports=PORTS, env={
        "HOTLINE_MANAGE_ASTERISK": "false",
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-test-killed-ivr-{os.getpid()}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{WORK / 'hotline.db'}",
        "HOTLINE_MENU_TIMEOUT_SECONDS": "10",  # the caller stays in the menu while the bridge is killed
    })
    h.run_dir.mkdir(parents=True)
    settings = h.settings()  # writes the secrets both the bridge and this Asterisk use
    assert settings.agi_secret is not None
    # The dialplan makes each channel's AGI token from the secret in Asterisk's environment.
    asterisk = AsteriskProcess(dataclasses.replace(AsteriskConfig.from_settings(settings), agents=()),
                               env={AGI_SECRET_ENV: settings.agi_secret})
    await asterisk.start()
    try:
        await h.start(keep_run_dir=True)
        yield h, asterisk
        assert await h.stop() == 0, h.log_tail()
    finally:
        await asterisk.stop()


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


async def test_a_bridge_killed_mid_ivr_leaves_the_case_interrupted_not_abandoned(bridge, tmp_path) -> None:
    hotline, asterisk = bridge
    settings = hotline.settings()
    prefix = settings.redis_key_prefix
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    engine = create_engine_from_url(settings.database_url)
    cases, records = CaseStore(engine), CallRecordStore(engine)

    async def call_in_ivr(caller: str) -> dict[str, Any] | None:
        for linkedid in await redis.smembers(f"{prefix}:calls:live"):
            call = await redis.hgetall(f"{prefix}:call:{linkedid}")
            if call.get("caller_number") == caller and call.get("state") == "ivr" and call.get("case_number"):
                return call
        return None

    try:
        # A citizen who hangs up in the menu, with the bridge running: they abandoned the IVR.
        leaver = "01055519001"
        result = await CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=leaver,
                                   work_dir=tmp_path / "leaver", name="leaver", steps=[("pause", 3000)],
                                   hangup="caller", timeout=60).run()
        assert result.answered, result
        left = await _until(lambda: _case_of(cases, leaver, CaseStatus.ABANDONED_IN_IVR), 20, "the leaver's case")

        # A citizen still in the menu when the bridge is killed.
        caller = "01055519002"
        call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                           work_dir=tmp_path / "cut", name="cut", steps=[("pause", 60000)], hangup="wait",
                           wait_bye_ms=60000, timeout=120)
        running = asyncio.create_task(call.run())
        live = await _until(lambda: call_in_ivr(caller), 30, "the call in the IVR")
        case_number, linkedid = live["case_number"], live["linkedid"]
        assert hotline.process is not None
        hotline.process.kill()
        await hotline.process.wait()
        cut = await asyncio.wait_for(running, 90)
        assert cut.answered and cut.hung_up_by == "asterisk", cut  # the call was lost with its AGI session
        assert (await cases.get(case_number)).status is CaseStatus.NEW  # nobody was left to record the end

        await hotline.start(keep_run_dir=True)
        case = await _until(lambda: _settled(cases, case_number), 30, "the cut-off case settled")
        assert case.status is CaseStatus.INTERRUPTED, case
        assert "system failure" in (case.notes or "") and "stopped during the call" in case.notes
        record = await records.get(linkedid)
        assert record is not None and record.outcome == "interrupted", record
        # The citizen who hung up themselves is still counted as such.
        assert (await cases.get(left.case_number)).status is CaseStatus.ABANDONED_IN_IVR
        interrupted = await cases.list_recent(status="interrupted")
        assert [c.case_number for c in interrupted] == [case_number]
        # /healthz counts it, and shows the AMI event guard (nothing parked).
        health = await hotline.health()
        assert health is not None and health["components"]["calls"]["interrupted"] == 1, health
        events = health["components"]["ami_events"]
        assert events["ok"] and events["parked"] == 0 and health["components"]["ami"]["events_dropped"] == 0
    finally:
        await redis.aclose()
        await engine.dispose()


async def _case_of(cases: CaseStore, caller: str, status: CaseStatus) -> Any:
    for case in await cases.list_recent(limit=20):
        if case.caller_number == caller and case.status is status:
            return case
    return None


async def _settled(cases: CaseStore, case_number: str) -> Any:
    case = await cases.get(case_number)
    return case if case.status is not CaseStatus.NEW else None
