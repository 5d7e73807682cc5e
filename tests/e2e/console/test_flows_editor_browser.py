"""The flow editor in real headless Chromium: inline validation errors, the diagram, publish, roll back."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent_console import create_console_app
from agent_console.flow_views import FLOW_ADMIN
from identity import AccountStore, Role
from ivr import FlowValidator
from ivr.flow_admin import FlowAdmin
from ivr.flow_store import FlowStore
from storage import create_engine_from_url, migrate_database
from tests.support.browser import CHROMEDRIVER, CHROMIUM, browser
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth
from tests.support.flows import DEFAULT_FLOW, QUEUES, LangPrompts, vocabulary_for
from tests.support.live import FakeLive
from tests.support.ports import module_ports
from tests.support.records import FakeRecords

pytestmark = pytest.mark.browser

PORT = module_ports(__name__).spare(0)
SCREENSHOT = Path("/tmp/flow-editor.png")


def _set_editor(driver: Any, text: str) -> None:
    driver.execute_script(
        "const e = document.getElementById('flow-yaml'); e.value = arguments[0];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));", text)


def _drive(base_url: str, profile_dir: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shipped = DEFAULT_FLOW.read_text(encoding="utf-8")
    driver = browser(profile_dir)
    try:
        wait = WebDriverWait(driver, 15)
        driver.get(base_url + "/flows")
        wait.until(ec.url_contains("/login"))
        driver.find_element(By.ID, "username").send_keys("admin1")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "flow-yaml")))
        # The shipped flow is loaded, validated on load, and drawn.
        assert "main_menu:" in driver.find_element(By.ID, "flow-yaml").get_attribute("value")
        wait.until(ec.text_to_be_present_in_element((By.ID, "validation"), "Valid: ready to publish."))
        assert "falls back to DTMF" in driver.find_element(By.ID, "validation").text
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#diagram svg g[data-node="main_menu"]')))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#diagram svg g.node")) == 12
        assert driver.find_element(By.ID, "live-version").text == "0"

        # An edit that breaks a branch: the error shows inline, naming the node, and the node turns red.
        broken = shipped.replace("next: complaint_case_number", "next: nowhere")
        _set_editor(driver, broken)
        wait.until(ec.text_to_be_present_in_element(
            (By.ID, "validation"), "node 'describe': next goes to missing node 'nowhere'"))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#diagram g.node-error[data-node="describe"]')))
        driver.find_element(By.ID, "publish-btn").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "publish-result"), "Not published"))

        # A valid change publishes as version 1 and shows up in the versions and the audit log.
        flood = shipped.replace("category: inquiry", "category: flood_info")
        _set_editor(driver, flood)
        wait.until(ec.text_to_be_present_in_element((By.ID, "validation"), "Valid: ready to publish."))
        driver.find_element(By.ID, "publish-comment").send_keys("flood warning")
        driver.find_element(By.ID, "publish-btn").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "publish-result"), "Published version 1"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "versions"), "1 (live)"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "audit"), "admin1"))
        assert "flood warning" in driver.find_element(By.ID, "versions").text

        _set_editor(driver, shipped)
        wait.until(ec.text_to_be_present_in_element((By.ID, "validation"), "Valid"))
        driver.find_element(By.ID, "publish-btn").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "publish-result"), "Published version 2"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "live-version"), "2"))

        # Roll back to version 1: it is re-published as version 3 and loaded into the editor.
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, '.rollback-btn[data-version="1"]'))).click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "publish-result"), "version 1 is live again as version 3"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "live-version"), "3"))
        assert "category: flood_info" in driver.find_element(By.ID, "flow-yaml").get_attribute("value")
        audit = driver.find_element(By.ID, "audit").text
        assert "rollback default" in audit and audit.count("admin1") == 3
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium")
async def test_flow_editor_in_chromium(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("admin1", PASSWORD, Role.ADMIN, display_name="Admin")
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    store = FlowStore(engine)
    validator = FlowValidator(vocabulary_for=vocabulary_for, queues=QUEUES, base_dir=DEFAULT_FLOW.parent)
    app[FLOW_ADMIN] = FlowAdmin(store, validator, lambda _doc: LangPrompts(), DEFAULT_FLOW)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", PORT)
    await site.start()
    profile = tempfile.mkdtemp(prefix="flows-chromium-", dir=tmp_path)
    try:
        await asyncio.wait_for(asyncio.to_thread(_drive, f"http://127.0.0.1:{PORT}", profile), timeout=90)
    finally:
        await runner.cleanup()
        shutil.rmtree(profile, ignore_errors=True)
    assert await store.live_version("default") == 3
    assert (await store.get("default")).text == (await store.get("default", 1)).text
    await engine.dispose()
    assert SCREENSHOT.stat().st_size > 10_000
