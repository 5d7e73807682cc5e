"""The IVR call flow and its transcription rules, with small fakes for AGI, the stores and Vosk; the caller's
description goes through the real durable job pipeline (SQLite job table, worker, case observer)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asr import AsrError, AudioFormatError, Transcript
from cases import CaseStatus
from ivr import HotlineCallFlow, IvrOptions
from telephony import AgiHangup
from tests.support.descriptions import DescriptionPipelines, RunningPipeline, description_pipelines
from transcripts import JobStatus


class FakePrompts:
    language = "ko"

    def path(self, name: str) -> str:
        return f"/prompts/{name}"


class FakeAgi:
    """Answers the flow's AGI calls from a script of menu inputs; can hang up at a chosen command."""

    def __init__(self, menu_inputs: list[str], hang_up_on: str | None = None, recording: Path | None = None) -> None:
        self.menu_inputs = list(menu_inputs)
        self.hang_up_on = hang_up_on
        self.recording = recording
        self.uniqueid = "1700000000.1"
        self.channel = "PJSIP/trunk-00000001"
        self.caller_number = "01099998888"
        self.variables: dict[str, str] = {}
        self.log: list[str] = []
        self.params: dict[str, str] = {}

    def _maybe_hang_up(self, what: str) -> None:
        self.log.append(what)
        if self.hang_up_on == what:
            raise AgiHangup("caller hung up")

    async def get_variable(self, name: str) -> str:
        return "linked-1"

    async def stream_file(self, path: str, escape_digits: str = "") -> str:
        self._maybe_hang_up(f"play:{path.rsplit('/', 1)[-1]}")
        return ""

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        self._maybe_hang_up("menu")
        digits = self.menu_inputs.pop(0) if self.menu_inputs else ""
        return digits, digits == ""

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str:
        digits, _ = await self.get_data(path, timeout_ms, 1)
        return digits

    async def say_digits(self, digits: str, escape_digits: str = "") -> None:
        self._maybe_hang_up(f"say:{digits}")

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value

    async def set_variables(self, values: dict[str, str]) -> None:
        self.variables.update(values)

    async def record_file(self, path: str, *args: Any, **kwargs: Any) -> None:
        if self.recording is not None:
            Path(path + ".wav").write_bytes(self.recording.read_bytes())
        self._maybe_hang_up("record")


class FakeCases:
    """The case operations the flow engine calls, kept as dicts (the domain's own rules: tests/test_cases.py)."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.actors: list[str] = []

    async def open(self, new: Any, *, actor: str) -> Any:
        number = f"26112900{len(self.cases) + 1:02d}"
        self.cases[number] = {"case_number": number, "status": CaseStatus.NEW, "menu_path": [], "category": new.category,
                              "transcript_status": "none", "recording_path": None, "notes": None, "transcript": None}
        self.actors.append(actor)
        return type("C", (), {"case_number": number})()

    def _change(self, case_number: str, actor: str, **fields: Any) -> None:
        self.cases[case_number].update(fields)
        self.actors.append(actor)

    def _note(self, case_number: str, text: str) -> str:
        notes = self.cases[case_number]["notes"]
        return f"{notes}\n{text}" if notes else text

    async def classify(self, case_number: str, *, category: str | None = None, priority: int | None = None,
                       menu_path: list[str] | None = None, actor: str = "system") -> None:
        fields = {"category": category, "priority": priority, "menu_path": menu_path}
        self._change(case_number, actor, **{k: v for k, v in fields.items() if v is not None})

    async def record_menu_path(self, case_number: str, menu_path: list[str], *, actor: str = "system") -> None:
        self._change(case_number, actor, menu_path=list(menu_path))

    async def attach_recording(self, case_number: str, recording_path: str, *, actor: str = "system") -> None:
        self._change(case_number, actor, recording_path=recording_path, transcript_status="pending")

    async def drop_recording(self, case_number: str, reason: str, *, actor: str = "system") -> None:
        self._change(case_number, actor, recording_path=None, transcript_status="failed",
                     notes=self._note(case_number, reason))

    async def transcript_pending(self, case_number: str, *, actor: str = "system") -> None:
        self._change(case_number, actor, transcript_status="pending")

    async def record_transcript(self, case_number: str, text: str, *, actor: str = "system") -> None:
        self._change(case_number, actor, transcript=text, transcript_status="done")

    async def transcript_failed(self, case_number: str, reason: str, *, actor: str = "system") -> None:
        self._change(case_number, actor, transcript_status="failed", notes=self._note(case_number, reason))

    async def add_note(self, case_number: str, text: str, *, actor: str) -> None:
        self._change(case_number, actor, notes=self._note(case_number, text))

    async def mark_abandoned_in_ivr(self, case_number: str, *, actor: str = "system") -> None:
        if self.cases[case_number]["status"] == CaseStatus.NEW:  # as the domain: only a case still being collected
            self._change(case_number, actor, status=CaseStatus.ABANDONED_IN_IVR)

    async def get(self, case_number: str) -> Any:
        return type("C", (), dict(self.cases[case_number]))()


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def upsert(self, key: str, **fields: Any) -> None:
        self.rows.setdefault(key, {}).update(fields)

    async def start_call(self, key: str, **fields: Any) -> None:
        self.rows[key] = dict(fields, state="ivr")

    async def update(self, key: str, **fields: Any) -> None:
        self.rows.setdefault(key, {}).update(fields)


class FakeRecognizer:
    """Answers with outcome (a text, or an exception to raise); further outcomes answer the following calls."""

    def __init__(self, outcome: Any, *then: Any) -> None:
        self.outcome = outcome
        self.then = list(then)
        self.calls = 0
        self.grammars: list[Any] = []
        self.release: asyncio.Event | None = None  # set: each call waits for it

    async def transcribe_file(self, path: Path, grammar: Any = None, timeout: float | None = None) -> Any:
        self.calls += 1
        self.grammars.append(grammar)
        if self.release is not None:
            await self.release.wait()
        outcome = self.outcome
        if self.then:
            self.outcome = self.then.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return Transcript(text=outcome, duration=1.0)


@pytest.fixture
async def pipelines(tmp_path: Path) -> AsyncIterator[DescriptionPipelines]:
    async with description_pipelines(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}") as running:
        yield running


def _flow(tmp_path: Path, pipelines: DescriptionPipelines, recognizer: FakeRecognizer, *,
          transcript_wait_s: float = 30.0, grammar: list[str] | None = None,
          ) -> tuple[HotlineCallFlow, FakeCases, FakeStore, FakeStore, RunningPipeline]:
    cases, records, live = FakeCases(), FakeStore(), FakeStore()
    pipeline = pipelines.start(cases, recognizer, max_attempts=2, grammar=grammar)
    flow = HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2,
                                              transcript_wait_s=transcript_wait_s),
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
    agi = FakeAgi(["", "9", ""])
    await flow.handle(agi)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case["menu_path"] == ["no-input", "invalid:9", "no-input", "fallback:0"]
    assert case["category"] == "operator"
    assert agi.variables["HOTLINE_QUEUE"] == "operator"
    assert agi.log.count("menu") == 3
    assert set(cases.actors) == {"ivr"}  # every change the IVR makes is the IVR's in the case's history
    assert await pipeline.store.get("description:2611290001") is None  # nothing recorded, nothing queued


async def test_complaint_transcribed_via_a_job_before_queueing(tmp_path: Path, wav: Path,
                                                               pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("도로에 쓰레기")
    flow, cases, records, live, pipeline = _flow(tmp_path, pipelines, recognizer, grammar=["도로에 쓰레기"])
    agi = FakeAgi(["1"], recording=wav)
    await flow.handle(agi)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case["transcript"] == "도로에 쓰레기" and case["transcript_status"] == "done"
    assert case["recording_path"] == str(tmp_path / "2611290001.wav")
    assert agi.variables == {"HOTLINE_CASE": "2611290001", "HOTLINE_PRIORITY": "1", "HOTLINE_QUEUE": "complaints",
                             "HOTLINE_PROMPT": "/prompts/to_agent"}
    assert "say:2611290001" in agi.log
    assert live.rows["linked-1"]["transcript"] == "도로에 쓰레기"
    assert live.rows["linked-1"]["transcript_status"] == "done"
    assert records.rows["linked-1"]["ivr_path"] == ["1", "recorded"]
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.DONE and job.attempts == 1 and job.notified
    assert job.recordings[0].path == case["recording_path"] and job.case_number == "2611290001"
    assert recognizer.grammars == [["도로에 쓰레기"]]  # the complaint grammar setting reaches the recognizer


async def test_hang_up_after_describing_keeps_recording_and_transcript(tmp_path: Path, wav: Path,
                                                                       pipelines: DescriptionPipelines) -> None:
    flow, cases, records, _, _ = _flow(tmp_path, pipelines, FakeRecognizer("가로등 고장"))
    await flow.handle(FakeAgi(["1"], hang_up_on="record", recording=wav))  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case["status"] == CaseStatus.ABANDONED_IN_IVR
    assert case["transcript"] == "가로등 고장" and case["transcript_status"] == "done"
    assert Path(case["recording_path"]).exists()
    assert records.rows["linked-1"]["outcome"] == "abandoned_in_ivr"


async def test_hang_up_at_welcome_keeps_an_abandoned_case(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    flow, cases, records, _, _ = _flow(tmp_path, pipelines, FakeRecognizer("x"))
    await flow.handle(FakeAgi([], hang_up_on="play:welcome"))  # type: ignore[arg-type]
    assert cases.cases["2611290001"]["status"] == CaseStatus.ABANDONED_IN_IVR
    assert records.rows["linked-1"]["outcome"] == "abandoned_in_ivr"


async def test_asr_failure_is_retried_by_the_job_and_then_transcribed(tmp_path: Path, wav: Path,
                                                                      pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AsrError("recognizer crashed"), "이제 됩니다")
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    agi = FakeAgi(["1"], recording=wav)
    await flow.handle(agi)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert agi.variables["HOTLINE_QUEUE"] == "complaints"
    assert case["transcript"] == "이제 됩니다" and case["transcript_status"] == "done"
    assert live.rows["linked-1"]["transcript"] == "이제 됩니다"
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.DONE and job.attempts == 2 and recognizer.calls == 2


async def test_retries_give_up_with_a_reason(tmp_path: Path, wav: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AsrError("recognizer down"))
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    await flow.handle(FakeAgi(["1"], recording=wav))  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case["transcript_status"] == "failed" and case["transcript"] is None
    assert "after 2 attempt(s): recognizer down" in case["notes"]
    assert recognizer.calls == 2 and live.rows["linked-1"]["transcript_status"] == "failed"
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.FAILED and job.attempts == 2
    assert Path(case["recording_path"]).exists()


async def test_too_short_recording_fails_at_once_and_says_why(tmp_path: Path, wav: Path,
                                                              pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(AudioFormatError("recording x.wav: too short (0.2 s)"))
    flow, cases, _, live, pipeline = _flow(tmp_path, pipelines, recognizer)
    await flow.handle(FakeAgi(["1"], recording=wav))  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert case["transcript_status"] == "failed" and "too short (0.2 s)" in case["notes"]
    assert recognizer.calls == 1  # no retry can make it longer
    job = await pipeline.store.get("description:2611290001")
    assert job is not None and job.status == JobStatus.FAILED and job.attempts == 1
    assert live.rows["linked-1"]["transcript_status"] == "failed"
    assert Path(case["recording_path"]).exists()


async def test_a_slow_transcript_does_not_hold_the_caller_and_still_reaches_the_live_call(
        tmp_path: Path, wav: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("늦은 설명")
    recognizer.release = asyncio.Event()
    flow, cases, _, live, _ = _flow(tmp_path, pipelines, recognizer, transcript_wait_s=0.2)
    agi = FakeAgi(["1"], recording=wav)
    await asyncio.wait_for(flow.handle(agi), 5)  # type: ignore[arg-type]
    case = cases.cases["2611290001"]
    assert agi.variables["HOTLINE_QUEUE"] == "complaints" and case["transcript_status"] == "pending"
    recognizer.release.set()  # the recognizer answers once the caller is in the queue
    for _ in range(100):
        if live.rows["linked-1"].get("transcript"):
            break
        await asyncio.sleep(0.05)
    assert case["transcript"] == "늦은 설명" and case["transcript_status"] == "done"
    assert live.rows["linked-1"]["transcript"] == "늦은 설명"
    await flow.aclose()
