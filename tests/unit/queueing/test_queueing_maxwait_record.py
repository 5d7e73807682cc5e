"""`on_max_wait: record` with small fakes: the timeout route asks for it; the recording route keeps it on the case
and queues it as the case's description (a real durable job, transcribed by a worker with a fake recognizer)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asr import Transcript
from cases import (
    CaseEventKind,
    CaseStore,
    NewCase,
    TranscriptStatus,
)
from storage import create_engine_from_url, migrate_database
from config.settings import PROJECT_ROOT
from ivr import load_prompt_sets
from queueing import MaxWaitRecordingRoute, QueueTimeoutRoute
from telephony import AgiHangup
from tests.support.descriptions import DescriptionPipelines, RunningPipeline, description_pipelines
from tests.support.fake_agi import ChannelAgi
from transcripts import JobStatus


@pytest_asyncio.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    return url


@pytest_asyncio.fixture
async def cases(db_url: str) -> AsyncIterator[CaseStore]:
    engine = create_engine_from_url(db_url)
    yield CaseStore(engine)
    await engine.dispose()


@pytest_asyncio.fixture
async def pipelines(db_url: str) -> AsyncIterator[DescriptionPipelines]:
    async with description_pipelines(db_url) as running:
        yield running


class SaysSewer:
    """The recognizer: every recording says 하수도."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    async def transcribe_file(self, path: Path, grammar: Any = None, timeout: float | None = None) -> Transcript:
        self.calls.append(Path(path))
        return Transcript(text="하수도", duration=1.0)


class FakeAgi(ChannelAgi):
    """Plays nothing; RECORD FILE writes `spoken` bytes of audio (or hangs up first when told to)."""

    def __init__(self, variables: dict[str, str], spoken: int = 16000, hang_up_while_recording: bool = False) -> None:
        super().__init__(variables, caller="01055504201", uniqueid="500.1")
        self.recorded: list[str] = []
        self._spoken = spoken
        self._hang_up = hang_up_while_recording

    async def record_file(self, path: str, fmt: str, escape: str, max_ms: int, silence_s: int,
                          beep: bool = True) -> None:
        self.recorded.append(path)
        Path(f"{path}.{fmt}").write_bytes(b"\0" * (44 + self._spoken))
        if self._hang_up:
            raise AgiHangup("caller hung up")


class FakeLive:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    async def get_call(self, linkedid: str) -> dict[str, Any]:
        return {}

    async def update(self, linkedid: str, **fields: Any) -> None:
        self.updates.append(fields)


def _synth(text: str, voice: str, target: Path) -> Path:
    target.write_text(text, encoding="utf-8")
    return target


def _route(cases: CaseStore, tmp_path: Path, pipeline: RunningPipeline,
           live: FakeLive | None = None) -> MaxWaitRecordingRoute:
    ko = load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml")["ko"]
    return MaxWaitRecordingRoute(cases, pipeline.descriptions, live or FakeLive(), recordings_dir=tmp_path / "rec",
                                 prompts_dir=tmp_path / "prompts", voice=ko.voice, texts=ko.texts, synthesize=_synth)


async def test_timeout_route_asks_the_dialplan_to_record() -> None:
    agi = FakeAgi({"HOTLINE_QUEUE": "inquiries", "CHANNEL(linkedid)": "500.1"})
    await QueueTimeoutRoute({"inquiries": "record"}, None, FakeLive()).handle(agi)  # type: ignore[arg-type]
    assert agi.variables["HOTLINE_MAXWAIT_RECORD"] == "1" and agi.variables["HOTLINE_OVERFLOW"] == ""
    assert "HOTLINE_CALLBACK" not in agi.variables


def test_settings_accept_record_as_on_max_wait() -> None:
    from config.settings import QueueSpec

    assert QueueSpec(name="inquiries", on_max_wait="record").on_max_wait == "record"


async def test_case_without_recording_keeps_the_max_wait_description_and_transcribes_it(
        cases: CaseStore, pipelines: DescriptionPipelines, tmp_path: Path) -> None:
    case = await cases.open(NewCase(caller_number="01055504201", category="inquiry", menu_path=["2"]), actor="ivr")
    recognizer, live = SaysSewer(), FakeLive()
    pipeline = pipelines.start(cases, recognizer)
    route = _route(cases, tmp_path, pipeline, live)
    agi = FakeAgi({"HOTLINE_CASE": case.case_number, "CHANNEL(linkedid)": "500.1"})
    await route.handle(agi)
    wav = tmp_path / "rec" / f"{case.case_number}-maxwait.wav"
    stored = await cases.get(case.case_number)
    assert stored.recording_path == str(wav) and wav.exists()
    assert stored.transcript == "하수도" and stored.transcript_status == TranscriptStatus.DONE
    assert recognizer.calls == [wav]
    job = await pipeline.store.get(f"description:{case.case_number}")
    assert job is not None and job.status == JobStatus.DONE and job.recordings[0].path == str(wav)
    assert {"transcript": "하수도", "transcript_status": "done"} in live.updates  # mirrored into the live call
    assert agi.variables["HOTLINE_MAXWAIT_RECORDED"] == case.case_number
    [prompt] = agi.played
    assert Path(prompt + ".wav").read_text(encoding="utf-8").startswith("오래 기다리시게 해서 죄송합니다")


async def test_hang_up_while_recording_keeps_what_was_said(cases: CaseStore, pipelines: DescriptionPipelines,
                                                             tmp_path: Path) -> None:
    case = await cases.open(NewCase(caller_number="01055504201", category="inquiry"), actor="ivr")
    recognizer = SaysSewer()
    agi = FakeAgi({"HOTLINE_CASE": case.case_number}, hang_up_while_recording=True)
    await _route(cases, tmp_path, pipelines.start(cases, recognizer)).handle(agi)
    stored = await cases.get(case.case_number)
    assert stored.recording_path.endswith("-maxwait.wav") and stored.transcript == "하수도"
    assert len(recognizer.calls) == 1 and "HOTLINE_MAXWAIT_RECORDED" not in agi.variables


async def test_ivr_recording_is_not_replaced_the_new_one_is_noted(cases: CaseStore, pipelines: DescriptionPipelines,
                                                                   tmp_path: Path) -> None:
    case = await cases.open(NewCase(caller_number="01055504201", category="complaint", menu_path=["1"]), actor="ivr")
    await cases.attach_recording(case.case_number, "/rec/ivr.wav", actor="ivr")
    await cases.record_transcript(case.case_number, "버스")
    recognizer = SaysSewer()
    pipeline = pipelines.start(cases, recognizer)
    await _route(cases, tmp_path, pipeline).handle(FakeAgi({"HOTLINE_CASE": case.case_number}))
    stored = await cases.get(case.case_number)
    assert stored.recording_path == "/rec/ivr.wav" and stored.transcript == "버스"
    assert f"{case.case_number}-maxwait.wav" in (stored.notes or "")
    assert [e.kind for e in await cases.events(case.case_number)][-1] == CaseEventKind.NOTE
    assert recognizer.calls == [] and await pipeline.store.get(f"description:{case.case_number}") is None


async def test_silence_or_no_case_records_nothing(cases: CaseStore, pipelines: DescriptionPipelines,
                                                  tmp_path: Path) -> None:
    recognizer = SaysSewer()
    pipeline = pipelines.start(cases, recognizer)
    route = _route(cases, tmp_path, pipeline)
    no_case = FakeAgi({})
    await route.handle(no_case)
    assert no_case.variables["HOTLINE_MAXWAIT_RECORDED"] == "none" and no_case.recorded == []
    case = await cases.open(NewCase(caller_number="01055504201", category="inquiry"), actor="ivr")
    await route.handle(FakeAgi({"HOTLINE_CASE": case.case_number}, spoken=0))
    assert (await cases.get(case.case_number)).recording_path is None and recognizer.calls == []
    assert await pipeline.store.get(f"description:{case.case_number}") is None


def test_route_refuses_a_language_without_the_prompt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue_maxwait_describe"):
        MaxWaitRecordingRoute(None, None, None, recordings_dir=tmp_path, prompts_dir=tmp_path, voice="ko", texts={},
                              synthesize=_synth)
