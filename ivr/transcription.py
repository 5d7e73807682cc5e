"""Transcribing callers' recorded descriptions into their cases, with retries that survive restarts."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from asr import AsrError, AudioFormatError
from cases import TranscriptStatus

log = logging.getLogger(__name__)


class TranscriptionService:
    """Runs Vosk on a case's recording and stores the transcript; a failure leaves the case 'pending' for retry."""

    def __init__(self, recognizer: Any, cases: Any, live: Any, *, grammar: list[str] | None = None,
                 timeout: float = 120.0, max_attempts: int = 3, retry_interval: float = 60.0) -> None:
        self._recognizer = recognizer
        self._cases = cases
        self._live = live
        self._grammar = grammar or None
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._retry_interval = retry_interval
        self._attempts: dict[str, int] = {}
        self.transcribed = 0
        self.failed = 0

    async def transcribe_case(self, case_number: str, recording: Path, linkedid: str | None = None) -> str | None:
        """Transcribe now; on success store the transcript (and mirror it live); on failure keep it pending."""
        try:
            transcript = await self._recognizer.transcribe_file(recording, grammar=self._grammar, timeout=self._timeout)
        except AudioFormatError as exc:
            # Nothing a retry can fix (empty or too short): say so on the case, keep the recording.
            self.failed += 1
            log.info("case %s: recording not transcribable: %s", case_number, exc)
            await self._cases.transcript_failed(case_number, f"transcription failed: {exc}")
            if linkedid:
                await self._live.update(linkedid, transcript_status=TranscriptStatus.FAILED.value)
            return None
        except (AsrError, TimeoutError, OSError) as exc:
            log.warning("case %s: transcription failed, will retry: %s", case_number, exc)
            await self._cases.transcript_pending(case_number)
            return None
        text = transcript.text.strip()
        await self._cases.record_transcript(case_number, text)
        if linkedid:
            await self._live.update(linkedid, transcript=text, transcript_status=TranscriptStatus.DONE.value)
        self.transcribed += 1
        return text

    async def retry_pending_once(self) -> int:
        """Retry every case whose transcript is pending (e.g. after a restart); returns how many were tried."""
        tried = 0
        for case in await self._cases.list_pending_transcripts():
            if not case.recording_path:
                continue
            attempts = self._attempts.get(case.case_number, 0) + 1
            self._attempts[case.case_number] = attempts
            recording = Path(case.recording_path)
            if not recording.exists():
                await self._cases.transcript_failed(case.case_number,
                                                    f"transcription failed: recording {recording} is missing")
                continue
            tried += 1
            text = await self.transcribe_case(case.case_number, recording)
            if text is None and attempts >= self._max_attempts:
                await self._cases.transcript_failed(case.case_number, f"transcription failed after {attempts} attempts")
                log.error("case %s: transcription failed after %d attempts", case.case_number, attempts)
        return tried

    async def run_retries(self) -> None:
        """Retry pending transcriptions now and then every retry_interval seconds (run as an owned task)."""
        while True:
            try:
                await self.retry_pending_once()
            except Exception:  # keep retrying later; a database hiccup must not end the loop
                log.exception("transcription retry pass failed")
            await asyncio.sleep(self._retry_interval)
