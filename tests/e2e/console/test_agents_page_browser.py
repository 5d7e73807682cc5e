"""The supervisor's /agents table in real headless Chromium, with fakes for AMI and the live state: log an agent
in, a pause refused while Asterisk is away (one clear line), resume, and a call reaching the agent."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import create_console_app
from agent_console.queue_views import QUEUE_CONSOLE
from identity import AccountStore, Role
from queueing import AgentService, AgentStore, QueueConsole
from tests.support.browser import CHROMEDRIVER, CHROMIUM, browser
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth
from tests.support.fake_ami import FakeAmi
from tests.support.flows import QUEUES
from tests.support.live import FakeLive, FakeQueueLive
from tests.support.ports import module_ports
from tests.support.records import FakeRecords

pytestmark = pytest.mark.browser

BROWSER_PORT = module_ports(__name__).spare(0)
SUPERVISOR_SCREENSHOT = Path("/tmp/agents-supervisor.png")


def _drive_supervisor(base_url: str, ami: FakeAmi, live: FakeQueueLive, profile_dir: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser(profile_dir)

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


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium")
async def test_supervisor_table_in_chromium(engine: AsyncEngine, tmp_path: Path) -> None:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR, display_name="Park Supervisor")
    store = AgentStore(engine, QUEUES)
    await store.add("agent1", {"complaints": 0}, display_name="Kim Minji")
    await store.add("agent2", {"inquiries": 1, "operator": 0}, display_name="Lee Jun")
    ami = FakeAmi()
    live = FakeQueueLive(members_of=ami)
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
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
