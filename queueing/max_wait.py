"""What happens when a caller reaches the queue's maximum wait: hang up, move to an overflow queue, or a callback."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from .callbacks import CallbackStore
from .live_call import LiveCall
from .live_state import LiveCallState

log = logging.getLogger(__name__)


class QueueTimeoutRoute:
    """FastAGI route run when Queue() ends with QUEUESTATUS=TIMEOUT; tells the dialplan what to do next."""

    def __init__(self, actions: dict[str, str], callbacks: CallbackStore, live_calls: LiveCallState,
                 max_wait: dict[str, int] | None = None) -> None:
        self._actions = dict(actions)  # queue -> on_max_wait
        self._max_wait = dict(max_wait or {})  # queue -> its own maximum wait (used after an overflow)
        self._callbacks = callbacks
        self._live = live_calls

    async def handle(self, agi: Any) -> None:
        """Sets HOTLINE_OVERFLOW (a queue), HOTLINE_CALLBACK=accepted or HOTLINE_MAXWAIT_RECORD=1; nothing: hang up."""
        queue = await agi.get_variable("HOTLINE_QUEUE") or ""
        linkedid = await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        action = self._actions.get(queue, "hangup")
        call: LiveCall = await self._live.get_call(linkedid) or {}
        log.info("call %s reached the maximum wait of %s: %s", linkedid, queue, action)
        await agi.set_variable("HOTLINE_OVERFLOW", "")  # set on every pass: the dialplan loops through here
        if action == "record":  # the dialplan runs the queue-maxwait-record route (MaxWaitRecordingRoute)
            await agi.set_variable("HOTLINE_MAXWAIT_RECORD", "1")
            return
        if action.startswith("overflow:"):
            target = action.split(":", 1)[1]
            await agi.set_variable("HOTLINE_OVERFLOW", target)
            await agi.set_variable("HOTLINE_QUEUE", target)
            if target in self._max_wait:
                await agi.set_variable("HOTLINE_QUEUE_MAXWAIT", str(self._max_wait[target]))
            await self._live.update(linkedid, overflowed_from=queue)
        elif action == "callback":
            try:
                queued_at = call.get("queued_at") or datetime.now(UTC)
                priority = int(await agi.get_variable("QUEUE_PRIO") or 0)
                request = await self._callbacks.request(
                    queue=queue, caller_number=agi.caller_number or "", linkedid=linkedid, priority=priority,
                    case_number=await agi.get_variable("HOTLINE_CASE") or call.get("case_number"),
                    queued_at=queued_at)
            except ValueError as exc:
                log.warning("call %s: no callback at maximum wait: %s", linkedid, exc)
                return
            await self._live.update(linkedid, state="callback_requested", callback_id=request.id)
            await agi.set_variable("HOTLINE_CALLBACK", "accepted")
