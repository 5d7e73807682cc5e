"""Callbacks: a waiting caller presses a key, hangs up, and is called back keeping their place in line.

The request is a database row (durable across restarts) holding the time the caller joined the queue.
A dispatcher dials it when an agent of that queue is free and nobody who has waited longer (or has a higher
priority) is still waiting: the agent first, then (from the dialplan) the citizen. A row is claimed with a
conditional UPDATE (pending -> dialing) before anything is dialed, so no two dispatchers dial it twice; an attempt
whose outcome the bridge missed (restart) is reconciled from Asterisk, never re-dialed blindly (CallbackDispatcher).
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lifecycle import TaskOwner
from storage import finish_on_cancel
from telephony import AmiActionFailed, AmiError, AsteriskConsoleError

from .live_call import LiveCall
from .live_state import LiveCallState
from .ports import AmiActions, AmiEvents, AsteriskCli
from .queue_live import QueueLiveState
from .queue_tables import CallbackRow

log = logging.getLogger(__name__)
_t = CallbackRow.__table__

PENDING, DIALING, CONNECTED, COMPLETED, FAILED = "pending", "dialing", "connected", "completed", "failed"
# The dialplan's durable progress record of an attempt (AstDB family; key: the agent channel's uniqueid).
ASTDB_FAMILY = "hotline_callback"
AGENT_ANSWERED, CITIZEN_DIALING = "agent_answered", "citizen_dialing"


def channel_id(callback_id: int, attempt: int) -> str:
    """Uniqueid of the agent channel of one attempt (Originate ChannelId; the citizen's leg has it as linkedid)."""
    return f"callback-{callback_id}-{attempt}"


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
    updated_at: datetime | None = None

    @property
    def channel_id(self) -> str:
        """The agent channel id of the current (latest claimed) attempt."""
        return channel_id(self.id, self.attempts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _row(r: Any) -> Callback:
    return Callback(r.id, r.queue, r.caller_number, r.case_number, r.linkedid, r.priority, r.queued_at,
                    r.requested_at, r.status, r.attempts, r.agent, r.last_error, r.updated_at)


@finish_on_cancel
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
                         error: str | None = None, retry_in: float | None = None) -> bool:
        """Move a request on (only from the `expect`ed statuses, when given)."""
        now = self._clock()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if error is not None:
            values["last_error"] = error[:255]
        if retry_in is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        stmt = update(_t).where(_t.c.id == callback_id)
        if expect:
            stmt = stmt.where(_t.c.status.in_(expect))
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt.values(**values))
        return result.rowcount == 1


class CallbackRoute:
    """FastAGI route of the queue's exit key: store the request (if the caller has waited long enough).

    Too early, the caller hears so and goes back into the queue at the place they had: app_queue set QUEUEPOSITION
    when the key took them out, the dialplan passes it to Queue(), and the live state keeps their first join time
    (requeue_*), so their wait, callback eligibility and maximum wait go on counting from it."""

    def __init__(self, store: CallbackStore, live_calls: LiveCallState, *, after_seconds: float,
                 too_early_prompt: Callable[[], Awaitable[str]] | None = None, default_max_wait: int = 600) -> None:
        self._store = store
        self._live = live_calls
        self._after = after_seconds
        self._too_early = too_early_prompt  # () -> playable path of "not yet; you keep your place"
        self._default_max_wait = default_max_wait

    async def handle(self, agi: Any) -> None:
        """Sets HOTLINE_CALLBACK to accepted, too_early (and HOTLINE_QUEUE_REMAINING) or refused for the dialplan."""
        linkedid = await agi.get_variable("CHANNEL(linkedid)") or agi.uniqueid
        call: LiveCall = await self._live.get_call(linkedid) or {}
        now = datetime.now(UTC)
        queued_at = call.get("queued_at") or now
        queue = await agi.get_variable("HOTLINE_QUEUE") or call.get("queue") or ""
        waited = (now - queued_at).total_seconds()
        if waited < self._after:
            await self._back_in_line(agi, linkedid, queue, queued_at, waited)
            return
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
            await self._back_in_line(agi, linkedid, queue, queued_at, waited, refused=True)
            return
        await self._live.update(linkedid, state="callback_requested", callback_id=callback.id)
        await agi.set_variable("HOTLINE_CALLBACK", "accepted")
        log.info("call %s: callback %d requested (queue %s, in line since %s)", linkedid, callback.id, queue,
                 queued_at.isoformat())

    async def _back_in_line(self, agi: Any, linkedid: str, queue: str, queued_at: datetime, waited: float,
                            refused: bool = False) -> None:
        try:
            max_wait = int(await agi.get_variable("HOTLINE_QUEUE_MAXWAIT") or self._default_max_wait)
        except ValueError:
            max_wait = self._default_max_wait
        await agi.set_variable("HOTLINE_QUEUE_REMAINING", str(max(1, math.ceil(max_wait - waited))))
        await self._live.update(linkedid, requeue_queue=queue, requeue_queued_at=queued_at)
        await agi.set_variable("HOTLINE_CALLBACK", "refused" if refused else "too_early")
        if refused:
            return
        log.info("call %s pressed 5 after %.0f s (callback from %.0f s): back at position %s", linkedid, waited,
                 self._after, await agi.get_variable("QUEUEPOSITION") or "?")
        if self._too_early is not None:
            try:
                prompt = await self._too_early()
            except Exception as exc:  # no prompt is no reason to drop the caller: back in line without it
                log.warning("callback too-early prompt unavailable: %s", exc)
                return
            await agi.stream_file(prompt)


class CallbackDispatcher:
    """Dials due callbacks when an agent is free, agent first; follows the outcome from the dialplan's UserEvents.

    Crash safety: an attempt's agent channel id (callback-<id>-<attempt>) is a function of the row, whose attempt
    count is stored when it is claimed, before the Originate. The dialplan keeps each step in AstDB
    (hotline_callback/<channel id>: agent_answered, citizen_dialing, ANSWER, then the final Dial status) before it
    happens. A row left 'dialing'/'connected' without a local originate (bridge restarted, AMI reconnected, events
    missed) is reconciled from Asterisk, never re-dialed blindly:
      - a leg of the attempt is still up (agent channel, or the citizen's by linkedid): keep following it;
      - gone, with ANSWER recorded: completed; with a final status: the usual retry/failed rule;
      - gone, 'citizen_dialing' without a final status (Asterisk stopped mid-call): the citizen may have been rung
        but was not reached, the call is over: a used attempt, retried later;
      - gone with no record: the agent never answered, so the citizen was never rung: back in line (after a grace
        time for an Originate still on its way), as an attempt the agent side missed;
      - gone, 'connected' in the database but no record in Asterisk (its AstDB lost): unknown, so it is not
        dialed again: failed, for a supervisor.
    Reconciling runs at every (re)connect, when a callback channel hangs up, and every `reconcile_seconds`.

    An attempt whose agent does not answer (or that was cut off before the agent answered) counts like one whose
    citizen does not: the next waits `retry_seconds`, doubled for each miss (at most `max_backoff_seconds`), goes
    to another free agent of the queue if there is one, and after `max_attempts` the request is FAILED with the
    reason, for a supervisor — never re-dialed in a tight loop."""

    def __init__(self, store: CallbackStore, ami: AmiActions, queue_live: QueueLiveState, live_calls: LiveCallState,
                 *, dial_template: str, console: AsteriskCli | None = None,
                 max_attempts: int = 3, retry_seconds: float = 60.0, agent_ring_seconds: int = 20,
                 citizen_ring_seconds: int = 30,
                 originate_grace_seconds: float = 10.0, reconcile_seconds: float = 30.0,
                 max_backoff_seconds: float = 900.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._ami = ami
        self._console = console  # AstDB deletes: AMI's DBDel needs the `system` class, which the account lacks
        self._queue_live = queue_live
        self._live = live_calls
        self._dial = dial_template
        self._max = max_attempts
        self._retry = retry_seconds
        self._agent_ring = agent_ring_seconds
        self._citizen_ring = citizen_ring_seconds
        self._grace = timedelta(seconds=originate_grace_seconds)
        self._reconcile_every = reconcile_seconds
        self._max_backoff = max_backoff_seconds
        self._missed_by: dict[str, datetime] = {}  # agent -> when they last let a callback ring out
        self._clock = clock
        self._tasks = TaskOwner("callback dispatcher")
        self._originating: set[int] = set()  # rows whose Originate this process is waiting on
        self._reconcile_lock = asyncio.Lock()
        self.dialed = 0

    def subscribe(self, ami: AmiEvents) -> None:
        """Follow callback channels through this AMI client's events; reconcile after each (re)connect."""
        ami.on_event("UserEvent", self._on_user_event)
        ami.on_event("Hangup", self._on_hangup)
        ami.on_connected(self.recover)

    async def settle(self, timeout: float | None = None) -> None:
        """Wait up to timeout seconds for the originates in flight to end on their own."""
        await self._tasks.wait(timeout)

    async def aclose(self) -> None:
        """Cancel and await originates in flight (their rows stay 'dialing' and are reconciled at next start)."""
        await self._tasks.aclose()

    async def run(self, interval: float = 1.0) -> None:
        """Dispatch forever, reconciling unowned rows now and then (cancel to stop)."""
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self._reconcile_every
        while True:
            try:
                await self.dispatch_once()
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + self._reconcile_every
                    await self.recover()
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
            # An agent who just let a callback ring out goes last: it goes to someone at their desk if possible.
            agent = min(free, key=lambda name: (name in self._missed_by, self._missed_by.get(name, _EPOCH)))
            self._originating.add(cb.id)  # before the claim: a reconcile running meanwhile leaves it alone
            if not await self._store.claim(cb.id, agent):
                self._originating.discard(cb.id)
                continue
            busy.add(agent)
            started.append(cb.id)
            self._tasks.spawn(self._originate(cb, agent, cb.attempts + 1), f"callback-{cb.id}")
        return started

    async def _originate(self, cb: Callback, agent: str, attempt: int) -> None:
        try:
            await self._originate_once(cb, agent, attempt)
        finally:
            self._originating.discard(cb.id)

    async def _originate_once(self, cb: Callback, agent: str, attempt: int) -> None:
        self.dialed += 1
        fields = {
            "Action": "Originate", "Channel": f"PJSIP/{agent}", "Context": "hotline-callback", "Exten": "s",
            "Priority": "1", "CallerID": f"\"Callback {cb.case_number or ''}\" <{cb.caller_number}>",
            "Timeout": str(self._agent_ring * 1000), "Async": "true",
            "ChannelId": channel_id(cb.id, attempt),
            "Variable": [f"CALLBACK_ID={cb.id}", f"CALLBACK_DIAL={self._dial.format(number=cb.caller_number)}",
                         f"CALLBACK_RING={self._citizen_ring}", f"HOTLINE_CASE={cb.case_number or ''}",
                         f"CALLBACK_AGENT={agent}"],
        }
        log.info("callback %d: attempt %d, ringing agent %s first", cb.id, attempt, agent)
        try:
            result = await self._ami.action(fields, timeout=self._agent_ring + 15, as_list=True, check=False)
        except AmiError as exc:
            # Maybe sent, maybe not: Asterisk may be ringing the agent now. The row stays 'dialing' and is
            # reconciled from Asterisk once it can be asked (never dialed again blindly).
            log.warning("callback %d: originate outcome unknown (%s); reconciling from Asterisk", cb.id, exc)
            await self._store.set_status(cb.id, DIALING, expect=(DIALING,), error=f"originate: {exc}")
            return
        last = result[-1] if isinstance(result, list) and result else result
        if str(last.get("Response")) != "Success":
            # The agent did not answer, so the citizen was not rung; still a used attempt, or an agent away from
            # their desk would have the bridge ring them forever.
            self._missed_by[agent] = self._clock()
            await self._agent_missed(cb.id, attempt, f"agent {agent} did not answer")

    def backoff(self, attempt: int) -> float:
        """Seconds before the attempt after this one (1-based): retry_seconds, doubled per attempt, capped."""
        return float(min(self._retry * 2 ** max(0, attempt - 1), max(self._retry, self._max_backoff)))

    async def _agent_missed(self, cb_id: int, attempt: int, reason: str) -> None:
        """An attempt ended before an agent answered: back in line later, or FAILED once the attempts are used."""
        if attempt >= self._max:
            why = f"{reason}; no agent answered in {attempt} attempt(s)"
            if await self._store.set_status(cb_id, FAILED, expect=(DIALING,), error=why):
                log.warning("callback %d FAILED: %s: report to a supervisor", cb_id, why)
                failed = await self._store.get(cb_id)
                await self._queue_live.publish("callback_failed",
                                               callback=failed.to_dict() if failed else {"id": cb_id})
            return
        delay = self.backoff(attempt)
        if await self._store.set_status(cb_id, PENDING, expect=(DIALING,), error=reason, retry_in=delay):
            log.info("callback %d: %s (attempt %d of %d); next try in %.0f s", cb_id, reason, attempt, self._max,
                     delay)

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
        if status == "agent_answered":
            await self._agent_answered(cb)
        else:
            await self._settle(cb, status or "FAILED")

    async def _agent_answered(self, cb: Callback) -> None:
        if await self._store.set_status(cb.id, CONNECTED, expect=(DIALING,)):
            # The agent's screen shows the case while the citizen's phone rings.
            await self._live.start_call(f"callback-{cb.id}", caller_number=cb.caller_number,
                                        case_number=cb.case_number, state="connected", agent=cb.agent,
                                        queue=cb.queue, callback_id=cb.id)

    async def _settle(self, cb: Callback, status: str) -> None:
        """The attempt is over with this Dial status (ANSWER: the citizen was reached)."""
        live_id = f"callback-{cb.id}"
        if status == "ANSWER":
            if await self._store.set_status(cb.id, COMPLETED, expect=(CONNECTED, DIALING)):
                await self._live.end_call(live_id, outcome="callback_completed")
                log.info("callback %d: citizen %s reached by %s", cb.id, cb.caller_number, cb.agent)
        elif cb.attempts >= self._max:
            if await self._store.set_status(cb.id, FAILED, expect=(CONNECTED, DIALING),
                                            error=f"citizen not reached after {cb.attempts} attempts ({status})"):
                await self._live.end_call(live_id, outcome=f"callback_{status.lower()}")
                log.warning("callback %d to %s FAILED after %d attempts (%s): report to a supervisor", cb.id,
                            cb.caller_number, cb.attempts, status)
                await self._queue_live.publish("callback_failed", callback=cb.to_dict())
        elif await self._store.set_status(cb.id, PENDING, expect=(CONNECTED, DIALING), error=status,
                                          retry_in=self._retry):
            await self._live.end_call(live_id, outcome=f"callback_{status.lower()}")
        await self._forget(cb)

    async def _forget(self, cb: Callback) -> None:
        """Drop the attempt's AstDB record once the database has the outcome."""
        if self._console is None or not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", cb.channel_id):
            return  # a stale record is harmless: its row is no longer in progress
        try:
            await self._console.command(f"database del {ASTDB_FAMILY} {cb.channel_id}", timeout=5)
        except AsteriskConsoleError as exc:
            log.info("callback %d: AstDB record not removed: %s", cb.id, exc)

    async def _on_hangup(self, event: Any) -> None:
        uniqueid = str(event.get("Uniqueid") or "")
        if not uniqueid.startswith("callback-"):
            return
        # The agent leg ended. Its h extension's UserEvent came first (in order) and usually settled the row; if
        # it did not (missed, or Asterisk could not run it), ask Asterisk now.
        self._tasks.spawn(self._recover_logged(), f"callback-reconcile-{uniqueid}")

    async def _recover_logged(self) -> None:
        try:
            await self.recover()
        except Exception as exc:  # AMI or database away: the periodic reconcile tries again
            log.warning("callback reconcile after a hang-up failed: %s", exc)

    async def recover(self) -> None:
        """Reconcile every row left 'dialing'/'connected' that no local originate owns, from Asterisk's channels
        and AstDB records (see the class docstring): the citizen is never rung twice for one attempt."""
        async with self._reconcile_lock:
            rows = [cb for cb in await self._store.in_status(DIALING, CONNECTED) if cb.id not in self._originating]
            if not rows:
                return
            channels = await self._ami.event_list({"Action": "CoreShowChannels"}, timeout=10)
            up = {str(c.get("Uniqueid") or "") for c in channels} | {str(c.get("Linkedid") or "") for c in channels}
            for cb in rows:
                if cb.id in self._originating:
                    continue
                await self._reconcile(cb, up)

    async def _reconcile(self, cb: Callback, up: set[str]) -> None:
        record = await self._astdb_get(cb.channel_id)
        if cb.channel_id in up:
            if record in (AGENT_ANSWERED, CITIZEN_DIALING, "ANSWER") and cb.status == DIALING:
                await self._agent_answered(cb)  # the agent answered while the bridge was away
            return  # still up: its UserEvents and Hangup settle it
        if record is None:
            if cb.status == CONNECTED:
                if await self._store.set_status(cb.id, FAILED, expect=(CONNECTED,),
                                                error="outcome unknown (Asterisk kept no record); not dialed again "
                                                      "so the citizen is never rung twice"):
                    log.warning("callback %d to %s: outcome unknown; FAILED for a supervisor", cb.id,
                                cb.caller_number)
                    await self._live.end_call(f"callback-{cb.id}", outcome="callback_unknown")
                    await self._queue_live.publish("callback_failed", callback=cb.to_dict())
            elif cb.updated_at is None or self._clock() - cb.updated_at >= self._grace:
                # No channel and no record: the agent never answered, so the citizen was never rung. It still
                # counts: an Originate that never gets through would otherwise be retried forever.
                await self._agent_missed(cb.id, cb.attempts, "interrupted before the agent answered")
            return
        if record in (AGENT_ANSWERED, CITIZEN_DIALING):
            # Asterisk went away mid-call (no final status). The citizen did not answer (that is recorded first).
            record = "INTERRUPTED" if record == CITIZEN_DIALING else "AGENT_HANGUP"
        log.info("callback %d: attempt %s ended while the bridge was away: %s", cb.id, cb.channel_id, record)
        await self._settle(cb, record)

    async def _astdb_get(self, key: str) -> str | None:
        """The attempt's AstDB record, None when there is none."""
        result = await self._ami.action({"Action": "DBGet", "Family": ASTDB_FAMILY, "Key": key}, timeout=5,
                                        check=False)
        items = result if isinstance(result, list) else [result]
        for item in items:
            if str(item.get("Event") or "") == "DBGetResponse":
                return str(item.get("Val") or "") or None
        first = items[0] if items else {}
        if str(first.get("Response")) == "Error" and "not found" in str(first.get("Message") or "").lower():
            return None
        raise AmiActionFailed(f"AstDB {ASTDB_FAMILY}/{key}: {first.get('Message') or 'no answer'}")


_EPOCH = datetime.min.replace(tzinfo=UTC)


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
