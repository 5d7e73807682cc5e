"""Turns AMI queue and channel events into live call state, call detail records and the case operations of
the call's progress."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .ports import AmiActions, AmiEvents, CallRecordWriter

if TYPE_CHECKING:
    from .live_call import LiveCall
    from .live_state import LiveCallState

log = logging.getLogger(__name__)


class CaseProgress(Protocol):
    """The case operations a tracked call drives (cases.DurableCases in the hotline); the case domain decides
    what each does to the case's status."""

    async def mark_queued(self, case_number: str, queue: str) -> object: ...
    async def assign_agent(self, case_number: str, agent: str) -> object: ...
    async def end_call(self, case_number: str, outcome: str) -> object: ...
    async def mark_interrupted(self, case_number: str, reason: str) -> object: ...


# Called with the case number after the case has heard of its call's end (the whole-call transcription intake).
CallEndHook = Callable[[str], Awaitable[object]]


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _position(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _member_name(event: Any) -> str | None:
    name = event.get("MemberName") or event.get("Interface") or ""
    name = str(name)
    if "/" in name:  # PJSIP/agent1 -> agent1
        name = name.split("/", 1)[1]
    return name or None


class CallTracker:
    """Follows each hotline call (by linkedid) from the IVR through the queue to its hang-up."""

    def __init__(self, ami: AmiActions, live: LiveCallState, records: CallRecordWriter, cases: CaseProgress,
                 call_end_hooks: Sequence[CallEndHook] = ()) -> None:
        # call_end_hooks is read on each call's end, so hooks added to the given list later still run.
        self._ami = ami
        self._live = live
        self._records = records
        self._cases = cases
        self._end_hooks = call_end_hooks
        self.rebuilds = 0
        self.interrupted = 0  # calls cut off by a system failure (counted, not blamed on the caller)

    def subscribe(self, ami: AmiEvents) -> None:
        """Follow calls through this AMI client's events, and rebuild after each (re)connect."""
        for name, handler in (
            ("QueueCallerJoin", self._on_join),
            ("AgentCalled", self._on_agent_called),
            ("AgentRingNoAnswer", self._on_ring_no_answer),
            ("AgentConnect", self._on_connect),
            ("AgentComplete", self._on_complete),
            ("QueueCallerAbandon", self._on_abandon),
            ("Hangup", self._on_hangup),
        ):
            ami.on_event(name, handler)
        ami.on_connected(self.rebuild)

    async def _tracked(self, event: Any) -> tuple[str, LiveCall] | None:
        linkedid = str(event.get("Linkedid") or "")
        if not linkedid:
            return None
        call = await self._live.get_call(linkedid)
        if call is None:
            return None  # not a call the IVR registered (an agent's own test call, say)
        return linkedid, call

    async def _on_join(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        linkedid, call = tracked
        queue = str(event.get("Queue") or "")
        # Back in the same queue after pressing 5 too early (CallbackRoute): they kept their place and wait.
        requeued_at = call.get("requeue_queued_at") if call.get("requeue_queue") == queue else None
        await self._live.update(linkedid, state="queued", queue=queue, position=_position(event.get("Position")),
                                queued_at=requeued_at or datetime.now(UTC))
        await self._records.upsert(linkedid, queue=queue, outcome="queued")
        if case_number := call.get("case_number"):
            await self._cases.mark_queued(case_number, queue)

    async def _on_agent_called(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        await self._live.update(tracked[0], state="ringing", ringing_agent=_member_name(event))

    async def _on_ring_no_answer(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        await self._live.update(tracked[0], state="queued", ringing_agent=None)

    async def _on_connect(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        linkedid, call = tracked
        agent = _member_name(event)
        now = datetime.now(UTC)
        wait = _seconds(event.get("HoldTime"))
        await self._live.update(linkedid, state="connected", agent=agent, queue_wait_seconds=wait,
                                answered_at=now, ringing_agent=None)
        await self._records.upsert(linkedid, agent=agent, queue_wait_seconds=wait, answered_at=now,
                                   outcome="answered")
        if (case_number := call.get("case_number")) and agent:
            await self._cases.assign_agent(case_number, agent)

    async def _on_complete(self, event: Any) -> None:
        linkedid = str(event.get("Linkedid") or "")
        if not linkedid:
            return
        # The caller's channel may already be gone from live state; the record is still completed.
        if await self._records.get(linkedid) is None:
            return
        await self._records.upsert(linkedid, talk_seconds=_seconds(event.get("TalkTime")), outcome="completed")

    async def _on_abandon(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        linkedid, call = tracked
        wait = _seconds(event.get("HoldTime"))
        await self._live.update(linkedid, state="abandoned", queue_wait_seconds=wait)
        await self._records.upsert(linkedid, queue_wait_seconds=wait, outcome="abandoned_in_queue")

    async def _on_hangup(self, event: Any) -> None:
        tracked = await self._tracked(event)
        if tracked is None:
            return
        linkedid, call = tracked
        # Only the citizen's own channel ends the call; agents' legs hang up on their own.
        if str(event.get("Uniqueid") or "") != (call.get("channel_uniqueid") or linkedid):
            return
        cause = f"{event.get('Cause', '')} {event.get('Cause-txt', '')}".strip() or None
        await self._finish(linkedid, call, cause)

    def _lost_ivr(self, call: LiveCall) -> str | None:
        """Why a call that ended in the IVR was the hotline's failure, not the caller's hang-up (None: the caller's).

        The IVR session lives in the process that registered the call: one that failed says so on the call; one
        registered by another run of the bridge lost its session when that process died (a hang-up it never saw)."""
        if call.get("ivr_failed"):
            return f"the IVR failed: {call['ivr_failed']}"
        owner = call.get("owner")
        if owner and owner != self._live.owner:
            return f"the bridge that ran its IVR ({owner}) stopped during the call"
        return None

    async def _finish(self, linkedid: str, call: LiveCall, cause: str | None) -> None:
        state = call.get("state")
        record = await self._records.get(linkedid)
        outcome = record.outcome if record is not None else None
        interrupted = self._lost_ivr(call) if state == "ivr" else None
        if interrupted:
            outcome = "interrupted"
            self.interrupted += 1
            log.warning("call %s was cut off by a system failure: %s", linkedid, interrupted)
        elif state == "ivr":
            outcome = "abandoned_in_ivr"
        elif state in ("queued", "ringing", "abandoned"):
            outcome = "abandoned_in_queue"
        elif state == "connected" and outcome not in ("completed",):
            outcome = "completed"
        now = datetime.now(UTC)
        await self._records.upsert(linkedid, hangup_cause=cause, ended_at=now, outcome=outcome or "completed")
        await self._live.end_call(linkedid, hangup_cause=cause, outcome=outcome)
        if case_number := call.get("case_number"):
            await self._case_call_ended(case_number, outcome or "completed", interrupted)

    async def _case_call_ended(self, case_number: str, outcome: str, interrupted: str | None = None) -> None:
        try:
            if interrupted:
                await self._cases.mark_interrupted(case_number, interrupted)
            else:
                await self._cases.end_call(case_number, outcome)
        except Exception:  # the hooks still run: the call's recordings are kept whatever the case said
            log.exception("case %s: recording the end of its call (%s) failed", case_number, outcome)
        for hook in list(self._end_hooks):
            try:
                await hook(case_number)
            except Exception:  # one hook failing must not stop the others or the call tracking
                log.exception("case %s: call-end hook %r failed", case_number, hook)

    async def rebuild(self) -> None:
        """After (re)connecting, make live state match Asterisk: end calls whose channels are gone, refresh queues."""
        self.rebuilds += 1
        channels = await self._ami.event_list({"Action": "CoreShowChannels"}, timeout=10)
        present = {str(c.get("Uniqueid")) for c in channels}
        for linkedid in await self._live.live_ids():
            call = await self._live.get_call(linkedid)
            if call is None:
                continue
            if (call.get("channel_uniqueid") or linkedid) not in present:
                log.info("rebuild: call %s is gone from Asterisk; closing it", linkedid)
                await self._finish(linkedid, call, "unknown (ended while the bridge was disconnected)")
        entries = await self._ami.event_list({"Action": "QueueStatus"}, timeout=10)
        by_uid = {str(c.get("Uniqueid")): str(c.get("Linkedid") or "") for c in channels}
        for entry in entries:
            if entry.get("Event") != "QueueEntry":
                continue
            linkedid = by_uid.get(str(entry.get("Uniqueid")), "")
            if linkedid and await self._live.get_call(linkedid) is not None:
                await self._live.update(linkedid, state="queued", queue=str(entry.get("Queue") or "") or None,
                                        position=_position(entry.get("Position")))
        log.info("live state rebuilt from Asterisk: %d channels, %d queue entries", len(channels), len(entries))
