"""The IVR domain's builder: flow services from the settings, and the call flow the FastAGI server runs."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from asr import SpeechRecognizer
from cases import DurableCases
from config import Settings
from config.settings import PROJECT_ROOT
from queueing import CallbackStore, DurableCallRecords, LiveCallState
from transcripts import DescriptionTranscripts

from .call_flow import HotlineCallFlow, IvrOptions
from .flow_service import FlowServices


def build_flows(engine: AsyncEngine, settings: Settings, recognizer: SpeechRecognizer | None = None) -> FlowServices:
    """Flow versions, validator, admin and per-number router on the shared engine (no I/O).

    recognizer: the loaded model for speech menus' vocabulary (the hotline attaches it when the model is loaded)."""
    return FlowServices.create(engine, flow_file=settings.ivr_flow_file, prompts_dir=settings.prompts_dir,
                               override_dir=settings.prompts_override_dir,
                               queues=[q.name for q in settings.queues], project_dir=PROJECT_ROOT,
                               recognizer=recognizer, hotline_number=settings.hotline_number,
                               numbers=settings.flow_numbers)


def ivr_options(settings: Settings, live_transcript_command: tuple[str, ...] | None) -> IvrOptions:
    """The flow engine's timing defaults from the settings (a node's own values win)."""
    return IvrOptions(
        recordings_dir=settings.recordings_dir,
        menu_timeout_ms=int(settings.menu_timeout_seconds * 1000),
        menu_retries=settings.menu_retries,
        record_max_ms=settings.record_max_seconds * 1000,
        record_silence_s=settings.record_silence_seconds,
        language=settings.language,
        transfer_dial=settings.transfer_dial,
        live_transcript_command=live_transcript_command,  # record nodes with mode: stream
    )


def build_call_flow(settings: Settings, flows: FlowServices, *, cases: DurableCases, records: DurableCallRecords,
                    live: LiveCallState, descriptions: DescriptionTranscripts, callbacks: CallbackStore,
                    live_transcript_command: tuple[str, ...] | None) -> HotlineCallFlow:
    """The flow engine, taking each call's flow by the number dialed (the model must be attached to flows)."""
    return HotlineCallFlow(
        options=ivr_options(settings, live_transcript_command),
        flows=flows.router, speech=flows.models.menu_recognizer, surveys=flows.store,
        cases=cases, records=records, live=live, descriptions=descriptions,
        # callback nodes book durable requests, dialed like the queue key's (first queue if none named)
        callbacks=callbacks, callback_queue=settings.queues[0].name if settings.queues else None,
    )
