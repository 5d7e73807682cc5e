"""Callers' recorded descriptions as durable transcription jobs, and a bounded wait for their outcome."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .store import (
    JobKind,
    JobStatus,
    Recording,
    TranscriptionJob,
    TranscriptionJobStore,
)
from .worker import TranscriptionWorker


def description_job_key(case_number: str) -> str:
    """The one job of a case's description: queueing it again adds nothing."""
    return f"description:{case_number}"


def job_text(job: TranscriptionJob) -> str:
    """A finished job's transcript as one text (a description has one recording, so one part)."""
    return " ".join(t["text"] for t in job.result or [] if t.get("text")).strip()


@dataclass(frozen=True)
class DescriptionResult:
    """A description's job that ended for good: its transcript, or why it failed."""

    status: JobStatus  # DONE or FAILED
    transcript: str | None
    error: str | None

    @property
    def done(self) -> bool:
        """The transcript is stored."""
        return self.status == JobStatus.DONE


class DescriptionTranscripts:
    """Queues callers' descriptions for the worker; wait() (bounded) is for tools and tests, never a caller.

    The worker's observer stores the outcome on the case (and the live call); the job row is the record of what
    happened.
    """

    def __init__(self, store: TranscriptionJobStore, worker: TranscriptionWorker, *,
                 grammar: Sequence[str] | None = None, max_attempts: int = 3) -> None:
        self._store = store
        self._worker = worker
        self._grammar = list(grammar) if grammar else None
        self._max_attempts = max_attempts

    async def submit(self, case_number: str, recording: Path) -> TranscriptionJob:
        """Queue the case's description (once per case) and wake the worker; the case is already 'pending'."""
        job = await self._store.enqueue(description_job_key(case_number), JobKind.DESCRIPTION,
                                        [Recording(str(recording))], case_number=case_number,
                                        grammar=self._grammar, max_attempts=self._max_attempts)
        self._worker.wake()
        return job

    async def wait(self, case_number: str, timeout: float) -> DescriptionResult | None:
        """The description's outcome once it is stored on the case (waiting up to timeout s); None: not yet."""
        job = await self._worker.wait_finished(description_job_key(case_number), timeout)
        if job is None or not job.notified:
            return None
        if job.status == JobStatus.DONE:
            return DescriptionResult(JobStatus.DONE, job_text(job), None)
        return DescriptionResult(JobStatus.FAILED, None, job.last_error)
