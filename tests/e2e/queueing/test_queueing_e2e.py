"""Queueing through the real parts: `hotline run` (Asterisk app_queue, AMI, FastAGI, Redis, SQLite), SIPp citizens
and SIPp agent phones; agents managed with `hotline agents ...` while everything runs."""
from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore, NewCase
from ivr import load_prompt_sets
from queueing import CallRecordStore, QueueMetricsStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports
from tests.support.sipp import AgentPhone, CitizenCall
from tests.support.waiting import until

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
QUEUES = [
    {"name": "complaints", "strategy": "rrmemory", "timeout_seconds": 15, "wrapup_seconds": 3},
    {"name": "inquiries", "strategy": "rrmemory", "timeout_seconds": 15, "wrapup_seconds": 3,
     "announce_frequency_seconds": 8},
    {"name": "operator", "strategy": "ringall", "timeout_seconds": 15, "wrapup_seconds": 0, "max_wait_seconds": 10,
     "on_max_wait": "overflow:inquiries"},
]
AGENT3_PASSWORD = "agent3-secret-pw"
AGENT4_PASSWORD = "agent4-secret-pw"


class QueueProbe:
    """What a user would look at: Redis queue/agent state, pub/sub, the database, the Asterisk log."""

    def __init__(self, hotline: HotlineUnderTest) -> None:
        self.hotline = hotline
        self.settings = hotline.settings()
        self.engine = create_engine_from_url(self.settings.database_url)
        self.cases = CaseStore(self.engine)
        self.records = CallRecordStore(self.engine)
        self.metrics = QueueMetricsStore(self.engine)
        self.redis = aioredis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        self.sip_secrets: dict[str, str] = {}  # of agents added here: `agents add` shows them once
        self.prefix = self.settings.redis_key_prefix

    async def agent(self, name: str) -> dict[str, str]:
        return await self.redis.hgetall(f"{self.prefix}:agent:{name}")

    async def waiting(self, queue: str) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(f"{self.prefix}:queue:{queue}:waiting")
        return sorted((json.loads(v) for v in raw.values()), key=lambda e: e["position"])

    async def until(self, check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        return await until(check, timeout, what)

    async def agents_cli(self, *args: str) -> str:
        code, out, err = await run_hotline_command(["agents", *args], self.hotline.env, timeout=60)
        assert code == 0, f"hotline agents {' '.join(args)} failed: {err[-1500:]}"
        return out

    def asterisk_log(self) -> str:
        path = self.hotline.run_dir / "asterisk" / "log" / "messages"
        return path.read_text(errors="replace") if path.exists() else ""

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-queueing", ports=PORTS, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-e2e-{os.getpid()}",
        "HOTLINE_QUEUES": json.dumps(QUEUES),
    })
    async with running_hotline(h):
        yield h


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(hotline: HotlineUnderTest) -> AsyncIterator[QueueProbe]:
    p = QueueProbe(hotline)
    yield p
    await p.close()


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def configured_agents(probe: QueueProbe) -> AsyncIterator[None]:
    """After each test the agents are as configured again (agent1 and agent2 logged in, not paused; agents a test
    added logged out), so no test depends on what another did; each test logs out whom it must not reach."""
    yield
    configured = {a.name for a in probe.settings.agents}
    for agent in json.loads(await probe.agents_cli("list", "--json")):
        name = agent["name"]
        if name in configured:
            if not agent["logged_in"]:
                await probe.agents_cli("login", name)
            if agent.get("paused"):
                await probe.agents_cli("resume", name)
        elif agent["logged_in"]:
            await probe.agents_cli("logout", name)
    for name in configured:  # logged in, no phone registered
        await probe.until(lambda name=name: _state_is(probe, name, "unreachable"), what=f"{name} back as configured")


async def _nobody_but(probe: QueueProbe, *names: str) -> None:
    """Log out every agent but these (the test's own), and wait until Redis says so."""
    for agent in json.loads(await probe.agents_cli("list", "--json")):
        if agent["logged_in"] and agent["name"] not in names:
            await probe.agents_cli("logout", agent["name"])
            await probe.until(lambda name=agent["name"]: _state_is(probe, name, "logged_out"),
                              what=f"{agent['name']} logged out")


def _fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_configured_agents_are_dynamic_members_logged_in(probe: QueueProbe) -> None:
    """Configured agents are seeded into the database and joined to their queues through AMI (no static members)."""
    conf = (probe.hotline.run_dir / "asterisk" / "etc" / "queues.conf").read_text()
    assert "member =>" not in conf
    listed = json.loads(await probe.agents_cli("list", "--json"))
    by_name = {a["name"]: a for a in listed}
    assert by_name["agent1"]["logged_in"] and by_name["agent2"]["logged_in"]
    # Logged in but no phone registered: app_queue sees the endpoint unavailable.
    state = await probe.until(lambda: probe.agent("agent1"), what="agent1 in Redis")
    assert state["state"] == "unreachable", state
    assert json.loads(state["queues"]) == ["complaints", "inquiries", "operator"]


async def test_only_available_agents_get_calls_paused_gets_none(probe: QueueProbe, tmp_path: Path) -> None:
    """An agent added while running registers at once; paused it gets no call; resumed it gets the waiting one;
    a registered but logged-out agent gets nothing. States flow through Redis pub/sub; metrics are counted."""
    agent1 = probe.settings.agents[0]
    await _nobody_but(probe)  # agent1 gets a phone below but is logged out: it must not be rung
    added = await probe.agents_cli("add", "agent3", "--password", AGENT3_PASSWORD, "--queue", "inquiries:1",
                                   "--display-name", "Agent Three")
    probe.sip_secrets["agent3"] = json.loads(added)["sip_secret"]  # apart from the console password
    await probe.agents_cli("login", "agent3")
    await probe.agents_cli("pause", "agent3", "--reason", "training")
    pubsub = probe.redis.pubsub()
    await pubsub.subscribe(f"{probe.prefix}:queue-events")
    agent3_states: list[str] = []

    async def collect() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                event = json.loads(message["data"])
                if event["type"] == "agent_updated" and event["agent"] == "agent3":
                    state = event["fields"]["state"]
                    if not agent3_states or agent3_states[-1] != state:
                        agent3_states.append(state)

    collector = asyncio.create_task(collect())
    sip_port = probe.settings.sip_port
    try:
        async with AgentPhone("agent3", probe.sip_secrets["agent3"], sip_port, talk_ms=3000, work_dir=tmp_path / "a3",
                              timeout=120) as phone3, \
                AgentPhone(agent1.name, agent1.sip_secret, sip_port, talk_ms=3000, work_dir=tmp_path / "a1",
                           timeout=120) as phone1:
            await probe.until(lambda: _state_is(probe, "agent3", "paused"), what="agent3 paused")
            assert (await probe.agent("agent3"))["pause_reason"] == "training"
            await probe.until(lambda: _state_is(probe, "agent1", "logged_out"), what="agent1 logged out")
            caller = "01055502001"
            call = CitizenCall(sip_port=sip_port, number=probe.settings.hotline_number, from_user=caller,
                               work_dir=tmp_path / "caller", name="paused",
                               steps=[("pause", 1500), ("dtmf", "2"), ("pause", 60000)], hangup="wait",
                               wait_bye_ms=60000, timeout=150)
            call_task = asyncio.create_task(call.run())
            entry = await probe.until(lambda: _waiting_caller(probe, "inquiries", caller), timeout=40,
                                      what="caller waiting in inquiries")
            assert entry["case_number"] and entry["category"] == "inquiry" and entry["position"] == 1
            await asyncio.sleep(5)  # a paused (or logged-out) agent would have been rung by now
            assert await _waiting_caller(probe, "inquiries", caller), "the call left the queue while agent3 was paused"
            assert (await probe.agent("agent3"))["state"] == "paused"
            await probe.agents_cli("resume", "agent3")
            result = await call_task
            assert result.answered and result.hung_up_by == "asterisk", result.describe()
            await phone3.wait_call(timeout=30)
            assert phone3.answered
            await asyncio.sleep(4.5)  # wrap-up (3 s) ends
        assert not phone1.answered, "a logged-out agent's phone was rung"
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await pubsub.aclose()
    case = await probe.until(lambda: _case_of(probe, caller, "open"), what="case open")
    record = await probe.records.get(case.source_ref)
    assert record is not None and record.agent == "agent3" and record.queue == "inquiries"
    for expected in ("paused", "available", "on_call", "wrap_up"):
        assert expected in agent3_states, agent3_states
    assert agent3_states.index("paused") < agent3_states.index("available") < agent3_states.index("on_call") \
        < agent3_states.index("wrap_up"), agent3_states
    assert agent3_states[-1] in ("available", "unreachable", "logged_out"), agent3_states
    assert not await _waiting_caller(probe, "inquiries", caller)
    counters = await probe.redis.hgetall(f"{probe.prefix}:queue:inquiries:counters")
    assert int(counters["offered"]) >= 1 and int(counters["answered"]) >= 1
    figures = await probe.until(lambda: _figures_with(probe, "handled"), timeout=5, what="handled in metrics")
    assert figures.offered >= 1 and figures.answered >= 1 and figures.handled >= 1
    assert figures.average_speed_of_answer is not None and figures.average_speed_of_answer >= 5
    assert figures.average_handle_time is not None and figures.average_handle_time >= 2
    status, text = await asyncio.get_running_loop().run_in_executor(None, _fetch, probe.hotline.http_url + "/metrics")
    assert status == 200, text
    assert 'hotline_queue_answered_total{queue="inquiries"}' in text
    assert 'hotline_agents{state=' in text


async def test_priority_caller_overtakes_position_announced_and_abandon_counted(probe: QueueProbe,
                                                                                tmp_path: Path) -> None:
    """A repeat caller with an open case joins behind a waiting caller but is answered first; the waiting caller
    hears their position; when they give up, the abandon is counted."""
    await _nobody_but(probe)  # only agent4, logged in below, takes a call here
    added = await probe.agents_cli("add", "agent4", "--password", AGENT4_PASSWORD, "--queue", "inquiries:1",
                                   "--display-name", "Agent Four")
    probe.sip_secrets["agent4"] = json.loads(added)["sip_secret"]  # apart from the console password
    repeat = "01055502003"
    earlier = await probe.cases.open(NewCase(caller_number=repeat, category="inquiry", source_ref=None,
                                             menu_path=["2"]), actor="ivr")
    await probe.cases.end_call(earlier.case_number, "completed")  # the earlier call was heard: the case is open
    log_start = len(probe.asterisk_log())
    sip_port = probe.settings.sip_port
    first = "01055502002"
    call_a = CitizenCall(sip_port=sip_port, number=probe.settings.hotline_number, from_user=first,
                         work_dir=tmp_path / "a", name="first", steps=[("pause", 1500), ("dtmf", "2"),
                                                                        ("pause", 80000)],
                         hangup="caller", timeout=150)
    task_a = asyncio.create_task(call_a.run())
    await probe.until(lambda: _waiting_caller(probe, "inquiries", first), timeout=40, what="first caller waiting")
    call_b = CitizenCall(sip_port=sip_port, number=probe.settings.hotline_number, from_user=repeat,
                         work_dir=tmp_path / "b", name="repeat", steps=[("pause", 1500), ("dtmf", "2"),
                                                                         ("pause", 60000)],
                         hangup="wait", wait_bye_ms=60000, timeout=150)
    task_b = asyncio.create_task(call_b.run())
    entry_b = await probe.until(lambda: _waiting_caller(probe, "inquiries", repeat), timeout=40,
                                what="repeat caller waiting")
    assert int(entry_b["priority"]) == 5 and entry_b["position"] == 1, entry_b
    entry_a = await _waiting_caller(probe, "inquiries", first)
    assert entry_a and entry_a["position"] == 2, entry_a
    # Within one announcement interval (8 s) the earlier caller hears that they are second now.
    texts = load_prompt_sets(probe.settings.prompts_file)[probe.settings.language].texts
    await probe.until(lambda: _told(probe, entry_a["channel"], texts["queue_position"].format(position=2)),
                      timeout=12, what="the earlier caller told they are second")
    # agent4 talks long enough that its logout (a CLI process, slow on a loaded machine) lands before it is free
    # again; otherwise the earlier caller would rightly be handed to it after the wrap-up.
    async with AgentPhone("agent4", probe.sip_secrets["agent4"], sip_port, talk_ms=12000, work_dir=tmp_path / "a4",
                          timeout=90) as phone4:
        await probe.agents_cli("login", "agent4")
        await probe.until(lambda: _case_of(probe, repeat, "in_progress"), timeout=30, what="repeat caller answered")
        await probe.agents_cli("logout", "agent4")  # one call for this phone; the first caller keeps waiting
        assert await _waiting_caller(probe, "inquiries", first), "the earlier, lower-priority caller was answered"
        result_b = await task_b
        assert result_b.answered and result_b.hung_up_by == "asterisk", result_b.describe()
        await phone4.wait_call(timeout=30)
    result_a = await task_a
    assert result_a.answered and result_a.hung_up_by == "caller", result_a.describe()
    case_a = await probe.until(lambda: _case_of(probe, first, "abandoned_in_queue"), what="first caller abandoned")
    record_a = await probe.records.get(case_a.source_ref)
    assert record_a.agent is None and record_a.outcome == "abandoned_in_queue"
    figures = await probe.until(lambda: _figures_with(probe, "abandoned"), timeout=5, what="abandon in metrics")
    assert figures.abandoned >= 1 and figures.average_abandon_wait and figures.average_abandon_wait > 10
    assert figures.longest_wait >= figures.average_abandon_wait
    counters = await probe.redis.hgetall(f"{probe.prefix}:queue:inquiries:counters")
    assert int(counters["abandoned"]) >= 1
    log = probe.asterisk_log()[log_start:]
    # The waiting caller was told their position: next in line at first, second once the repeat caller went ahead
    # (the bridge whispers it over the hold music: queueing/wait_announcements.py).
    assert f"Spying on channel {entry_a['channel']}" in log, log[-3000:]
    assert await _told(probe, entry_a["channel"], texts["queue_position_next"])


async def _told(probe: QueueProbe, channel: str, sentence_start: str) -> bool:
    """Whether the bridge whispered to this caller a sentence starting so (its log names each announcement)."""
    said = re.findall(rf"queue announcement to {re.escape(channel)}: '([^']*)'",
                      probe.hotline.log_path.read_text(errors="replace"))
    return any(s.startswith(sentence_start) for s in said)


async def test_max_wait_overflows_to_another_queue(probe: QueueProbe, tmp_path: Path) -> None:
    """Nobody answers the operator queue within its 10 s maximum: the caller moves on to the inquiries queue."""
    await _nobody_but(probe)
    listed = json.loads(await probe.agents_cli("list", "--json"))
    assert not any(a["logged_in"] and "operator" in a["skills"] for a in listed), listed
    caller = "01055502004"
    call = CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number, from_user=caller,
                       work_dir=tmp_path, name="overflow", steps=[("pause", 1500), ("dtmf", "0"), ("pause", 45000)],
                       hangup="caller", timeout=90)
    task = asyncio.create_task(call.run())
    try:
        first = await probe.until(lambda: _waiting_caller(probe, "operator", caller), timeout=40,
                                  what="caller waiting for an operator")
        moved = await probe.until(lambda: _waiting_caller(probe, "inquiries", caller), timeout=20,
                                  what="caller moved to inquiries")
        assert moved["linkedid"] == first["linkedid"] and moved["case_number"] == first["case_number"]
        assert not await _waiting_caller(probe, "operator", caller)
        joined = datetime.fromisoformat(moved["joined_at"]) - datetime.fromisoformat(first["joined_at"])
        assert 9 <= joined.total_seconds() <= 16, joined
        await asyncio.sleep(12)  # past the operator queue's 10 s: in inquiries its own maximum (600 s) applies
    finally:
        result = await task
    assert result.answered and result.hung_up_by == "caller", result.describe()


async def _figures_with(probe: QueueProbe, field: str) -> Any:
    """The inquiries figures once `field` is counted (the bridge writes metrics once a second)."""
    [figures] = await probe.metrics.figures(["inquiries"])
    return figures if getattr(figures, field) >= 1 else None


async def _state_is(probe: QueueProbe, name: str, state: str) -> bool:
    return (await probe.agent(name)).get("state") == state


async def _waiting_caller(probe: QueueProbe, queue: str, caller: str) -> dict[str, Any] | None:
    return next((e for e in await probe.waiting(queue) if e.get("caller") == caller), None)


async def _case_of(probe: QueueProbe, caller: str, status: str) -> Any:
    for c in await probe.cases.list_recent(limit=100):
        if c.caller_number == caller and c.status == status:
            return c
    return None
