"""End to end through the real parts: SIPp calls into the project's Asterisk, the FastAGI IVR, Vosk,
SQLite, Redis and app_queue, with a second SIPp registered as the agent's phone."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ivr.prompts import synthesize_speech
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports
from tests.support.probe import Probe
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import AgentPhone, CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-e2e", ports=PORTS)
    async with running_hotline(h):
        yield h
    asterisk_conf = h.run_dir / "asterisk" / "etc" / "asterisk.conf"
    proc = await asyncio.create_subprocess_exec("pgrep", "-f", str(asterisk_conf), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert not out.strip(), f"Asterisk still running after hotline stopped: {out!r}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(hotline: HotlineUnderTest) -> AsyncIterator[Probe]:
    p = Probe(hotline)
    yield p
    await p.close()


def _speech_pcap(tmp: Path, text: str, name: str) -> Path:
    wav = synthesize_speech(text, "ko", tmp / f"{name}.wav", speed=130)
    pcap = tmp / f"{name}.pcap"
    wav_to_rtp_pcap(wav, pcap, pad_seconds=4.0)
    return pcap


async def test_healthz_reports_every_component(hotline: HotlineUnderTest) -> None:
    health = await hotline.health()
    assert health is not None and health["ok"] is True
    for part in ("database", "redis", "ami", "fastagi", "asterisk", "asr"):
        assert health["components"][part]["ok"] is True, health


async def test_complaint_spoken_transcribed_queued_and_answered(hotline: HotlineUnderTest, probe: Probe,
                                                                 tmp_path: Path) -> None:
    """A citizen presses 1, describes the problem aloud, hears the case number and reaches agent1."""
    caller = "01055501001"
    speech = _speech_pcap(tmp_path, "도로에 쓰레기가 많이 쌓여 있어요. 빨리 치워 주세요.", "complaint")
    agent = probe.settings.agents[0]
    async with AgentPhone(agent.name, agent.sip_secret, probe.settings.sip_port, talk_ms=3000,
                          work_dir=tmp_path / "agent") as phone:
        call = CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number,
                           from_user=caller, work_dir=tmp_path / "caller", name="complaint",
                           steps=[("pause", 1500), ("dtmf", "1"), ("pause", 5500), ("audio", speech)],
                           hangup="wait", wait_bye_ms=90000, timeout=150)
        pubsub = probe.redis.pubsub()
        await pubsub.subscribe(f"{probe.prefix}:events")
        call_task = asyncio.create_task(call.run())
        states: dict[str, list[str]] = {}

        async def read_one() -> None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                event = json.loads(message["data"])
                state = event["fields"].get("state")
                if state:
                    states.setdefault(event["linkedid"], []).append(state)

        while not call_task.done():
            await read_one()
        # The citizen's SIPp ends on Asterisk's BYE; the Hangup event may still be on its way to Redis.
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline and not any(
                seen and seen[-1] == "ended" for seen in states.values()):
            await read_one()
        await pubsub.aclose()
        result = call_task.result()
        assert result.answered and result.ok, result.describe()
        assert result.hung_up_by == "asterisk", result.describe()
        await phone.wait_call(timeout=30)
        assert phone.answered
    case = await probe.case_by_caller(caller, until=lambda c: c.status == "open")
    assert case is not None
    assert case.category == "complaint"
    assert case.menu_path[:1] == ["1"]
    assert case.transcript_status == "done", case
    assert case.transcript and case.transcript.strip(), "Vosk produced no transcript"
    assert case.recording_path and Path(case.recording_path).stat().st_size > 8000
    assert case.agent == agent.name
    assert case.status == "open"
    linkedid = case.source_ref
    # Every process sees the call's life on Redis pub/sub, in order.
    assert states[linkedid][0] == "ivr" and states[linkedid][-1] == "ended", states
    seen = states[linkedid]
    assert seen.index("queued") < seen.index("ringing") < seen.index("connected") < seen.index("ended"), seen
    record = await probe.records.get(linkedid)
    assert record is not None
    assert record.case_number == case.case_number
    assert record.queue == "complaints"
    assert record.agent == agent.name
    assert record.queue_wait_seconds is not None and record.queue_wait_seconds >= 0
    assert record.talk_seconds is not None and record.talk_seconds >= 2
    assert record.hangup_cause
    assert record.outcome == "completed"
    live = await probe.live_call(linkedid)
    assert live["state"] == "ended" and live["case_number"] == case.case_number
    assert live["transcript"] == case.transcript
    assert linkedid not in await probe.live_ids()


async def test_invalid_key_reprompts_then_inquiry_abandoned_in_queue(hotline: HotlineUnderTest, probe: Probe,
                                                                     tmp_path: Path) -> None:
    caller = "01055501002"
    call = CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number, from_user=caller,
                       work_dir=tmp_path, name="invalid",
                       steps=[("pause", 6500), ("dtmf", "7"), ("pause", 4000), ("dtmf", "2"), ("pause", 20000)],
                       hangup="caller", timeout=90)
    result = await call.run()
    assert result.answered and result.ok, result.describe()
    case = await probe.case_by_caller(caller, until=lambda c: c.status == "abandoned_in_queue")
    assert case is not None and case.status == "abandoned_in_queue", case
    assert case.menu_path == ["invalid:7", "2"]
    assert case.category == "inquiry"
    record = await probe.records.get(case.source_ref)
    assert record.queue == "inquiries" and record.outcome == "abandoned_in_queue"
    assert record.agent is None


async def test_hangup_mid_menu_keeps_the_case(hotline: HotlineUnderTest, probe: Probe, tmp_path: Path) -> None:
    caller = "01055501003"
    call = CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number, from_user=caller,
                       work_dir=tmp_path, name="hangup", steps=[("pause", 2500)], hangup="caller", timeout=30)
    result = await call.run()
    assert result.answered and result.ok, result.describe()
    case = await probe.case_by_caller(caller, until=lambda c: c.status == "abandoned_in_ivr")
    assert case is not None and case.status == "abandoned_in_ivr", case
    assert case.menu_path == []
    record = await probe.records.get(case.source_ref)
    assert record.outcome == "abandoned_in_ivr" and record.hangup_cause
    for _ in range(50):
        if case.source_ref not in await probe.live_ids():
            break
        await asyncio.sleep(0.2)
    assert case.source_ref not in await probe.live_ids()
    assert (await probe.live_call(case.source_ref))["state"] == "ended"


async def test_demo_call_command_and_cases_list(hotline: HotlineUnderTest, probe: Probe) -> None:
    """`hotline call 12345 --digits 2` places an AMI Local-channel call; `hotline cases list --json` shows it."""
    env = hotline.env
    code, out, err = await run_hotline_command(
        ["call", probe.settings.hotline_number, "--digits", "2", "--caller", "01055501004", "--wait", "60"], env)
    assert code == 0, err[-2000:]
    printed = json.loads(out[out.index("{"):])
    assert printed["caller_number"] == "01055501004"
    assert printed["category"] == "inquiry"
    code, out, err = await run_hotline_command(["cases", "list", "--json", "--limit", "50"], env)
    assert code == 0, err
    listed = json.loads(out)
    assert any(c["case_number"] == printed["case_number"] for c in listed)
    assert {"case_number", "caller_number", "category", "transcript", "status", "created_at"} <= set(listed[0])
    assert listed == sorted(listed, key=lambda c: c["created_at"], reverse=True)
