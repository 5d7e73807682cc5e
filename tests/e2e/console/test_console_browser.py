"""Agent console in real headless Chromium: log in, watch a live call's transcript arrive, add a case note."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from agent_console import create_console_app
from identity import AccountStore, Role
from tests.support.browser import CHROMEDRIVER, CHROMIUM, browser
from tests.support.cases import FakeCases, sample_case
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth
from tests.support.live import FakeLive, live_call
from tests.support.records import FakeRecords, call_record

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/tmp/console.png")
TRANSCRIPT = "There is a pothole in front of Seoul City Hall, please send someone."
NOTE = "Called the roads team, crew dispatched"


def _drive(base_url: str, add_call: Any, profile_dir: str) -> None:
    """The browser part (blocking selenium calls, run in a worker thread while the server runs on the loop)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(profile_dir)
    try:
        wait = WebDriverWait(driver, 10)
        driver.get(base_url + "/")
        wait.until(ec.url_contains("/login"))
        driver.find_element(By.ID, "username").send_keys("agent1")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "live-calls")))
        assert "No call connected to agent1" in driver.find_element(By.ID, "screen-pop").text
        assert TRANSCRIPT not in driver.find_element(By.ID, "live-calls").text

        # The call reaches the agent after the page loaded: only the 2 s refresh can show it.
        add_call()
        wait.until(ec.text_to_be_present_in_element((By.ID, "live-calls"), TRANSCRIPT))
        wait.until(ec.text_to_be_present_in_element((By.ID, "screen-pop"), TRANSCRIPT))
        pop = driver.find_element(By.ID, "screen-pop").text
        assert "01055512345" in pop and "complaint › 3" in pop and "2611290001" in pop

        row = driver.find_element(By.CSS_SELECTOR, '#case-rows tr[data-case-number="2611290001"]')
        box = row.find_element(By.CSS_SELECTOR, "input[name=note]")
        box.send_keys(NOTE)
        row.find_element(By.CSS_SELECTOR, "form.note-form button").click()
        wait.until(ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, '#case-rows tr[data-case-number="2611290001"] pre.notes'), NOTE
        ))
        assert "Saved" in row.text and box.get_attribute("value") == ""
        # The screen pop shows the same case, so its notes follow too.
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#screen-pop pre.notes"), NOTE))

        # Persisted, not just painted: a fresh page load renders it server-side.
        driver.refresh()
        wait.until(ec.text_to_be_present_in_element((By.ID, "case-rows"), NOTE))
        wait.until(ec.text_to_be_present_in_element((By.ID, "live-status"), "updated"))
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium")
async def test_agent_console_in_chromium(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create_schema()
    await accounts.create("agent1", PASSWORD, Role.AGENT, display_name="Kim Minji", sip_endpoint="agent1")
    cases = FakeCases(
        sample_case("2611290001", caller_number="01055512345", transcript=TRANSCRIPT, menu_path=["complaint", "3"],
                    agent="agent1", priority=1),
        sample_case("2611290002", caller_number="0312223333", category="inquiry", status="open",
                    transcript="When is the bulky waste collection in Mapo-gu?", menu_path=["inquiry"]),
    )
    live = FakeLive(
        live_call(linkedid="1700000000.7", caller_number="0215551234", state="queued", agent=None,
                  case_number="2611290003", transcript=None, ivr_path=["operator"], category="operator"),
    )
    records = FakeRecords(call_record("1699999999.1", case_number="2611290002", agent="agent1"))
    app = create_console_app(
        cases=cases, live_calls=live, call_records=records, accounts=accounts, health=FakeHealth(),
        session_key=os.urandom(32),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    loop = asyncio.get_running_loop()

    def add_call() -> None:
        # The fake is read on the event loop: change it there, not from the selenium thread.
        call = live_call(caller_number="01055512345", transcript=TRANSCRIPT, ivr_path=["complaint", "3"],
                         agent="PJSIP/agent1-00000031", case_number="2611290001")
        loop.call_soon_threadsafe(live.add, call)

    profile = tempfile.mkdtemp(prefix="console-chromium-", dir=tmp_path)
    try:
        await asyncio.wait_for(asyncio.to_thread(_drive, f"http://{host}:{port}", add_call, profile), timeout=60)
    finally:
        await runner.cleanup()
        await engine.dispose()
        shutil.rmtree(profile, ignore_errors=True)
    assert cases.cases["2611290001"].notes.endswith(f"agent1] {NOTE}")
    assert SCREENSHOT.stat().st_size > 10_000
