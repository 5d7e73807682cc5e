"""Wiring of durable transcription jobs into calls and cases (part of the composition root).

A caller's recorded description (the IVR's record node, or ``on_max_wait: record``) is queued as a
``description`` job by ``transcripts.DescriptionTranscripts``; the call goes on at once (to the queue), and
CaseTranscriptObserver puts the transcript on the case and on the live call (whatever the call is doing by then,
even ended) when the worker is done.

The dialplan (context ``hotline-call-recording``) runs MixMonitor on the citizen's channel before
Queue, writing ``<recordings_dir>/calls/<case>-citizen.wav`` (what the citizen said, MixMonitor r())
and ``<case>-agent.wav`` (what the citizen heard, t()). When the call ends, the job that transcribes
both is enqueued; the worker stores the labelled, timed transcripts and tells CaseTranscriptObserver.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Unpack

from cases import ACTOR_SYSTEM, Case, CaseStore, TranscriptStatus, resolve_case_number
from queueing import LiveCallFields
from transcripts import (
    DescriptionTranscripts,
    JobKind,
    Recording,
    TranscriptionJob,
    TranscriptionJobStore,
    TranscriptionWorker,
    job_text,
)

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


class LiveTranscripts(Protocol):
    """Where a description's outcome reaches the call's live state (queueing.LiveCallState)."""

    async def update_existing(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> bool: ...


class CaseTranscriptObserver:
    """Reports finished jobs on the case: descriptions fill its transcript; failures are noted on it. A
    description's outcome also goes onto the case's call in the live state (the agent's screen shows it), if that
    call is still known there.

    Every case write of the transcription pipeline is made here."""

    def __init__(self, cases: CaseStore, live: LiveTranscripts | None = None) -> None:
        self._cases = cases
        self._live = live

    async def transcript_done(self, job: TranscriptionJob) -> None:
        """A job's transcripts are stored."""
        if job.case_number and job.kind == JobKind.DESCRIPTION:
            text = job_text(job)
            number = await resolve_case_number(self._cases, job.case_number)  # queued under a provisional one
            case = await self._cases.record_transcript(number, text)
            await self._to_live_call(case, transcript=text, transcript_status=TranscriptStatus.DONE.value)

    async def transcript_failed(self, job: TranscriptionJob) -> None:
        """A job failed for good: say so on the case (the recording is kept)."""
        if not job.case_number:
            return
        line = f"{job.kind.value} transcription failed after {job.attempts} attempt(s): {job.last_error}"
        number = await resolve_case_number(self._cases, job.case_number)
        if job.kind == JobKind.DESCRIPTION:
            case = await self._cases.transcript_failed(number, line)  # noted on the case with its reason
            await self._to_live_call(case, transcript_status=TranscriptStatus.FAILED.value)
        else:
            await self._cases.add_note(number, line, actor=ACTOR_SYSTEM)

    async def _to_live_call(self, case: Case, **fields: Unpack[LiveCallFields]) -> None:
        # The case's source_ref is its call's linkedid. Live state is a mirror: the case already holds the outcome,
        # so a call gone from Redis (or Redis away) loses nothing.
        if self._live is None or not case.source_ref:
            return
        if not await self._live.update_existing(case.source_ref, **fields):
            log.info("case %s: its call %s is no longer in the live state; the transcript is on the case",
                     case.case_number, case.source_ref)


async def queue_pending_descriptions(cases: CaseStore, descriptions: DescriptionTranscripts,
                                     limit: int = 1000) -> int:
    """Queue a job for every case still 'pending' with a recording (idempotent); how many there were.

    Run once at start, before calls are taken: a description whose job was never queued (the process
    stopped between the recording and the queueing, or it predates the job table) is transcribed too."""
    listed = await cases.list_pending_transcripts(limit=limit)
    pending = [(c.case_number, Path(c.recording_path)) for c in listed if c.recording_path]
    for case_number, recording in pending:
        await descriptions.submit(case_number, recording)
    if len(listed) >= limit:
        log.warning("more than %d cases wait for their transcript; the rest are queued at the next start", limit)
    elif pending:
        log.info("%d pending description(s) queued for transcription", len(pending))
    return len(pending)
