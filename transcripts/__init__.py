"""Durable transcription jobs: recordings waiting for a transcript, a worker, and the stored results."""
from .store import (JobKind, JobStatus, Recording, TranscriptionJob, TranscriptionJobError,
                    TranscriptionJobStore)
from .worker import TranscriptionWorker, TranscriptObserver

__all__ = ["JobKind", "JobStatus", "Recording", "TranscriptObserver", "TranscriptionJob", "TranscriptionJobError",
           "TranscriptionJobStore", "TranscriptionWorker"]
