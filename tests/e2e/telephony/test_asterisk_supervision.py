"""The real Asterisk under the supervisor: killed -9 it is back within seconds; a leftover from the same run dir is
replaced without a port error; an Asterisk the project did not start from this run dir is never signalled."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from telephony import (
    AmiClient,
    AmiError,
    AsteriskConfig,
    AsteriskProcess,
    AsteriskStartError,
    AsteriskSupervisor,
    RestartPolicy,
    render_asterisk_config,
)
from tests.support.asterisk_fixture import FastAgiStub, asterisk_pids_using, asterisk_ports, make_test_config
from tests.support.ports import module_ports
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

_BLOCK = module_ports(__name__)
KILLED = asterisk_ports(_BLOCK)  # the Asterisk killed and brought back (RTP: the block's first 50 ports)
LEFT_OVER = {"sip_port": _BLOCK.spare(0), "ami_port": _BLOCK.spare(1), "agi_port": _BLOCK.spare(2),
             "rtp_port_start": _BLOCK.spare(4), "rtp_port_end": _BLOCK.spare(19)}
FOREIGN = {"sip_port": _BLOCK.spare(20), "ami_port": _BLOCK.spare(21), "agi_port": _BLOCK.spare(22),
           "rtp_port_start": _BLOCK.spare(24), "rtp_port_end": _BLOCK.spare(39)}

CALLER = "13800138000"


def _start_detached_asterisk(conf: Path) -> int:
    """Start `asterisk -f -C conf` through a shell that exits at once, so its parent is gone; its pid."""
    out = subprocess.run(["sh", "-c", f"asterisk -f -n -C '{conf}' </dev/null >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True, timeout=10)
    return int(out.stdout.strip())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _ami(cfg: AsteriskConfig) -> AmiClient:
    client = AmiClient(cfg.ami_host, cfg.ami_port, cfg.ami_username, cfg.ami_secret, ping_interval=1.0,
                       connect_timeout=2.0, name="test-ami")
    await client.start()
    return client


async def _ami_answers(cfg: AsteriskConfig, timeout: float = 20.0) -> None:
    """Wait until this configuration's AMI logs in and answers a Ping."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await _ami(cfg)
        except AmiError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        try:
            await client.action({"Action": "Ping"})
            return
        finally:
            await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[FastAgiStub]:
    agi = FastAgiStub("127.0.0.1", KILLED["agi_port"])
    await agi.start()
    try:
        yield agi
    finally:
        await agi.stop()


async def test_a_killed_asterisk_is_back_within_seconds_and_takes_calls(tmp_path: Path, stub: FastAgiStub) -> None:
    cfg = make_test_config(tmp_path / "ast", **KILLED)
    supervisor = AsteriskSupervisor(AsteriskProcess(cfg), RestartPolicy(max_restarts=3, window_seconds=60))
    await supervisor.start()
    ami = await _ami(cfg)
    logins: list[float] = []

    async def logged_in() -> None:
        logins.append(time.monotonic())

    ami.on_connected(logged_in)
    supervisor.on_restarted(ami.reconnect_now)
    try:
        first = supervisor.pid
        assert first is not None and asterisk_pids_using(cfg.asterisk_conf) == [first]
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        while not (supervisor.health_report()["ok"] and logins):
            assert time.monotonic() - killed < 10, supervisor.health_report()
            await asyncio.sleep(0.05)
        back = logins[0] - killed
        print(f"\nAsterisk killed -9: restarted and AMI logged in again after {back:.2f} s")
        pong = await ami.action({"Action": "Ping"})
        assert pong.success
        report = supervisor.health_report()
        assert report["state"] == "running" and report["restarts"] == 1 and report["pid"] != first
        assert report["last_exit"]["signal"] == "SIGKILL" and report["last_restart_at"] is not None
        assert asterisk_pids_using(cfg.asterisk_conf) == [report["pid"]]
        # A citizen's call reaches the IVR again and the IVR hears their key press.
        stub.reset(["WAIT FOR DIGIT 5000"])
        call = CitizenCall(cfg.sip_port, number="12345", from_user=CALLER, stock_dtmf=True,
                           steps=[("pause", 800), ("dtmf", "1"), ("pause", 500)], hangup="wait",
                           wait_bye_ms=10000, work_dir=tmp_path, timeout=30)
        result, session = await asyncio.gather(call.run(), stub.next_session(timeout=25))
        assert session.env["agi_callerid"] == CALLER and session.replies == ["200 result=49"], session.replies
        assert result.answered, result.describe()
    finally:
        await ami.close()
        await supervisor.stop()
    await asyncio.sleep(1.5)  # stopping is not a death: nothing comes back
    assert asterisk_pids_using(cfg.asterisk_conf) == [] and supervisor.restarts == 1
    assert supervisor.health_report()["state"] == "stopped"


async def test_an_asterisk_left_from_the_same_run_dir_is_replaced_without_a_port_error(tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path / "ast", **LEFT_OVER)
    conf = render_asterisk_config(cfg)
    # As a bridge killed -9 would leave it: an Asterisk from this run dir whose parent is gone.
    orphan = _start_detached_asterisk(conf)
    supervisor = AsteriskSupervisor(AsteriskProcess(cfg))
    try:
        await _ami_answers(cfg)
        assert asterisk_pids_using(conf) == [orphan]
        await supervisor.start()
        assert supervisor.stopped_leftovers == [orphan] and not _alive(orphan)
        assert supervisor.pid != orphan and asterisk_pids_using(conf) == [supervisor.pid]
        await _ami_answers(cfg, timeout=5)
    finally:
        await supervisor.stop()
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert asterisk_pids_using(conf) == []


async def test_an_asterisk_the_project_did_not_start_here_is_never_signalled(tmp_path: Path) -> None:
    ports = FOREIGN
    foreign_cfg = make_test_config(tmp_path / "elsewhere", **ports)
    ours = make_test_config(tmp_path / "ours", **ports)
    foreign = AsteriskProcess(foreign_cfg)
    await foreign.start()
    try:
        pid = foreign.pid
        assert pid is not None
        # Even a pid file in our run dir naming it (stale, or a reused pid) does not make it ours.
        (ours.run_dir / "run").mkdir(parents=True)
        (ours.run_dir / "run" / "asterisk.pid").write_text(f"{pid}\n")
        supervisor = AsteriskSupervisor(AsteriskProcess(ours))
        taken = rf"^port {FOREIGN['sip_port']}/udp \(SIP\) is already in use on 127\.0\.0\.1$"
        with pytest.raises(AsteriskStartError, match=taken):
            await supervisor.start()
        await supervisor.stop()
        assert supervisor.stopped_leftovers == [] and foreign.running and foreign.pid == pid and _alive(pid)
        await _ami_answers(foreign_cfg, timeout=5)
    finally:
        await foreign.stop()
