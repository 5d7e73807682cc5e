"""CallTracker: AMI queue/channel events become live state, call records and case moves; rebuild after reconnect."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from cases import CaseStatus
from queueing import CallTracker, LiveCallState, connect_redis
from tests.support.cases import FakeCases, sample_case
from tests.support.fake_ami import FakeAmi
from tests.support.records import FakeRecords


@pytest_asyncio.fixture(loop_scope="session")
async def live() -> AsyncIterator[LiveCallState]:
    client = connect_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"hotline-unit-{os.getpid()}"
    state = LiveCallState(client, prefix=prefix)
    try:
        await state.ping()
    except Exception as exc:  # noqa: BLE001 - a missing Redis is a skip reason on a developer box only
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    yield state
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await state.aclose()


pytestmark = pytest.mark.redis


def _cases(*numbers: str, fail_on: tuple[str, ...] | list[str] = ()) -> FakeCases:
    """The case domain with these cases still being collected in the IVR."""
    return FakeCases(*(sample_case(n, status=CaseStatus.NEW, agent=None) for n in numbers), fail_on=fail_on)


async def test_answered_call_walks_every_state(live: LiveCallState) -> None:
    ami, records, observer = FakeAmi(), FakeRecords(), _cases("2611290001")
    CallTracker(ami, live, records, observer).subscribe(ami)
    await live.start_call("L1", caller_number="0101", channel_uniqueid="L1", case_number="2611290001")
    await records.upsert("L1", outcome="in_ivr")
    await ami.emit(Event="QueueCallerJoin", Linkedid="L1", Queue="complaints", Position="1")
    assert (await live.get_call("L1"))["state"] == "queued"
    await ami.emit(Event="AgentCalled", Linkedid="L1", MemberName="agent1")
    assert (await live.get_call("L1"))["state"] == "ringing"
    await ami.emit(Event="AgentConnect", Linkedid="L1", MemberName="agent1", HoldTime="4")
    call = await live.get_call("L1")
    assert call["state"] == "connected" and call["agent"] == "agent1" and call["queue_wait_seconds"] == 4.0
    await ami.emit(Event="Hangup", Linkedid="L1", Uniqueid="L2", Cause="16")  # the agent's leg: not the end
    assert "L1" in await live.live_ids()
    await ami.emit(Event="Hangup", Linkedid="L1", Uniqueid="L1", Cause="16", **{"Cause-txt": "Normal Clearing"})
    await ami.emit(Event="AgentComplete", Linkedid="L1", TalkTime="33", HoldTime="4")
    assert "L1" not in await live.live_ids()
    row = records.rows["L1"]
    assert row["agent"] == "agent1" and row["queue"] == "complaints" and row["talk_seconds"] == 33.0
    assert row["hangup_cause"] == "16 Normal Clearing" and row["outcome"] == "completed"
    assert observer.calls == [("mark_queued", "2611290001", "complaints"), ("assign_agent", "2611290001", "agent1"),
                              ("end_call", "2611290001", "completed")]
    assert observer.kinds("2611290001") == ["queued", "agent_assigned", "call_ended"]
    assert observer.cases["2611290001"].status is CaseStatus.OPEN and observer.cases["2611290001"].agent == "agent1"


async def test_abandon_in_queue_and_untracked_calls_ignored(live: LiveCallState) -> None:
    ami, records, observer = FakeAmi(), FakeRecords(), _cases("2611290003")
    CallTracker(ami, live, records, observer).subscribe(ami)
    await ami.emit(Event="QueueCallerJoin", Linkedid="stranger", Queue="operator", Position="1")
    assert await live.get_call("stranger") is None and records.rows == {}
    await live.start_call("L3", channel_uniqueid="L3", case_number="2611290003")
    await ami.emit(Event="QueueCallerJoin", Linkedid="L3", Queue="operator", Position="1")
    await ami.emit(Event="QueueCallerAbandon", Linkedid="L3", Queue="operator", HoldTime="12")
    await ami.emit(Event="Hangup", Linkedid="L3", Uniqueid="L3", Cause="16")
    assert records.rows["L3"]["outcome"] == "abandoned_in_queue"
    assert records.rows["L3"]["queue_wait_seconds"] == 12.0
    assert observer.calls[-1] == ("end_call", "2611290003", "abandoned_in_queue")
    assert observer.cases["2611290003"].status is CaseStatus.ABANDONED_IN_QUEUE


async def test_rebuild_after_reconnect_trusts_asterisk_not_redis(live: LiveCallState) -> None:
    """Calls that ended while AMI was down are closed; calls still waiting get their queue position back."""
    ami, records, observer = FakeAmi(), FakeRecords(), _cases("2611290010", "2611290011")
    tracker = CallTracker(ami, live, records, observer)
    tracker.subscribe(ami)
    await live.start_call("gone", channel_uniqueid="gone", case_number="2611290010")
    await live.start_call("waiting", channel_uniqueid="waiting", case_number="2611290011")
    await live.update("waiting", state="ivr")
    ami.channels = [{"Event": "CoreShowChannel", "Uniqueid": "waiting", "Linkedid": "waiting"}]
    ami.entries = [{"Event": "QueueParams", "Queue": "complaints"},
                   {"Event": "QueueEntry", "Queue": "complaints", "Position": "2", "Uniqueid": "waiting"}]
    assert tracker.rebuild in ami.connected_handlers
    await tracker.rebuild()
    assert await live.live_ids() == {"waiting"}
    waiting = await live.get_call("waiting")
    assert waiting["state"] == "queued" and waiting["queue"] == "complaints" and waiting["position"] == 2
    gone = await live.get_call("gone")
    assert gone["state"] == "ended" and "disconnected" in gone["hangup_cause"]
    assert records.rows["gone"]["outcome"] == "abandoned_in_ivr"
    assert ("end_call", "2611290010", "abandoned_in_ivr") in observer.calls


async def test_call_end_hooks_run_after_the_case_heard_of_the_end(live: LiveCallState) -> None:
    """Hooks added to the list after the tracker was built run too, each even when another (or the case) fails."""
    ami, records = FakeAmi(), FakeRecords()
    cases = _cases("2611290005", fail_on=["end_call"])
    hooks: list[Any] = []
    CallTracker(ami, live, records, cases, call_end_hooks=hooks).subscribe(ami)
    ran: list[tuple[str, str, int]] = []  # (hook, case, case operations seen by then)

    async def failing_hook(case_number: str) -> None:
        ran.append(("failing", case_number, len(cases.calls)))
        raise RuntimeError("hook broke")

    async def intake(case_number: str) -> None:
        ran.append(("intake", case_number, len(cases.calls)))

    hooks.extend([failing_hook, intake])
    await live.start_call("L5", channel_uniqueid="L5", case_number="2611290005")
    await ami.emit(Event="Hangup", Linkedid="L5", Uniqueid="L5", Cause="16")
    assert cases.calls == [("end_call", "2611290005", "abandoned_in_ivr")]
    assert ran == [("failing", "2611290005", 1), ("intake", "2611290005", 1)]
    assert "L5" not in await live.live_ids()


async def test_live_state_survives_redis_errors_without_failing_the_call() -> None:
    state = LiveCallState(connect_redis("redis://127.0.0.1:1/0", timeout=0.2), prefix="nowhere")
    await state.start_call("X", case_number="1")  # must not raise: live state is a mirror
    await state.update("X", state="queued")
    # Redis away: the call is still known from what this process wrote, so its queue join and hang-up are followed.
    call = await state.get_call("X")
    assert call is not None and call["state"] == "queued" and call["case_number"] == "1"
    assert await state.live_ids() == {"X"}
    report = state.health_report()
    assert state.errors >= 3 and report["last_error"] and report["up"] is False and report["queued_writes"] == 1
    await state.aclose()
