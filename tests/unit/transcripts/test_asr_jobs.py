"""Durable transcription jobs: the store and worker with small fakes, callers' descriptions through the job table
onto real cases (SQLite and PostgreSQL), and a real worker killed mid-job."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from asr import AsrError, AudioFormatError, SpeechRecognizer, Transcript
from cases import CaseStore, NewCase, TranscriptStatus
from hotline.transcription_wiring import queue_pending_descriptions
from storage import create_engine_from_url, migrate_database
from tests.support.databases import pg_unreachable_reason, scratch_pg_database
from tests.support.descriptions import description_pipelines
from tests.support.hotline_process import PROJECT_ROOT
from tests.support.recognizer import FakeRecognizer
from tests.support.speech import concatenate, merge_channels, silence, synthesize
from transcripts import JobKind, JobStatus, Recording, TranscriptionJobError, TranscriptionJobStore, TranscriptionWorker


def _recognizer(*answers: object) -> FakeRecognizer:
    """Answers from the script, then "안녕" to every further recording."""
    return FakeRecognizer(*answers, then=Transcript(text="안녕", duration=1.0))


class Observer:
    def __init__(self, fail_times: int = 0) -> None:
        self.done: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.fail_times = fail_times

    async def transcript_done(self, job):
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("database down")
        self.done.append(job.job_key)

    async def transcript_failed(self, job):
        self.failed.append((job.job_key, job.last_error))


@pytest.fixture
async def store(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    yield TranscriptionJobStore(engine)
    await engine.dispose()


@pytest.fixture
def wav(tmp_path) -> Path:
    return silence(tmp_path / "rec.wav", 1.0)


async def test_job_runs_and_stores_labelled_transcript(store, wav):
    observer = Observer()
    worker = TranscriptionWorker(store, _recognizer(), observer)
    job = await store.enqueue("description:2601010001", JobKind.DESCRIPTION, [Recording(str(wav), ("citizen",))],
                              case_number="2601010001")
    assert job.status == JobStatus.PENDING
    assert await worker.run_once()
    job = await store.get("description:2601010001")
    assert job.status == JobStatus.DONE and job.attempts == 1 and job.notified
    assert job.result[0]["text"] == "안녕" and job.result[0]["channel"] == "citizen"
    assert observer.done == ["description:2601010001"]
    assert not await worker.run_once()
    assert wav.exists()


async def test_enqueue_is_idempotent_and_checks_input(store, wav):
    first = await store.enqueue("call:x", "call", [Recording(str(wav), ("citizen", "agent"))], case_number="c1")
    again = await store.enqueue("call:x", "call", [Recording("/other.wav")], case_number="c1")
    assert again.id == first.id and again.recordings == first.recordings
    with pytest.raises(TranscriptionJobError, match="kind 'video'"):
        await store.enqueue("k", "video", [Recording(str(wav))])
    with pytest.raises(TranscriptionJobError, match="no recordings"):
        await store.enqueue("k", "call", [])


async def test_stereo_call_recording_is_split_per_party(store, wav):
    worker = TranscriptionWorker(store, _recognizer(), Observer())
    await store.enqueue("call:1", JobKind.CALL, [Recording(str(wav), ("citizen", "agent"))], case_number="c1")
    await worker.run_once()
    job = await store.get("call:1")
    assert [t["channel"] for t in job.result] == ["citizen", "agent"]
    assert job.result[1]["words"][0] == {"word": "words", "start": 0.1, "end": 0.5, "conf": 0.9}


async def test_bad_audio_fails_at_once_and_is_reported_with_the_recording_kept(store, wav):
    observer = Observer()
    worker = TranscriptionWorker(store, _recognizer(AudioFormatError(f"recording {wav}: empty (0 s of audio)")),
                                 observer)
    await store.enqueue("d:1", JobKind.DESCRIPTION, [Recording(str(wav))], case_number="c1")
    await worker.run_once()
    job = await store.get("d:1")
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert observer.failed == [("d:1", f"recording {wav}: empty (0 s of audio)")]
    assert wav.exists()


async def test_missing_recording_is_a_reported_failure(store, tmp_path):
    observer = Observer()
    worker = TranscriptionWorker(store, _recognizer(), observer)
    await store.enqueue("d:2", JobKind.DESCRIPTION, [Recording(str(tmp_path / "gone.wav"))], case_number="c1")
    await worker.run_once()
    assert observer.failed and "does not exist" in observer.failed[0][1]


async def test_transient_errors_are_retried_then_reported(store, wav):
    observer = Observer()
    worker = TranscriptionWorker(store, _recognizer(AsrError("pool busy"), AsrError("pool busy"),
                                                       AsrError("pool busy")), observer, retry_delay=0.0)
    await store.enqueue("d:3", JobKind.DESCRIPTION, [Recording(str(wav))], case_number="c1", max_attempts=3)
    await worker.run_once()
    assert (await store.get("d:3")).status == JobStatus.PENDING
    assert observer.failed == []
    await worker.run_once()
    await worker.run_once()
    job = await store.get("d:3")
    assert job.status == JobStatus.FAILED and job.attempts == 3 and job.last_error == "pool busy"
    assert observer.failed == [("d:3", "pool busy")]


async def test_retry_succeeds_after_a_transient_error(store, wav):
    worker = TranscriptionWorker(store, _recognizer(AsrError("timed out")), Observer(), retry_delay=0.0)
    await store.enqueue("d:4", JobKind.DESCRIPTION, [Recording(str(wav))])
    await worker.run_once()
    await worker.run_once()
    job = await store.get("d:4")
    assert job.status == JobStatus.DONE and job.attempts == 2


async def test_expired_lease_is_taken_over_and_live_lease_is_not(store, wav):
    await store.enqueue("d:5", JobKind.DESCRIPTION, [Recording(str(wav))])
    dead = await store.claim("dead-worker", lease_seconds=0.5)
    assert dead is not None and dead.status == JobStatus.RUNNING
    assert await store.claim("other", lease_seconds=30) is None  # lease still live
    await asyncio.sleep(0.7)
    taken = await store.claim("other", lease_seconds=30)
    assert taken is not None and taken.attempts == 2 and taken.lease_owner == "other"
    # The dead worker's late answer is refused: only the lease holder may store a result.
    assert not await store.complete(dead, "dead-worker", [{"text": "late"}])
    assert await store.complete(taken, "other", [{"text": "ok"}])


async def test_observer_failure_is_told_again_at_next_start(store, wav):
    observer = Observer(fail_times=1)
    worker = TranscriptionWorker(store, _recognizer(), observer)
    await store.enqueue("d:6", JobKind.DESCRIPTION, [Recording(str(wav))], case_number="c6")
    await worker.run_once()
    job = await store.get("d:6")
    assert job.status == JobStatus.DONE and not job.notified and observer.done == []
    restarted = TranscriptionWorker(store, _recognizer(), observer, poll_interval=0.1)
    task = asyncio.create_task(restarted.run())
    try:
        for _ in range(50):
            if observer.done:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert observer.done == ["d:6"] and (await store.get("d:6")).notified


async def test_wait_finished_returns_when_the_worker_is_done(store, wav):
    worker = TranscriptionWorker(store, _recognizer(), Observer(), poll_interval=5.0)
    task = asyncio.create_task(worker.run())
    try:
        await store.enqueue("d:7", JobKind.DESCRIPTION, [Recording(str(wav))])
        worker.wake()
        job = await worker.wait_finished("d:7", timeout=5.0)
        assert job is not None and job.status == JobStatus.DONE
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_descriptions_are_claimed_first_and_have_their_own_lane(store, wav):
    await store.enqueue("call:old", JobKind.CALL, [Recording(str(wav), ("citizen",))], case_number="c1")
    await store.enqueue("description:new", JobKind.DESCRIPTION, [Recording(str(wav))], case_number="c2")
    # A caller waits for the description; a whole call can wait: the newer description goes first.
    assert (await store.claim("w", 30)).job_key == "description:new"
    assert await store.claim("lane", 30, kinds=(JobKind.DESCRIPTION,)) is None  # the lane leaves call jobs alone
    assert (await store.claim("w", 30)).job_key == "call:old"


# --- callers' descriptions through the job table onto real cases, on SQLite and PostgreSQL --------------------

@pytest.fixture(scope="session")
def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (checked once per session), or None when it is there."""
    return pg_unreachable_reason()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path, pg_unreachable):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    else:
        async with scratch_pg_database(pg_unreachable) as url:
            yield url


@pytest.fixture
async def pipelines(db_url):
    async with description_pipelines(db_url, migrate=True) as running:
        yield running


@pytest.fixture
async def cases(db_url, pipelines):
    engine = create_engine_from_url(db_url)
    yield CaseStore(engine)
    await engine.dispose()


async def _pending_case(cases: CaseStore, recording: Path) -> str:
    """A case whose caller has just described the problem, as the IVR leaves it."""
    case = await cases.open(NewCase(caller_number="01055501234", category="complaint", source_ref="call-1"),
                            actor="ivr")
    await cases.attach_recording(case.case_number, str(recording), actor="ivr")
    return case.case_number


async def test_description_is_transcribed_by_a_job_onto_the_case(pipelines, cases, wav):
    recognizer = _recognizer(Transcript(text="하수도가 막혔어요", duration=2.0))
    pipeline = pipelines.start(cases, recognizer, grammar=["하수도가 막혔어요"])
    number = await _pending_case(cases, wav)
    await pipeline.descriptions.submit(number, wav)
    await pipeline.descriptions.submit(number, wav)  # a repeated submit adds nothing
    result = await pipeline.descriptions.wait(number, timeout=10)
    assert result is not None and result.done and result.transcript == "하수도가 막혔어요"
    case = await cases.get(number)
    assert case.transcript == "하수도가 막혔어요" and case.transcript_status == TranscriptStatus.DONE
    [job] = await pipeline.store.list_for_case(number)
    assert job.kind == JobKind.DESCRIPTION and job.attempts == 1 and job.grammar == ("하수도가 막혔어요",)
    assert recognizer.calls == [wav]


async def test_too_short_description_fails_at_once_with_the_reason_on_the_case(pipelines, cases, wav):
    recognizer = _recognizer(AudioFormatError(f"recording {wav}: too short (0.2 s)"))
    pipeline = pipelines.start(cases, recognizer, max_attempts=3)
    number = await _pending_case(cases, wav)
    await pipeline.descriptions.submit(number, wav)
    result = await pipeline.descriptions.wait(number, timeout=10)
    assert result is not None and not result.done and "too short (0.2 s)" in result.error
    case = await cases.get(number)
    assert case.transcript_status == TranscriptStatus.FAILED and case.transcript is None
    assert "description transcription failed after 1 attempt(s)" in case.notes and "too short" in case.notes
    assert len(recognizer.calls) == 1 and wav.exists()


async def test_recognizer_failures_are_retried_then_fail_for_good_with_the_reason(pipelines, cases, wav):
    recognizer = _recognizer(*(AsrError("recognizer pool is down") for _ in range(3)))
    pipeline = pipelines.start(cases, recognizer, max_attempts=3, retry_delay=0.05)
    number = await _pending_case(cases, wav)
    await pipeline.descriptions.submit(number, wav)
    result = await pipeline.descriptions.wait(number, timeout=10)
    assert result is not None and not result.done
    job = await pipeline.store.get(f"description:{number}")
    assert job.status == JobStatus.FAILED and job.attempts == 3 and len(recognizer.calls) == 3
    case = await cases.get(number)
    assert case.transcript_status == TranscriptStatus.FAILED
    assert "after 3 attempt(s): recognizer pool is down" in case.notes


async def test_a_description_claimed_by_a_dead_worker_is_transcribed_after_a_restart(pipelines, cases, wav):
    dead = pipelines.start(cases, _recognizer(), run=False, owner="dead-worker", lease_seconds=0.5)
    number = await _pending_case(cases, wav)
    await dead.descriptions.submit(number, wav)
    claimed = await dead.store.claim("dead-worker", lease_seconds=0.5)  # ...and the process died mid-job
    assert claimed is not None and claimed.job_key == f"description:{number}"
    assert (await cases.get(number)).transcript_status == TranscriptStatus.PENDING
    restarted = pipelines.start(cases, _recognizer(Transcript(text="가로등이 꺼졌어요", duration=2.0)),
                                owner="restarted", poll_interval=0.1)
    result = await restarted.descriptions.wait(number, timeout=10)
    assert result is not None and result.done
    job = await restarted.store.get(f"description:{number}")
    assert job.status == JobStatus.DONE and job.attempts == 2 and job.notified
    case = await cases.get(number)
    assert case.transcript == "가로등이 꺼졌어요" and case.transcript_status == TranscriptStatus.DONE


async def test_a_pending_description_without_a_job_is_queued_at_start(pipelines, cases, wav):
    # The case says 'pending' but no job was ever queued (written before the job table, or the process
    # stopped in between): the start queues it, and only once.
    number = await _pending_case(cases, wav)
    no_recording = (await cases.open(NewCase(caller_number="01055501235", category="complaint"),
                                     actor="ivr")).case_number
    await cases.transcript_pending(no_recording)
    pipeline = pipelines.start(cases, _recognizer(Transcript(text="버스가 안 와요", duration=2.0)))
    assert await queue_pending_descriptions(cases, pipeline.descriptions) == 1
    assert await queue_pending_descriptions(cases, pipeline.descriptions) <= 1
    result = await pipeline.descriptions.wait(number, timeout=10)
    assert result is not None and result.done
    assert (await cases.get(number)).transcript == "버스가 안 와요"
    assert len(await pipeline.store.list_for_case(number)) == 1
    assert await pipeline.store.list_for_case(no_recording) == []


# --- through the real parts: a real Vosk worker process killed mid-job --------------------------------

CHILD = textwrap.dedent("""
    import asyncio, sys
    from asr import SpeechRecognizer
    from storage import create_engine_from_url
    from transcripts import TranscriptionJobStore, TranscriptionWorker

    class Quiet:
        async def transcript_done(self, job): print("done", job.job_key, flush=True)
        async def transcript_failed(self, job): print("failed", job.job_key, flush=True)

    async def main():
        recognizer = await SpeechRecognizer.load(workers=1)
        engine = create_engine_from_url(sys.argv[1])
        worker = TranscriptionWorker(TranscriptionJobStore(engine), recognizer, Quiet(), owner="child",
                                     lease_seconds=3.0, poll_interval=0.2)
        print("ready", flush=True)
        await worker.run()

    asyncio.run(main())
""")


@pytest.mark.vosk
async def test_job_survives_a_worker_killed_mid_transcription(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    store = TranscriptionJobStore(engine)
    # A long two-party call (free-form recognition runs at ~2x real time: ~15 s of work per channel),
    # so the kill lands while the child is decoding.
    sentence = "안녕하세요 우리 집 앞에 하수도가 막혔습니다 빨리 와 주세요"
    citizen = concatenate([synthesize(sentence, tmp_path / f"c{i}.wav", pad_seconds=0.5) for i in range(5)],
                          tmp_path / "citizen.wav")
    agent = concatenate([silence(tmp_path / "gap.wav", 2.0),
                         *(synthesize("네 알겠습니다 하수도 위치를 말씀해 주세요", tmp_path / f"a{i}.wav",
                                      pad_seconds=0.5) for i in range(4))], tmp_path / "agent.wav")
    recording = merge_channels([citizen, agent], tmp_path / "call.wav")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, cwd=str(PROJECT_ROOT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
        await store.enqueue("call:survivor", JobKind.CALL, [Recording(str(recording), ("citizen", "agent"))],
                            case_number="2601010042")
        for _ in range(100):
            job = await store.get("call:survivor")
            if job.status == JobStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        assert job.status == JobStatus.RUNNING and job.lease_owner == "child"
        await asyncio.sleep(1.5)  # mid-decoding
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    job = await store.get("call:survivor")
    assert job.status == JobStatus.RUNNING and job.result is None, "the child finished before it was killed"
    assert recording.exists()

    observer = Observer()
    recognizer = await SpeechRecognizer.load(workers=2)
    try:
        worker = TranscriptionWorker(store, recognizer, observer, owner="successor", lease_seconds=30.0,
                                     poll_interval=0.5)
        task = asyncio.create_task(worker.run())
        try:
            job = await worker.wait_finished("call:survivor", timeout=180.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await recognizer.aclose()
        await engine.dispose()
    assert job.status == JobStatus.DONE and job.attempts == 2 and job.notified
    assert observer.done == ["call:survivor"]
    assert [t["channel"] for t in job.result] == ["citizen", "agent"]
    for transcript in job.result:
        assert transcript["text"].strip() and transcript["words"]
    # Word timings say who spoke when: the agent starts after the 2 s gap.
    assert job.result[1]["words"][0]["start"] >= 1.5
    assert recording.exists(), "the recording must outlive the job"
