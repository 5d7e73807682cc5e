"""Live transcription through the real parts: SIPp speaks into Asterisk, the FastAGI flow's stream record node
runs EXEC EAGI (ivr.live_transcript), partial words reach Redis live state while the caller speaks, and the
case gets the transcript and the recording."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from ivr.prompts import synthesize_speech
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.probe import Probe
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)

FLOW = {
    "name": "live", "start": "describe", "default_language": "ko",
    "languages": {"ko": {"voice": "ko", "asr_model": "default",
                         "prompts": {"describe": "말씀해 주세요", "bye": "감사합니다"}}},
    "nodes": {
        "describe": {"kind": "record", "prompt": "describe", "mode": "stream", "silence_seconds": 2,
                     "max_seconds": 25, "next": "bye"},
        "bye": {"kind": "hangup", "prompt": "bye"},
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline(tmp_path_factory) -> AsyncIterator[HotlineUnderTest]:
    flow_file = tmp_path_factory.mktemp("live-flow") / "live.yaml"
    flow_file.write_text(yaml.safe_dump(FLOW, allow_unicode=True), encoding="utf-8")
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-live-transcript", ports=PORTS, env={
        "HOTLINE_IVR_FLOW_FILE": str(flow_file)})
    async with running_hotline(h):
        yield h


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(hotline: HotlineUnderTest) -> AsyncIterator[Probe]:
    p = Probe(hotline)
    yield p
    await p.close()


async def test_partial_words_appear_live_then_the_case_gets_the_transcript(hotline, probe, tmp_path: Path):
    caller = "01055504444"
    wav = synthesize_speech("안녕하세요 우리 집 앞에 하수도가 막혔습니다 빨리 고쳐 주세요", "ko", tmp_path / "talk.wav",
                            speed=130)
    pcap = tmp_path / "talk.pcap"
    wav_to_rtp_pcap(wav, pcap, pad_seconds=6.0)  # silence after the words: the stream must end on its own
    call = CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="live", steps=[("pause", 4000), ("audio", pcap)],
                       hangup="wait", wait_bye_ms=60000, timeout=90)
    pubsub = probe.redis.pubsub()
    await pubsub.subscribe(f"{probe.prefix}:events")
    events: list[tuple[float, dict]] = []
    call_task = asyncio.create_task(call.run(), name="sipp-live-caller")
    while not call_task.done():
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            events.append((time.monotonic(), json.loads(message["data"])))
    await pubsub.aclose()
    result = call_task.result()
    assert result.answered and result.ok, result.describe()

    partial_times = [t for t, e in events if e["fields"].get("transcript_partial")]
    final_times = [t for t, e in events if e["fields"].get("transcript")]
    recorded = [t for t, e in events if "recorded" in (e["fields"].get("ivr_path") or [])]
    assert partial_times and final_times and recorded, [e for _, e in events]
    # Words were on Redis while the caller was still talking: before the first final result, and seconds
    # before the stream ended (the caller's silence after the words).
    assert partial_times[0] < final_times[0]
    assert recorded[0] - partial_times[0] > 2.0
    distinct = {e["fields"]["transcript_partial"] for _, e in events if e["fields"].get("transcript_partial")}
    assert len(distinct) >= 2, distinct

    case = await probe.case_by_caller(caller, until=lambda c: c.transcript_status == "done")
    assert case is not None and case.transcript_status == "done", case
    assert case.transcript and case.transcript.strip()
    live = await probe.live_call(case.source_ref)
    assert live["transcript"] == case.transcript and live["transcript_live_stopped_by"] == "silence", live
    assert case.recording_path and Path(case.recording_path).stat().st_size > 16000
    assert "recorded" in case.menu_path or "recorded" in (live.get("ivr_path") or [])
