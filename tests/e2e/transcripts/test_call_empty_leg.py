"""A whole call whose citizen leg is empty (their phone sent no audio) through the real Vosk worker: the agent's
words are transcribed onto the case's call job, the citizen's leg is stored as empty, nothing is logged as an error."""
from __future__ import annotations

import asyncio
import logging
import wave

import pytest

from asr import SpeechRecognizer
from cases import ACTOR_IVR, CaseStore, NewCase
from hotline.transcription_wiring import CallTranscriptIntake, CaseTranscriptObserver
from storage import create_engine_from_url, migrate_database
from tests.support.speech import concatenate, silence, synthesize
from transcripts import JobStatus, TranscriptionJobStore, TranscriptionWorker

pytestmark = [pytest.mark.vosk]


async def test_an_empty_citizen_leg_leaves_the_agents_words_transcribed(tmp_path, caplog):
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    cases, jobs = CaseStore(engine), TranscriptionJobStore(engine)
    recognizer = await SpeechRecognizer.load(workers=1)
    try:
        case = await cases.open(NewCase(caller_number="01055509001", category="complaint"), actor=ACTOR_IVR)
        calls = tmp_path / "calls"
        calls.mkdir()
        # What MixMonitor leaves when the citizen's phone sends no RTP: a WAV header and no frames.
        with wave.open(str(calls / f"{case.case_number}-citizen.wav"), "wb") as empty:
            empty.setnchannels(1)
            empty.setsampwidth(2)
            empty.setframerate(8000)
        sentence = "네 알겠습니다 하수도 위치를 말씀해 주세요"
        agent_leg = concatenate([silence(tmp_path / "gap.wav", 1.0),
                                 *(synthesize(sentence, tmp_path / f"a{i}.wav", pad_seconds=0.5) for i in range(3))],
                                calls / f"{case.case_number}-agent.wav")
        with wave.open(str(agent_leg)) as w:
            assert w.getnframes() / w.getframerate() > 8  # the agent talked for a while

        worker = TranscriptionWorker(jobs, recognizer, CaseTranscriptObserver(cases), poll_interval=0.2)
        job = await CallTranscriptIntake(jobs, worker, calls).call_ended(case.case_number)
        assert job is not None and len(job.recordings) == 2
        await jobs.enqueue(job.job_key, job.kind, job.recordings, case_number=case.case_number)  # idempotent
        with caplog.at_level(logging.INFO):
            for _ in range(100):  # the intake delays the job a few seconds (MixMonitor finishing its files)
                if await worker.run_once():
                    break
                await asyncio.sleep(0.1)
        done = await jobs.get(job.job_key)
        assert done is not None and done.status == JobStatus.DONE, done and done.last_error
        by_leg = {t["channel"]: t for t in done.result}
        assert by_leg["citizen"]["empty"] is True and by_leg["citizen"]["text"] == ""
        assert "0 s of audio" in by_leg["citizen"]["reason"]
        # Free-form recognition of synthesized speech is rough (see test_asr_jobs); what matters is that the whole
        # of the agent's talk was heard: words from its start to its end.
        agent = by_leg["agent"]
        assert agent["text"].strip() and agent["words"] and "empty" not in agent
        assert agent["duration"] > 8 and agent["words"][-1]["end"] > agent["duration"] - 3
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        # No failure was noted on the case.
        assert (await cases.get(case.case_number)).notes is None
    finally:
        await recognizer.aclose()
        await engine.dispose()
