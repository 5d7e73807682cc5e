"""Live state of queues and agents in Redis, built from AMI events; rebuilt from Asterisk when it may be wrong.

Keys (prefix P): ``P:agent:<name>`` hash, ``P:agents`` set, ``P:queue:<q>:waiting`` hash (uniqueid -> JSON
entry with position and IVR context), ``P:queue:<q>:counters`` hash. Changes are published as JSON on
``P:queue-events`` (separate from the per-call ``P:events`` channel, whose messages all carry a linkedid).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .live_state import LiveCallState
from .metrics import QueueMetricsStore
from .ports import AmiActions, AmiEvents
from .redis_guard import RedisGuard
from .redis_text import hash_mapping, read_hash, read_set

T = TypeVar("T")

log = logging.getLogger(__name__)

# app_queue member device states (AST_DEVICE_*).
_IN_USE = {"2", "3", "8"}  # in use, busy, on hold
_RINGING = {"6", "7"}
_UNREACHABLE = {"4", "5"}  # invalid, unavailable (phone not registered)


def _member_name(event: Any) -> str:
    name = str(event.get("MemberName") or event.get("Interface") or event.get("Location") or "")
    return name.split("/", 1)[1] if "/" in name else name


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@dataclass
class _Member:
    status: str = "1"
    paused: bool = False
    reason: str | None = None
    in_call: bool = False


@dataclass
class _AgentView:
    members: dict[str, _Member] = field(default_factory=dict)  # queue -> membership
    wrapup_until: float = 0.0
    linkedid: str | None = None
    since: float = field(default_factory=time.time)
    state: str = "logged_out"

    def compute(self, now: float) -> str:
        if not self.members:
            return "logged_out"
        statuses = {m.status for m in self.members.values()}
        if any(m.in_call for m in self.members.values()) or statuses & _IN_USE:
            return "on_call"
        if statuses & _RINGING:
            return "ringing"
        if self.wrapup_until > now:
            return "wrap_up"
        if all(m.paused for m in self.members.values()):
            return "paused"
        if statuses <= _UNREACHABLE:
            return "unreachable"
        return "available"


class QueueLiveState:
    """Agents' states and waiting calls per queue, mirrored in Redis (losing a write never fails a call).

    Every operation waits at most the guard's op_timeout (shared with the calls' LiveCallState in the hotline, so
    while Redis is known to be away these fail at once); a rebuild from Asterisk puts right what was lost."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, guard: RedisGuard | None = None) -> None:
        self._r = client
        self._p = prefix
        self._guard = guard or RedisGuard()
        self.errors = 0
        self.last_error: str | None = None

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await self._guard.call(what, operation)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._r.aclose()

    @property
    def channel(self) -> str:
        """Pub/sub channel of queue and agent changes."""
        return f"{self._p}:queue-events"

    @property
    def marker_key(self) -> str:
        """A key that exists while Redis still holds what the bridge wrote (gone after a Redis restart)."""
        return f"{self._p}:queue-state-marker"

    def _failed(self, what: str, exc: RedisError) -> None:
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        # An outage is logged once by the guard; what fails during it only counts.
        log.log(logging.WARNING if self._guard.up else logging.DEBUG, "queue live state: %s failed: %s", what, exc)

    async def publish(self, kind: str, **data: Any) -> None:
        """Publish one change message (RedisError if Redis does not take it in time)."""
        async def send() -> None:
            await self._r.publish(self.channel, self._message(kind, data))
        await self._call("publish", send)

    def _message(self, kind: str, data: dict[str, Any]) -> str:
        return json.dumps({"type": kind, "at": time.time(), **data}, ensure_ascii=False, default=str)

    async def set_agent(self, name: str, fields: dict[str, Any]) -> None:
        """Write an agent's state and publish it."""
        enc = {k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else str(v))
               for k, v in fields.items()}
        async def write() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(f"{self._p}:agent:{name}", mapping=hash_mapping({"name": name, **enc}))
                pipe.sadd(f"{self._p}:agents", name)
                pipe.publish(self.channel, self._message("agent_updated", {"agent": name, "fields": fields}))
                await pipe.execute()
        try:
            await self._call("set_agent", write)
        except RedisError as exc:
            self._failed("set_agent", exc)

    async def set_waiting(self, queue: str, entries: dict[str, dict[str, Any]], *, replace: bool = False,
                          remove: str | None = None, counter: str | None = None) -> None:
        """Write waiting entries of a queue (uniqueid -> entry) in one round trip; replace=True drops every other
        entry, remove drops one, counter is bumped by one."""
        key = f"{self._p}:queue:{queue}:waiting"

        async def write() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                if replace:
                    pipe.delete(key)
                if remove:
                    pipe.hdel(key, remove)
                if entries:
                    pipe.hset(key, mapping={u: json.dumps(e, ensure_ascii=False, default=str)
                                            for u, e in entries.items()})
                if counter:
                    pipe.hincrby(f"{self._p}:queue:{queue}:counters", counter, 1)
                pipe.sadd(f"{self._p}:queues", queue)
                pipe.publish(self.channel, self._message("queue_updated", {
                    "queue": queue, "changed": sorted(entries), "left": remove}))
                await pipe.execute()
        try:
            await self._call("set_waiting", write)
        except RedisError as exc:
            self._failed("set_waiting", exc)

    async def waiting(self, queue: str) -> list[dict[str, Any]]:
        """Calls waiting in a queue, by position."""
        try:
            raw = await self._call("waiting", lambda: read_hash(self._r, f"{self._p}:queue:{queue}:waiting"))
        except RedisError as exc:
            self._failed("waiting", exc)
            return []
        entries = [json.loads(v) for v in raw.values()]
        return sorted(entries, key=lambda e: int(e.get("position") or 0))

    async def bump_counter(self, queue: str, name: str, amount: int = 1) -> None:
        """Add to a per-queue counter (offered/answered/abandoned since the bridge started or rebuilt)."""
        async def write() -> None:
            await self._r.hincrby(f"{self._p}:queue:{queue}:counters", name, amount)
        try:
            await self._call("bump_counter", write)
        except RedisError as exc:
            self._failed("bump_counter", exc)

    async def set_counters(self, queue: str, counters: dict[str, int]) -> None:
        """Replace a queue's counters (rebuild)."""
        async def write() -> None:
            await self._r.hset(f"{self._p}:queue:{queue}:counters", mapping={k: str(v) for k, v in counters.items()})
        try:
            await self._call("set_counters", write)
        except RedisError as exc:
            self._failed("set_counters", exc)

    async def counters(self, queue: str) -> dict[str, int]:
        """A queue's counters."""
        try:
            raw = await self._call("counters", lambda: read_hash(self._r, f"{self._p}:queue:{queue}:counters"))
        except RedisError as exc:
            self._failed("counters", exc)
            return {}
        return {k: int(v) for k, v in raw.items()}

    async def agent(self, name: str) -> dict[str, Any] | None:
        """One agent's live state."""
        try:
            raw = await self._call("agent", lambda: read_hash(self._r, f"{self._p}:agent:{name}"))
        except RedisError as exc:
            self._failed("agent", exc)
            return None
        if not raw:
            return None
        out: dict[str, Any] = {k: (v if v != "" else None) for k, v in raw.items()}
        if out.get("queues"):
            out["queues"] = json.loads(out["queues"])
        return out

    async def agents(self) -> list[dict[str, Any]]:
        """Every agent's live state, by name."""
        try:
            names = sorted(await self._call("agents", lambda: read_set(self._r, f"{self._p}:agents")))
        except RedisError as exc:
            self._failed("agents", exc)
            return []
        found = [await self.agent(n) for n in names]
        return [a for a in found if a is not None]

    async def marker_present(self) -> bool:
        """True while Redis still has the marker this bridge set at its last (re)build (RedisError: no answer)."""
        async def read() -> bool:
            return bool(await self._r.exists(self.marker_key))
        return await self._call("marker_present", read)

    async def set_marker(self) -> None:
        """Set the marker (after a rebuild)."""
        async def write() -> None:
            await self._r.set(self.marker_key, str(time.time()))
        await self._call("set_marker", write)


class QueueEventTracker:
    """Turns AMI queue/agent events into QueueLiveState and queue metrics; rebuilds both views from Asterisk."""

    def __init__(self, ami: AmiActions, live: QueueLiveState, metrics: QueueMetricsStore, calls: LiveCallState, *,
                 queues: Iterable[str],
                 wrapup_seconds: dict[str, float], known_agents: Callable[[], Any] | None = None) -> None:
        self._ami = ami
        self._live = live
        self._metrics = metrics
        self._calls = calls  # LiveCallState: the IVR context of a call (case, category, priority)
        self._queues = list(queues)
        self._wrapup = dict(wrapup_seconds)
        self._known_agents = known_agents  # async () -> agent names in the database (shown logged out)
        self._agents: dict[str, _AgentView] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._rebuild_lock = asyncio.Lock()
        self.rebuilds = 0
        self.events_applied = 0

    def subscribe(self, ami: AmiEvents) -> None:
        """Mirror this AMI client's queue events into Redis, and rebuild after each (re)connect."""
        for name, handler in (
            ("QueueMemberAdded", self._on_member),
            ("QueueMemberStatus", self._on_member),
            ("QueueMemberPause", self._on_member),
            ("QueueMemberPaused", self._on_member),
            ("QueueMemberRemoved", self._on_member_removed),
            ("QueueCallerJoin", self._on_join),
            ("QueueCallerLeave", self._on_leave),
            ("QueueCallerAbandon", self._on_abandon),
            ("AgentCalled", self._on_agent_called),
            ("AgentRingNoAnswer", self._on_ring_no_answer),
            ("AgentConnect", self._on_connect),
            ("AgentComplete", self._on_complete),
        ):
            ami.on_event(name, handler)
        ami.on_connected(self.rebuild)

    async def aclose(self) -> None:
        """Cancel and await the wrap-up timers."""
        for task in list(self._timers.values()):
            task.cancel()
        await asyncio.gather(*self._timers.values(), return_exceptions=True)
        self._timers.clear()

    # -- agents ---------------------------------------------------------------------------
    def _view(self, name: str) -> _AgentView:
        return self._agents.setdefault(name, _AgentView())

    async def _publish_agent(self, name: str, view: _AgentView, **extra: Any) -> None:
        now = time.time()
        state = view.compute(now)
        if state != view.state:
            view.state, view.since = state, now
        reasons = {m.reason for m in view.members.values() if m.paused and m.reason}
        await self._live.set_agent(name, {
            "state": state, "since": view.since, "pause_reason": next(iter(reasons), None) if state == "paused"
            else None, "queues": sorted(view.members), "linkedid": view.linkedid,
            "wrapup_until": view.wrapup_until or None, **extra})

    async def _on_member(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        queue = str(event.get("Queue") or "")
        if not name or not queue:
            return
        view = self._view(name)
        member = view.members.setdefault(queue, _Member())
        member.status = str(event.get("Status") or member.status)
        if event.get("Paused") is not None:
            member.paused = str(event.get("Paused")) in ("1", "true", "yes")
        member.reason = str(event.get("PausedReason") or event.get("Reason") or "") or None
        if event.get("InCall") is not None:
            member.in_call = str(event.get("InCall")) == "1"
        await self._publish_agent(name, view)

    async def _on_member_removed(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        view = self._view(name)
        view.members.pop(str(event.get("Queue") or ""), None)
        await self._publish_agent(name, view)

    async def _on_agent_called(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        view = self._view(name)
        for m in view.members.values():
            m.status = "6" if m.status not in _IN_USE else m.status
        await self._publish_agent(name, view, ringing_linkedid=event.get("Linkedid"))

    async def _on_ring_no_answer(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        view = self._view(name)
        for m in view.members.values():
            m.status = "1" if m.status in _RINGING else m.status
        await self._publish_agent(name, view, ringing_linkedid=None)

    async def _on_connect(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        queue = str(event.get("Queue") or "")
        view = self._view(name)
        view.linkedid = str(event.get("Linkedid") or "") or None
        for m in view.members.values():
            m.in_call = True
            m.status = "2" if m.status in _RINGING else m.status
        await self._publish_agent(name, view, ringing_linkedid=None)
        wait = _float(event.get("HoldTime"))
        await self._live.bump_counter(queue, "answered")
        if self._metrics is not None:
            await self._metrics.answered(queue, wait)

    async def _on_complete(self, event: Any) -> None:
        self.events_applied += 1
        name = _member_name(event)
        queue = str(event.get("Queue") or "")
        view = self._view(name)
        view.linkedid = None
        for m in view.members.values():
            m.in_call = False
            m.status = "1" if m.status in _IN_USE | _RINGING else m.status
        wrapup = self._wrapup.get(queue, 0.0)
        if wrapup > 0:
            view.wrapup_until = time.time() + wrapup
            self._schedule_wrapup_end(name, wrapup)
        await self._publish_agent(name, view)
        if self._metrics is not None:
            await self._metrics.handled(queue, _float(event.get("TalkTime")))

    def _schedule_wrapup_end(self, name: str, seconds: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()

        async def end() -> None:
            await asyncio.sleep(seconds + 0.05)
            self._timers.pop(name, None)
            await self._publish_agent(name, self._view(name))

        self._timers[name] = asyncio.create_task(end(), name=f"wrapup-{name}")

    # -- callers --------------------------------------------------------------------------
    async def _context(self, linkedid: str) -> dict[str, Any]:
        call = await self._calls.get_call(linkedid) if linkedid and self._calls is not None else None
        if not call:
            return {}
        # The waiting entry is JSON for the console, which shows these as they are (priority as a number).
        return {k: v for k in ("case_number", "category", "priority", "caller_number") if (v := call.get(k))}

    async def _channel_context(self, channel: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, key in (("HOTLINE_CASE", "case_number"), ("QUEUE_PRIO", "priority")):
            try:
                resp = await self._ami.action({"Action": "Getvar", "Channel": channel, "Variable": variable},
                                              as_list=False, check=False)
            except Exception as exc:  # AMI trouble mid-rebuild: the entry is kept without this detail
                log.warning("queue live state: Getvar %s on %s failed: %s", variable, channel, exc)
                continue
            value = resp.get("Value") if hasattr(resp, "get") else None
            if value:
                found[key] = _int(value) if key == "priority" else value
        return found

    async def _on_join(self, event: Any) -> None:
        self.events_applied += 1
        queue = str(event.get("Queue") or "")
        uniqueid = str(event.get("Uniqueid") or "")
        linkedid = str(event.get("Linkedid") or "")
        call = await self._calls.get_call(linkedid) if linkedid and self._calls is not None else None
        # Back in the same queue after pressing 5 too early (CallbackRoute): same place, same wait, not a new offer.
        requeued_at = call.get("requeue_queued_at") if call and call.get("requeue_queue") == queue else None
        requeued = requeued_at is not None
        entry = {"uniqueid": uniqueid, "linkedid": linkedid, "channel": event.get("Channel"),
                 "caller": event.get("CallerIDNum"), "position": int(_float(event.get("Position"))),
                 "joined_at": (requeued_at or datetime.now(UTC)).isoformat(),
                 **await self._context(linkedid)}
        # A caller with a higher priority joins ahead: everyone from that place on moves back one.
        behind = {e["uniqueid"]: {**e, "position": int(e["position"]) + 1} for e in await self._live.waiting(queue)
                  if e["uniqueid"] != uniqueid and int(e.get("position") or 0) >= entry["position"] > 0}
        await self._live.set_waiting(queue, {**behind, uniqueid: entry}, counter=None if requeued else "offered")
        if self._metrics is not None and not requeued:
            await self._metrics.offered(queue)

    async def _on_leave(self, event: Any) -> None:
        self.events_applied += 1
        queue = str(event.get("Queue") or "")
        uniqueid = str(event.get("Uniqueid") or "")
        left_at = int(_float(event.get("Position")))
        # Everyone behind the leaver moves up one place; Asterisk sends no event for them.
        behind = {e["uniqueid"]: {**e, "position": int(e["position"]) - 1} for e in await self._live.waiting(queue)
                  if e["uniqueid"] != uniqueid and left_at and int(e.get("position") or 0) > left_at}
        await self._live.set_waiting(queue, behind, remove=uniqueid)

    async def _on_abandon(self, event: Any) -> None:
        self.events_applied += 1
        queue = str(event.get("Queue") or "")
        await self._live.bump_counter(queue, "abandoned")
        if self._metrics is not None:
            await self._metrics.abandoned(queue, _float(event.get("HoldTime")))

    # -- rebuild --------------------------------------------------------------------------
    async def rebuild(self) -> None:
        """Make agents, waiting calls and counters match Asterisk (QueueStatus, CoreShowChannels) and the database."""
        async with self._rebuild_lock:
            self.rebuilds += 1
            channels = await self._ami.event_list({"Action": "CoreShowChannels"}, timeout=10)
            linked = {str(c.get("Uniqueid")): str(c.get("Linkedid") or "") for c in channels}
            entries = await self._ami.event_list({"Action": "QueueStatus"}, timeout=10)
            agents: dict[str, _AgentView] = {}
            waiting: dict[str, dict[str, dict[str, Any]]] = {q: {} for q in self._queues}
            now = time.time()
            for e in entries:
                kind = e.get("Event")
                queue = str(e.get("Queue") or "")
                if kind == "QueueMember":
                    name = _member_name(e)
                    old = self._agents.get(name)
                    view = agents.setdefault(name, _AgentView(wrapup_until=old.wrapup_until if old else 0.0,
                                                              since=old.since if old else now,
                                                              state=old.state if old else "logged_out"))
                    view.members[queue] = _Member(status=str(e.get("Status") or "1"),
                                                  paused=str(e.get("Paused")) in ("1", "true"),
                                                  reason=str(e.get("PausedReason") or "") or None,
                                                  in_call=str(e.get("InCall")) == "1")
                elif kind == "QueueEntry":
                    uniqueid = str(e.get("Uniqueid") or "")
                    linkedid = linked.get(uniqueid, "")
                    wait = _float(e.get("Wait"))
                    context = await self._context(linkedid)
                    if not context.get("case_number") and e.get("Channel"):
                        # Redis lost the call's IVR context too: the channel still carries what the IVR set.
                        context = {**await self._channel_context(str(e["Channel"])), **context}
                        if linkedid and context.get("case_number") and self._calls is not None:
                            # Bring the call back into live state so its hang-up still closes record and case.
                            await self._calls.start_call(
                                linkedid, state="queued", queue=queue, case_number=str(context["case_number"]),
                                caller_number=_text(e.get("CallerIDNum")), channel=_text(e.get("Channel")),
                                channel_uniqueid=uniqueid, priority=_int(context.get("priority")),
                                queued_at=datetime.fromtimestamp(now - wait, UTC))
                    waiting.setdefault(queue, {})[uniqueid] = {
                        "uniqueid": uniqueid, "linkedid": linkedid, "channel": e.get("Channel"),
                        "caller": e.get("CallerIDNum"), "position": int(_float(e.get("Position"))),
                        "joined_at": datetime.fromtimestamp(now - wait, UTC).isoformat(),
                        "asterisk_priority": e.get("Priority"), **context}
            names = set(agents) | set(self._agents)
            if self._known_agents is not None:
                names |= set(await self._known_agents())
            self._agents = agents
            for name in sorted(names):
                await self._publish_agent(name, self._view(name))
            for queue, found in waiting.items():
                await self._live.set_waiting(queue, found, replace=True)
            if self._metrics is not None:
                today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                for f in await self._metrics.figures(self._queues, since=today):
                    await self._live.set_counters(f.queue, {"offered": f.offered, "answered": f.answered,
                                                            "abandoned": f.abandoned})
            try:
                await self._live.set_marker()
            except RedisError as exc:
                log.warning("queue live state: marker not set: %s", exc)
            log.info("queue state rebuilt: %d agents, %d waiting", len(names),
                     sum(len(w) for w in waiting.values()))

    async def watch_redis(self, interval: float = 1.0) -> None:
        """Rebuild whenever Redis lost what was written (restart without persistence, flush): runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                present = await self._live.marker_present()
            except RedisError:
                continue  # Redis away: check again; the rebuild comes when it is back
            if not present and getattr(self._ami, "connected", True):
                log.warning("queue live state: Redis lost its data; rebuilding from Asterisk")
                try:
                    await self.rebuild()
                except Exception as exc:  # AMI or Redis failing mid-rebuild: retried next round
                    log.warning("queue live state: rebuild failed: %s", exc)
