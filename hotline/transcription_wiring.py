"""Wiring of durable transcription jobs into calls and cases (part of the composition root).

The dialplan (context ``hotline-call-recording``) runs MixMonitor on the citizen's channel before
Queue, writing ``<recordings_dir>/calls/<case>-citizen.wav`` (what the citizen said, MixMonitor r())
and ``<case>-agent.wav`` (what the citizen heard, t()). When the call ends, the job that transcribes
both is enqueued; the worker stores the labelled, timed transcripts and tells CaseTranscriptObserver.
"""
from __future__ import annotations

import logging
from pathlib import Path

from cases import ACTOR_SYSTEM, CaseStore
from transcripts import JobKind, Recording, TranscriptionJob, TranscriptionJobStore, TranscriptionWorker

log = logging.getLogger("hotline.transcripts")

CALL_JOB_DELAY_SECONDS = 3.0  # MixMonitor finishes writing its files just after the hang-up event


def call_recording_files(call_recordings_dir: Path, case_number: str) -> list[Recording]:
    """The per-direction MixMonitor files of a case's call that exist, labelled citizen/agent."""
    files = [(call_recordings_dir / f"{case_number}-citizen.wav", "citizen"),
             (call_recordings_dir / f"{case_number}-agent.wav", "agent")]
    return [Recording(str(path), (label,)) for path, label in files if path.exists()]


class CallTranscriptIntake:
    """On a call's end, enqueues the whole-call transcription of its MixMonitor recordings."""

    def __init__(self, jobs: TranscriptionJobStore, worker: TranscriptionWorker, call_recordings_dir: Path) -> None:
        self._jobs = jobs
        self._worker = worker
        self._dir = call_recordings_dir

    async def call_ended(self, case_number: str) -> TranscriptionJob | None:
        """Enqueue (idempotently) the case's whole-call job; None when the call was not recorded."""
        recordings = call_recording_files(self._dir, case_number)
        if not recordings:
            return None
        job = await self._jobs.enqueue(f"call:{case_number}", JobKind.CALL, recordings, case_number=case_number,
                                       delay=CALL_JOB_DELAY_SECONDS)
        self._worker.wake()
        log.info("case %s: whole-call transcription queued (%s)", case_number,
                 ", ".join(r.labels[0] for r in recordings))
        return job


class CaseTranscriptObserver:
    """Reports finished jobs on the case: descriptions fill its transcript; failures are noted on it."""

    def __init__(self, cases: CaseStore) -> None:
        self._cases = cases

    async def transcript_done(self, job: TranscriptionJob) -> None:
        """A job's transcripts are stored."""
        if job.case_number and job.kind == JobKind.DESCRIPTION:
            text = " ".join(t["text"] for t in job.result or [] if t.get("text")).strip()
            await self._cases.record_transcript(job.case_number, text)

    async def transcript_failed(self, job: TranscriptionJob) -> None:
        """A job failed for good: say so on the case (the recording is kept)."""
        if not job.case_number:
            return
        line = f"{job.kind.value} transcription failed after {job.attempts} attempt(s): {job.last_error}"
        if job.kind == JobKind.DESCRIPTION:
            await self._cases.transcript_failed(job.case_number, line)  # noted on the case with its reason
        else:
            await self._cases.add_note(job.case_number, line, actor=ACTOR_SYSTEM)
