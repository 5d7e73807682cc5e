"""Callbacks and rebuilds through the real parts, on a hotline with its own Redis server (which the test kills):
a waiting caller presses 5, the request survives a restart of the whole hotline, and the dispatcher rings the
agent first, then the citizen; after Redis is killed and restarted empty, the queue state comes back."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore
from queueing import CallbackStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports
from tests.support.sipp import AgentPhone, CitizenCall, SippRun, _uas_xml, free_port
from tests.support.waiting import until

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
REDIS_PORT = PORTS.spare(0)  # this module's own Redis server (the test kills it)
CITIZEN_PORT = PORTS.spare(1)  # where the "carrier" (a SIPp UAS) takes the callback to the citizen
AGENT_PASSWORD = "cb-agent-secret"
WORK = PROJECT_ROOT / "var" / "test-queueing-cb"


class OwnRedis:
    """A redis-server child without persistence, so a kill + restart comes back empty."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.work_dir = work_dir
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.work_dir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = aioredis.Redis(port=self.port)
        for _ in range(50):
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        await client.aclose()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(REDIS_PORT, WORK / "redis")
    await server.start()
    yield server
    await server.kill()


def _hotline(tag: str) -> HotlineUnderTest:
    return HotlineUnderTest(WORK / "run", ports=PORTS, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-cb-{os.getpid()}",
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "DATABASE_URL": f"sqlite+aiosqlite:///{WORK / 'hotline.db'}",  # outside the run dir: survives restarts
        # The admin account lives in that database too: its password must not change with a fresh run dir.
        "HOTLINE_ADMIN_PASSWORD": "cb-test-admin-password",
        "HOTLINE_CALLBACK_AFTER_SECONDS": "5",
        "HOTLINE_CALLBACK_RETRY_SECONDS": "3",
        "HOTLINE_CALLBACK_DIAL_TEMPLATE": f"PJSIP/trunk/sip:{{number}}@127.0.0.1:{CITIZEN_PORT}",
    })


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline(own_redis: OwnRedis) -> AsyncIterator[HotlineUnderTest]:
    (WORK / "hotline.db").unlink(missing_ok=True)
    h = _hotline("first")
    async with running_hotline(h):
        yield h


async def _agents(h: HotlineUnderTest, *args: str) -> str:
    code, out, err = await run_hotline_command(["agents", *args], h.env, timeout=60)
    assert code == 0, err[-1500:]
    return out


async def _waiting(redis: aioredis.Redis, prefix: str, queue: str) -> list[dict[str, Any]]:
    raw = await redis.hgetall(f"{prefix}:queue:{queue}:waiting")
    return sorted((json.loads(v) for v in raw.values()), key=lambda e: e["position"])


async def test_callback_survives_restart_and_rings_agent_then_citizen(hotline: HotlineUnderTest,
                                                                       tmp_path: Path) -> None:
    settings = hotline.settings()
    engine = create_engine_from_url(settings.database_url)
    callbacks = CallbackStore(engine)
    try:
        await _agents(hotline, "logout", "agent1")
        await _agents(hotline, "logout", "agent2")
        added = await _agents(hotline, "add", "cbagent", "--password", AGENT_PASSWORD, "--queue", "inquiries")
        sip_secret = json.loads(added)["sip_secret"]  # shown once by `agents add`, apart from the console password
        caller = "01055503001"
        call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                           work_dir=tmp_path / "caller", name="cb",
                           steps=[("pause", 1500), ("dtmf", "2"), ("pause", 26000), ("dtmf", "5"), ("pause", 15000)],
                           hangup="wait", wait_bye_ms=15000, timeout=120)
        result = await call.run()
        assert result.answered and result.hung_up_by == "asterisk", result.describe()
        [request] = await callbacks.in_status("pending")
        assert request.caller_number == caller and request.queue == "inquiries" and request.case_number
        assert request.attempts == 0
        assert (request.requested_at - request.queued_at).total_seconds() >= 5

        # Restart everything (bridge and its Asterisk); the request is in the database.
        assert await hotline.stop() == 0
        await hotline.start()
        settings = hotline.settings()
        [still] = await callbacks.in_status("pending")
        assert still.id == request.id and still.queued_at == request.queued_at

        citizen_dir = tmp_path / "citizen"
        citizen = SippRun("citizen", _uas_xml(caller, 300, 2000), [
            f"127.0.0.1:{settings.sip_port}", "-i", "127.0.0.1", "-p", str(CITIZEN_PORT),
            "-mp", str(free_port(span=4)), "-rtp_echo"], citizen_dir, timeout=90)
        await citizen.start()
        log_path = hotline.run_dir / "asterisk" / "log" / "messages"
        try:
            async with AgentPhone("cbagent", sip_secret, settings.sip_port, talk_ms=8000,
                                  work_dir=tmp_path / "agent", timeout=90) as phone:
                await _agents(hotline, "login", "cbagent")
                done = await until(lambda: _status(callbacks, request.id, "completed"), timeout=60,
                                    what="callback completed")
                await phone.wait_call(timeout=30)
                assert phone.answered
            citizen_result = await citizen.wait(timeout=30)
            assert "ANSWERED" in citizen_result.marks(), citizen_result.describe()
        finally:
            await citizen.kill()
        assert done.attempts == 1 and done.agent == "cbagent"
        log = log_path.read_text(errors="replace")
        agent_answered = log.index("HotlineCallback")  # the dialplan's UserEvent once the agent answered
        assert log.index(f"Called PJSIP/trunk/sip:{caller}@") > agent_answered, "the citizen was dialed first"
        # The agent's screen had the case: the callback was a live call connected to the agent.
        redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        live = await redis.hgetall(f"{settings.redis_key_prefix}:call:callback-{request.id}")
        await redis.aclose()
        assert live["agent"] == "cbagent" and live["case_number"] == request.case_number
        await asyncio.sleep(4)  # past the retry delay: a completed callback is never dialed again
        again = await callbacks.get(request.id)
        assert again is not None and again.status == "completed" and again.attempts == 1
        assert log_path.read_text(errors="replace").count(f"Called PJSIP/trunk/sip:{caller}@") == 1
        await _agents(hotline, "logout", "cbagent")
    finally:
        await engine.dispose()


async def test_state_rebuilt_after_redis_is_killed_and_restarted(hotline: HotlineUnderTest, own_redis: OwnRedis,
                                                                  tmp_path: Path) -> None:
    settings = hotline.settings()
    prefix = settings.redis_key_prefix
    await _agents(hotline, "add", "rbagent", "--password", AGENT_PASSWORD, "--queue", "inquiries")
    await _agents(hotline, "login", "rbagent")
    await _agents(hotline, "pause", "rbagent", "--reason", "case_work")
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    caller = "01055503002"
    call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="rb",
                       steps=[("pause", 1500), ("dtmf", "2"), ("pause", 40000)],
                       hangup="caller", timeout=90)
    task = asyncio.create_task(call.run())
    try:
        before = await until(lambda: _entry(redis, prefix, caller), timeout=40, what="caller waiting")
        agent_before = await redis.hgetall(f"{prefix}:agent:rbagent")
        assert agent_before["state"] in ("paused", "unreachable") and agent_before["pause_reason"] == "case_work"
        await redis.aclose()
        await own_redis.kill()
        await own_redis.start()  # empty: no persistence
        redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        assert not await redis.exists(f"{prefix}:agent:rbagent")
        after = await until(lambda: _entry(redis, prefix, caller), timeout=20, what="waiting call rebuilt")
        assert after["position"] == before["position"] and after["case_number"] == before["case_number"]
        assert after["linkedid"] == before["linkedid"]
        agent_after = await until(lambda: redis.hgetall(f"{prefix}:agent:rbagent"), what="agent rebuilt")
        assert agent_after["state"] == agent_before["state"] and agent_after["pause_reason"] == "case_work"
        assert (await hotline.health())["ok"]
    finally:
        result = await task
        await redis.aclose()
    assert result.answered, result.describe()
    # The call's live state was restored too, so its hang-up still closed the case.
    engine = create_engine_from_url(settings.database_url)
    try:
        case = await until(lambda: _case_status(CaseStore(engine), before["case_number"], "abandoned_in_queue"),
                            timeout=15, what="case abandoned_in_queue")
        assert case.caller_number == caller
    finally:
        await engine.dispose()


async def _case_status(store: Any, case_number: str, status: str) -> Any:
    case = await store.get(case_number)
    return case if case.status == status else None


async def _status(store: CallbackStore, callback_id: int, status: str) -> Any:
    cb = await store.get(callback_id)
    return cb if cb is not None and cb.status == status else None


async def _entry(redis: aioredis.Redis, prefix: str, caller: str) -> dict[str, Any] | None:
    return next((e for e in await _waiting(redis, prefix, "inquiries") if e.get("caller") == caller), None)
