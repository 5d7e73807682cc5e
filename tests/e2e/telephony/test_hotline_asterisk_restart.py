"""`hotline run` with its Asterisk killed -9: it is restarted within seconds, /healthz shows the restart, and the
next citizen's call goes through the IVR to an agent (queue membership re-applied after the reconnect)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.asterisk_fixture import asterisk_pids_using
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.sipp import AgentPhone, CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis, pytest.mark.vosk, pytest.mark.timeout(300)]

PORTS = module_ports(__name__)  # both tests (one after the other) use the block


async def test_asterisk_killed_is_restarted_and_the_next_call_reaches_an_agent(tmp_path: Path) -> None:
    hotline = HotlineUnderTest(PROJECT_ROOT / "var" / "test-supervise", ports=PORTS)
    conf = hotline.run_dir / "asterisk" / "etc" / "asterisk.conf"
    async with running_hotline(hotline):
        settings = hotline.settings()
        health = await hotline.health()
        assert health is not None and health["components"]["asterisk"]["restarts"] == 0, health
        pid = int((hotline.run_dir / "asterisk" / "run" / "asterisk.pid").read_text())
        assert asterisk_pids_using(conf) == [pid]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        health = await hotline.health()
        while not (health and health["ok"] and health["components"]["asterisk"]["restarts"] == 1):
            assert time.monotonic() - killed < 10, f"not healthy 10 s after kill -9: {health}"
            await asyncio.sleep(0.2)
            health = await hotline.health()
        print(f"\nhotline run healthy again {time.monotonic() - killed:.2f} s after kill -9 of Asterisk")
        asterisk = health["components"]["asterisk"]
        assert asterisk["state"] == "running" and asterisk["last_exit"]["signal"] == "SIGKILL", asterisk
        assert asterisk["last_restart_at"] is not None and health["components"]["ami"]["connects"] >= 2, health
        assert asterisk_pids_using(conf) == [asterisk["pid"]] and asterisk["pid"] != pid
        # The agent's phone registers again (as a softphone does on its next re-registration) and takes the
        # next citizen's call: the IVR answers, the key press picks the queue and app_queue has the agent again.
        agent = settings.agents[0]
        assert agent.sip_secret is not None
        async with AgentPhone(agent.name, agent.sip_secret, settings.sip_port, talk_ms=1500,
                              work_dir=tmp_path / "agent", timeout=90) as phone:
            call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user="01055519001",
                               work_dir=tmp_path / "caller", name="after-restart",
                               steps=[("pause", 1500), ("dtmf", "2"), ("pause", 30000)], hangup="wait",
                               wait_bye_ms=40000, timeout=90)
            result = await call.run()
            answered = await phone.wait_call(timeout=10)
        assert phone.answered, answered.describe()
        assert result.answered and result.hung_up_by == "asterisk", result.describe()
    assert asterisk_pids_using(conf) == []


async def test_a_bridge_killed_while_its_asterisk_hangs_starts_again_without_a_port_error() -> None:
    hotline = HotlineUnderTest(PROJECT_ROOT / "var" / "test-supervise-bridge", ports=PORTS)
    conf = hotline.run_dir / "asterisk" / "etc" / "asterisk.conf"
    await hotline.start()
    old: int | None = None
    try:
        old = int((hotline.run_dir / "asterisk" / "run" / "asterisk.pid").read_text())
        # A hung Asterisk: stopped, it cannot act on the SIGTERM its bridge's death sends it, so it outlives it.
        os.kill(old, signal.SIGSTOP)
        assert hotline.process is not None
        hotline.process.kill()
        await hotline.process.wait()
        assert asterisk_pids_using(conf) == [old]
        started = time.monotonic()
        await hotline.start(keep_run_dir=True)
        print(f"\nnew bridge healthy {time.monotonic() - started:.1f} s after start, its hung leftover replaced")
        health = await hotline.health()
        assert health is not None and health["ok"], health
        new = health["components"]["asterisk"]["pid"]
        assert new != old and asterisk_pids_using(conf) == [new]
        log = hotline.log_path.read_text()
        assert f"an Asterisk (pid {old}) left running from" in log, hotline.log_tail()
    finally:
        code = await hotline.stop()
        if old is not None and old in asterisk_pids_using(conf):
            os.kill(old, signal.SIGKILL)
    assert code == 0, hotline.log_tail()
    assert asterisk_pids_using(conf) == []
