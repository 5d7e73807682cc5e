"""Callbacks: a waiting caller presses a key, hangs up, and is called back keeping their place in line.

The request is a database row (durable across restarts) holding the time the caller joined the queue.
A dispatcher dials it when an agent of that queue is free and nobody who has waited longer (or has a higher
priority) is still waiting: the agent first, then (from the dialplan) the citizen. A row is claimed with a
conditional UPDATE (pending -> dialing) before anything is dialed, so no two dispatchers dial it twice.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .queue_tables import CallbackRow

log = logging.getLogger(__name__)
_t = CallbackRow.__table__

PENDING, DIALING, CONNECTED, COMPLETED, FAILED = "pending", "dialing", "connected", "completed", "failed"


@dataclass(frozen=True)
class Callback:
    """One callback request (a snapshot of its row)."""

    id: int
    queue: str
    caller_number: str
    case_number: str | None
    linkedid: str | None
    priority: int
    queued_at: datetime
    requested_at: datetime
    status: str
    attempts: int
    agent: str | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _row(r: Any) -> Callback:
    return Callback(r.id, r.queue, r.caller_number, r.case_number, r.linkedid, r.priority, r.queued_at,
                    r.requested_at, r.status, r.attempts, r.agent, r.last_error)


class CallbackStore:
    """Callback requests in the database."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._engine = engine
        self._clock = clock

    async def request(self, *, queue: str, caller_number: str, case_number: str | None, linkedid: str | None,
                      priority: int, queued_at: datetime) -> Callback:
        """Store a new pending request (one per call: a repeated key press returns the existing one)."""
        if not caller_number or not caller_number.strip("+").isdigit():
            raise ValueError(f"caller number {caller_number!r} cannot be called back")
        now = self._clock()
        async with self._engine.begin() as conn:
            if linkedid:
                found = (await conn.execute(select(_t).where(_t.c.linkedid == linkedid))).first()
                if found is not None:
                    return _row(found)
            row = (await conn.execute(_t.insert().values(
                queue=queue, caller_number=caller_number, case_number=case_number, linkedid=linkedid,
                priority=priority, queued_at=queued_at, requested_at=now, status=PENDING, attempts=0,
                next_attempt_at=now, updated_at=now).returning(_t))).one()
        return _row(row)

    async def get(self, callback_id: int) -> Callback | None:
        """One request by id."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_t).where(_t.c.id == callback_id))).first()
        return None if row is None else _row(row)

    async def due(self) -> list[Callback]:
        """Pending requests whose next attempt is due, in line order (priority, then who joined first)."""
        stmt = (select(_t).where(_t.c.status == PENDING, _t.c.next_attempt_at <= self._clock())
                .order_by(_t.c.priority.desc(), _t.c.queued_at, _t.c.id))
        async with self._engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).all()]

    async def in_status(self, *statuses: str) -> list[Callback]:
        """Requests in any of these statuses, oldest first."""
        stmt = select(_t).where(_t.c.status.in_(statuses)).order_by(_t.c.queued_at, _t.c.id)
        async with self._engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).all()]

    async def claim(self, callback_id: int, agent: str) -> bool:
        """pending -> dialing for this agent; False if someone else got it first."""
        now = self._clock()
        async with self._engine.begin() as conn:
            result = await conn.execute(update(_t).where(_t.c.id == callback_id, _t.c.status == PENDING).values(
                status=DIALING, agent=agent, attempts=_t.c.attempts + 1, updated_at=now))
        return result.rowcount == 1

    async def set_status(self, callback_id: int, status: str, *, expect: tuple[str, ...] | None = None,
                         error: str | None = None, retry_in: float | None = None,
                         refund_attempt: bool = False) -> bool:
        """Move a request on (only from the `expect`ed statuses, when given)."""
        now = self._clock()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if error is not None:
            values["last_error"] = error[:255]
        if retry_in is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        if refund_attempt:
            values["attempts"] = _t.c.attempts - 1
        stmt = update(_t).where(_t.c.id == callback_id)
        if expect:
            stmt = stmt.where(_t.c.status.in_(expect))
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt.values(**values))
        return result.rowcount == 1


class CallbackRoute:
    """FastAGI route of the queue's exit key: store the request (if the caller has waited long enough)."""

    def __init__(self, store: CallbackStore, live_calls: Any, *, after_seconds: float) -> None:
        self._store = store
        self._live = live_calls
        self._after = after_seconds

    async def handle(self, agi: Any) -> None:
        """Sets HOTLINE_CALLBACK to accepted, too_early or refused for the dialplan."""
        linkedid = await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        call = await self._live.get_call(linkedid) or {}
        now = datetime.now(UTC)
        try:
            queued_at = datetime.fromisoformat(call["queued_at"]) if call.get("queued_at") else now
        except ValueError:
            queued_at = now
        if (now - queued_at).total_seconds() < self._after:
            await agi.set_variable("HOTLINE_CALLBACK", "too_early")
            return
        queue = await agi.get_variable("HOTLINE_QUEUE") or call.get("queue") or ""
        try:
            priority = int(await agi.get_variable("QUEUE_PRIO") or 0)
        except ValueError:
            priority = 0
        try:
            callback = await self._store.request(
                queue=queue, caller_number=agi.caller_number or "", linkedid=linkedid, priority=priority,
                case_number=await agi.get_variable("HOTLINE_CASE") or call.get("case_number"), queued_at=queued_at)
        except ValueError as exc:
            log.warning("callback refused for call %s: %s", linkedid, exc)
            await agi.set_variable("HOTLINE_CALLBACK", "refused")
            return
        await self._live.update(linkedid, state="callback_requested", callback_id=callback.id)
        await agi.set_variable("HOTLINE_CALLBACK", "accepted")
        log.info("call %s: callback %d requested (queue %s, in line since %s)", linkedid, callback.id, queue,
                 queued_at.isoformat())


class CallbackDispatcher:
    """Dials due callbacks when an agent is free, agent first; follows the outcome from the dialplan's UserEvents."""

    def __init__(self, store: CallbackStore, ami: Any, queue_live: Any, live_calls: Any, *, dial_template: str,
                 max_attempts: int = 3, retry_seconds: float = 60.0, agent_ring_seconds: int = 20,
                 citizen_ring_seconds: int = 30, ami_error: type[Exception] = Exception) -> None:
        self._store = store
        self._ami = ami
        self._queue_live = queue_live
        self._live = live_calls
        self._dial = dial_template
        self._max = max_attempts
        self._retry = retry_seconds
        self._agent_ring = agent_ring_seconds
        self._citizen_ring = citizen_ring_seconds
        self._ami_error = ami_error
        self._tasks: set[asyncio.Task[None]] = set()
        self.dialed = 0
        ami.on_event("UserEvent", self._on_user_event)
        ami.on_connected(self.recover)

    async def aclose(self) -> None:
        """Cancel and await originates in flight (their rows stay 'dialing' and are recovered at next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self, interval: float = 1.0) -> None:
        """Dispatch forever (cancel to stop)."""
        while True:
            try:
                await self.dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis/DB/AMI away for a moment: next round
                log.warning("callback dispatch failed: %s", exc)
            await asyncio.sleep(interval)

    async def dispatch_once(self) -> list[int]:
        """Dial every due callback that may go now; return their ids."""
        if not getattr(self._ami, "connected", True):
            return []
        started = []
        busy = {c.agent for c in await self._store.in_status(DIALING, CONNECTED) if c.agent}
        agents = await self._queue_live.agents()
        for cb in await self._store.due():
            waiting = await self._queue_live.waiting(cb.queue)
            if any(_ahead(entry, cb) for entry in waiting):
                continue  # someone who has waited longer (or matters more) is still in line
            free = [a["name"] for a in agents if a.get("state") == "available" and cb.queue in (a.get("queues") or [])
                    and a["name"] not in busy]
            if not free:
                continue
            agent = free[0]
            if not await self._store.claim(cb.id, agent):
                continue
            busy.add(agent)
            started.append(cb.id)
            task = asyncio.create_task(self._originate(cb, agent), name=f"callback-{cb.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return started

    async def _originate(self, cb: Callback, agent: str) -> None:
        self.dialed += 1
        attempt = cb.attempts + 1
        fields = {
            "Action": "Originate", "Channel": f"PJSIP/{agent}", "Context": "hotline-callback", "Exten": "s",
            "Priority": "1", "CallerID": f"\"Callback {cb.case_number or ''}\" <{cb.caller_number}>",
            "Timeout": str(self._agent_ring * 1000), "Async": "true",
            "ChannelId": f"callback-{cb.id}-{attempt}",
            "Variable": [f"CALLBACK_ID={cb.id}", f"CALLBACK_DIAL={self._dial.format(number=cb.caller_number)}",
                         f"CALLBACK_RING={self._citizen_ring}", f"HOTLINE_CASE={cb.case_number or ''}",
                         f"CALLBACK_AGENT={agent}"],
        }
        log.info("callback %d: attempt %d, ringing agent %s first", cb.id, attempt, agent)
        try:
            result = await self._ami.action(fields, timeout=self._agent_ring + 15, as_list=True, check=False)
        except self._ami_error as exc:
            await self._store.set_status(cb.id, PENDING, expect=(DIALING,), error=f"originate: {exc}", retry_in=5,
                                         refund_attempt=True)
            return
        last = result[-1] if isinstance(result, list) and result else result
        if str(last.get("Response")) != "Success":
            # The agent did not answer: not the citizen's failed attempt; try again soon (maybe another agent).
            await self._store.set_status(cb.id, PENDING, expect=(DIALING,), error=f"agent {agent} did not answer",
                                         retry_in=2, refund_attempt=True)

    async def _on_user_event(self, event: Any) -> None:
        if str(event.get("UserEvent")) != "HotlineCallback":
            return
        try:
            cb_id = int(str(event.get("CallbackId")))
        except ValueError:
            return
        status = str(event.get("Status") or "")
        cb = await self._store.get(cb_id)
        if cb is None:
            return
        live_id = f"callback-{cb_id}"
        if status == "agent_answered":
            await self._store.set_status(cb_id, CONNECTED, expect=(DIALING,))
            # The agent's screen shows the case while the citizen's phone rings.
            await self._live.start_call(live_id, caller_number=cb.caller_number, case_number=cb.case_number,
                                        state="connected", agent=cb.agent, queue=cb.queue, callback_id=cb_id)
        elif status == "ANSWER":
            await self._store.set_status(cb_id, COMPLETED, expect=(CONNECTED, DIALING))
            await self._live.end_call(live_id, outcome="callback_completed")
            log.info("callback %d: citizen %s reached by %s", cb_id, cb.caller_number, cb.agent)
        else:
            await self._live.end_call(live_id, outcome=f"callback_{status.lower() or 'failed'}")
            if cb.attempts >= self._max:
                await self._store.set_status(cb_id, FAILED, expect=(CONNECTED, DIALING),
                                             error=f"citizen not reached after {cb.attempts} attempts ({status})")
                log.warning("callback %d to %s FAILED after %d attempts (%s): report to a supervisor", cb_id,
                            cb.caller_number, cb.attempts, status)
                await self._queue_live.publish("callback_failed", callback=cb.to_dict())
            else:
                await self._store.set_status(cb_id, PENDING, expect=(CONNECTED, DIALING), error=status,
                                             retry_in=self._retry)

    async def recover(self) -> None:
        """After (re)connecting: rows left 'dialing'/'connected' whose channels are gone go back in line, unless the
        citizen was already being dialed (then the attempt counts, so a callback is never dialed twice blindly)."""
        channels = await self._ami.event_list({"Action": "CoreShowChannels"}, timeout=10)
        present = " ".join(str(c.get("Uniqueid") or "") + " " + str(c.get("Channel") or "") for c in channels)
        for cb in await self._store.in_status(DIALING, CONNECTED):
            if f"callback-{cb.id}-" in present:
                continue
            if cb.status == DIALING:
                await self._store.set_status(cb.id, PENDING, expect=(DIALING,), error="interrupted before the "
                                             "agent answered", retry_in=0, refund_attempt=True)
            elif cb.attempts >= self._max:
                await self._store.set_status(cb.id, FAILED, expect=(CONNECTED,), error="outcome unknown (bridge was "
                                             "away) and no attempts left")
            else:
                await self._store.set_status(cb.id, PENDING, expect=(CONNECTED,), error="outcome unknown (bridge "
                                             "was away)", retry_in=self._retry)


def _ahead(entry: dict[str, Any], cb: Callback) -> bool:
    """Whether a waiting caller goes before this callback (higher priority, or same priority and joined earlier)."""
    try:
        priority = int(entry.get("priority") or entry.get("asterisk_priority") or 0)
    except ValueError:
        priority = 0
    if priority != cb.priority:
        return priority > cb.priority
    try:
        joined = datetime.fromisoformat(str(entry.get("joined_at")))
    except ValueError:
        return True
    return joined <= cb.queued_at
