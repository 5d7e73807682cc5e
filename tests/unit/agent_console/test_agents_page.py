"""/agents page: queue state and controls per role (agent: own only; supervisor/admin: everyone; department: refused),
state labels and enabled buttons per state, API errors (Asterisk away) as one line. Real SQLite, fake AMI/live state."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import create_console_app
from agent_console.display import agent_actions, agent_fields
from agent_console.queue_views import QUEUE_CONSOLE
from identity import AccountStore, Role
from queueing import AgentService, AgentStore, QueueConsole
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth, login
from tests.support.fake_ami import FakeAmi
from tests.support.flows import QUEUES
from tests.support.live import FakeLive, FakeQueueLive
from tests.support.ports import module_ports
from tests.support.records import FakeRecords

PORTS = module_ports(__name__)
UNIT_PORT = PORTS.spare(0)  # the aiohttp test servers of this module
OTHER_UNIT_PORT = PORTS.spare(1)


class Controls(HTMLParser):
    """What a user sees of the controls: per agent (data-agent), which buttons exist and which are enabled."""

    def __init__(self) -> None:
        super().__init__()
        self.agent_stack: list[str] = []
        self.buttons: dict[str, dict[str, bool]] = {}  # agent -> action -> enabled
        self.reason_options: list[str] = []
        self._depth: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "template":
            self._depth.append("template")
        if "template" in self._depth:
            return
        if a.get("data-agent") is not None and "agent" in (a.get("class") or "").split():
            self.agent_stack.append(a["data-agent"] or "")
        if tag == "button" and a.get("data-action") and self.agent_stack:
            self.buttons.setdefault(self.agent_stack[-1], {})[a["data-action"] or ""] = "disabled" not in a
        if tag == "option" and a.get("value"):
            self.reason_options.append(a["value"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "template" and self._depth:
            self._depth.pop()


def controls(html: str) -> Controls:
    parser = Controls()
    parser.feed(html)
    return parser


@dataclass
class Setup:
    client: TestClient
    ami: FakeAmi
    live: FakeQueueLive
    store: AgentStore


@pytest_asyncio.fixture
async def setup(engine: AsyncEngine) -> AsyncIterator[Setup]:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("agent1", PASSWORD, Role.AGENT, display_name="Kim Minji", sip_endpoint="agent1")
    await accounts.create("newbie", PASSWORD, Role.AGENT)  # no queue agent of that name
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR)
    await accounts.create("admin1", PASSWORD, Role.ADMIN)
    await accounts.create("roads", PASSWORD, Role.DEPARTMENT)
    store = AgentStore(engine, QUEUES)
    await store.add("agent1", {"complaints": 0, "inquiries": 0}, display_name="Kim Minji")
    await store.add("agent2", {"inquiries": 1}, display_name="Lee Jun")
    ami = FakeAmi()
    live = FakeQueueLive(members_of=ami)
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    app[QUEUE_CONSOLE] = QueueConsole(AgentService(store, ami, None),
                                      live, metrics=None, queues=QUEUES)  # type: ignore[arg-type]
    client = TestClient(TestServer(app, port=UNIT_PORT))
    await client.start_server()
    yield Setup(client, ami, live, store)
    await client.close()


async def test_agent_sees_own_state_and_controls_only(setup: Setup) -> None:
    client = setup.client
    await login(client, "agent1")
    console = await (await client.get("/")).text()
    assert 'href="/agents"' in console  # the console page links to it
    resp = await client.get("/agents")
    assert resp.status == 200
    html = await resp.text()
    assert "Your queue state" in html and "Kim Minji" in html and "complaints, inquiries" in html
    assert 'id="all-agents"' not in html and "agent2" not in html  # no other agent, no controls for them
    seen = controls(html)
    assert seen.buttons == {"agent1": {"login": True, "pause": False, "resume": False, "logout": False}}
    assert seen.reason_options == ["break", "training", "case_work", "meeting"]
    assert "logged out" in html

    # Logged in and paused (as Asterisk reports it): Resume and Log out only, the reason shown.
    await setup.store.set_state("agent1", logged_in=True, paused=True, pause_reason="case_work")
    setup.live.states["agent1"] = {"state": "paused", "pause_reason": "case_work", "since": "1764400000.5"}
    html = await (await client.get("/agents")).text()
    assert "paused (case work)" in html
    assert controls(html).buttons["agent1"] == {"login": False, "pause": False, "resume": True, "logout": True}


async def test_supervisor_and_admin_see_every_agent_with_controls(setup: Setup) -> None:
    setup.live.states["agent2"] = {"state": "on_call", "since": "1764400000", "linkedid": "1764399990.3"}
    await setup.store.set_state("agent2", logged_in=True, paused=False, pause_reason=None)
    client = setup.client
    for username in ("super1", "admin1"):
        client.session.cookie_jar.clear()
        await login(client, username)
        assert 'href="/agents"' in await (await client.get("/")).text()
        html = await (await client.get("/agents")).text()
        assert 'id="all-agents"' in html and "Lee Jun" in html and "on call" in html
        assert 'id="my-queue-state"' not in html  # not an agent themselves
        buttons = controls(html).buttons
        assert buttons == {
            "agent1": {"login": True, "pause": False, "resume": False, "logout": False},
            "agent2": {"login": False, "pause": True, "resume": False, "logout": True},
        }


async def test_department_is_refused_and_not_linked(setup: Setup) -> None:
    client = setup.client
    await login(client, "roads")
    assert "/agents" not in await (await client.get("/")).text()
    resp = await client.get("/agents", allow_redirects=False)
    assert resp.status == 403 and "role department may not use this" in await resp.text()
    client.session.cookie_jar.clear()
    resp = await client.get("/agents", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")


async def test_agent_account_without_a_queue_agent_is_told_so(setup: Setup) -> None:
    await login(setup.client, "newbie")
    html = await (await setup.client.get("/agents")).text()
    assert "No queue agent named newbie" in html
    assert controls(html).buttons == {}


async def test_asterisk_away_is_one_clear_line_and_the_wish_is_kept(setup: Setup) -> None:
    client = setup.client
    csrf = await login(client, "agent1")
    setup.ami.away = True
    resp = await client.post("/api/agents/agent1/login", headers={"X-CSRF-Token": csrf})
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error == ("saved, but Asterisk did not apply it (AMI at 127.0.0.1:5038: not connected); "
                     "it is applied again when the hotline reconnects to Asterisk")
    agent = await setup.store.get("agent1")
    assert agent.logged_in  # re-applied by AgentService.sync() on the next AMI connect
    # The page says the log-in has not reached Asterisk and still offers Log in to try again.
    html = await (await client.get("/agents")).text()
    assert "log-in not applied in Asterisk yet" in html
    assert controls(html).buttons["agent1"] == {"login": True, "pause": True, "resume": False, "logout": True}
    setup.ami.away = False
    resp = await client.post("/api/agents/agent1/pause", json={"reason": "break"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200 and setup.ami.named("QueuePause")[-1]["Reason"] == "break"


async def test_forms_work_without_javascript(setup: Setup) -> None:
    client = setup.client
    csrf = await login(client, "agent1")
    resp = await client.post("/api/agents/agent1/login", data={"csrf_token": csrf},
                             headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/agents"
    resp = await client.post("/api/agents/agent1/pause", data={"csrf_token": csrf, "reason": "training"},
                             headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 303
    assert (await setup.store.get("agent1")).pause_reason == "training"
    # Without the token the form post is refused before anything changes.
    resp = await client.post("/api/agents/agent1/logout", data={"reason": "x"}, headers={"Accept": "text/html"},
                             allow_redirects=False)
    assert resp.status == 403 and (await setup.store.get("agent1")).logged_in


async def test_page_without_queueing_says_so(engine: AsyncEngine) -> None:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR)
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    async with TestClient(TestServer(app, port=OTHER_UNIT_PORT)) as client:
        await login(client, "super1")
        resp = await client.get("/agents")
        assert resp.status == 200
        assert "Queue agents are not available in this console." in await resp.text()


@pytest.mark.parametrize(("db", "live", "label", "enabled"), [
    ({"logged_in": False}, {}, "logged out", {"login"}),
    ({"logged_in": True}, {"state": "available"}, "available", {"pause", "logout"}),
    ({"logged_in": True}, {"state": "ringing"}, "ringing", {"pause", "logout"}),
    ({"logged_in": True}, {"state": "on_call"}, "on call", {"pause", "logout"}),
    ({"logged_in": True}, {"state": "wrap_up"}, "wrap-up", {"pause", "logout"}),
    ({"logged_in": True}, {"state": "unreachable"}, "unreachable", {"pause", "logout"}),
    ({"logged_in": True, "paused": True, "pause_reason": "break"}, {"state": "paused", "live_pause_reason": "break"},
     "paused (break)", {"resume", "logout"}),
    # Asterisk still has a member the database logged out (the log-out did not reach it): offer it again.
    ({"logged_in": False}, {"state": "available"}, "available", {"login", "logout"}),
])
def test_state_labels_and_enabled_controls(db: dict[str, Any], live: dict[str, Any], label: str,
                                           enabled: set[str]) -> None:
    agent = {"name": "agent1", "skills": {"inquiries": 0}, "logged_in": False, "paused": False,
             "pause_reason": None, "state": "logged_out", **db, **live}
    assert agent_fields(agent)["state"] == label
    assert agent_actions(agent) == enabled


async def test_agent_names_are_escaped_on_the_page(setup: Setup) -> None:
    script = "<script>alert('x')</script>"
    await setup.store.add("agent3", {"inquiries": 0}, display_name=script)
    setup.live.states["agent3"] = {"state": "paused", "pause_reason": script}
    await login(setup.client, "super1")
    html = await (await setup.client.get("/agents")).text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
