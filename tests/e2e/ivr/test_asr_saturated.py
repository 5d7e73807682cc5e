"""Speech recognition saturated, through the real parts: several SIPp citizens call at once, describe their
complaint aloud and wait with no agent free, while the hotline's Vosk pool has a single batch worker. Every caller
reaches the queue right after the IVR's last prompt, and every case (and the live call, and the console's live
view) gets its transcript afterwards."""
from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore
from queueing import CallRecordStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall
from tests.support.speech import synthesize
from transcripts import TranscriptionJobStore

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)
CALLS = 8
# From the end of the description (the IVR's "recorded" step) to joining the queue the caller hears the case
# number and the "connecting you" prompt (about 15 s). Under load that tail may grow by this much, not by the
# recognizer's backlog.
MAX_EXTRA_TAIL_S = 3.0
DESCRIPTIONS = [
    "우리 집 앞 도로에 쓰레기가 많이 쌓여 있어요. 냄새가 심하고 고양이들이 봉투를 찢어 놓았습니다. 빨리 치워 주세요.",
    "하수도가 막혀서 비가 오면 길에 물이 넘칩니다. 지난주부터 계속 그래요. 확인해 주시기 바랍니다.",
    "보도블록이 깨져서 할머니께서 넘어지실 뻔했습니다. 학교 앞이라 아이들도 위험합니다. 고쳐 주세요.",
    "가로등이 일주일째 꺼져 있어서 밤에 골목이 너무 어둡습니다. 무서워서 다니기가 힘들어요.",
    "식당 뒤에 음식물 쓰레기가 버려져 있어 위생이 걱정됩니다. 벌레도 많이 생겼어요. 단속해 주세요.",
    "공원 화장실 문이 고장 나서 잠기지 않습니다. 청소도 안 되어 있어서 너무 더럽습니다.",
    "버스 정류장 의자가 부서져서 어르신들이 서서 기다리십니다. 비 가림막도 찢어져 있어요.",
    "아파트 앞 횡단보도 신호등이 고장 나서 차들이 멈추지 않습니다. 사고가 날 것 같아 걱정됩니다.",
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-asr-saturated", ports=PORTS, env={
        "HOTLINE_ASR_WORKERS": "1",  # one description at a time: eight callers saturate it
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-asr-saturated-{PORTS.start}",
    })
    async with running_hotline(h):
        yield h


def _description_pcap(tmp: Path, index: int) -> Path:
    wav = synthesize(DESCRIPTIONS[index % len(DESCRIPTIONS)], tmp / f"description-{index}.wav", speed=130)
    pcap = tmp / f"description-{index}.pcap"
    wav_to_rtp_pcap(wav, pcap, pad_seconds=4.0)  # 4 s of silence after it: the record node stops on silence
    return pcap


async def _console_live_calls(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    resp = await http.get(base + "/api/calls/live")
    assert resp.status == 200, await resp.text()
    calls: list[dict[str, Any]] = (await resp.json())["calls"]
    return calls


async def test_every_caller_reaches_the_queue_at_once_and_every_case_gets_its_transcript_later(
        hotline: HotlineUnderTest, tmp_path: Path) -> None:
    settings = hotline.settings()
    engine = create_engine_from_url(settings.database_url)
    cases, records, jobs = CaseStore(engine), CallRecordStore(engine), TranscriptionJobStore(engine)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    prefix = settings.redis_key_prefix
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{prefix}:events")
    # When each call did what, as every process sees it on the live state's pub/sub.
    recorded_at: dict[str, float] = {}
    queued_at: dict[str, float] = {}
    transcript_at: dict[str, float] = {}
    state_when_transcribed: dict[str, str] = {}
    states: dict[str, str] = {}

    async def watch() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is None:
                continue
            event = json.loads(message["data"])
            linkedid, fields, at = event["linkedid"], event["fields"], float(event["at"])
            if "recorded" in (fields.get("ivr_path") or []):
                recorded_at.setdefault(linkedid, at)
            if fields.get("state"):
                states[linkedid] = fields["state"]
                if fields["state"] == "queued":
                    queued_at.setdefault(linkedid, at)
            if fields.get("transcript_status") == "done" and fields.get("transcript"):
                transcript_at.setdefault(linkedid, at)
                state_when_transcribed.setdefault(linkedid, states.get(linkedid, "?"))

    def call(caller: str, index: int, wait_ms: int) -> CitizenCall:
        return CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                           work_dir=tmp_path / f"caller-{index}", name=f"saturated-{index}",
                           steps=[("pause", 1500), ("dtmf", "1"), ("pause", 5500),
                                  ("audio", _description_pcap(tmp_path, index)),
                                  ("pause", wait_ms)],  # waiting in the queue, no agent free
                           hangup="caller", timeout=180)

    watcher = asyncio.create_task(watch())
    # -- one call alone first: the IVR's tail with the recognizer idle ---------------------------------------
    alone = await call("01055509199", CALLS, 25000).run()
    assert alone.answered and alone.ok, alone.describe()
    baseline_case = next(c for c in await cases.list_recent(limit=100) if c.caller_number == "01055509199")
    assert baseline_case.source_ref in queued_at, f"the lone call was not queued\n{hotline.log_tail()}"
    baseline = queued_at[baseline_case.source_ref] - recorded_at[baseline_case.source_ref]
    print(f"\nIVR tail of a lone call (description recorded -> in the queue): {baseline:.1f} s")

    callers = [f"0105550{9100 + i}" for i in range(CALLS)]
    started = time.time()
    # ...then all at once, each waiting in the queue until the test is done.
    running = [asyncio.create_task(call(caller, i, 75000).run()) for i, caller in enumerate(callers)]
    try:
        # -- every case is opened; each caller is in the queue a few seconds after their description ------------
        by_caller: dict[str, Any] = {}
        deadline = time.time() + 120
        while time.time() < deadline:
            for c in await cases.list_recent(limit=100):
                if c.caller_number in callers:
                    by_caller[c.caller_number] = c
            if len(by_caller) == CALLS and all(c.source_ref in queued_at for c in by_caller.values()):
                break
            await asyncio.sleep(0.5)
        assert len(by_caller) == CALLS, f"cases: {sorted(by_caller)}\n{hotline.log_tail()}"
        linkedids = {caller: by_caller[caller].source_ref for caller in callers}
        missing = [caller for caller, linkedid in linkedids.items() if linkedid not in queued_at]
        assert not missing, f"never queued: {missing} (states {states})\n{hotline.log_tail()}"
        tails = {caller: queued_at[linkedids[caller]] - recorded_at[linkedids[caller]] for caller in callers}
        print(f"IVR tails of {CALLS} concurrent calls, s:", " ".join(f"{t:.1f}" for t in sorted(tails.values())))
        assert all(0 < t < baseline + MAX_EXTRA_TAIL_S for t in tails.values()), (baseline, tails)
        for caller in callers:
            record = await records.get(linkedids[caller])
            assert record is not None and record.outcome == "queued" and record.queue == "complaints", record

        # -- the transcripts follow: onto the case, the live call (still queued) and the console's live view ----
        for _ in range(300):
            if all(linkedids[c] in transcript_at for c in callers):
                break
            await asyncio.sleep(0.5)
        late = [c for c in callers if linkedids[c] not in transcript_at]
        assert not late, f"no transcript on the live call for {late}\n{hotline.log_tail()}"
        for caller in callers:
            case = await cases.get(by_caller[caller].case_number)
            assert case.transcript_status == "done" and case.transcript and case.transcript.strip(), case
            job = await jobs.get(f"description:{case.case_number}")
            assert job is not None and job.status.value == "done"
            live = await redis.hgetall(f"{prefix}:call:{linkedids[caller]}")
            assert live["transcript"] == case.transcript and live["state"] == "queued", live
            if transcript_at[linkedids[caller]] > queued_at[linkedids[caller]]:
                # It reached a caller already waiting in the queue (early ones land while the caller still hears
                # the case number).
                assert state_when_transcribed[linkedids[caller]] == "queued", state_when_transcribed
        after_queue = sorted(transcript_at[linkedids[c]] - queued_at[linkedids[c]] for c in callers)
        print("transcript after the caller was queued, s:", " ".join(f"{t:.1f}" for t in after_queue))
        # The recognizer really was the bottleneck: the last transcripts came well after their callers were queued,
        # later than the tail allows, so a caller made to wait for them would have failed the check above.
        if after_queue[-1] <= MAX_EXTRA_TAIL_S:
            # Everything above held, but this machine's recognizer kept up, so the saturated case did not arise.
            pytest.skip(f"the recognizer was not saturated on this run (transcripts after queueing: {after_queue})")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            page = await (await http.get(hotline.http_url + "/login")).text()
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert token is not None
            await http.post(hotline.http_url + "/login", data={"username": "admin", "csrf_token": token.group(1),
                                                               "password": settings.admin_password})
            shown = {c["linkedid"]: c for c in await _console_live_calls(http, hotline.http_url)}
        for caller in callers:
            call = shown.get(linkedids[caller])
            assert call is not None and call["state"] == "queued" and call["transcript"], call
        print(f"{CALLS} calls: all queued and transcribed within {time.time() - started:.0f} s of the first call")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        results = await asyncio.gather(*running, return_exceptions=True)
        await pubsub.aclose()
        await redis.aclose()
        await engine.dispose()
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result.answered and result.ok, result.describe()
