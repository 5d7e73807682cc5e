"""Restarting the bridge while calls wait: Asterisk (run by the test, as in production) keeps the callers in
app_queue; the restarted bridge rebuilds the live state from Asterisk so it matches the truth again, and the
agents' membership survives. A callback connected to the citizen when the bridge goes away is never dialed again:
still up after the restart, the bridge follows it to its end; ended while it was away, Asterisk's record says the
citizen was reached."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore
from queueing import CallbackStore
from storage import create_engine_from_url
from telephony import AGI_SECRET_ENV, AmiClient, AsteriskConfig, AsteriskConsole, AsteriskProcess
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command
from tests.support.ports import module_ports
from tests.support.sipp import AgentPhone, CitizenCall, SippRun, _uas_xml
from tests.support.waiting import until

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
WORK = PROJECT_ROOT / "var" / "test-queueing-restart"
AGENT_PASSWORD = "rs-agent-secret"
CITIZEN_PORT = PORTS.spare(0)  # the "carrier" (a SIPp UAS) taking the callbacks to the citizen
CITIZEN_MEDIA_PORT = PORTS.spare(2)  # its media: 4 ports from here


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge() -> AsyncIterator[tuple[HotlineUnderTest, AsteriskProcess]]:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    h = HotlineUnderTest(WORK / "run", ports=PORTS, env={
        "HOTLINE_MANAGE_ASTERISK": "false",
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-rs-{os.getpid()}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{WORK / 'hotline.db'}",
        "HOTLINE_CALLBACK_DIAL_TEMPLATE": f"PJSIP/trunk/sip:{{number}}@127.0.0.1:{CITIZEN_PORT}",
        "HOTLINE_CALLBACK_RETRY_SECONDS": "3",
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

    code, out, err = await run_hotline_command(["agents", "add", "rsagent", "--password", AGENT_PASSWORD, "--queue",
                                                "inquiries"], hotline.env)
    assert code == 0, err[-1000:]
    sip_secret = json.loads(out)["sip_secret"]  # shown once by `agents add`, apart from the console password
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
        both = await until(lambda: _callers(waiting, 2), timeout=40, what="both callers waiting")
        assert [e["caller"] for e in both] == [leaver, stayer]
        stayer_case = both[1]["case_number"]

        # The bridge goes away; Asterisk keeps both callers; one of them gives up meanwhile.
        assert await hotline.stop() == 0
        result_leaver = await task_leaver
        assert result_leaver.answered and result_leaver.hung_up_by == "caller", result_leaver.describe()
        assert len(await waiting()) == 2  # Redis still shows what was true before the bridge stopped
        await hotline.start(keep_run_dir=True)

        after = await until(lambda: _callers(waiting, 1, exact=True), timeout=20, what="live state rebuilt")
        assert after[0]["caller"] == stayer and after[0]["position"] == 1 and after[0]["case_number"] == stayer_case
        leaver_case = await until(lambda: _case(cases, leaver, "abandoned_in_queue"), timeout=20,
                                   what="the leaver's case closed")
        assert leaver_case.agent is None
        state = await redis.hgetall(f"{prefix}:agent:rsagent")
        assert state["state"] == "unreachable", state  # still a member after the restart, phone not registered

        async with AgentPhone("rsagent", sip_secret, sip, talk_ms=3000, work_dir=tmp_path / "agent",
                              timeout=60) as phone:
            result_stayer = await task_stayer
            await phone.wait_call(timeout=30)
            assert phone.answered
        assert result_stayer.answered and result_stayer.hung_up_by == "asterisk", result_stayer.describe()
        case = await until(lambda: _case(cases, stayer, "open"), what="the stayer's case open")
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


async def test_callback_in_progress_survives_bridge_restarts_without_a_second_ring(
        bridge: tuple[HotlineUnderTest, AsteriskProcess], tmp_path: Path) -> None:
    hotline, asterisk = bridge
    settings = hotline.settings()
    engine = create_engine_from_url(settings.database_url)
    callbacks = CallbackStore(engine)
    ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret or "")
    await ami.start()
    console = AsteriskConsole(asterisk.cfg.control_socket)  # hanging up a channel is not the bridge's AMI right
    messages = asterisk.cfg.messages_log
    try:
        for agent in ("rsagent",):
            await run_hotline_command(["agents", "logout", agent], hotline.env)
        code, out, err = await run_hotline_command(["agents", "add", "rcbagent", "--password", AGENT_PASSWORD,
                                                    "--queue", "inquiries"], hotline.env)
        assert code == 0, err[-1000:]
        rcb_secret = json.loads(out)["sip_secret"]
        code, _, err = await run_hotline_command(["agents", "login", "rcbagent"], hotline.env)
        assert code == 0, err[-1000:]

        async def connected_callback(caller: str, tag: str) -> tuple[int, str, SippRun, AgentPhone]:
            """A callback whose agent and citizen are talking; returns (id, citizen channel, citizen, phone)."""
            request = await callbacks.request(queue="inquiries", caller_number=caller, case_number=None,
                                              linkedid=f"restart-{tag}", priority=0, queued_at=datetime.now(UTC))
            citizen = SippRun(f"citizen-{tag}", _uas_xml(caller, 300, 120000), [
                f"127.0.0.1:{settings.sip_port}", "-i", "127.0.0.1", "-p", str(CITIZEN_PORT),
                "-mp", str(CITIZEN_MEDIA_PORT),
                "-rtp_echo"], tmp_path / f"citizen-{tag}", timeout=150)
            await citizen.start()
            phone = AgentPhone("rcbagent", rcb_secret, settings.sip_port, talk_ms=120000,
                               work_dir=tmp_path / f"agent-{tag}", timeout=150)
            await phone.__aenter__()
            leg = await until(lambda: _citizen_leg(ami, f"callback-{request.id}-1"), timeout=40,
                               what=f"callback {tag}: the citizen answered")
            assert (await until(lambda: _status(callbacks, request.id, "connected"), what="connected")).attempts == 1
            return request.id, leg, citizen, phone

        async def finish(citizen: SippRun, phone: AgentPhone) -> None:
            result = await citizen.wait(timeout=20)
            assert "ANSWERED" in result.marks() and "HANGUP asterisk" in result.marks(), result.describe()
            await phone.__aexit__(None, None, None)

        # 1. The bridge restarts while the citizen talks: it follows the call, never dials it again.
        first, leg, citizen, phone = await connected_callback("01055504201", "up")
        assert await hotline.stop() == 0
        await hotline.start(keep_run_dir=True)
        await asyncio.sleep(4)  # several dispatcher rounds: a blind re-dial would happen now
        assert (await callbacks.get(first)).status == "connected"
        await console.command(f"channel request hangup {leg}")  # the citizen hangs up
        done = await until(lambda: _status(callbacks, first, "completed"), what="followed call completed")
        assert done.attempts == 1
        await finish(citizen, phone)

        # 2. The call ends while the bridge is away: Asterisk's record tells the new bridge it reached the citizen.
        second, leg, citizen, phone = await connected_callback("01055504202", "gone")
        assert await hotline.stop() == 0
        await console.command(f"channel request hangup {leg}")
        await finish(citizen, phone)
        await hotline.start(keep_run_dir=True)
        done = await until(lambda: _status(callbacks, second, "completed"), what="completed from Asterisk's record")
        assert done.attempts == 1
        await asyncio.sleep(4)
        log = messages.read_text(errors="replace")
        for caller in ("01055504201", "01055504202"):
            assert log.count(f"Called PJSIP/trunk/sip:{caller}@") == 1, f"{caller} was rung more than once"
        assert (await callbacks.get(second)).status == "completed"
    finally:
        await run_hotline_command(["agents", "logout", "rcbagent"], hotline.env)
        await ami.close()
        await engine.dispose()


async def _citizen_leg(ami: AmiClient, attempt_channel: str) -> str | None:
    """Name of the citizen's answered leg of this attempt (linkedid = the agent channel's id)."""
    for c in await ami.event_list({"Action": "CoreShowChannels"}, timeout=10):
        if c.get("Linkedid") == attempt_channel and c.get("Uniqueid") != attempt_channel \
                and str(c.get("ChannelStateDesc")) == "Up":
            return str(c.get("Channel"))
    return None


async def _status(store: CallbackStore, callback_id: int, status: str) -> Any:
    cb = await store.get(callback_id)
    return cb if cb is not None and cb.status == status else None
