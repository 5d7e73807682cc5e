"""Queueing units with small fakes: agent store and AMI membership, metrics, live queue state, priority, console."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import create_console_app
from agent_console.queue_views import METRICS_TOKEN, QUEUE_CONSOLE
from identity import AccountStore, Role
from queueing import (
    AgentError,
    AgentNotFound,
    AgentService,
    AgentStore,
    LiveCallState,
    PjsipAgentProvisioner,
    PriorityPolicy,
    QueueEntryRoute,
    QueueEventTracker,
    QueueLiveState,
    QueueMetricsStore,
    connect_redis,
    parse_skills,
)
from telephony.asterisk_process import TEMPLATES_DIR
from tests.support.callbacks import FakeCallbacks
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth, login
from tests.support.fake_agi import ChannelAgi
from tests.support.fake_ami import FakeAmi, FakeConsole
from tests.support.live import FakeLive, FakeQueueLive
from tests.support.records import FakeRecords

QUEUES = ["complaints", "inquiries", "operator"]


@pytest_asyncio.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"hotline-i5-unit-{os.getpid()}-{os.urandom(3).hex()}"
    yield prefix
    client = connect_redis("redis://127.0.0.1:6379/0")
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- agents --------------------------------------------------------------------------------------


async def test_agent_store_validates_with_one_line_errors(engine: AsyncEngine) -> None:
    store = AgentStore(engine, QUEUES)
    await store.add("agent7", {"inquiries": 2})
    for call, match in (
        (store.add("agent7", {"inquiries": 0}), "already exists"),
        (store.add("Bad Name", {"inquiries": 0}), "agent name"),
        (store.add("agent8", {"inquiries": 0}, sip_secret="short"), "SIP secret"),
        (store.add("agent8", {"nowhere": 0}), "unknown queue 'nowhere'"),
        (store.add("agent8", {}), "at least one queue"),
        (store.get("agent9"), "no agent named"),
    ):
        with pytest.raises(AgentError, match=match) as err:
            await call
        assert "\n" not in str(err.value)
    with pytest.raises(AgentError, match="penalty"):
        parse_skills(["inquiries:high"])
    assert parse_skills(["inquiries:3", "operator"]) == {"inquiries": 3, "operator": 0}
    assert await store.seed([("agent7", "x" * 16, ["operator"]), ("agent1", "y" * 16, ["complaints"])]) == ["agent1"]
    agent1 = await store.get("agent1")
    assert agent1.logged_in and agent1.skills == {"complaints": 0}


async def test_agent_service_login_pause_resume_logout_through_ami(engine: AsyncEngine, tmp_path: Path) -> None:
    ami = FakeAmi()
    console = FakeConsole()
    provisioner = PjsipAgentProvisioner(tmp_path / "etc", TEMPLATES_DIR / "pjsip_agent.conf.part", "127.0.0.1",
                                        console)
    service = AgentService(AgentStore(engine, QUEUES), ami, provisioner)
    agent7 = await service.add("agent7", {"inquiries": 2, "operator": 0})
    conf = provisioner.path.read_text()
    assert "[agent7]" in conf and f"password = {agent7.sip_secret}" in conf and len(agent7.sip_secret) >= 32
    assert oct(provisioner.path.stat().st_mode & 0o777) == "0o600"
    assert console.commands == ["module reload res_pjsip.so"]  # the control socket, not AMI's Command
    assert ami.named("Command") == []
    await service.login("agent7")
    assert {(a["Queue"], a["Penalty"]) for a in ami.named("QueueAdd")} == {("inquiries", "2"), ("operator", "0")}
    with pytest.raises(AgentError, match="not one of"):
        await service.pause("agent7", "lunch")
    agent = await service.pause("agent7", "case_work")
    assert agent.paused and agent.pause_reason == "case_work"
    assert ami.named("QueuePause")[-1] == {"Action": "QueuePause", "Interface": "PJSIP/agent7", "Paused": "true",
                                           "Reason": "case_work"}
    await service.resume("agent7")
    assert ami.named("QueuePause")[-1]["Paused"] == "false"
    await service.logout("agent7")
    assert not ami.members
    with pytest.raises(AgentError, match="logged out"):
        await service.pause("agent7", "break")
    await service.remove("agent7")
    assert "[agent7]" not in provisioner.path.read_text()
    with pytest.raises(AgentNotFound):
        await service.login("agent7")


async def test_sync_makes_asterisk_match_the_database(engine: AsyncEngine, tmp_path: Path) -> None:
    """After a reconnect: missing members are added (paused as wished), stale dynamic ones removed, duplicates
    tolerated."""
    ami = FakeAmi()
    store = AgentStore(engine, QUEUES)
    service = AgentService(store, ami, None)
    await store.add("agent1", {"complaints": 0})
    await store.add("agent2", {"inquiries": 1})
    await store.set_state("agent2", logged_in=True, paused=True, pause_reason="break")
    ami.members[("complaints", "PJSIP/agent1")] = {"Event": "QueueMember", "Queue": "complaints",
                                                    "Location": "PJSIP/agent1", "Membership": "dynamic"}
    ami.members[("inquiries", "PJSIP/agent2")] = {"Event": "QueueMember", "Queue": "inquiries",
                                                   "Location": "PJSIP/agent2", "Membership": "dynamic"}
    await service.sync()
    assert set(ami.members) == {("inquiries", "PJSIP/agent2")}  # agent1 is logged out in the database
    assert ami.named("QueuePenalty")  # agent2 was already there: penalty refreshed instead
    assert ami.named("QueuePause")[-1] == {"Action": "QueuePause", "Interface": "PJSIP/agent2", "Paused": "true",
                                           "Reason": "break"}


# --- metrics -------------------------------------------------------------------------------------


async def test_metrics_per_interval_and_prometheus_text(engine: AsyncEngine) -> None:
    metrics = QueueMetricsStore(engine, interval_minutes=15, service_level_seconds=20)
    t0 = datetime(2026, 11, 29, 9, 7, tzinfo=UTC)
    await metrics.offered("inquiries", t0)
    await metrics.offered("inquiries", t0)
    await metrics.offered("inquiries", t0 + timedelta(minutes=10))
    await metrics.answered("inquiries", 12.0, t0)
    await metrics.answered("inquiries", 40.0, t0 + timedelta(minutes=10))
    await metrics.abandoned("inquiries", 55.0, t0)
    await metrics.handled("inquiries", 100.0, t0)
    await metrics.handled("inquiries", 200.0, t0 + timedelta(minutes=10))
    rows = await metrics.intervals("inquiries", t0 - timedelta(hours=1))
    assert [r["interval_start"] for r in rows] == ["2026-11-29T09:00:00+00:00", "2026-11-29T09:15:00+00:00"]
    assert rows[0]["offered"] == 2 and rows[1]["offered"] == 1
    inquiries, operator = await metrics.figures(["inquiries", "operator"])
    assert (inquiries.offered, inquiries.answered, inquiries.abandoned) == (3, 2, 1)
    assert inquiries.service_level == pytest.approx(1 / 3)
    assert inquiries.average_speed_of_answer == pytest.approx(26.0)
    assert inquiries.average_handle_time == pytest.approx(150.0)
    assert inquiries.longest_wait == pytest.approx(55.0)
    assert operator.offered == 0 and operator.service_level is None
    [later] = await metrics.figures(["inquiries"], since=t0 + timedelta(minutes=10))
    assert later.offered == 1
    from queueing.metrics import prometheus_text

    text = prometheus_text([inquiries, operator], {"waiting": {"inquiries": 4}, "agents": {"paused": 2}}, 20).decode()
    assert 'hotline_queue_offered_total{queue="inquiries"} 3.0' in text
    assert 'hotline_queue_calls_waiting{queue="inquiries"} 4.0' in text
    assert 'hotline_agents{state="paused"} 2.0' in text
    assert 'hotline_queue_average_speed_of_answer_seconds{queue="inquiries"} 26.0' in text


# --- live queue state ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_events_become_agent_states_and_waiting_positions(redis_prefix: str, engine: AsyncEngine) -> None:
    ami = FakeAmi()
    client = connect_redis("redis://127.0.0.1:6379/0")
    live = QueueLiveState(client, redis_prefix)
    calls = LiveCallState(client, prefix=redis_prefix)
    metrics = QueueMetricsStore(engine)
    tracker = QueueEventTracker(ami, live, metrics, calls, queues=QUEUES, wrapup_seconds={"inquiries": 0.3})
    tracker.subscribe(ami)
    try:
        await calls.start_call("100.1", case_number="2611290001", category="inquiry", priority=0)
        await calls.start_call("100.2", case_number="2611290002", category="inquiry", priority=5)
        member = {"Queue": "inquiries", "MemberName": "agent1", "Interface": "PJSIP/agent1", "Status": "1",
                  "Paused": "0", "InCall": "0"}
        await ami.emit(Event="QueueMemberAdded", **member)
        assert (await live.agent("agent1"))["state"] == "available"
        await ami.emit(Event="QueueMemberPause", **{**member, "Paused": "1", "PausedReason": "break"})
        assert (await live.agent("agent1"))["state"] == "paused"
        assert (await live.agent("agent1"))["pause_reason"] == "break"
        await ami.emit(Event="QueueMemberPause", **member)
        await ami.emit(Event="QueueCallerJoin", Queue="inquiries", Position="1", Uniqueid="100.1", Linkedid="100.1",
                       CallerIDNum="0101")
        await ami.emit(Event="QueueCallerJoin", Queue="inquiries", Position="1", Uniqueid="100.2", Linkedid="100.2",
                       CallerIDNum="0102")  # priority caller joins ahead
        waiting = await live.waiting("inquiries")
        assert [(e["caller"], e["position"]) for e in waiting] == [("0102", 1), ("0101", 2)]
        assert waiting[0]["case_number"] == "2611290002" and int(waiting[0]["priority"]) == 5
        await ami.emit(Event="AgentCalled", Queue="inquiries", MemberName="agent1", Linkedid="100.2")
        assert (await live.agent("agent1"))["state"] == "ringing"
        await ami.emit(Event="QueueCallerLeave", Queue="inquiries", Position="1", Uniqueid="100.2")
        await ami.emit(Event="AgentConnect", Queue="inquiries", MemberName="agent1", Linkedid="100.2", HoldTime="7")
        assert (await live.agent("agent1"))["state"] == "on_call"
        assert [(e["caller"], e["position"]) for e in await live.waiting("inquiries")] == [("0101", 1)]
        await ami.emit(Event="AgentComplete", Queue="inquiries", MemberName="agent1", Linkedid="100.2",
                       TalkTime="30")
        assert (await live.agent("agent1"))["state"] == "wrap_up"
        await asyncio.sleep(0.5)
        assert (await live.agent("agent1"))["state"] == "available"
        await ami.emit(Event="QueueCallerAbandon", Queue="inquiries", Uniqueid="100.1", HoldTime="41")
        await ami.emit(Event="QueueCallerLeave", Queue="inquiries", Position="1", Uniqueid="100.1")
        assert await live.waiting("inquiries") == []
        assert await live.counters("inquiries") == {"offered": 2, "answered": 1, "abandoned": 1}
        [fig] = await metrics.figures(["inquiries"])
        assert (fig.offered, fig.answered, fig.abandoned, fig.handled) == (2, 1, 1, 1)
        # Redis loses everything; the rebuild restores it from Asterisk's QueueStatus and the database.
        ami.members[("inquiries", "PJSIP/agent1")] = {"Event": "QueueMember", "Queue": "inquiries",
                                                       "Name": "agent1", "Location": "PJSIP/agent1", "Status": "1",
                                                       "Paused": "1", "PausedReason": "training", "InCall": "0"}
        ami.entries = [{"Event": "QueueEntry", "Queue": "inquiries", "Position": "1", "Uniqueid": "100.3",
                        "CallerIDNum": "0103", "Wait": "12", "Priority": "0"}]
        ami.channels = [{"Uniqueid": "100.3", "Linkedid": "100.3"}]
        keys = [k async for k in client.scan_iter(f"{redis_prefix}:*")]
        await client.delete(*keys)
        assert not await live.marker_present()
        await tracker.rebuild()
        assert await live.marker_present()
        assert (await live.agent("agent1"))["state"] == "paused"
        assert [(e["caller"], e["position"]) for e in await live.waiting("inquiries")] == [("0103", 1)]
        assert (await live.counters("inquiries"))["offered"] == 2  # today's counters from the database
    finally:
        await tracker.aclose()
        await client.aclose()


# --- priority ------------------------------------------------------------------------------------


@pytest.mark.parametrize("category,ivr,open_case,expected", [
    ("inquiry", "0", False, 0),
    ("complaint", "1", False, 1),
    ("inquiry", "0", True, 5),
    ("safety", "1", True, 10),
    ("inquiry", "7", True, 7),  # the IVR's own priority is never lowered
])
async def test_priority_route_sets_queue_prio(category: str, ivr: str, open_case: bool, expected: int) -> None:
    asked: list[tuple[str, str | None]] = []

    async def has_open_case(caller: str, exclude: str | None) -> bool:
        asked.append((caller, exclude))
        return open_case

    live = FakeLive({"linkedid": "200.1", "category": category})
    agi = ChannelAgi({"HOTLINE_PRIORITY": ivr, "HOTLINE_CASE": "2611290005", "CHANNEL(linkedid)": "200.1"}, "0105",
                     uniqueid="200.1")
    await QueueEntryRoute(PriorityPolicy(), has_open_case, live).handle(agi)
    assert agi.variables["QUEUE_PRIO"] == str(expected)
    assert live.call["priority"] == expected
    assert asked == [("0105", "2611290005")]


async def test_priority_route_takes_the_dialplans_url_values_without_asking() -> None:
    asked: list[tuple[str, str | None]] = []

    async def has_open_case(caller: str, exclude: str | None) -> bool:
        asked.append((caller, exclude))
        return False

    class UrlAgi(ChannelAgi):
        params = {"linkedid": "300.1", "priority": "1", "case": "2611290009", "queue": "traffic", "maxwait": ""}

        async def get_variable(self, name: str) -> str | None:
            raise AssertionError(f"asked Asterisk for {name}: the URL had it")

    live = FakeLive({"linkedid": "300.1", "category": "complaint"})
    agi = UrlAgi({}, "0106", uniqueid="200.1")
    await QueueEntryRoute(PriorityPolicy(), has_open_case, live, max_wait={"traffic": 240}).handle(agi)
    assert agi.variables == {"QUEUE_PRIO": "1", "HOTLINE_QUEUE_MAXWAIT": "240"}
    assert asked == [("0106", "2611290009")] and live.call["priority"] == 1


@pytest.mark.parametrize("action,expect_vars", [
    ("hangup", {"HOTLINE_OVERFLOW": ""}),
    ("overflow:operator", {"HOTLINE_OVERFLOW": "operator", "HOTLINE_QUEUE": "operator",
                           "HOTLINE_QUEUE_MAXWAIT": "300"}),
    ("callback", {"HOTLINE_CALLBACK": "accepted", "HOTLINE_OVERFLOW": ""}),
])
async def test_max_wait_action(action: str, expect_vars: dict[str, str]) -> None:
    from queueing import QueueTimeoutRoute

    live = FakeLive({"linkedid": "300.1", "category": "inquiry"})
    live.call["queued_at"] = datetime(2026, 11, 29, 9, tzinfo=UTC)
    callbacks = FakeCallbacks()
    agi = ChannelAgi({"HOTLINE_QUEUE": "inquiries", "HOTLINE_CASE": "2611290007", "QUEUE_PRIO": "5",
                   "CHANNEL(linkedid)": "300.1"}, "0107")
    before = dict(agi.variables)
    await QueueTimeoutRoute({"inquiries": action}, callbacks, live, {"operator": 300}).handle(agi)
    changed = {k: v for k, v in agi.variables.items() if before.get(k) != v}
    assert changed == expect_vars
    if action == "callback":
        [req] = callbacks.requests
        assert req["priority"] == 5 and req["case_number"] == "2611290007"
        assert req["queued_at"] == datetime(2026, 11, 29, 9, tzinfo=UTC)


def test_settings_refuse_an_overflow_to_nowhere() -> None:
    from pydantic import ValidationError

    from config import Settings

    queues = [{"name": n} for n in QUEUES]
    queues[0]["on_max_wait"] = "overflow:complaints"
    with pytest.raises(ValidationError, match="not another queue"):
        Settings(queues=queues)
    queues[0]["on_max_wait"] = "overflow:operator"
    assert Settings(queues=queues).queues[0].on_max_wait == "overflow:operator"


# --- callbacks -----------------------------------------------------------------------------------


async def test_callback_waits_its_turn_is_dialed_once_retried_then_failed(engine: AsyncEngine) -> None:
    from queueing import CallbackDispatcher, CallbackStore

    store = CallbackStore(engine)
    ami, qlive, calls = FakeAmi(), FakeQueueLive(), FakeLive()
    dispatcher = CallbackDispatcher(store, ami, qlive, calls, dial_template="PJSIP/trunk/sip:{number}@10.0.0.1",
                                    max_attempts=2, retry_seconds=0.01)
    dispatcher.subscribe(ami)
    joined = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    cb = await store.request(queue="inquiries", caller_number="0101", case_number="2611290009", linkedid="400.1",
                             priority=0, queued_at=joined)
    again = await store.request(queue="inquiries", caller_number="0101", case_number="2611290009",
                                linkedid="400.1", priority=0, queued_at=joined)
    assert again.id == cb.id  # a second key press is the same request
    with pytest.raises(ValueError, match="cannot be called back"):
        await store.request(queue="inquiries", caller_number="anonymous", case_number=None, linkedid=None,
                            priority=0, queued_at=joined)
    assert await dispatcher.dispatch_once() == []  # no agent available
    qlive.agent_list = [{"name": "agent1", "state": "available", "queues": ["inquiries"]}]
    qlive.put_waiting("inquiries", {"joined_at": (joined - timedelta(seconds=1)).isoformat(), "priority": "0"})
    assert await dispatcher.dispatch_once() == []  # a caller who joined earlier is still waiting: they go first
    qlive.put_waiting("inquiries", {"joined_at": (joined + timedelta(seconds=30)).isoformat(), "priority": "0"})
    assert await dispatcher.dispatch_once() == [cb.id]
    assert await dispatcher.dispatch_once() == []  # claimed: never dialed twice
    await dispatcher.settle(timeout=5)
    [orig] = ami.named("Originate")
    assert orig["Channel"] == "PJSIP/agent1" and "CALLBACK_DIAL=PJSIP/trunk/sip:0101@10.0.0.1" in orig["Variable"]
    await ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb.id), Status="agent_answered")
    assert calls.calls[f"callback-{cb.id}"]["agent"] == "agent1"  # the screen pop shows the case
    await ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb.id), Status="NOANSWER")
    assert (await store.get(cb.id)).status == "pending"
    await asyncio.sleep(0.05)
    assert await dispatcher.dispatch_once() == [cb.id]
    await dispatcher.settle(timeout=5)
    await ami.emit(Event="UserEvent", UserEvent="HotlineCallback", CallbackId=str(cb.id), Status="BUSY")
    failed = await store.get(cb.id)
    assert failed.status == "failed" and failed.attempts == 2 and "BUSY" in failed.last_error
    assert qlive.published[-1][0] == "callback_failed"
    await dispatcher.aclose()


async def test_agent_not_answering_counts_backs_off_and_fails_for_a_supervisor(engine: AsyncEngine) -> None:
    from queueing import CallbackDispatcher, CallbackStore

    now = [datetime(2026, 11, 29, 9, 0, tzinfo=UTC)]
    store = CallbackStore(engine, clock=lambda: now[0])
    ami, qlive = FakeAmi(), FakeQueueLive()
    ami.originate_result = "Failure"  # the agent does not answer
    qlive.agent_list = [{"name": "agent1", "state": "available", "queues": ["inquiries"]},
                        {"name": "agent2", "state": "available", "queues": ["inquiries"]}]
    dispatcher = CallbackDispatcher(store, ami, qlive, FakeLive(), dial_template="PJSIP/trunk/sip:{number}@x",
                                    max_attempts=3, retry_seconds=10, originate_grace_seconds=0,
                                    clock=lambda: now[0])
    dispatcher.subscribe(ami)
    cb = await store.request(queue="inquiries", caller_number="0102", case_number=None, linkedid="500.1",
                             priority=0, queued_at=now[0])
    assert await dispatcher.dispatch_once() == [cb.id]
    await dispatcher.settle(timeout=5)
    back = await store.get(cb.id)
    assert back.status == "pending" and back.attempts == 1 and "agent agent1 did not answer" in back.last_error
    # Not again in a tight loop: the next try waits retry_seconds, then twice that.
    assert await dispatcher.dispatch_once() == []
    now[0] += timedelta(seconds=9)
    assert await dispatcher.dispatch_once() == []
    now[0] += timedelta(seconds=1)
    assert await dispatcher.dispatch_once() == [cb.id]
    await dispatcher.settle(timeout=5)
    # The agent who let it ring out goes last: the second attempt rang agent2.
    assert [o["Channel"] for o in ami.named("Originate")] == ["PJSIP/agent1", "PJSIP/agent2"]
    assert (await store.get(cb.id)).attempts == 2
    now[0] += timedelta(seconds=19)
    assert await dispatcher.dispatch_once() == []
    now[0] += timedelta(seconds=1)
    assert await dispatcher.dispatch_once() == [cb.id]
    await dispatcher.settle(timeout=5)
    failed = await store.get(cb.id)
    assert failed.status == "failed" and failed.attempts == 3
    assert "no agent answered in 3 attempt(s)" in failed.last_error
    assert qlive.published[-1][0] == "callback_failed" and qlive.published[-1][1]["callback"]["status"] == "failed"
    now[0] += timedelta(hours=1)
    assert await dispatcher.dispatch_once() == []  # for a supervisor now: never dialed again
    assert len(ami.named("Originate")) == 3
    await dispatcher.aclose()


async def test_an_attempt_cut_off_before_the_agent_answered_counts_too(engine: AsyncEngine) -> None:
    from queueing import CallbackDispatcher, CallbackStore

    store = CallbackStore(engine)
    ami, qlive = FakeAmi(), FakeQueueLive()
    ami.originate_result = "Failure"  # the agent does not answer
    dispatcher = CallbackDispatcher(store, ami, qlive, FakeLive(), dial_template="PJSIP/trunk/sip:{number}@x",
                                    max_attempts=2, retry_seconds=60, originate_grace_seconds=0)
    cb = await store.request(queue="inquiries", caller_number="0102", case_number=None, linkedid="500.2",
                             priority=0, queued_at=datetime.now(UTC))
    # A bridge claimed the row and died before the agent answered (no channel, no AstDB record), twice.
    assert await store.claim(cb.id, "agent1")
    await dispatcher.recover()
    back = await store.get(cb.id)
    assert back.status == "pending" and back.attempts == 1 and "interrupted" in back.last_error
    assert await store.due() == []  # backed off, not at once
    await store.set_status(cb.id, "pending", retry_in=0)
    assert await store.claim(cb.id, "agent1")
    await dispatcher.recover()
    failed = await store.get(cb.id)
    assert failed.status == "failed" and "no agent answered in 2 attempt(s)" in failed.last_error
    await dispatcher.aclose()


# --- console / API -------------------------------------------------------------------------------


class FakeQueueConsole:
    def __init__(self, agents: AgentService) -> None:
        self.agents = agents

    async def list_agents(self) -> list[dict[str, Any]]:
        return [{**a.to_dict(), "state": "logged_out"} for a in await self.agents.list()]

    async def queues(self) -> list[dict[str, Any]]:
        return [{"queue": "inquiries", "waiting": [], "counters": {}}]

    async def figures(self, since: datetime | None = None) -> list[dict[str, Any]]:
        return [{"queue": "inquiries", "since": since.isoformat() if since else None}]

    async def prometheus(self) -> bytes:
        return b"hotline_queue_offered_total 1.0\n"


@pytest_asyncio.fixture
async def queue_client(engine: AsyncEngine) -> AsyncIterator[tuple[TestClient, Any]]:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("agent1", PASSWORD, Role.AGENT, sip_endpoint="agent1")
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR)
    store = AgentStore(engine, QUEUES)
    await store.add("agent1", {"inquiries": 0})
    await store.add("agent2", {"inquiries": 0})
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    ami = FakeAmi()
    app[QUEUE_CONSOLE] = FakeQueueConsole(AgentService(store, ami, None))
    app[METRICS_TOKEN] = "scrape-token"
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, ami
    await client.close()


async def test_agent_api_roles_and_errors(queue_client: tuple[TestClient, Any]) -> None:
    client, ami = queue_client
    assert (await client.get("/api/agents", headers={"Accept": "application/json"})).status == 401
    csrf = await login(client, "agent1")
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    listed = await (await client.get("/api/agents")).json()
    assert [a["name"] for a in listed["agents"]] == ["agent1", "agent2"]
    assert "sip_secret" not in json.dumps(listed) and "sip_password" not in json.dumps(listed)
    resp = await client.post("/api/agents/agent1/login", headers=headers)
    assert resp.status == 200 and (await resp.json())["agent"]["logged_in"] is True
    resp = await client.post("/api/agents/agent1/pause", json={"reason": "nap"}, headers=headers)
    assert resp.status == 400 and "not one of" in (await resp.json())["error"]
    resp = await client.post("/api/agents/agent1/pause", json={"reason": "break"}, headers=headers)
    assert resp.status == 200 and ami.named("QueuePause")[-1]["Reason"] == "break"
    resp = await client.post("/api/agents/agent2/logout", headers=headers)
    assert resp.status == 403  # an agent changes only their own state
    resp = await client.post("/api/agents/agent1/dance", headers=headers)
    assert resp.status == 404
    assert (await client.get("/api/queues/metrics")).status == 403  # supervisors only


async def test_supervisor_acts_on_any_agent_and_reads_metrics(queue_client: tuple[TestClient, Any]) -> None:
    client, _ = queue_client
    csrf = await login(client, "super1")
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    assert (await client.post("/api/agents/agent2/login", headers=headers)).status == 200
    assert (await client.post("/api/agents/nobody/login", headers=headers)).status == 404
    resp = await client.get("/api/queues/metrics?since=2026-11-29T00:00:00%2B00:00")
    assert resp.status == 200 and (await resp.json())["queues"][0]["since"] == "2026-11-29T00:00:00+00:00"
    assert (await client.get("/api/queues/metrics?since=yesterday")).status == 400
    assert (await client.get("/api/queues")).status == 200


async def test_metrics_endpoint_wants_the_bearer_token(queue_client: tuple[TestClient, Any]) -> None:
    client, _ = queue_client
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    resp = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert resp.status == 200 and "hotline_queue_offered_total" in await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
