"""The flow engine: runs each FastAGI call through the flow version live when it started, node by node."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cases import ACTOR_IVR, NewCase, TranscriptStatus, is_provisional, normalise_caller_number
from telephony import AgiHangup, AgiSession, agi_quote
from transcripts import DescriptionTranscripts

from .flow_model import (
    WEEKDAYS,
    AnnounceCaseNode,
    CallbackNode,
    CaseStatusNode,
    GotoNode,
    HangupNode,
    HoursNode,
    LanguageNode,
    MenuNode,
    PlayNode,
    QueueNode,
    RecordNode,
    SetNode,
    SurveyNode,
    TransferNode,
)
from .flow_prompts import FixedPrompts
from .flow_routes import dialed_number
from .flow_source import FileFlowSource, LoadedFlow
from .flow_validator import FlowValidator
from .ports import CallCases, CallRecords

log = logging.getLogger(__name__)

ALL_KEYS = "0123456789*#"
MAX_STEPS = 1000  # validated flows cannot loop forever; this guards a call against a bug all the same
MAX_HEARD_CHARS = 64  # of words heard in a speech menu kept in the call path
DEFAULT_FLOW_FILE = Path(__file__).resolve().parent.parent / "config" / "ivr" / "default.yaml"


@dataclass(frozen=True)
class IvrOptions:
    """Timing defaults of the flow engine (from Settings); a node's own values win."""

    recordings_dir: Path
    menu_timeout_ms: int = 6000
    menu_retries: int = 2
    record_max_ms: int = 60000
    record_silence_s: int = 3
    speech_silence_s: int = 2  # a spoken menu answer ends after this much silence
    flow_file: Path = DEFAULT_FLOW_FILE
    language: str | None = None  # the language calls start in (None: the flow's default_language)
    transfer_dial: str | None = None  # Dial() target of transfer nodes ("{number}" replaced); None: no route
    # EAGI program and leading arguments of live transcription (ivr.live_transcript) for record nodes with
    # mode "stream"; None (no ASR websocket): such nodes record to a file as mode "record" does.
    live_transcript_command: tuple[str, ...] | None = None


@dataclass
class CallContext:
    """Everything one call carries through the flow."""

    agi: Any
    linkedid: str
    caller: str
    case_number: str
    flow: LoadedFlow
    language: str
    path: list[str] = field(default_factory=list)
    category: str | None = None
    priority: int = 0
    recording: Path | None = None

    def prompt(self, ref: str) -> str:
        """Playable path of a prompt in the caller's language."""
        return self.flow.prompts.path(ref, self.language)


class HotlineCallFlow:
    """Runs one call through the live flow; every step is mirrored to live state, the case and the call record.

    flows: where each call gets its flow (FlowRouter in the hotline: by the number dialed; or one source with
    current(), e.g. LiveFlowSource); default: the shipped YAML file with
    the given prompt library. speech: language → recognizer (transcribe_file with a grammar) or None for DTMF.
    descriptions: where recorded descriptions are queued as durable transcription jobs; the caller never waits
    for one: the job's observer puts the transcript on the case and the live call whenever it is done.
    """

    def __init__(self, *, options: IvrOptions, cases: CallCases, records: CallRecords, live: Any,
                 descriptions: DescriptionTranscripts, prompts: Any = None, flows: Any = None,
                 speech: Callable[[str, str | None], Any] | None = None, surveys: Any = None,
                 clock: Callable[[], datetime] | None = None, callbacks: Any = None,
                 callback_queue: str | None = None) -> None:
        self._o = options
        # callback nodes: callbacks.request(queue=, caller_number=, case_number=, linkedid=, priority=, queued_at=)
        # books a durable request (the queueing CallbackStore in the hotline; ValueError: cannot be called back);
        # callback_queue is the queue of nodes that name none. None: the request is only noted on the case.
        self._callbacks = callbacks
        self._callback_queue = callback_queue
        self._cases = cases
        self._records = records
        self._live = live
        self._descriptions = descriptions
        if flows is None:
            if prompts is None:
                raise ValueError("HotlineCallFlow needs flows or a prompt library")
            flows = FileFlowSource(options.flow_file, FlowValidator(base_dir=options.flow_file.parent),
                                   lambda _doc: FixedPrompts(prompts, options.flow_file.parent))
        self._flows = flows
        self._speech = speech
        self._surveys = surveys
        self._clock = clock or (lambda: datetime.now(UTC))
        self.calls_handled = 0
        self._runners: dict[type, Callable[[CallContext, Any], Any]] = {
            PlayNode: self._play, MenuNode: self._menu, RecordNode: self._record_node,
            AnnounceCaseNode: self._announce_case, CaseStatusNode: self._case_status, HoursNode: self._hours,
            LanguageNode: self._language, SetNode: self._set, QueueNode: self._queue, TransferNode: self._transfer,
            CallbackNode: self._callback, SurveyNode: self._survey, GotoNode: self._goto, HangupNode: self._hangup,
        }

    async def aclose(self) -> None:
        """Nothing runs past a call: descriptions' jobs are durable and their worker reports them."""

    async def handle(self, agi: AgiSession) -> None:
        """FastAGI route handler for agi://.../ivr (each connection is its own task in FastAgiServer)."""
        self.calls_handled += 1
        flow: LoadedFlow = await self._flow_for(agi)  # this call runs this version to its end
        # The dialplan passes the linkedid in the AGI URL (?linkedid=); asking for it would cost a round trip.
        linkedid = agi.params.get("linkedid") \
            or await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        caller = normalise_caller_number(agi.caller_number)  # a 70-digit caller ID is cut, never a hang-up
        case = await self._cases.open(NewCase(caller_number=caller, category="unclassified", source_ref=linkedid,
                                              menu_path=[]), actor=ACTOR_IVR)
        ctx = CallContext(agi=agi, linkedid=linkedid, caller=caller, case_number=case.case_number, flow=flow,
                          language=self._o.language if self._o.language in flow.document.languages
                          else flow.document.default_language)
        started = datetime.now(UTC)
        await self._live.start_call(linkedid, caller_number=caller, channel=agi.channel,
                                    channel_uniqueid=agi.uniqueid, case_number=ctx.case_number, category=None,
                                    transcript=None, language=ctx.language)
        await self._records.upsert(linkedid, caller_number=caller, case_number=ctx.case_number, ivr_path=[],
                                   started_at=started, outcome="in_ivr")
        log.info("call %s from %s: case %s, flow %s v%d", linkedid, caller, ctx.case_number, flow.name,
                 flow.version)
        try:
            node_name: str | None = flow.document.start
            for _ in range(MAX_STEPS):
                if node_name is None:
                    break
                node = flow.document.nodes[node_name]
                node_name = await self._runners[type(node)](ctx, node)
            else:
                log.error("call %s: flow %s v%d ran %d steps without ending; handing over", linkedid, flow.name,
                          flow.version, MAX_STEPS)
        except AgiHangup:
            log.info("call %s: caller hung up in the IVR after %s", linkedid, ctx.path or "the welcome")
            await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
            await self._cases.mark_abandoned_in_ivr(ctx.case_number, actor=ACTOR_IVR)
            await self._records.upsert(linkedid, ivr_path=ctx.path, outcome="abandoned_in_ivr")
            await self._keep_partial_recording(ctx)
        except Exception as exc:
            # The hotline failed, not the caller: say so on the live call first (the call tracker reads it when the
            # dialplan hangs up), then on the case and the record, so no rate blames the caller for it.
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            await self._interrupted(ctx, f"{type(exc).__name__}: {reason}")
            raise

    async def _interrupted(self, ctx: CallContext, reason: str) -> None:
        log.error("call %s: the IVR failed after %s: %s", ctx.linkedid, ctx.path or "the welcome", reason)
        await self._live.update(ctx.linkedid, ivr_failed=reason)
        try:
            await self._cases.mark_interrupted(ctx.case_number, reason, actor=ACTOR_IVR)
            await self._records.upsert(ctx.linkedid, ivr_path=ctx.path, outcome="interrupted")
        except Exception as exc:  # the store may be what failed; the call tracker tries again at the hang-up
            log.warning("call %s: recording the interruption failed: %s", ctx.linkedid, exc)

    # -- helpers ------------------------------------------------------------------------------------
    async def _flow_for(self, agi: Any) -> LoadedFlow:
        """The live flow of the number the caller dialed (a FlowRouter), or the one flow of a single source."""
        for_number = getattr(self._flows, "for_number", None)
        if for_number is None:
            return await self._flows.current()
        return await for_number(dialed_number(agi))

    async def _step(self, ctx: CallContext, step: str) -> None:
        ctx.path.append(step)
        await self._live.update(ctx.linkedid, ivr_path=ctx.path)

    async def _transcribe_description(self, ctx: CallContext, wav: Path) -> None:
        """Queue the description as a durable job and go on: the caller never waits for speech recognition.

        The job's observer puts the transcript on the case and on the live call (in the IVR, queued, with an
        agent or ended) when it is done."""
        await self._descriptions.submit(ctx.case_number, wav)

    async def _keep_partial_recording(self, ctx: CallContext) -> None:
        if ctx.recording is not None:
            return  # recorded to the end: its transcription is already queued
        wav = self._o.recordings_dir / f"{ctx.case_number}.wav"
        if wav.exists() and wav.stat().st_size > 44:
            # The caller described the problem, then hung up: the description still becomes the case's.
            await self._cases.attach_recording(ctx.case_number, str(wav), actor=ACTOR_IVR)
            await self._transcribe_description(ctx, wav)

    async def _key_press(self, ctx: CallContext, prompt: str, timeout_s: float, max_digits: int = 1) -> str:
        if max_digits == 1:
            return await ctx.agi.get_option(ctx.prompt(prompt), ALL_KEYS, int(timeout_s * 1000))
        digits, _ = await ctx.agi.get_data(ctx.prompt(prompt), int(timeout_s * 1000), max_digits)
        return digits

    # -- node runners: each returns the next node's name, or None when the IVR part of the call ends ---
    async def _play(self, ctx: CallContext, node: PlayNode) -> str | None:
        menu = ctx.flow.document.nodes.get(node.barge_in) if node.barge_in else None
        keys = "".join(o.key for o in menu.options) if isinstance(menu, MenuNode) else ""
        key = await ctx.agi.stream_file(ctx.prompt(node.prompt), keys)
        if key and isinstance(menu, MenuNode) and (option := menu.option(key)) is not None:
            await self._step(ctx, key)
            return option.next
        return node.next

    async def _menu(self, ctx: CallContext, node: MenuNode) -> str | None:
        retries = self._o.menu_retries if node.retries is None else node.retries
        timeout_ms = self._o.menu_timeout_ms if node.timeout_seconds is None else int(node.timeout_seconds * 1000)
        recognizer = self._recognizer(ctx, node)
        for attempt in range(retries + 1):
            if recognizer is not None:
                digits, word = await self._speech_attempt(ctx, node, recognizer, timeout_ms, attempt)
            else:
                digits = await ctx.agi.get_option(ctx.prompt(node.prompt), ALL_KEYS, timeout_ms)
                word = ""
            option = node.option(digits) if digits else self._option_for_word(ctx, node, word)
            if option is not None:
                await self._step(ctx, f"speech:{word}:{option.key}" if word else digits)
                return option.next
            if digits or word:
                # A wrong key, or words heard that name no option: both are a wrong choice, not silence.
                await self._step(ctx, f"invalid:{digits}" if digits else f"no-match:{word[:MAX_HEARD_CHARS]}")
                if node.invalid_prompt:
                    await ctx.agi.stream_file(ctx.prompt(node.invalid_prompt))
            else:
                await self._step(ctx, "no-input")
                if node.no_input_prompt:
                    await ctx.agi.stream_file(ctx.prompt(node.no_input_prompt))
        if node.fallback is not None:
            # Silence, wrong keys or unknown words every time: the flow's fallback (a person, in the default flow).
            await self._step(ctx, f"fallback:{node.fallback}")
            option = node.option(node.fallback)
            assert option is not None
            return option.next
        await self._step(ctx, "failure")
        return node.on_failure

    def _recognizer(self, ctx: CallContext, node: MenuNode) -> Any:
        if not node.speech or self._speech is None:
            return None
        if not any(o.keywords.get(ctx.language) for o in node.options):
            return None
        spec = ctx.flow.document.languages.get(ctx.language)
        return self._speech(ctx.language, spec.asr_model if spec else None)  # None: no model, DTMF only

    @staticmethod
    def _option_for_word(ctx: CallContext, node: MenuNode, word: str) -> Any:
        if not word:
            return None
        return next((o for o in node.options if word in o.keywords.get(ctx.language, [])), None)

    async def _speech_attempt(self, ctx: CallContext, node: MenuNode, recognizer: Any, timeout_ms: int,
                              attempt: int) -> tuple[str, str]:
        """Play the prompt, then listen: a key press ends it at once; otherwise the answer is recognized
        with Vosk restricted to this menu's keywords. Returns (digit, "") or ("", words heard) or ("", "")."""
        key = await ctx.agi.stream_file(ctx.prompt(node.prompt), ALL_KEYS)
        if key:
            return key, ""
        listen_dir = self._o.recordings_dir / "menu-speech"
        listen_dir.mkdir(parents=True, exist_ok=True)
        base = listen_dir / f"{ctx.case_number}-{attempt}-{uuid.uuid4().hex[:6]}"
        wav = base.parent / f"{base.name}.wav"  # not with_suffix: a provisional case number has a dot
        try:
            result = await ctx.agi.record_file(str(base), "wav", ALL_KEYS, timeout_ms, self._o.speech_silence_s,
                                               beep=False)
            if result is not None and "dtmf" in (result.data or "") and result.value > 0:
                return chr(result.value), ""
            if not wav.exists() or wav.stat().st_size <= 44 + 1600:  # under 0.1 s of audio: nothing said
                return "", ""
            grammar = [w for o in node.options for w in o.keywords.get(ctx.language, [])]
            try:
                transcript = await recognizer.transcribe_file(wav, grammar=grammar, timeout=10.0)
            except Exception as exc:  # recognition trouble is "no answer": the caller can still press a key
                log.warning("call %s: speech menu %s: %s", ctx.linkedid, node.prompt, str(exc).splitlines()[0])
                return "", ""
            return "", (transcript.text or "").strip()
        finally:
            wav.unlink(missing_ok=True)

    async def _record_node(self, ctx: CallContext, node: RecordNode) -> str | None:
        await ctx.agi.stream_file(ctx.prompt(node.prompt))
        base = self._o.recordings_dir / ctx.case_number
        wav = base.parent / f"{base.name}.wav"  # not with_suffix: a provisional case number has a dot
        await self._cases.attach_recording(ctx.case_number, str(wav), actor=ACTOR_IVR)
        await self._live.update(ctx.linkedid, transcript_status=TranscriptStatus.PENDING.value)
        max_ms = self._o.record_max_ms if node.max_seconds is None else node.max_seconds * 1000
        silence = self._o.record_silence_s if node.silence_seconds is None else node.silence_seconds
        if node.mode == "stream" and self._o.live_transcript_command:
            return await self._stream_record(ctx, node, wav, max_ms)
        try:
            await ctx.agi.record_file(str(base), "wav", "#", max_ms, silence, beep=True)
        finally:
            await self._step(ctx, "recorded")
        if not wav.exists():
            log.warning("case %s: Asterisk wrote no recording at %s", ctx.case_number, wav)
            await self._cases.drop_recording(ctx.case_number, "no recording was made", actor=ACTOR_IVR)
            return node.next
        _keep_private(wav)
        ctx.recording = wav
        if node.transcribe:
            await self._transcribe_description(ctx, wav)
        return node.next

    async def _stream_record(self, ctx: CallContext, node: RecordNode, wav: Path, max_ms: int) -> str | None:
        """Live transcription: EXEC EAGI streams the caller to the ASR websocket until they stop talking."""
        silence = 1.5 if node.silence_seconds is None else float(node.silence_seconds)
        args = [*(self._o.live_transcript_command or ()), "--linkedid", ctx.linkedid, "--wav", str(wav),
                "--max-seconds", str(max_ms / 1000), "--silence-seconds", str(silence)]
        if any("," in a for a in args):
            raise ValueError(f"live transcription argument with a comma cannot pass through EAGI: {args}")
        await self._live.update(ctx.linkedid, transcript_partial="", transcript="")
        await ctx.agi.stream_file("beep")
        try:
            # The EAGI script runs inside this AGI command; it ends on its own (silence, max length, hang-up).
            result = await ctx.agi.command(f"EXEC EAGI {agi_quote(','.join(args))}", timeout=max_ms / 1000 + 30)
        finally:
            await self._step(ctx, "recorded")
        if result.value == -1:
            log.warning("case %s: live transcription EAGI failed (%s)", ctx.case_number, result.line)
        if not wav.exists():
            log.warning("case %s: the live transcription wrote no recording at %s", ctx.case_number, wav)
            await self._cases.drop_recording(ctx.case_number, "no recording was made", actor=ACTOR_IVR)
            return node.next
        ctx.recording = wav
        call = await self._live.get_call(ctx.linkedid) or {}
        text = (call.get("transcript") or "").strip()
        if text:
            await self._cases.record_transcript(ctx.case_number, text, actor=ACTOR_IVR)
            await self._live.update(ctx.linkedid, transcript_status=TranscriptStatus.DONE.value)
        elif node.transcribe:
            # Nothing came live (websocket down, Redis away): the kept recording is transcribed as usual.
            await self._transcribe_description(ctx, wav)
        return node.next

    async def _announce_case(self, ctx: CallContext, node: AnnounceCaseNode) -> str | None:
        if is_provisional(ctx.case_number):
            # The database is away and no number was in hand: the case is kept and gets its number when it is
            # written; a number the caller could not look up would be worse than none.
            log.warning("call %s: case number not known yet (%s); not announced", ctx.linkedid, ctx.case_number)
        else:
            await ctx.agi.stream_file(ctx.prompt(node.prompt))
            await ctx.agi.say_digits(ctx.case_number)
        return node.next

    async def _case_status(self, ctx: CallContext, node: CaseStatusNode) -> str | None:
        digits = await self._key_press(ctx, node.prompt, node.timeout_seconds, node.max_digits)
        prompt = node.not_found_prompt
        if digits:
            try:
                case = await self._cases.get(digits)
            except Exception as exc:  # CaseNotFound or a malformed number: the caller hears "not found"
                log.info("call %s: case status lookup %s: %s", ctx.linkedid, digits, str(exc).splitlines()[0])
                case = None
            if case is not None:
                status = str(getattr(case.status, "value", case.status))
                prompt = node.status_prompts.get(status, node.status_prompts.get("other", node.not_found_prompt))
        await self._step(ctx, f"status:{digits or '-'}")
        await ctx.agi.stream_file(ctx.prompt(prompt))
        if digits and prompt != node.not_found_prompt:
            await ctx.agi.say_digits(digits)
        return node.next

    async def _hours(self, ctx: CallContext, node: HoursNode) -> str | None:
        now = self._clock().astimezone(ZoneInfo(node.timezone))
        is_open = False
        if now.date() not in node.holidays:
            for spec in node.weekly.get(WEEKDAYS[now.weekday()], []):
                start, end = spec.split("-")
                begin = time.fromisoformat(start)
                finish = time(23, 59, 59, 999999) if end == "24:00" else time.fromisoformat(end)
                if begin <= now.time().replace(tzinfo=None) < finish:
                    is_open = True
        await self._step(ctx, "open" if is_open else "closed")
        return node.open if is_open else node.closed

    async def _language(self, ctx: CallContext, node: LanguageNode) -> str | None:
        digits = await self._key_press(ctx, node.prompt, node.timeout_seconds)
        language = node.options.get(digits)
        if language is not None:
            ctx.language = language
            await self._live.update(ctx.linkedid, language=language)
        await self._step(ctx, f"language:{ctx.language}")
        return node.next

    async def _set(self, ctx: CallContext, node: SetNode) -> str | None:
        if node.category is not None:
            ctx.category = node.category
        if node.priority is not None:
            ctx.priority = node.priority
        if node.category is None and node.priority is None:
            await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
        else:
            await self._cases.classify(ctx.case_number, category=node.category, priority=node.priority,
                                       menu_path=ctx.path, actor=ACTOR_IVR)
        if node.category is not None:
            await self._live.update(ctx.linkedid, category=node.category)
        return node.next

    async def _queue(self, ctx: CallContext, node: QueueNode) -> str | None:
        priority = ctx.priority if node.priority is None else node.priority
        handover = {"HOTLINE_CASE": ctx.case_number, "HOTLINE_PRIORITY": str(priority), "HOTLINE_QUEUE": node.queue}
        if node.max_wait_seconds is not None:
            handover["HOTLINE_QUEUE_MAXWAIT"] = str(node.max_wait_seconds)
        if node.prompt:
            # The dialplan plays it after the AGI ("connecting you"): one AGI command fewer per call. A hang-up
            # during it is the call tracker's (the call is still in the IVR): abandoned in the IVR, as before.
            handover["HOTLINE_PROMPT"] = ctx.prompt(node.prompt)
        await ctx.agi.set_variables(handover)  # one round trip for all of them
        await self._records.upsert(ctx.linkedid, ivr_path=ctx.path)
        return None

    async def _transfer(self, ctx: CallContext, node: TransferNode) -> str | None:
        handover = {"HOTLINE_CASE": ctx.case_number, "HOTLINE_TRANSFER": node.number}
        if self._o.transfer_dial:
            handover["HOTLINE_TRANSFER_DIAL"] = self._o.transfer_dial.replace("{number}", node.number)
        else:
            log.warning("call %s: transfer to %s but no transfer_dial route is configured; the call ends",
                        ctx.linkedid, node.number)
        if node.prompt:
            handover["HOTLINE_PROMPT"] = ctx.prompt(node.prompt)  # played by the dialplan, as for a queue node
        await ctx.agi.set_variables(handover)
        await self._step(ctx, f"transfer:{node.number}")
        await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
        await self._records.upsert(ctx.linkedid, ivr_path=ctx.path)
        return None

    async def _callback(self, ctx: CallContext, node: CallbackNode) -> str | None:
        digits = await self._key_press(ctx, node.prompt, node.timeout_seconds)
        if digits == node.accept_key:
            note = f"callback requested to {ctx.caller}"
            queue = node.queue or self._callback_queue
            if self._callbacks is None or queue is None:
                log.warning("call %s: callback accepted but no callback service%s: only noted on the case",
                            ctx.linkedid, "" if queue else " or queue")
            else:
                try:
                    booked = await self._callbacks.request(
                        queue=queue, caller_number=ctx.caller, case_number=ctx.case_number, linkedid=ctx.linkedid,
                        priority=ctx.priority, queued_at=self._clock())
                except ValueError as exc:  # e.g. an anonymous caller: nobody to call back
                    await self._step(ctx, "callback:refused")
                    await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
                    await self._cases.add_note(ctx.case_number, f"callback could not be booked: {exc}",
                                               actor=ACTOR_IVR)
                    return node.declined
                note = f"callback {booked.id} requested to {ctx.caller} (queue {queue})"
                log.info("call %s: %s", ctx.linkedid, note)
            await self._step(ctx, "callback:yes")
            await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
            await self._cases.add_note(ctx.case_number, note, actor=ACTOR_IVR)
            if node.accepted_prompt:
                await ctx.agi.stream_file(ctx.prompt(node.accepted_prompt))
            return node.accepted
        await self._step(ctx, "callback:no")
        return node.declined

    async def _survey(self, ctx: CallContext, node: SurveyNode) -> str | None:
        digits = await self._key_press(ctx, node.prompt, node.timeout_seconds)
        if digits in ("1", "2", "3", "4", "5"):
            await self._step(ctx, f"survey:{digits}")
            if self._surveys is not None:
                await self._surveys.record_survey(ctx.case_number, int(digits), ctx.flow.name, ctx.flow.version)
            if node.thanks_prompt:
                await ctx.agi.stream_file(ctx.prompt(node.thanks_prompt))
        else:
            await self._step(ctx, "survey:none")
        return node.next

    async def _goto(self, ctx: CallContext, node: GotoNode) -> str | None:
        return node.next

    async def _hangup(self, ctx: CallContext, node: HangupNode) -> str | None:
        if node.prompt:
            await ctx.agi.stream_file(ctx.prompt(node.prompt))
        await self._step(ctx, "hangup")
        await self._cases.record_menu_path(ctx.case_number, ctx.path, actor=ACTOR_IVR)
        await self._records.upsert(ctx.linkedid, ivr_path=ctx.path)
        return None  # no HOTLINE_QUEUE: the dialplan hangs up


def _keep_private(path: Path) -> None:
    # Asterisk writes recordings with its own umask (another container, another set-up): a citizen's voice is made
    # readable by the hotline's user only as soon as it is picked up.
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as exc:
        log.warning("cannot make recording %s private: %s", path, exc.strerror or exc)
