"""/agents page: queue state and controls per role (agent: own only; supervisor/admin: everyone; department: refused),
state labels and enabled buttons per state, API errors (Asterisk away) as one line. Real SQLite, fake AMI/live state."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import create_console_app
from identity import AccountStore, Role
from agent_console.display import agent_actions, agent_fields
from agent_console.queue_views import QUEUE_CONSOLE
from storage import create_engine_from_url, migrate_database
from queueing import AgentService, AgentStore, QueueConsole
from telephony import AmiNotConnected
from tests.unit.agent_console.test_console import CHEAP_HASHER, PASSWORD, FakeCases, FakeHealth, FakeLiveCalls, FakeRecords, login
from tests.e2e.console.test_console_browser import CHROMEDRIVER, CHROMIUM
from tests.unit.queueing.test_queueing_units import QUEUES, AmiRefused, FakeAmi


UNIT_PORT = 44401  # the aiohttp test servers of this module (44000-44499 is this module's range)
OTHER_UNIT_PORT = 44402
BROWSER_PORT = 44090
SUPERVISOR_SCREENSHOT = Path("/tmp/agents-supervisor.png")


class AmiAway(AmiNotConnected):
    """AMI not connected, as the fake Asterisk says it."""


class SwitchableAmi(FakeAmi):
    """FakeAmi that can lose its connection."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False

    async def action(self, fields: dict[str, Any], **kwargs: Any) -> Any:
        if self.away:
            raise AmiAway("AMI at 127.0.0.1:5038: not connected")
        answer = await super().action(fields, **kwargs)
        if fields["Action"] == "QueuePause":
            for (_queue, interface), member in self.members.items():
                if interface == fields["Interface"]:
                    member["Paused"] = "1" if fields["Paused"] == "true" else "0"
                    member["PausedReason"] = fields.get("Reason", "")
        return answer


class FakeLive:
    """The live-state side of QueueConsole: agents' states as the tracker would write them from app_queue's
    members (available or paused), or as set in `states` (e.g. on a call)."""

    def __init__(self, ami: SwitchableAmi) -> None:
        self.ami = ami
        self.states: dict[str, dict[str, Any]] = {}

    async def agents(self) -> list[dict[str, Any]]:
        derived: dict[str, dict[str, Any]] = {}
        for member in self.ami.members.values():
            paused = member["Paused"] == "1"
            derived[member["Name"]] = {"state": "paused" if paused else "available",
                                       "pause_reason": member.get("PausedReason") if paused else None}
        derived.update(self.states)
        return [{"name": n, **s} for n, s in sorted(derived.items())]


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
    ami: SwitchableAmi
    live: FakeLive
    store: AgentStore


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    eng = create_engine_from_url(url)
    yield eng
    await eng.dispose()


@pytest_asyncio.fixture
async def setup(engine: AsyncEngine) -> AsyncIterator[Setup]:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("agent1", PASSWORD, Role.AGENT, display_name="Kim Minji", sip_endpoint="agent1")
    await accounts.create("newbie", PASSWORD, Role.AGENT)  # no queue agent of that name
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR)
    await accounts.create("admin1", PASSWORD, Role.ADMIN)
    await accounts.create("roads", PASSWORD, Role.DEPARTMENT)
    store = AgentStore(engine, QUEUES)
    await store.add("agent1", "long-enough-pw", {"complaints": 0, "inquiries": 0}, display_name="Kim Minji")
    await store.add("agent2", "long-enough-pw", {"inquiries": 1}, display_name="Lee Jun")
    ami = SwitchableAmi()
    live = FakeLive(ami)
    app = create_console_app(cases=FakeCases(), live_calls=FakeLiveCalls([]), call_records=FakeRecords(),
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
    app = create_console_app(cases=FakeCases(), live_calls=FakeLiveCalls([]), call_records=FakeRecords(),
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


# --- the supervisor's table in headless Chromium (fakes for AMI and live state) -------------------------------


def _drive_supervisor(base_url: str, ami: SwitchableAmi, live: FakeLive, profile_dir: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.e2e.console.test_console_browser import _browser

    driver = _browser(profile_dir)

    def row(name: str) -> Any:
        return driver.find_element(By.CSS_SELECTOR, f'#agent-rows tr[data-agent="{name}"]')

    def enabled(name: str) -> set[str]:
        return {b.get_attribute("data-action") for b in row(name).find_elements(By.CSS_SELECTOR, "button[data-action]")
                if b.is_enabled()}

    def state_of(name: str) -> tuple[Any, str]:
        return (By.CSS_SELECTOR, f'#agent-rows tr[data-agent="{name}"] [data-agent-field=state]')

    try:
        wait = WebDriverWait(driver, 10)
        driver.get(base_url + "/")
        wait.until(ec.url_contains("/login"))
        driver.find_element(By.ID, "username").send_keys("super1")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "agents-link"))).click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "agents-status"), "updated"))
        assert enabled("agent1") == {"login"} and enabled("agent2") == {"login"}
        assert "Lee Jun" in row("agent2").text and "inquiries" in row("agent2").text

        # The supervisor logs agent2 in: app_queue gets the member, the row turns available.
        row("agent2").find_element(By.CSS_SELECTOR, 'button[data-action="login"]').click()
        wait.until(ec.text_to_be_present_in_element(state_of("agent2"), "available"))
        wait.until(lambda d: enabled("agent2") == {"pause", "logout"})
        assert enabled("agent1") == {"login"}

        # Asterisk goes away: the pause is refused with one clear line; the row says it is not applied.
        ami.away = True
        Select(row("agent2").find_element(By.CSS_SELECTOR, "select[name=reason]")).select_by_value("meeting")
        row("agent2").find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
        wait.until(ec.visibility_of_element_located((By.ID, "agents-error")))
        error = driver.find_element(By.ID, "agents-error").text
        assert error == ("Pause agent2: saved, but Asterisk did not apply it (AMI at 127.0.0.1:5038: not connected); "
                         "it is applied again when the hotline reconnects to Asterisk"), error
        wait.until(ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, '#agent-rows tr[data-agent="agent2"] .pending'), "pause not applied in Asterisk yet"))

        # Back again: Resume goes through and the error line goes away.
        ami.away = False
        wait.until(lambda d: enabled("agent2") == {"resume", "logout"})
        row("agent2").find_element(By.CSS_SELECTOR, 'button[data-action="resume"]').click()
        wait.until(ec.invisibility_of_element_located((By.ID, "agents-error")))
        wait.until(lambda d: enabled("agent2") == {"pause", "logout"})

        # A call reaches agent2 (the tracker's live state changes): the row follows without a reload.
        live.states["agent2"] = {"state": "on_call", "since": str(time.time()), "linkedid": "1764399990.3"}
        wait.until(ec.text_to_be_present_in_element(state_of("agent2"), "on call"))
        Select(row("agent2").find_element(By.CSS_SELECTOR, "select[name=reason]")).select_by_value("case_work")
        row("agent2").find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
        del live.states["agent2"]  # the call ended; app_queue reports the pause
        wait.until(ec.text_to_be_present_in_element(state_of("agent2"), "paused (case work)"))
        assert "case work" in row("agent2").find_element(By.CSS_SELECTOR, '[data-agent-field="pause_reason"]').text
        driver.save_screenshot(str(SUPERVISOR_SCREENSHOT))
    finally:
        driver.quit()


@pytest.mark.browser
@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium")
async def test_supervisor_table_in_chromium(engine: AsyncEngine, tmp_path: Path) -> None:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR, display_name="Park Supervisor")
    store = AgentStore(engine, QUEUES)
    await store.add("agent1", "long-enough-pw", {"complaints": 0}, display_name="Kim Minji")
    await store.add("agent2", "long-enough-pw", {"inquiries": 1, "operator": 0}, display_name="Lee Jun")
    ami = SwitchableAmi()
    live = FakeLive(ami)
    app = create_console_app(cases=FakeCases(), live_calls=FakeLiveCalls([]), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    app[QUEUE_CONSOLE] = QueueConsole(AgentService(store, ami, None),
                                      live, metrics=None, queues=QUEUES)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", BROWSER_PORT)
    await site.start()
    profile = tempfile.mkdtemp(prefix="agents-super-chromium-", dir=tmp_path)
    try:
        await asyncio.wait_for(asyncio.to_thread(_drive_supervisor, f"http://127.0.0.1:{BROWSER_PORT}", ami, live,
                                                 profile), timeout=90)
    finally:
        await runner.cleanup()
        shutil.rmtree(profile, ignore_errors=True)
    agent2 = await store.get("agent2")
    assert agent2.logged_in and agent2.paused and agent2.pause_reason == "case_work"
    assert ami.members[("inquiries", "PJSIP/agent2")]["Paused"] == "1"
    assert SUPERVISOR_SCREENSHOT.stat().st_size > 10_000


async def test_agent_names_are_escaped_on_the_page(setup: Setup) -> None:
    script = "<script>alert('x')</script>"
    await setup.store.add("agent3", "long-enough-pw", {"inquiries": 0}, display_name=script)
    setup.live.states["agent3"] = {"state": "paused", "pause_reason": script}
    await login(setup.client, "super1")
    html = await (await setup.client.get("/agents")).text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
