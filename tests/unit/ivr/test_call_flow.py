"""The IVR call flow and its transcription rules, with small fakes for AGI, the stores and Vosk; the caller's
description goes through the real durable job pipeline (SQLite job table, worker, case observer)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asr import AsrError, AudioFormatError
from cases import CaseStatus
from ivr import HotlineCallFlow, IvrOptions
from tests.support.cases import FakeCases
from tests.support.descriptions import DescriptionPipelines, RunningPipeline, eventually
from tests.support.fake_agi import ScriptedAgi
from tests.support.live import FakeLive
from tests.support.recognizer import FakeRecognizer
from tests.support.records import FakeRecords
from transcripts import JobStatus


class FakePrompts:
    language = "ko"

    def path(self, name: str) -> str:
        return f"/prompts/{name}"


def _flow(tmp_path: Path, pipelines: DescriptionPipelines, recognizer: FakeRecognizer, *,
          grammar: list[str] | None = None,
          ) -> tuple[HotlineCallFlow, FakeCases, FakeRecords, FakeLive, RunningPipeline]:
    cases, records, live = FakeCases(), FakeRecords(), FakeLive()
    pipeline = pipelines.start(cases, recognizer, max_attempts=2, grammar=grammar, live=live)
    flow = HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2),
                           prompts=FakePrompts(), cases=cases, records=records, live=live,
                           descriptions=pipeline.descriptions)
    return flow, cases, records, live, pipeline


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "speech.bin"
    path.write_bytes(b"RIFF" + b"\0" * 2000)
    return path


async def test_silence_and_wrong_keys_reach_a_person(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    flow, cases, records, _, pipeline = _flow(tmp_path, pipelines, FakeRecognizer("x"))
    agi = ScriptedAgi(caller="01099998888", uniqueid="1", keys=["", "9", ""])
    await flow.handle(agi)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case.menu_path == ["no-input", "invalid:9", "no-input", "fallback:0"]
    assert case.category == "operator"
    assert agi.variables["HOTLINE_QUEUE"] == "operator"
    assert sum(e.startswith("get:") for e in agi.log) == 3
    assert set(cases.actors) == {"ivr"}  # every change the IVR makes is the IVR's in the case's history
    assert await pipeline.store.get("description:2611290001") is None  # nothing recorded, nothing queued


async def test_complaint_queued_then_transcribed_by_a_job(tmp_path: Path, wav: Path,
                                                          pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("도로에 쓰레기")
    flow, cases, records, live, pipeline = _flow(tmp_path, pipelines, recognizer, grammar=["도로에 쓰레기"])
    agi = ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav)
    await flow.handle(agi)  # type: ignore[arg-type]
    await eventually(lambda: cases.cases["2611290001"].transcript_status != "pending", what="transcript reported")
    case = cases.cases["2611290001"]
    assert case.transcript == "도로에 쓰레기" and case.transcript_status == "done"
    assert case.recording_path == str(tmp_path / "2611290001.wav")
    assert agi.variables == {"HOTLINE_CASE": "2611290001", "HOTLINE_PRIORITY": "1", "HOTLINE_QUEUE": "complaints",
                             "HOTLINE_PROMPT": "/prompts/to_agent"}
    assert "say:2611290001" in agi.log
    assert live.calls["linked-1"]["transcript"] == "도로에 쓰레기"
    assert live.calls["linked-1"]["transcript_status"] == "done"
    assert records.rows["linked-1"]["ivr_path"] == ["1", "recorded"]
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.DONE and job.attempts == 1 and job.notified
    assert job.recordings[0].path == case.recording_path and job.case_number == "2611290001"
    assert recognizer.grammars == [["도로에 쓰레기"]]  # the complaint grammar setting reaches the recognizer


async def test_hang_up_after_describing_keeps_recording_and_transcript(tmp_path: Path, wav: Path,
                                                                       pipelines: DescriptionPipelines) -> None:
    flow, cases, records, _, _ = _flow(tmp_path, pipelines, FakeRecognizer("가로등 고장"))
    await flow.handle(ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], hang_up_on="record", recording=wav))  # type: ignore[arg-type]
    await eventually(lambda: cases.cases["2611290001"].transcript_status != "pending", what="transcript reported")
    case = cases.cases["2611290001"]
    assert case.status == CaseStatus.ABANDONED_IN_IVR
    assert case.transcript == "가로등 고장" and case.transcript_status == "done"
    assert Path(case.recording_path).exists()
    assert records.rows["linked-1"]["outcome"] == "abandoned_in_ivr"


async def test_hang_up_at_welcome_keeps_an_abandoned_case(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    flow, cases, records, _, _ = _flow(tmp_path, pipelines, FakeRecognizer("x"))
    await flow.handle(ScriptedAgi(caller="01099998888", uniqueid="1", keys=[], hang_up_on="play:/prompts/welcome"))  # type: ignore[arg-type]
    assert cases.cases["2611290001"].status == CaseStatus.ABANDONED_IN_IVR
    assert records.rows["linked-1"]["outcome"] == "abandoned_in_ivr"


async def test_asr_failure_is_retried_by_the_job_and_then_transcribed(tmp_path: Path, wav: Path,
                                                                      pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AsrError("recognizer crashed"), "이제 됩니다")
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    agi = ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav)
    await flow.handle(agi)  # type: ignore[arg-type]
    await eventually(lambda: cases.cases["2611290001"].transcript_status != "pending", what="transcript reported")
    case = cases.cases["2611290001"]
    assert agi.variables["HOTLINE_QUEUE"] == "complaints"
    assert case.transcript == "이제 됩니다" and case.transcript_status == "done"
    assert live.calls["linked-1"]["transcript"] == "이제 됩니다"
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.DONE and job.attempts == 2 and len(recognizer.calls) == 2


async def test_retries_give_up_with_a_reason(tmp_path: Path, wav: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AsrError("recognizer down"))
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    await flow.handle(ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav))  # type: ignore[arg-type]
    await eventually(lambda: cases.cases["2611290001"].transcript_status != "pending", what="transcript reported")
    case = cases.cases["2611290001"]
    assert case.transcript_status == "failed" and case.transcript is None
    assert "after 2 attempt(s): recognizer down" in case.notes
    assert len(recognizer.calls) == 2 and live.calls["linked-1"]["transcript_status"] == "failed"
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.FAILED and job.attempts == 2
    assert Path(case.recording_path).exists()


async def test_too_short_recording_fails_at_once_and_says_why(tmp_path: Path, wav: Path,
                                                              pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AudioFormatError("recording x.wav: too short (0.2 s)"))
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    await flow.handle(ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav))  # type: ignore[arg-type]
    await eventually(lambda: cases.cases["2611290001"].transcript_status != "pending", what="transcript reported")
    case = cases.cases["2611290001"]
    assert case.transcript_status == "failed" and "too short (0.2 s)" in case.notes
    assert len(recognizer.calls) == 1  # no retry can make it longer
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.FAILED and job.attempts == 1
    assert live.calls["linked-1"]["transcript_status"] == "failed"
    assert Path(case.recording_path).exists()


async def test_the_caller_goes_to_the_queue_while_the_recognizer_is_still_busy(
        tmp_path: Path, wav: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("늦은 설명")
    recognizer.release = asyncio.Event()  # the recognizer answers only when the test says so
    flow, cases, _, live, _ = _flow(tmp_path, pipelines, recognizer)
    agi = ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav)
    await asyncio.wait_for(flow.handle(agi), 2)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert agi.variables["HOTLINE_QUEUE"] == "complaints" and case.transcript_status == "pending"
    assert live.calls["linked-1"]["transcript_status"] == "pending"
    await eventually(lambda: len(recognizer.calls) == 1, what="the job started")
    # Meanwhile the call tracker sees the caller reach an agent.
    await live.update("linked-1", state="connected", agent="agent1")
    recognizer.release.set()
    await eventually(lambda: live.calls["linked-1"].get("transcript") is not None, what="transcript on the live call")
    case = cases.cases["2611290001"]
    assert case.transcript == "늦은 설명" and case.transcript_status == "done"
    assert live.calls["linked-1"]["transcript"] == "늦은 설명"
    assert live.calls["linked-1"]["transcript_status"] == "done"
    assert live.calls["linked-1"]["state"] == "connected" and live.calls["linked-1"]["agent"] == "agent1"
    await flow.aclose()


async def test_a_call_gone_from_the_live_state_still_gets_its_transcript_on_the_case(
        tmp_path: Path, wav: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("끝난 통화")
    recognizer.release = asyncio.Event()
    flow, cases, _, live, _ = _flow(tmp_path, pipelines, recognizer)
    agi = ScriptedAgi(caller="01099998888", uniqueid="1", keys=["1"], recording=wav)
    await asyncio.wait_for(flow.handle(agi), 2)  # type: ignore[arg-type]
    del live.calls["linked-1"]  # the call ended and its hash expired before the recognizer answered
    recognizer.release.set()
    await eventually(lambda: cases.cases["2611290001"].transcript_status == "done", what="transcript on the case")
    assert cases.cases["2611290001"].transcript == "끝난 통화"
    assert "linked-1" not in live.calls  # an ended call is not brought back into the live state
    await flow.aclose()
