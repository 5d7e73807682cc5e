"""Live state in memory: FakeLive (calls in progress, as queueing.LiveCallState) and FakeQueueLive (queues'
waiting callers and agents, as queueing.QueueLiveState)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def live_call(**overrides: Any) -> dict[str, Any]:
    """A connected complaint call as the console shows it; fields override."""
    call = {
        "linkedid": "1700000000.1",
        "caller_number": "01012345678",
        "state": "connected",
        "ivr_path": ["1", "complaint"],
        "category": "complaint",
        "case_number": "2611290001",
        "transcript": "The street light on Main Road is broken.",
        "queue": "complaints",
        "agent": "PJSIP/agent1-0000002a",
        "started_at": "2026-11-29T09:30:00+00:00",
    }
    call.update(overrides)
    return call


class FakeLive:
    """Calls in progress by linkedid (`calls`), written and read as LiveCallState does; `updates` lists the
    fields of every update(), `started` every linkedid passed to start_call(), `ended` every (linkedid, outcome)
    passed to end_call()."""

    def __init__(self, *calls: dict[str, Any]) -> None:
        self.calls: dict[str, dict[str, Any]] = {c["linkedid"]: dict(c) for c in calls}
        self.live: set[str] = {c["linkedid"] for c in calls if c.get("state") != "ended"}
        self.updates: list[dict[str, Any]] = []
        self.started: list[str] = []
        self.ended: list[tuple[str, str]] = []

    def add(self, call: dict[str, Any]) -> None:
        """Put a call in progress (one that started before the test)."""
        self.calls[call["linkedid"]] = dict(call)
        self.live.add(call["linkedid"])

    @property
    def call(self) -> dict[str, Any]:
        """The one call held (for tests of a single call)."""
        assert len(self.calls) == 1, f"expected one call, have {sorted(self.calls)}"
        return next(iter(self.calls.values()))

    async def start_call(self, linkedid: str, **fields: Any) -> None:
        """Register a new live call (state 'ivr')."""
        fields.setdefault("state", "ivr")
        fields.setdefault("started_at", datetime.now(UTC).isoformat())
        fields.setdefault("ivr_path", [])
        self.started.append(linkedid)
        self.calls.setdefault(linkedid, {}).update(fields, linkedid=linkedid)
        self.live.add(linkedid)

    async def update(self, linkedid: str, **fields: Any) -> None:
        """Set fields on a call."""
        self.updates.append(dict(fields))
        self.calls.setdefault(linkedid, {"linkedid": linkedid}).update(fields)

    async def update_existing(self, linkedid: str, **fields: Any) -> bool:
        """Set fields on a call still known (False: it is gone and is not brought back)."""
        if linkedid not in self.calls:
            return False
        self.updates.append(dict(fields))
        self.calls[linkedid].update(fields)
        return True

    async def append_path(self, linkedid: str, step: str) -> list[str]:
        """Append one step to the call's IVR path and return the path."""
        path = [*(self.calls.get(linkedid, {}).get("ivr_path") or []), step]
        await self.update(linkedid, ivr_path=path)
        return path

    async def end_call(self, linkedid: str, **fields: Any) -> None:
        """Mark a call ended and drop it from the live set."""
        fields.setdefault("state", "ended")
        fields.setdefault("ended_at", datetime.now(UTC).isoformat())
        self.ended.append((linkedid, fields.get("outcome", "")))
        self.calls.setdefault(linkedid, {"linkedid": linkedid}).update(fields)
        self.live.discard(linkedid)

    async def get_call(self, linkedid: str) -> dict[str, Any] | None:
        """A copy of the call's fields, or None if unknown."""
        call = self.calls.get(linkedid)
        return None if call is None else dict(call)

    async def live_ids(self) -> set[str]:
        """Linkedids of calls in progress."""
        return set(self.live)

    async def list_calls(self) -> list[dict[str, Any]]:
        """Every call in progress, oldest first."""
        calls = [dict(self.calls[i]) for i in self.live]
        return sorted(calls, key=lambda c: c.get("started_at") or "")


class FakeQueueLive:
    """Queues' waiting callers (`entries`: queue -> uniqueid -> entry) and agents: `agent_list`, or, given
    `members_of` (a FakeAmi), each app_queue member available or paused as the tracker would write them, with
    `states` laid over (e.g. an agent on a call). `published` and `counters` record what was told."""

    def __init__(self, members_of: Any = None) -> None:
        self.members_of = members_of
        self.agent_list: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, dict[str, dict[str, Any]]] = {}
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.counters: list[str] = []

    def put_waiting(self, queue: str, *entries: dict[str, Any]) -> None:
        """Replace a queue's waiting callers (keyed by their uniqueid, else by their place in the list)."""
        self.entries[queue] = {str(e.get("uniqueid", i)): dict(e) for i, e in enumerate(entries)}

    async def agents(self) -> list[dict[str, Any]]:
        """Every agent's live state, by name."""
        if self.members_of is None:
            return self.agent_list
        derived: dict[str, dict[str, Any]] = {}
        for member in self.members_of.members.values():
            paused = member["Paused"] == "1"
            derived[member["Name"]] = {"state": "paused" if paused else "available",
                                       "pause_reason": member.get("PausedReason") if paused else None}
        derived.update(self.states)
        return [{"name": n, **s} for n, s in sorted(derived.items())]

    async def waiting(self, queue: str) -> list[dict[str, Any]]:
        """Calls waiting in a queue, by position."""
        return sorted(self.entries.get(queue, {}).values(), key=lambda e: int(e.get("position") or 0))

    async def set_waiting(self, queue: str, entries: dict[str, dict[str, Any]], *, replace: bool = False,
                          remove: str | None = None, counter: str | None = None) -> None:
        """Write waiting entries (uniqueid -> entry); replace drops the others, remove drops one."""
        found = self.entries.setdefault(queue, {})
        if replace:
            found.clear()
        if remove:
            found.pop(remove, None)
        found.update(entries)
        if counter:
            self.counters.append(counter)

    async def publish(self, kind: str, **data: Any) -> None:
        """Record one change message."""
        self.published.append((kind, data))
