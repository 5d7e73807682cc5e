"""The 12345 call flow run on each FastAGI call: welcome, DTMF menu, recorded description, case, queue."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cases import CaseStatus, NewCase, TranscriptStatus
from telephony import AgiHangup, AgiSession

from .prompts import PromptLibrary
from .transcription import TranscriptionService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MenuChoice:
    """What one DTMF key of the main menu leads to."""

    category: str
    queue: str
    priority: int = 0
    record: bool = False


@dataclass(frozen=True)
class IvrOptions:
    """Timing and routing of the call flow (from Settings)."""

    recordings_dir: Path
    menu_timeout_ms: int = 6000
    menu_retries: int = 2
    record_max_ms: int = 60000
    record_silence_s: int = 3
    transcript_wait_s: float = 30.0
    choices: dict[str, MenuChoice] = field(default_factory=lambda: {
        "1": MenuChoice("complaint", "complaints", priority=1, record=True),
        "2": MenuChoice("inquiry", "inquiries"),
        "0": MenuChoice("operator", "operator"),
    })
    fallback: str = "0"  # where callers go after silence or invalid keys: a person


class HotlineCallFlow:
    """Runs one call through the IVR; every step is mirrored to live state, the case and the call record."""

    def __init__(self, *, options: IvrOptions, prompts: PromptLibrary, cases: Any, records: Any, live: Any,
                 transcription: TranscriptionService) -> None:
        self._o = options
        self._prompts = prompts
        self._cases = cases
        self._records = records
        self._live = live
        self._transcription = transcription
        self.calls_handled = 0
        self._background: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        """Cancel and await transcriptions still running past their call (their cases stay 'pending')."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def handle(self, agi: AgiSession) -> None:
        """FastAGI route handler for agi://.../ivr."""
        self.calls_handled += 1
        linkedid = await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        caller = agi.caller_number or "anonymous"
        case = await self._cases.create(NewCase(caller_number=caller, category="unclassified", source_ref=linkedid,
                                                menu_path=[]))
        case_number = case.case_number
        started = datetime.now(UTC)
        await self._live.start_call(linkedid, caller_number=caller, channel=agi.channel,
                                    channel_uniqueid=agi.uniqueid, case_number=case_number, category=None,
                                    transcript=None, language=self._prompts.language)
        await self._records.upsert(linkedid, caller_number=caller, case_number=case_number, ivr_path=[],
                                   started_at=started, outcome="in_ivr")
        log.info("call %s from %s: case %s", linkedid, caller, case_number)
        path: list[str] = []
        recording: Path | None = None
        try:
            key = await agi.stream_file(self._prompts.path("welcome"), "".join(self._o.choices))
            choice_key = key or await self._menu(agi, linkedid, path)
            if key:
                await self._step(linkedid, path, key)
            choice = self._o.choices[choice_key]
            await self._cases.update(case_number, category=choice.category, priority=choice.priority, menu_path=path)
            await self._live.update(linkedid, category=choice.category)
            transcribing: asyncio.Task[str | None] | None = None
            if choice.record:
                recording = await self._record(agi, case_number, linkedid, path)
                if recording is not None:
                    transcribing = asyncio.create_task(
                        self._transcription.transcribe_case(case_number, recording, linkedid),
                        name=f"transcribe-{case_number}")
            try:
                await agi.stream_file(self._prompts.path("case_number"))
                await agi.say_digits(case_number)
            finally:
                if transcribing is not None:
                    await self._await_transcript(transcribing, case_number)
            await agi.set_variable("HOTLINE_CASE", case_number)
            await agi.set_variable("HOTLINE_PRIORITY", str(choice.priority))
            await agi.set_variable("HOTLINE_QUEUE", choice.queue)
            await agi.stream_file(self._prompts.path("to_agent"))
            await self._records.upsert(linkedid, ivr_path=path)
        except AgiHangup:
            log.info("call %s: caller hung up in the IVR after %s", linkedid, path or "the welcome")
            await self._cases.update(case_number, status=CaseStatus.ABANDONED_IN_IVR, menu_path=path)
            await self._records.upsert(linkedid, ivr_path=path, outcome="abandoned_in_ivr")
            await self._keep_partial_recording(case_number, linkedid, recording)

    async def _step(self, linkedid: str, path: list[str], step: str) -> None:
        path.append(step)
        await self._live.update(linkedid, ivr_path=path)

    async def _menu(self, agi: AgiSession, linkedid: str, path: list[str]) -> str:
        for _attempt in range(self._o.menu_retries + 1):
            digits, _ = await agi.get_data(self._prompts.path("menu"), self._o.menu_timeout_ms, 1)
            if digits in self._o.choices:
                await self._step(linkedid, path, digits)
                return digits
            if digits:
                await self._step(linkedid, path, f"invalid:{digits}")
                await agi.stream_file(self._prompts.path("invalid"))
            else:
                await self._step(linkedid, path, "no-input")
                await agi.stream_file(self._prompts.path("no_input"))
        # Silence or wrong keys every time: a person takes over rather than hanging up on the citizen.
        await self._step(linkedid, path, f"fallback:{self._o.fallback}")
        return self._o.fallback

    async def _record(self, agi: AgiSession, case_number: str, linkedid: str, path: list[str]) -> Path | None:
        await agi.stream_file(self._prompts.path("describe"))
        base = self._o.recordings_dir / case_number
        wav = base.with_suffix(".wav")
        await self._cases.update(case_number, recording_path=str(wav), transcript_status=TranscriptStatus.PENDING)
        await self._live.update(linkedid, transcript_status=TranscriptStatus.PENDING.value)
        try:
            await agi.record_file(str(base), "wav", "#", self._o.record_max_ms, self._o.record_silence_s, beep=True)
        except AgiHangup:
            raise
        finally:
            await self._step(linkedid, path, "recorded")
        if not wav.exists():
            log.warning("case %s: Asterisk wrote no recording at %s", case_number, wav)
            await self._cases.update(case_number, transcript_status=TranscriptStatus.FAILED, recording_path=None,
                                     notes="no recording was made")
            return None
        return wav

    async def _await_transcript(self, task: asyncio.Task[str | None], case_number: str) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(task), self._o.transcript_wait_s)
        except TimeoutError:
            # The caller goes on to the queue; the transcript lands on the case when it is done.
            log.warning("case %s: transcript not ready within %.0f s; queueing anyway", case_number,
                        self._o.transcript_wait_s)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _keep_partial_recording(self, case_number: str, linkedid: str, recording: Path | None) -> None:
        wav = recording or self._o.recordings_dir / f"{case_number}.wav"
        if wav.exists() and wav.stat().st_size > 44:
            # The caller described the problem, then hung up: the description still becomes the case's.
            await self._cases.update(case_number, recording_path=str(wav), transcript_status=TranscriptStatus.PENDING)
            await self._transcription.transcribe_case(case_number, wav, linkedid)
