"""A stalled Redis does not hold a caller up: through the real parts (`hotline run` with its Asterisk, a SIPp
citizen, a project-started redis-server paused with DEBUG SLEEP 15), a new caller hears the welcome at once, their
menu key is taken and they reach the queue; once Redis answers again the live state shows the call (rebuilt from
what the hotline kept in memory meanwhile)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseEventKind, CaseStore
from queueing import CallRecordStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.own_redis import OwnRedis
from tests.support.ports import module_ports
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
REDIS_PORT = PORTS.spare(0)  # this module's own redis-server
WORK = PROJECT_ROOT / "var" / "test-redis-paused"
# Longer than the 15 s: the whole IVR part (welcome, key, case number) and the queue join fall inside it.
PAUSE_SECONDS = 25
CALLER = "01055522001"
_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli are not installed")
    server = OwnRedis(REDIS_PORT, WORK / "redis")
    await server.start()
    yield server
    await server.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline(own_redis: OwnRedis) -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(WORK / "run", ports=PORTS, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-redis-paused-{os.getpid()}",
        "REDIS_URL": own_redis.url,
    })
    async with running_hotline(h):
        yield h


def _welcome_delay(messages: str, channel_hint: str | None = None) -> float:
    """Seconds from Asterisk handing the call to the IVR (AGI .../ivr) to the first prompt played on it."""
    agi_at: datetime | None = None
    for line in messages.splitlines():
        stamp = re.match(_STAMP, line)
        if stamp is None:
            continue
        at = datetime.fromisoformat(stamp.group(1))
        if agi_at is None and "AGI(" in line and "/ivr?" in line:
            agi_at = at
        elif agi_at is not None and "Playing '" in line and "/welcome-" in line:
            return (at - agi_at).total_seconds()
    raise AssertionError("no IVR start followed by the welcome prompt in Asterisk's log")


async def _call_hash(redis: aioredis.Redis, prefix: str, caller: str) -> tuple[str, dict[str, str]] | None:
    for linkedid in await redis.smembers(f"{prefix}:calls:live"):
        linkedid = linkedid.decode()
        fields = {k.decode(): v.decode() for k, v in (await redis.hgetall(f"{prefix}:call:{linkedid}")).items()}
        if fields.get("caller_number") == caller:
            return linkedid, fields
    return None


async def test_a_caller_hears_the_welcome_and_reaches_the_queue_while_redis_is_paused(
        hotline: HotlineUnderTest, own_redis: OwnRedis, tmp_path: Path) -> None:
    settings = hotline.settings()
    prefix = settings.redis_key_prefix
    before = await hotline.health()
    assert before is not None and before["components"]["redis"]["up"] is True, before
    redis = aioredis.Redis(port=REDIS_PORT)
    engine = create_engine_from_url(settings.database_url)
    try:
        pause = asyncio.create_task(own_redis.sleep(PAUSE_SECONDS))
        await asyncio.sleep(0.5)  # DEBUG SLEEP has begun: Redis answers nothing now
        paused_at = time.monotonic()
        call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=CALLER,
                           work_dir=tmp_path / "caller", name="paused",
                           steps=[("pause", 1500), ("dtmf", "2"), ("pause", 34000)], hangup="caller", timeout=90)
        call_task = asyncio.create_task(call.run())

        # The public health check answers at once and says what is true: not everything is well.
        await asyncio.sleep(4)
        started = time.monotonic()
        public = await hotline.public_health()
        assert time.monotonic() - started < 3 and public == {"status": "unavailable"}, public

        await pause
        back_after = time.monotonic() - paused_at
        assert back_after >= PAUSE_SECONDS - 1

        # Redis is back: the live state shows the call, in the queue it joined while Redis was away, with the key
        # the caller pressed.
        deadline = time.monotonic() + 8
        found = None
        while time.monotonic() < deadline:
            found = await _call_hash(redis, prefix, CALLER)
            if found and found[1].get("state") == "queued":
                break
            await asyncio.sleep(0.2)
        assert found is not None, f"the call is not in Redis's live state after Redis came back: {found}"
        linkedid, live = found
        assert live["state"] == "queued" and live["queue"] == "inquiries", live
        assert json.loads(live["ivr_path"])[:1] == ["2"] and live["category"] == "inquiry", live
        seen_back = time.monotonic() - paused_at - back_after
        # The queue's live state, whose join event was lost while Redis slept, is rebuilt from Asterisk.
        expected = [(linkedid, live["case_number"])]
        waiting: list[tuple[str, str | None]] = []
        deadline = time.monotonic() + 5
        while waiting != expected and time.monotonic() < deadline:
            raw = await redis.hgetall(f"{prefix}:queue:inquiries:waiting")
            waiting = [(e["linkedid"], e.get("case_number")) for e in map(json.loads, raw.values())]
            await asyncio.sleep(0.1)
        assert waiting == expected, waiting

        result = await call_task
        assert result.answered and result.hung_up_by == "caller", result.describe()
        messages = (hotline.run_dir / "asterisk" / "log" / "messages").read_text(errors="replace")
        welcome_wait = _welcome_delay(messages)
        print(f"\nwelcome heard {welcome_wait:.3f} s after the IVR got the call (Redis paused); "
              f"the call was in Redis {seen_back:.1f} s after Redis answered again")
        assert welcome_wait < 1.0, f"the caller waited {welcome_wait:.3f} s for the welcome"
        assert re.search(r'Queue\("PJSIP/trunk-[0-9a-f]+", "inquiries', messages), "the call never reached Queue()"

        # The case holds the key and went to the queue; the caller left from the queue, not from the IVR.
        cases = CaseStore(engine)
        records = CallRecordStore(engine)

        async def settled() -> Any:
            case = await cases.find_by_source(linkedid)
            record = await records.get(linkedid)
            return (case, record) if case is not None and record is not None and record.ended_at else None

        settled_at = time.monotonic() + 20
        pair = None
        while pair is None and time.monotonic() < settled_at:
            pair = await settled()
            await asyncio.sleep(0.3)
        assert pair is not None, "the case and call record were not settled within 20 s"
        case, record = pair
        assert case.menu_path[:1] == ["2"] and case.category == "inquiry", case
        kinds = [e.kind for e in await cases.events(case.case_number)]
        assert CaseEventKind.QUEUED in kinds, kinds
        assert record.outcome == "abandoned_in_queue", record

        health = await hotline.health()
        assert health is not None
        report = health["components"]["redis"]
        assert report["up"] is True and report["outages"] >= 1 and report["rebuilds"] >= 1, report
        assert report["queued_writes"] == 0 and report["dropped_writes"] == 0, report
    finally:
        await redis.aclose()
        await engine.dispose()
