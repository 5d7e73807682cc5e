"""Queue priority: urgent categories and repeat callers with an open case go ahead; the IVR's priority is kept."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .live_call import LiveCall
from .live_state import LiveCallState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorityPolicy:
    """The app_queue priority of a call (higher is answered first)."""

    urgent_categories: frozenset[str] = frozenset({"safety"})
    urgent_priority: int = 10
    repeat_caller_priority: int = 5

    def priority(self, ivr_priority: int, category: str | None, has_open_case: bool) -> int:
        """Never lower than what the IVR set."""
        candidates = [ivr_priority]
        if category in self.urgent_categories:
            candidates.append(self.urgent_priority)
        if has_open_case:
            candidates.append(self.repeat_caller_priority)
        return max(candidates)


class QueueEntryRoute:
    """FastAGI route run just before Queue(): sets QUEUE_PRIO from the policy and mirrors it to live state."""

    def __init__(self, policy: PriorityPolicy, has_open_case: Callable[[str, str | None], Awaitable[bool]],
                 live: LiveCallState, max_wait: dict[str, int] | None = None) -> None:
        self._policy = policy
        self._max_wait = dict(max_wait or {})  # queue -> seconds, when the IVR did not set HOTLINE_QUEUE_MAXWAIT
        self._has_open_case = has_open_case  # (caller number, this call's case number) -> another open case?
        self._live = live

    async def handle(self, agi: Any) -> None:
        """Route handler for agi://.../queue-entry (?linkedid=&priority=&case=&queue=&maxwait= from the dialplan)."""
        ivr_priority = _int(await _value(agi, "priority", "HOTLINE_PRIORITY"))
        case_number = await _value(agi, "case", "HOTLINE_CASE") or None
        linkedid = await _value(agi, "linkedid", "CHANNEL(linkedid)") or agi.uniqueid
        caller = agi.caller_number or ""
        call: LiveCall = await self._live.get_call(linkedid) or {}
        category = call.get("category")
        repeat = bool(caller) and await self._has_open_case(caller, case_number)
        priority = self._policy.priority(ivr_priority, category, repeat)
        handover = {"QUEUE_PRIO": str(priority)}
        queue = await _value(agi, "queue", "HOTLINE_QUEUE") or ""
        if queue in self._max_wait and not await _value(agi, "maxwait", "HOTLINE_QUEUE_MAXWAIT"):
            handover["HOTLINE_QUEUE_MAXWAIT"] = str(self._max_wait[queue])
        await agi.set_variables(handover)
        await self._live.update(linkedid, priority=priority, repeat_caller=repeat)
        log.info("call %s (%s, %s): queue priority %d", linkedid, caller, category, priority)


async def _value(agi: Any, param: str, variable: str) -> str | None:
    """What the dialplan put in the AGI URL's query, else (an older dialplan) one GET VARIABLE round trip."""
    params = getattr(agi, "params", None) or {}
    if param in params:
        return params[param]
    return await agi.get_variable(variable)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0

