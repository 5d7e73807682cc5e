"""`on_max_wait: record`: at the maximum wait the caller describes the complaint; the case keeps the recording.

The recording is queued as the case's description, a durable transcription job (case transcript_status 'pending'
until the job's worker stores the transcript or the reason it failed, also across a restart). The caller goes on at
once; the job's observer puts the transcript on the case and the live call when it is done."""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cases import ACTOR_IVR, DurableCases, TranscriptStatus
from telephony import AgiHangup
from transcripts import DescriptionTranscripts

from .live_call import LiveCall
from .live_state import LiveCallState

log = logging.getLogger(__name__)
DESCRIBE_PROMPT = "queue_maxwait_describe"


class MaxWaitRecordingRoute:
    """FastAGI route `queue-maxwait-record`: prompt, beep, record to <case>-maxwait.wav, keep it on the case."""

    def __init__(self, cases: DurableCases, descriptions: DescriptionTranscripts, live_calls: LiveCallState, *,
                 recordings_dir: Path, prompts_dir: Path, voice: str, texts: dict[str, str],
                 synthesize: Callable[[str, str, Path], Any], record_max_ms: int = 60000, silence_s: int = 3) -> None:
        if not texts.get(DESCRIBE_PROMPT):
            raise ValueError(f"prompt texts lack {DESCRIBE_PROMPT} (config/prompts.yaml)")
        self._cases = cases
        self._descriptions = descriptions
        self._live = live_calls
        self._recordings = Path(recordings_dir)
        self._text = texts[DESCRIBE_PROMPT]
        self._voice = voice
        self._synthesize = synthesize
        digest = hashlib.sha256(f"{voice}\0{self._text}".encode()).hexdigest()[:12]
        self._prompt = Path(prompts_dir).absolute() / f"queue-maxwait-describe-{digest}"  # new text: new file
        self._max_ms = record_max_ms
        self._silence = silence_s

    async def prompt_path(self) -> str:
        """The describe prompt (synthesized once, off the event loop)."""
        wav = self._prompt.with_suffix(".wav")
        if not wav.exists():
            wav.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.get_running_loop().run_in_executor(None, self._synthesize, self._text, self._voice, wav)
        return str(self._prompt)

    async def handle(self, agi: Any) -> None:
        """Sets HOTLINE_MAXWAIT_RECORDED to the case number (or 'none' when the call has no case)."""
        linkedid = await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        call: LiveCall = await self._live.get_call(linkedid) or {}
        case_number = await agi.get_variable("HOTLINE_CASE") or call.get("case_number")
        if not case_number:
            log.warning("call %s reached the maximum wait without a case: nothing to record onto", linkedid)
            await agi.set_variable("HOTLINE_MAXWAIT_RECORDED", "none")
            return
        case = await self._cases.get(case_number)
        self._recordings.mkdir(parents=True, exist_ok=True)
        base = self._recordings / f"{case_number}-maxwait"
        wav = base.parent / f"{base.name}.wav"  # not with_suffix: a provisional case number has a dot
        hung_up = False
        try:
            await agi.stream_file(await self.prompt_path())
            await agi.record_file(str(base), "wav", "#", self._max_ms, self._silence, beep=True)
        except AgiHangup:
            hung_up = True  # whatever was said before the hang-up is on disk: keep it
        if not wav.exists() or wav.stat().st_size <= 44:
            log.warning("case %s: nothing recorded at the maximum wait", case_number)
            return
        if case is not None and case.recording_path:
            # The IVR recording (and its transcript) stays the case's; this one is named in a note.
            await self._cases.add_note(case_number, f"described again at the maximum queue wait: {wav}",
                                       actor=ACTOR_IVR)
        else:
            await self._cases.attach_recording(case_number, str(wav), actor=ACTOR_IVR)
        await self._live.update(linkedid, state="recorded_at_max_wait", max_wait_recording=str(wav))
        log.info("case %s: caller described the complaint at the maximum wait (%s)", case_number, wav)
        if not hung_up:
            try:
                await agi.set_variable("HOTLINE_MAXWAIT_RECORDED", case_number)
            except AgiHangup:
                pass  # the recording is kept either way
        if case is None or not case.recording_path:
            # No waiting for the recognizer: the job's observer reports the transcript onto the live call too.
            await self._live.update(linkedid, transcript_status=TranscriptStatus.PENDING.value)
            await self._descriptions.submit(case_number, wav)
