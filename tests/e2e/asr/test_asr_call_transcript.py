"""Whole-call transcript through the real parts: SIPp citizen and agent, Asterisk MixMonitor (one file per
direction), the durable transcription worker with the real Vosk model, and the case API."""
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from cases import CaseStore
from ivr.prompts import synthesize_speech
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import AgentPhone, CitizenCall
from transcripts import TranscriptionJobStore

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-asr-call", ports=PORTS,
                         env={"HOTLINE_REDIS_KEY_PREFIX": "hotline-i4-call"})
    async with running_hotline(h):
        yield h


def _pcap(tmp: Path, text: str, name: str, pad: float) -> Path:
    wav = synthesize_speech(text, "ko", tmp / f"{name}.wav", speed=130)
    pcap = tmp / f"{name}.pcap"
    wav_to_rtp_pcap(wav, pcap, pad_seconds=pad)
    return pcap


async def test_whole_call_is_transcribed_per_party_and_attached_to_the_case(hotline, tmp_path):
    settings = hotline.settings()
    caller = "01055504001"
    description = _pcap(tmp_path, "하수도가 막혔습니다", "description", 4.0)
    talk = _pcap(tmp_path, "안녕하세요 우리 집 앞에 하수도가 막혔습니다 빨리 와 주세요", "talk", 1.0)
    agent = settings.agents[0]
    engine = create_engine_from_url(settings.database_url)
    cases, jobs = CaseStore(engine), TranscriptionJobStore(engine)
    try:
        # The agent's phone echoes what it hears, so the agent's side of the recording is speech too.
        async with AgentPhone(agent.name, agent.sip_secret, settings.sip_port, talk_ms=14000,
                              work_dir=tmp_path / "agent") as phone:
            call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                               work_dir=tmp_path / "caller", name="whole-call",
                               steps=[("pause", 1500), ("dtmf", "1"), ("pause", 5500), ("audio", description),
                                      ("pause", 12000), ("audio", talk)],
                               hangup="wait", wait_bye_ms=120000, timeout=180)
            result = await call.run()
            assert result.answered and result.ok, result.describe()
            await phone.wait_call(timeout=30)
            assert phone.answered
        case = None
        for _ in range(60):
            found = [c for c in await cases.list_recent(limit=50) if c.caller_number == caller]
            if found and found[0].agent:
                case = found[0]
                break
            await asyncio.sleep(0.5)
        assert case is not None, hotline.log_tail()
        calls_dir = settings.recordings_dir / "calls"
        citizen_wav = calls_dir / f"{case.case_number}-citizen.wav"
        agent_wav = calls_dir / f"{case.case_number}-agent.wav"
        job = None
        for _ in range(240):
            job = await jobs.get(f"call:{case.case_number}")
            if job is not None and job.status.value in ("done", "failed"):
                break
            await asyncio.sleep(0.5)
        assert job is not None, f"no whole-call job: {hotline.log_tail()}"
        assert job.status.value == "done", job
        labels = [t["channel"] for t in job.result]
        assert labels == ["citizen", "agent"]
        citizen = job.result[0]
        assert citizen["text"].strip() and citizen["words"], citizen
        assert all(w["end"] > w["start"] >= 0 for w in citizen["words"])
        assert citizen_wav.exists() and agent_wav.exists(), "recordings must be kept after the transcript"

        # The case API shows the transcripts to a logged-in console user.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # IP host
            page = await (await http.get(hotline.http_url + "/login")).text()
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            await http.post(hotline.http_url + "/login", data={"username": "admin", "csrf_token": token,
                                                               "password": settings.admin_password})
            resp = await http.get(f"{hotline.http_url}/api/cases/{case.case_number}/transcripts")
            assert resp.status == 200, await resp.text()
            payload = await resp.json()
        assert payload["status"] == "done"
        kinds = {j["kind"]: j for j in payload["jobs"]}
        assert [t["channel"] for t in kinds["call"]["transcripts"]] == ["citizen", "agent"]
    finally:
        await engine.dispose()
