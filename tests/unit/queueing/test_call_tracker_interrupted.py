"""The call tracker tells a caller hanging up in the IVR from the hotline losing the call (its IVR session died
with the bridge that ran it, or the IVR failed), with small fakes."""
from __future__ import annotations

from typing import Any

from queueing import CallTracker


class FakeLive:
    """In-memory live call state of one bridge run (owner)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.calls: dict[str, dict[str, Any]] = {}

    async def start_call(self, linkedid: str, **fields: Any) -> None:
        self.calls[linkedid] = {"state": "ivr", "owner": self.owner, **fields, "linkedid": linkedid}

    async def get_call(self, linkedid: str) -> dict[str, Any] | None:
        return self.calls.get(linkedid)

    async def update(self, linkedid: str, **fields: Any) -> None:
        self.calls.setdefault(linkedid, {}).update(fields)

    async def end_call(self, linkedid: str, **fields: Any) -> None:
        self.calls[linkedid].update(state="ended", ended=True, **fields)

    async def live_ids(self) -> set[str]:
        return {k for k, v in self.calls.items() if not v.get("ended")}


class FakeAmi:
    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}
        self.channels: list[dict[str, str]] = []

    def on_event(self, name: str, handler: Any) -> None:
        self.handlers.setdefault(name, []).append(handler)

    def on_connected(self, handler: Any) -> None:
        pass

    async def event_list(self, fields: dict[str, Any], *, timeout: float | None = None) -> list[dict[str, str]]:
        return self.channels if fields["Action"] == "CoreShowChannels" else []

    async def emit(self, **event: str) -> None:
        for handler in self.handlers.get(event["Event"], []):
            await handler(event)


class FakeRecords:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def upsert(self, linkedid: str, **fields: Any) -> None:
        self.rows.setdefault(linkedid, {}).update(fields)

    async def get(self, linkedid: str) -> Any:
        return None


class FakeCases:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def mark_queued(self, case_number: str, queue: str) -> None:
        self.calls.append(("mark_queued", case_number, queue))

    async def assign_agent(self, case_number: str, agent: str) -> None:
        self.calls.append(("assign_agent", case_number, agent))

    async def end_call(self, case_number: str, outcome: str) -> None:
        self.calls.append(("end_call", case_number, outcome))

    async def mark_interrupted(self, case_number: str, reason: str) -> None:
        self.calls.append(("mark_interrupted", case_number, reason))


def _tracker(live: FakeLive) -> tuple[CallTracker, FakeAmi, FakeRecords, FakeCases]:
    ami, records, cases = FakeAmi(), FakeRecords(), FakeCases()
    tracker = CallTracker(ami, live, records, cases)  # type: ignore[arg-type]
    tracker.subscribe(ami)
    return tracker, ami, records, cases


async def test_a_call_left_in_the_ivr_by_a_bridge_that_died_is_interrupted_at_rebuild() -> None:
    dead_run = FakeLive("host:100:dead")
    await dead_run.start_call("L1", channel_uniqueid="L1", case_number="2612040001")
    live = FakeLive("host:200:new")
    live.calls = dead_run.calls  # the same Redis, read by the bridge started after the crash
    tracker, ami, records, cases = _tracker(live)
    await tracker.rebuild()  # the channel is gone from Asterisk
    assert cases.calls == [("mark_interrupted", "2612040001",
                            "the bridge that ran its IVR (host:100:dead) stopped during the call")]
    assert records.rows["L1"]["outcome"] == "interrupted" and live.calls["L1"]["outcome"] == "interrupted"
    assert tracker.interrupted == 1


async def test_a_caller_hanging_up_in_this_bridges_ivr_abandoned_it() -> None:
    live = FakeLive("host:200:new")
    await live.start_call("L2", channel_uniqueid="L2", case_number="2612040002")
    tracker, ami, records, cases = _tracker(live)
    await ami.emit(Event="Hangup", Linkedid="L2", Uniqueid="L2", Cause="16")
    assert cases.calls == [("end_call", "2612040002", "abandoned_in_ivr")]
    assert records.rows["L2"]["outcome"] == "abandoned_in_ivr" and tracker.interrupted == 0


async def test_an_ivr_that_failed_in_this_bridge_interrupted_the_call() -> None:
    live = FakeLive("host:200:new")
    await live.start_call("L3", channel_uniqueid="L3", case_number="2612040003")
    await live.update("L3", ivr_failed="OperationalError: database is locked")
    tracker, ami, records, cases = _tracker(live)
    await ami.emit(Event="Hangup", Linkedid="L3", Uniqueid="L3", Cause="16")
    assert cases.calls == [("mark_interrupted", "2612040003", "the IVR failed: OperationalError: database is locked")]


async def test_past_the_ivr_a_lost_bridge_changes_nothing_and_unowned_calls_keep_the_old_rule() -> None:
    old = FakeLive("host:100:dead")
    await old.start_call("L4", channel_uniqueid="L4", case_number="2612040004", state="queued")
    live = FakeLive("host:200:new")
    live.calls = old.calls
    live.calls["L5"] = {"state": "ivr", "channel_uniqueid": "L5", "case_number": "2612040005"}  # no owner stamped
    tracker, ami, records, cases = _tracker(live)
    await tracker.rebuild()
    assert sorted(cases.calls) == [("end_call", "2612040004", "abandoned_in_queue"),
                                   ("end_call", "2612040005", "abandoned_in_ivr")]
