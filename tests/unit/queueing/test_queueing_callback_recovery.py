"""Crash safety of the callback dispatcher, with a fake Asterisk (channels, AstDB, Originate) and SQLite: a row left
'dialing'/'connected' whose outcome the bridge missed is followed or settled from Asterisk, and the citizen is
never rung twice for one attempt. Plus the queue key pressed too early: back in line at the same place."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cases import CaseStatus
from queueing import CallbackDispatcher, CallbackRoute, CallbackStore, CallTracker, QueueEventTracker
from queueing.callbacks import channel_id
from telephony import AmiError
from tests.support.cases import FakeCases, sample_case
from tests.support.fake_agi import ChannelAgi
from tests.support.fake_ami import FakeAmi, FakeConsole
from tests.support.live import FakeLive, FakeQueueLive
from tests.support.records import FakeRecords

JOINED = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


class AmiDown(AmiError):
    """AMI away, as the fake Asterisk says it."""


class World:
    """One database, one Asterisk; dispatchers come and go like bridge processes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.now = datetime.now(UTC)
        self.store = CallbackStore(engine, clock=lambda: self.now)
        self.ami = FakeAmi()
        self.console = FakeConsole(self.ami.astdb)  # AstDB deletes: the control socket, not AMI
        self.qlive = FakeQueueLive()
        self.qlive.agent_list = [{"name": "agent1", "state": "available", "queues": ["inquiries"]}]
        self.calls = FakeLive()

    def record(self, cb_id: int, attempt: int, value: str) -> None:
        """What the dialplan keeps in AstDB about an attempt."""
        self.ami.astdb[f"hotline_callback/{channel_id(cb_id, attempt)}"] = value

    def bridge(self, max_attempts: int = 3) -> CallbackDispatcher:
        dispatcher = CallbackDispatcher(self.store, self.ami, self.qlive, self.calls,
                                        dial_template="PJSIP/trunk/sip:{number}@x", console=self.console,
                                        max_attempts=max_attempts, retry_seconds=60,
                                        originate_grace_seconds=10, clock=lambda: self.now)
        dispatcher.subscribe(self.ami)
        return dispatcher

    async def request(self) -> int:
        cb = await self.store.request(queue="inquiries", caller_number="0101", case_number="2611290009",
                                      linkedid=f"call-{len(self.ami.originates)}", priority=0, queued_at=JOINED)
        return cb.id

    async def dialed_and_answered_by_agent(self, first: CallbackDispatcher) -> int:
        """An attempt the old bridge started: the agent answered, the dialplan now rings the citizen."""
        cb_id = await self.request()
        assert await first.dispatch_once() == [cb_id]
        await first.settle(timeout=5)
        self.record(cb_id, 1, "citizen_dialing")
        await self.ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb_id),
                            Status="agent_answered")
        return cb_id

    def citizen_leg_up(self, cb_id: int, attempt: int = 1) -> None:
        self.ami.channels = [{"Channel": "PJSIP/agent1-00000001", "Uniqueid": channel_id(cb_id, attempt),
                              "Linkedid": channel_id(cb_id, attempt)},
                             {"Channel": "PJSIP/trunk-00000002", "Uniqueid": "1795.7",
                              "Linkedid": channel_id(cb_id, attempt)}]

    async def status(self, cb_id: int) -> Any:
        return await self.store.get(cb_id)


async def test_restart_while_the_citizen_talks_follows_the_call_and_never_redials(engine: AsyncEngine) -> None:
    w = World(engine)
    first = w.bridge()
    cb_id = await w.dialed_and_answered_by_agent(first)
    assert (await w.status(cb_id)).status == "connected"
    [orig] = w.ami.originates
    assert orig["ChannelId"] == channel_id(cb_id, 1) == "callback-1-1"
    await first.aclose()
    w.ami.handlers.clear()

    # The new bridge: the attempt is still up in Asterisk (agent and citizen talking).
    w.citizen_leg_up(cb_id)
    w.ami.astdb[f"hotline_callback/{channel_id(cb_id, 1)}"] = "ANSWER"
    second = w.bridge()
    await second.recover()
    w.now += timedelta(minutes=5)
    assert await second.dispatch_once() == [] and len(w.ami.originates) == 1
    assert (await w.status(cb_id)).status == "connected"
    # Its end still reaches the new bridge (re-attached to the UserEvents).
    w.ami.channels = []
    await w.ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb_id), Status="ANSWER")
    done = await w.status(cb_id)
    assert done.status == "completed" and done.attempts == 1
    assert w.ami.astdb == {}  # the record is dropped once the database has the outcome
    await second.dispatch_once()
    assert len(w.ami.originates) == 1


async def test_agent_answered_while_the_bridge_was_away_is_picked_up_from_asterisk(engine: AsyncEngine) -> None:
    w = World(engine)
    first = w.bridge()
    cb_id = await w.request()
    await first.dispatch_once()
    await first.settle(timeout=5)
    await first.aclose()
    w.ami.handlers.clear()
    # Missed: the agent_answered UserEvent. Asterisk is ringing the citizen (their leg has the attempt's linkedid).
    w.record(cb_id, 1, "citizen_dialing")
    w.ami.channels = [{"Channel": "PJSIP/trunk-00000002", "Uniqueid": "1795.7", "Linkedid": channel_id(cb_id, 1)}]
    second = w.bridge()
    w.now += timedelta(minutes=1)
    await second.recover()
    assert (await w.status(cb_id)).status == "connected"
    assert w.calls.started == [f"callback-{cb_id}"]  # the agent's screen shows the case
    assert await second.dispatch_once() == [] and len(w.ami.originates) == 1


@pytest.mark.parametrize("record,status,attempts,error", [
    ("ANSWER", "completed", 1, None),  # reached while the bridge was away
    ("NOANSWER", "pending", 1, "NOANSWER"),  # rung, not reached, call over: a used attempt, retried later
    ("citizen_dialing", "pending", 1, "INTERRUPTED"),  # Asterisk stopped mid-call: rung maybe, not reached
])
async def test_attempt_that_ended_while_the_bridge_was_away(engine: AsyncEngine, record: str, status: str,
                                                             attempts: int, error: str | None) -> None:
    w = World(engine)
    first = w.bridge()
    cb_id = await w.dialed_and_answered_by_agent(first)
    await first.aclose()
    w.ami.handlers.clear()
    w.record(cb_id, 1, record)
    w.ami.channels = []
    second = w.bridge()
    await second.recover()
    after = await w.status(cb_id)
    assert (after.status, after.attempts) == (status, attempts)
    if error:
        assert error in after.last_error
    assert w.ami.astdb == {}
    w.now += timedelta(seconds=30)  # before the retry delay: nobody is rung again
    assert await second.dispatch_once() == []
    assert len(w.ami.originates) == 1


async def test_interrupted_with_no_attempts_left_fails_for_a_supervisor(engine: AsyncEngine) -> None:
    w = World(engine)
    first = w.bridge(max_attempts=1)
    cb_id = await w.dialed_and_answered_by_agent(first)
    await first.aclose()
    w.ami.handlers.clear()
    w.ami.channels = []
    await w.bridge(max_attempts=1).recover()
    failed = await w.status(cb_id)
    assert failed.status == "failed" and "INTERRUPTED" in failed.last_error
    assert [k for k, _ in w.qlive.published] == ["callback_failed"]


async def test_dialing_without_channel_or_record_goes_back_in_line_after_the_grace_time(engine: AsyncEngine) -> None:
    w = World(engine)
    cb_id = await w.request()
    # The old bridge claimed the row and died before (or right after) sending the Originate.
    assert await w.store.claim(cb_id, "agent1")
    bridge = w.bridge()
    await bridge.recover()
    assert (await w.status(cb_id)).status == "dialing"  # an Originate may still be on its way: wait
    w.now += timedelta(seconds=11)
    await bridge.recover()
    back = await w.status(cb_id)
    # The agent never answered, so the citizen was never rung; the attempt still counts and the next one waits.
    assert back.status == "pending" and back.attempts == 1
    assert await bridge.dispatch_once() == []
    w.now += timedelta(seconds=60)
    assert await bridge.dispatch_once() == [cb_id]
    await bridge.settle(timeout=5)
    assert [o["ChannelId"] for o in w.ami.originates] == [channel_id(cb_id, 2)]


async def test_agent_still_ringing_after_restart_is_left_to_ring(engine: AsyncEngine) -> None:
    w = World(engine)
    cb_id = await w.request()
    assert await w.store.claim(cb_id, "agent1")
    w.ami.channels = [{"Channel": "PJSIP/agent1-00000001", "Uniqueid": channel_id(cb_id, 1),
                       "Linkedid": channel_id(cb_id, 1)}]
    bridge = w.bridge()
    w.now += timedelta(minutes=1)
    await bridge.recover()
    assert (await w.status(cb_id)).status == "dialing"
    # The agent does not answer: the channel goes; its Hangup makes the bridge look again.
    w.ami.channels = []
    await w.ami.emit(Event="Hangup", Uniqueid=channel_id(cb_id, 1), Channel="PJSIP/agent1-00000001")
    await bridge.settle(timeout=5)
    assert (await w.status(cb_id)).status == "pending"


async def test_connected_but_asterisk_kept_no_record_is_never_redialed(engine: AsyncEngine) -> None:
    w = World(engine)
    first = w.bridge()
    cb_id = await w.dialed_and_answered_by_agent(first)
    await first.aclose()
    w.ami.handlers.clear()
    w.ami.astdb.clear()  # Asterisk restarted on an empty AstDB
    w.ami.channels = []
    second = w.bridge()
    await second.recover()
    failed = await w.status(cb_id)
    assert failed.status == "failed" and "outcome unknown" in failed.last_error
    assert [k for k, _ in w.qlive.published] == ["callback_failed"]
    w.now += timedelta(hours=1)
    assert await second.dispatch_once() == [] and len(w.ami.originates) == 1


async def test_originate_lost_with_the_ami_connection_is_not_redialed_blindly(engine: AsyncEngine) -> None:
    w = World(engine)
    bridge = w.bridge()
    cb_id = await w.request()
    w.ami.originate_result = AmiDown("AMI connection lost")
    assert await bridge.dispatch_once() == [cb_id]
    await bridge.settle(timeout=5)
    row = await w.status(cb_id)
    assert row.status == "dialing" and "AMI connection lost" in row.last_error
    w.now += timedelta(minutes=5)
    assert await bridge.dispatch_once() == []  # not dialed again on its own
    # Asterisk did get it: the agent answered and the citizen is being rung.
    w.record(cb_id, 1, "citizen_dialing")
    w.citizen_leg_up(cb_id)
    await bridge.recover()
    assert (await w.status(cb_id)).status == "connected" and len(w.ami.originates) == 1


async def test_reconcile_leaves_an_originate_in_flight_alone(engine: AsyncEngine) -> None:
    w = World(engine)
    bridge = w.bridge()
    cb_id = await w.request()
    pending: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    w.ami.originate_result = pending  # the agent's phone is ringing; no OriginateResponse yet
    await bridge.dispatch_once()
    await asyncio.sleep(0)
    w.now += timedelta(minutes=1)  # long past the grace time, no channel listed (yet), no record
    await bridge.recover()  # e.g. AMI reconnected meanwhile
    assert (await w.status(cb_id)).status == "dialing" and w.ami.dbgets == 0
    pending.set_result("Success")
    await bridge.settle(timeout=5)
    assert (await w.status(cb_id)).status == "dialing" and len(w.ami.originates) == 1


async def test_user_event_and_reconcile_racing_settle_once(engine: AsyncEngine) -> None:
    w = World(engine)
    first = w.bridge(max_attempts=1)
    cb_id = await w.dialed_and_answered_by_agent(first)
    w.record(cb_id, 1, "BUSY")
    w.ami.channels = []
    await asyncio.gather(
        first.recover(),
        w.ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb_id), Status="BUSY"),
        w.ami.emit(Event="Hangup", Uniqueid=channel_id(cb_id, 1)))
    await first.settle(timeout=5)
    assert (await w.status(cb_id)).status == "failed"
    assert [k for k, _ in w.qlive.published] == ["callback_failed"]  # one report, not two
    assert w.calls.ended == [(f"callback-{cb_id}", "callback_busy")]


# --- the queue key pressed too early -------------------------------------------------------------


async def test_too_early_keeps_the_place_the_wait_and_says_so(engine: AsyncEngine) -> None:
    queued_at = datetime.now(UTC) - timedelta(seconds=10)
    live = FakeLive({"linkedid": "300.1", "queued_at": queued_at, "queue": "inquiries",
                     "case_number": "2611290007"})

    async def too_early() -> str:
        return "/prompts/queue-say-too-early"

    route = CallbackRoute(CallbackStore(engine), live, after_seconds=30, too_early_prompt=too_early)
    agi = ChannelAgi({"HOTLINE_QUEUE": "inquiries", "HOTLINE_QUEUE_MAXWAIT": "300", "QUEUEPOSITION": "2",
                   "CHANNEL(linkedid)": "300.1"})
    await route.handle(agi)
    assert agi.variables["HOTLINE_CALLBACK"] == "too_early"
    assert 289 <= int(agi.variables["HOTLINE_QUEUE_REMAINING"]) <= 291  # the max wait goes on, it does not restart
    assert agi.played == ["/prompts/queue-say-too-early"]
    assert live.call["requeue_queue"] == "inquiries" and live.call["requeue_queued_at"] == queued_at
    assert await CallbackStore(engine).in_status("pending") == []


class Metrics:
    def __init__(self) -> None:
        self.offers = 0

    async def offered(self, queue: str, at: Any = None) -> None:
        self.offers += 1


async def test_back_in_line_keeps_join_time_and_is_not_a_new_offer() -> None:
    first_join = JOINED
    ami = FakeAmi()
    calls = FakeLive({"linkedid": "300.1", "case_number": "2611290007", "queue": "inquiries", "queued_at": first_join,
                       "requeue_queue": "inquiries", "requeue_queued_at": first_join})
    waiting, metrics = FakeQueueLive(), Metrics()
    cases = FakeCases(sample_case("2611290007", status=CaseStatus.QUEUED))
    CallTracker(ami, calls, FakeRecords(), cases).subscribe(ami)  # type: ignore[arg-type]
    QueueEventTracker(ami, waiting, metrics, calls, queues=["inquiries"],  # type: ignore[arg-type]
                      wrapup_seconds={}).subscribe(ami)
    waiting.entries["inquiries"] = {"400.1": {"uniqueid": "400.1", "position": 1, "joined_at": "x"},
                                    "400.2": {"uniqueid": "400.2", "position": 2, "joined_at": "y"}}
    await ami.emit(Event="QueueCallerJoin", Queue="inquiries", Uniqueid="300.1", Linkedid="300.1",
                   Channel="PJSIP/trunk-00000003", CallerIDNum="0105", Position="2")
    entries = await waiting.waiting("inquiries")
    assert [(e["uniqueid"], e["position"]) for e in entries] == [("400.1", 1), ("300.1", 2), ("400.2", 3)]
    assert entries[1]["joined_at"] == first_join.isoformat() and calls.call["queued_at"] == first_join
    assert metrics.offers == 0 and waiting.counters == []
