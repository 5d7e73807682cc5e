"""`on_max_wait: record` with small fakes: the timeout route asks for it; the recording route keeps it on the case
and queues it as the case's description (a real durable job, transcribed by a worker with a fake recognizer)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cases import (
    CaseEventKind,
    CaseStore,
    NewCase,
    TranscriptStatus,
)
from config.settings import PROJECT_ROOT
from ivr import load_prompt_sets
from queueing import MaxWaitRecordingRoute, QueueTimeoutRoute
from storage import create_engine_from_url, migrate_database
from tests.support.descriptions import DescriptionPipelines, RunningPipeline, description_pipelines, eventually
from tests.support.fake_agi import ChannelAgi
from tests.support.live import FakeLive
from tests.support.recognizer import FakeRecognizer
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


def _caller(variables: dict[str, str], **kwargs: Any) -> ChannelAgi:
    """The waiting caller's channel (plays nothing; RECORD FILE leaves audio unless told otherwise)."""
    return ChannelAgi(variables, caller="01055504201", uniqueid="500.1", **kwargs)


def _synth(text: str, voice: str, target: Path) -> Path:
    target.write_text(text, encoding="utf-8")
    return target


def _route(cases: CaseStore, tmp_path: Path, pipeline: RunningPipeline,
           live: FakeLive | None = None) -> MaxWaitRecordingRoute:
    ko = load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml")["ko"]
    return MaxWaitRecordingRoute(cases, pipeline.descriptions, live or FakeLive(), recordings_dir=tmp_path / "rec",
                                 prompts_dir=tmp_path / "prompts", voice=ko.voice, texts=ko.texts, synthesize=_synth)


async def test_timeout_route_asks_the_dialplan_to_record() -> None:
    agi = _caller({"HOTLINE_QUEUE": "inquiries", "CHANNEL(linkedid)": "500.1"})
    await QueueTimeoutRoute({"inquiries": "record"}, None, FakeLive()).handle(agi)  # type: ignore[arg-type]
    assert agi.variables["HOTLINE_MAXWAIT_RECORD"] == "1" and agi.variables["HOTLINE_OVERFLOW"] == ""
    assert "HOTLINE_CALLBACK" not in agi.variables


def test_settings_accept_record_as_on_max_wait() -> None:
    from config.settings import QueueSpec

    assert QueueSpec(name="inquiries", on_max_wait="record").on_max_wait == "record"


async def test_case_without_recording_keeps_the_max_wait_description_and_transcribes_it(
        cases: CaseStore, pipelines: DescriptionPipelines, tmp_path: Path) -> None:
    case = await cases.open(NewCase(caller_number="01055504201", category="inquiry", menu_path=["2"],
                                    source_ref="500.1"), actor="ivr")
    recognizer, live = FakeRecognizer("하수도"), FakeLive()
    pipeline = pipelines.start(cases, recognizer, live=live)
    route = _route(cases, tmp_path, pipeline, live)
    agi = _caller({"HOTLINE_CASE": case.case_number, "CHANNEL(linkedid)": "500.1"})
    await route.handle(agi)
    assert {"transcript_status": "pending"} in live.updates  # the caller goes on before the recognizer answers
    wav = tmp_path / "rec" / f"{case.case_number}-maxwait.wav"
    await eventually(lambda: {"transcript": "하수도", "transcript_status": "done"} in live.updates,
                     what="transcript on the live call")
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
    recognizer = FakeRecognizer("하수도")
    agi = _caller({"HOTLINE_CASE": case.case_number}, hang_up_while_recording=True)
    await _route(cases, tmp_path, pipelines.start(cases, recognizer)).handle(agi)
    await eventually(lambda: len(recognizer.calls) == 1, what="the description transcribed")
    for _ in range(100):
        stored = await cases.get(case.case_number)
        if stored.transcript_status != TranscriptStatus.PENDING:
            break
        await asyncio.sleep(0.02)
    assert stored.recording_path.endswith("-maxwait.wav") and stored.transcript == "하수도"
    assert len(recognizer.calls) == 1 and "HOTLINE_MAXWAIT_RECORDED" not in agi.variables


async def test_ivr_recording_is_not_replaced_the_new_one_is_noted(cases: CaseStore, pipelines: DescriptionPipelines,
                                                                   tmp_path: Path) -> None:
    case = await cases.open(NewCase(caller_number="01055504201", category="complaint", menu_path=["1"]), actor="ivr")
    await cases.attach_recording(case.case_number, "/rec/ivr.wav", actor="ivr")
    await cases.record_transcript(case.case_number, "버스")
    recognizer = FakeRecognizer("하수도")
    pipeline = pipelines.start(cases, recognizer)
    await _route(cases, tmp_path, pipeline).handle(_caller({"HOTLINE_CASE": case.case_number}))
    stored = await cases.get(case.case_number)
    assert stored.recording_path == "/rec/ivr.wav" and stored.transcript == "버스"
    assert f"{case.case_number}-maxwait.wav" in (stored.notes or "")
    assert [e.kind for e in await cases.events(case.case_number)][-1] == CaseEventKind.NOTE
    assert recognizer.calls == [] and await pipeline.store.get(f"description:{case.case_number}") is None


async def test_silence_or_no_case_records_nothing(cases: CaseStore, pipelines: DescriptionPipelines,
                                                  tmp_path: Path) -> None:
    recognizer = FakeRecognizer("하수도")
    pipeline = pipelines.start(cases, recognizer)
    route = _route(cases, tmp_path, pipeline)
    no_case = _caller({})
    await route.handle(no_case)
    assert no_case.variables["HOTLINE_MAXWAIT_RECORDED"] == "none" and no_case.recorded == []
    case = await cases.open(NewCase(caller_number="01055504201", category="inquiry"), actor="ivr")
    await route.handle(_caller({"HOTLINE_CASE": case.case_number}, spoken=0))
    assert (await cases.get(case.case_number)).recording_path is None and recognizer.calls == []
    assert await pipeline.store.get(f"description:{case.case_number}") is None


def test_route_refuses_a_language_without_the_prompt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue_maxwait_describe"):
        MaxWaitRecordingRoute(None, None, None, recordings_dir=tmp_path, prompts_dir=tmp_path, voice="ko", texts={},
                              synthesize=_synth)
