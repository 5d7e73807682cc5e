"""Durable transcription jobs: recordings waiting for a transcript, a worker, and the stored results."""
from .description import (
                    DescriptionResult,
                    DescriptionTranscripts,
                    description_job_key,
                    job_text,
)
from .store import (
                    JobKind,
                    JobStatus,
                    Recording,
                    TranscriptionJob,
                    TranscriptionJobError,
                    TranscriptionJobStore,
)
from .worker import TranscriptionWorker, TranscriptObserver

__all__ = ["DescriptionResult", "DescriptionTranscripts", "JobKind", "JobStatus", "Recording", "TranscriptObserver",
           "TranscriptionJob", "TranscriptionJobError", "TranscriptionJobStore", "TranscriptionWorker",
           "description_job_key", "job_text"]
