"""Whole-call jobs: each leg stands on its own; an empty leg is a transcript marked empty, not the job's failure."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from asr import AudioFormatError, EmptyAudioError, Transcript
from storage import create_engine_from_url, migrate_database
from transcripts import JobKind, JobStatus, Recording, TranscriptionJobStore, TranscriptionWorker


class LegRecognizer:
    """Answers per file: an exception to raise, or the words heard."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers

    async def transcribe_file(self, path, grammar=None, timeout=None):
        answer = self.answers[Path(path).name]
        if isinstance(answer, Exception):
            raise answer
        return Transcript(text=str(answer), duration=15.0)

    async def transcribe_stereo(self, path, labels=(), grammar=None, timeout=None):
        raise AssertionError("not used")


class Observer:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.failed: list[str] = []

    async def transcript_done(self, job):
        self.done.append(job.job_key)

    async def transcript_failed(self, job):
        self.failed.append(job.last_error)


@pytest.fixture
async def store(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    yield TranscriptionJobStore(engine)
    await engine.dispose()


def _legs(tmp_path: Path) -> list[Recording]:
    for name in ("c-citizen.wav", "c-agent.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    return [Recording(str(tmp_path / "c-citizen.wav"), ("citizen",)),
            Recording(str(tmp_path / "c-agent.wav"), ("agent",))]


async def test_an_empty_citizen_leg_is_marked_empty_and_the_agent_leg_is_transcribed(store, tmp_path, caplog):
    observer = Observer()
    worker = TranscriptionWorker(store, LegRecognizer({
        "c-citizen.wav": EmptyAudioError("c-citizen.wav: empty (0 s of audio)"),
        "c-agent.wav": "어디에 쓰레기가 있나요"}), observer)
    await store.enqueue("call:c", JobKind.CALL, _legs(tmp_path), case_number="c")
    with caplog.at_level(logging.INFO):
        assert await worker.run_once()
    job = await store.get("call:c")
    assert job.status == JobStatus.DONE and observer.done == ["call:c"] and observer.failed == []
    citizen, agent = job.result
    assert citizen["channel"] == "citizen" and citizen["empty"] is True and citizen["text"] == ""
    assert "0 s of audio" in citizen["reason"]
    assert agent["channel"] == "agent" and agent["text"] == "어디에 쓰레기가 있나요" and "empty" not in agent
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_call_whose_every_leg_is_empty_is_done_with_empty_transcripts(store, tmp_path):
    observer = Observer()
    empty = EmptyAudioError("too short (0.1 s; at least 0.3 s needed)")
    worker = TranscriptionWorker(store, LegRecognizer({"c-citizen.wav": empty, "c-agent.wav": empty}), observer)
    await store.enqueue("call:c", JobKind.CALL, _legs(tmp_path), case_number="c")
    await worker.run_once()
    job = await store.get("call:c")
    assert job.status == JobStatus.DONE and [t["empty"] for t in job.result] == [True, True]


async def test_a_damaged_leg_does_not_stop_the_other_but_a_call_with_no_readable_leg_fails(store, tmp_path):
    observer = Observer()
    worker = TranscriptionWorker(store, LegRecognizer({
        "c-citizen.wav": AudioFormatError("c-citizen.wav: not a WAV file (no RIFF/WAVE header)"),
        "c-agent.wav": "안녕하세요"}), observer)
    await store.enqueue("call:c", JobKind.CALL, _legs(tmp_path), case_number="c")
    await worker.run_once()
    job = await store.get("call:c")
    assert job.status == JobStatus.DONE
    assert job.result[0]["unusable"] is True and job.result[1]["text"] == "안녕하세요"

    bad = AudioFormatError("not a WAV file (no RIFF/WAVE header)")
    worker = TranscriptionWorker(store, LegRecognizer({"c-citizen.wav": bad, "c-agent.wav": bad}), observer)
    await store.enqueue("call:d", JobKind.CALL, _legs(tmp_path), case_number="d")
    await worker.run_once()
    assert (await store.get("call:d")).status == JobStatus.FAILED
    assert observer.failed and "no RIFF/WAVE header" in observer.failed[0]


async def test_an_empty_description_still_fails_at_once_with_its_reason(store, tmp_path):
    observer = Observer()
    (tmp_path / "d.wav").write_bytes(b"RIFF")
    worker = TranscriptionWorker(store, LegRecognizer({"d.wav": EmptyAudioError("d.wav: empty (0 s of audio)")}),
                                 observer)
    await store.enqueue("description:d", JobKind.DESCRIPTION, [Recording(str(tmp_path / "d.wav"), ("citizen",))],
                        case_number="d")
    await worker.run_once()
    job = await store.get("description:d")
    assert job.status == JobStatus.FAILED and job.attempts == 1 and observer.failed == ["d.wav: empty (0 s of audio)"]
