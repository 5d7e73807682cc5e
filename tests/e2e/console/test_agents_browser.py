"""The agent's queue-state page in real headless Chromium against the real hotline (Asterisk app_queue, AMI,
Redis live state, SQLite): Log in, Pause (break), Resume, Log out — checked in Asterisk's own `queue show`;
a change made elsewhere (the CLI) shows on the page without a reload."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from queueing import connect_redis
from tests.support.browser import CHROMEDRIVER, CHROMIUM, browser
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.redis, pytest.mark.browser]

PORTS = module_ports(__name__)
AGENT = "agent7"
AGENT_PASSWORD = "agent7-secret-pw"  # console password (`hotline agents add` generates the SIP secret apart)
SCREENSHOT = Path("/tmp/agents-page.png")


class AsteriskQueues:
    """What an operator would type: `asterisk -C <conf> -rx 'queue show <q>'` on the hotline's Asterisk."""

    def __init__(self, hotline: HotlineUnderTest) -> None:
        self.conf = hotline.run_dir / "asterisk" / "etc" / "asterisk.conf"

    def member_line(self, queue: str) -> str | None:
        """The `queue show` line of the agent in that queue, or None if not a member."""
        out = subprocess.run(["asterisk", "-C", str(self.conf), "-rx", f"queue show {queue}"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return next((line.strip() for line in out.splitlines() if f"(PJSIP/{AGENT})" in line), None)

    def until(self, queue: str, check: Any, what: str, timeout: float = 15.0) -> str | None:
        deadline = time.monotonic() + timeout
        line = None
        while time.monotonic() < deadline:
            line = self.member_line(queue)
            if check(line):
                return line
            time.sleep(0.2)
        raise AssertionError(f"Asterisk: {what} not seen in queue {queue} within {timeout} s (last: {line!r})")


def _hotline_cli(hotline: HotlineUnderTest, *args: str) -> None:
    """`hotline agents ...` from another terminal (blocking; called from the browser thread)."""
    env = hotline.child_env()
    done = subprocess.run([sys.executable, "-m", "hotline", "agents", *args], env=env, cwd=str(PROJECT_ROOT),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"hotline agents {' '.join(args)}: {done.stderr[-1500:]}"


def _drive(hotline: HotlineUnderTest, profile_dir: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    asterisk = AsteriskQueues(hotline)
    driver = browser(profile_dir)
    state = (By.CSS_SELECTOR, "#my-queue-state [data-agent-field=state]")

    def button(action: str) -> Any:
        return driver.find_element(By.CSS_SELECTOR, f'#my-queue-state button[data-action="{action}"]')

    def enabled() -> set[str]:
        return {a for a in ("login", "pause", "resume", "logout") if button(a).is_enabled()}

    try:
        wait = WebDriverWait(driver, 15)
        driver.get(hotline.http_url + "/")
        wait.until(ec.url_contains("/login"))
        driver.find_element(By.ID, "username").send_keys(AGENT)
        driver.find_element(By.ID, "password").send_keys(AGENT_PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "agents-link"))).click()

        # Logged out: only Log in makes sense; Asterisk has no such member.
        wait.until(ec.text_to_be_present_in_element(state, "logged out"))
        text = driver.find_element(By.ID, "my-queue-state").text
        assert "Agent Seven" in text and "complaints, inquiries" in text
        assert enabled() == {"login"}
        assert asterisk.member_line("inquiries") is None

        button("login").click()
        for queue in ("complaints", "inquiries"):
            asterisk.until(queue, lambda line: line is not None and "paused" not in line, "agent7 a member")
        # No phone registered for agent7: logged in, but Asterisk cannot reach it.
        wait.until(ec.text_to_be_present_in_element(state, "unreachable"))
        wait.until(lambda d: enabled() == {"pause", "logout"})

        # Paused from elsewhere (another terminal): the page follows without a reload.
        _hotline_cli(hotline, "pause", AGENT, "--reason", "training")
        wait.until(ec.text_to_be_present_in_element(state, "paused (training)"))
        wait.until(lambda d: enabled() == {"resume", "logout"})
        button("resume").click()
        asterisk.until("inquiries", lambda line: line is not None and "paused" not in line, "agent7 resumed")
        wait.until(ec.text_to_be_present_in_element(state, "unreachable"))

        # Pause with the reason "break" from the chooser.
        wait.until(lambda d: enabled() == {"pause", "logout"})
        Select(driver.find_element(By.CSS_SELECTOR, "#my-queue-state select[name=reason]")).select_by_value("break")
        button("pause").click()
        for queue in ("complaints", "inquiries"):
            line = asterisk.until(queue, lambda line: line is not None and "paused" in line, "agent7 paused")
            assert line is not None and re.search(r"paused:break", line), line
        wait.until(ec.text_to_be_present_in_element(state, "paused (break)"))
        wait.until(lambda d: enabled() == {"resume", "logout"})
        assert driver.find_element(By.ID, "agents-error").is_displayed() is False
        driver.save_screenshot(str(SCREENSHOT))

        button("resume").click()
        asterisk.until("inquiries", lambda line: line is not None and "paused" not in line, "agent7 resumed")
        wait.until(ec.text_to_be_present_in_element(state, "unreachable"))

        wait.until(lambda d: enabled() == {"pause", "logout"})
        button("logout").click()
        for queue in ("complaints", "inquiries"):
            asterisk.until(queue, lambda line: line is None, "agent7 removed")
        wait.until(ec.text_to_be_present_in_element(state, "logged out"))
        wait.until(lambda d: enabled() == {"login"})
        assert not driver.find_elements(By.ID, "all-agents")  # an agent gets no other agents' controls
    finally:
        driver.quit()


async def _drop_redis_keys(hotline: HotlineUnderTest) -> None:
    settings = hotline.settings()
    client = connect_redis(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(f"{settings.redis_key_prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium")
async def test_agent_queue_state_page_through_asterisk(tmp_path: Path) -> None:
    hotline = HotlineUnderTest(PROJECT_ROOT / "var" / "test-agents-page", ports=PORTS, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-agents-page-{os.getpid()}",
    })
    await hotline.start()
    profile = tempfile.mkdtemp(prefix="agents-chromium-", dir=tmp_path)
    try:
        code, _, err = await run_hotline_command(
            ["agents", "add", AGENT, "--password", AGENT_PASSWORD, "--queue", "complaints", "--queue", "inquiries",
             "--display-name", "Agent Seven"], hotline.env, timeout=60)
        assert code == 0, err[-1500:]
        await asyncio.wait_for(asyncio.to_thread(_drive, hotline, profile), timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        code = await hotline.stop()
        await _drop_redis_keys(hotline)
    assert code == 0, f"hotline run did not stop cleanly: {hotline.log_tail()}"
    assert SCREENSHOT.stat().st_size > 10_000
