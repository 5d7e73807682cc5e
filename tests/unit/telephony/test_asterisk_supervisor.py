"""Asterisk supervision rules: backoff schedule, restart limit, stop never restarts, leftovers of this run dir only."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from telephony import AsteriskConfig, AsteriskStartError, AsteriskSupervisor, RestartBudget, RestartPolicy
from telephony.asterisk_supervisor import own_asterisk_pids, runs_config, stop_leftover_asterisk

pytestmark = pytest.mark.timeout(30)


class FakeAsterisk:
    """Stands in for AsteriskProcess: start() may be told to fail; die() ends the 'child' with a status."""

    def __init__(self, cfg: AsteriskConfig, fail_starts: int = 0) -> None:
        self.cfg = cfg
        self.fail_starts = fail_starts
        self.starts = 0
        self.stops = 0
        self._exit: asyncio.Future[int] | None = None
        self._pid = 1000

    @property
    def running(self) -> bool:
        return self._exit is not None and not self._exit.done()

    @property
    def pid(self) -> int | None:
        return self._pid if self._exit is not None else None

    async def start(self, ready_timeout: float = 30.0) -> None:
        self.starts += 1
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise AsteriskStartError("port 5060/udp (SIP) is already in use on 127.0.0.1")
        self._pid += 1
        self._exit = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    def die(self, code: int) -> None:
        assert self._exit is not None and not self._exit.done()
        self._exit.set_result(code)

    async def stop(self, timeout: float = 10.0) -> None:
        self.stops += 1
        if self.running:
            self.die(-signal.SIGTERM)


FAST = RestartPolicy(initial_delay=0.01, factor=2.0, max_delay=0.05, max_restarts=3, window_seconds=60.0)


def _cfg(tmp_path: Path, name: str = "ast") -> AsteriskConfig:
    return AsteriskConfig(run_dir=tmp_path / name, ami_secret="secret")


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_delay=0.5, factor=2.0, max_delay=30.0)
    assert [policy.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_budget_counts_attempts_in_a_sliding_window() -> None:
    now = [1000.0]
    budget = RestartBudget(RestartPolicy(initial_delay=1.0, max_restarts=3, window_seconds=60.0), clock=lambda: now[0])
    delays = []
    for _ in range(3):
        assert not budget.exhausted()
        delays.append(budget.next_delay())
        budget.record()
        now[0] += 10
    assert delays == [1.0, 2.0, 4.0]
    assert budget.exhausted()  # 3 within 60 s: stay down
    now[0] += 31  # the first attempt (at 1000) is now more than 60 s old
    assert budget.recent() == 2 and not budget.exhausted() and budget.next_delay() == 4.0


async def test_a_dead_asterisk_is_restarted_and_the_restart_is_reported(tmp_path: Path) -> None:
    fake = FakeAsterisk(_cfg(tmp_path))
    supervisor = AsteriskSupervisor(fake, FAST)  # type: ignore[arg-type]
    restarted: list[int | None] = []
    supervisor.on_restarted(lambda: restarted.append(fake.pid))
    await supervisor.start()
    first_pid = supervisor.pid
    try:
        fake.die(-signal.SIGKILL)
        await _until(lambda: supervisor.restarts == 1)
        report = supervisor.health_report()
        assert report["ok"] is True and report["state"] == "running"
        assert report["pid"] != first_pid and restarted == [report["pid"]]
        assert report["restarts"] == 1
        assert report["last_exit"]["signal"] == "SIGKILL" and report["last_exit"]["code"] is None
        assert report["last_restart_at"] is not None and report["last_restart_seconds"] < 1
        fake.die(3)
        await _until(lambda: supervisor.restarts == 2)
        assert supervisor.health_report()["last_exit"]["code"] == 3
    finally:
        await supervisor.stop()


async def test_the_limit_ends_a_crash_loop_and_healthz_says_so(tmp_path: Path) -> None:
    fake = FakeAsterisk(_cfg(tmp_path))
    supervisor = AsteriskSupervisor(fake, FAST)  # type: ignore[arg-type]
    await supervisor.start()
    try:
        fake.fail_starts = 100  # every restart fails
        fake.die(1)
        await _until(lambda: supervisor.state == "gave_up")
        assert fake.starts == 1 + FAST.max_restarts
        report = supervisor.health_report()
        assert report["ok"] is False and report["pid"] is None
        assert report["failed_restarts"] == 3 and report["restarts"] == 0
        assert report["last_error"] == "Asterisk restarted 3 times within 60 s; not restarting again"
        await asyncio.sleep(0.2)
        assert fake.starts == 1 + FAST.max_restarts  # it stays down
    finally:
        await supervisor.stop()


async def test_a_failed_restart_is_retried_with_backoff(tmp_path: Path) -> None:
    fake = FakeAsterisk(_cfg(tmp_path))
    supervisor = AsteriskSupervisor(fake, FAST)  # type: ignore[arg-type]
    await supervisor.start()
    try:
        fake.fail_starts = 2
        fake.die(-signal.SIGSEGV)
        await _until(lambda: supervisor.restarts == 1)
        assert fake.starts == 4 and supervisor.failed_restarts == 2 and supervisor.running
        assert supervisor.health_report()["last_error"] is None
    finally:
        await supervisor.stop()


async def test_stop_does_not_restart(tmp_path: Path) -> None:
    fake = FakeAsterisk(_cfg(tmp_path))
    supervisor = AsteriskSupervisor(fake, FAST)  # type: ignore[arg-type]
    await supervisor.start()
    await supervisor.stop()
    await asyncio.sleep(0.1)
    assert fake.starts == 1 and not fake.running and supervisor.restarts == 0
    assert supervisor.health_report()["state"] == "stopped"
    assert len(supervisor._tasks) == 0  # the watcher was cancelled and awaited


async def test_stop_during_the_backoff_wait_does_not_restart(tmp_path: Path) -> None:
    fake = FakeAsterisk(_cfg(tmp_path))
    slow = RestartPolicy(initial_delay=5.0, max_restarts=3)
    supervisor = AsteriskSupervisor(fake, slow)  # type: ignore[arg-type]
    await supervisor.start()
    fake.die(-signal.SIGKILL)
    await _until(lambda: supervisor.state == "restarting")
    await supervisor.stop()
    assert fake.starts == 1 and supervisor.state == "stopped"


# ---------------------------------------------------------------------------------------------- leftovers


def _python_as(argv0: str, code: str, *args: str) -> subprocess.Popen[bytes]:
    """A Python running code with argv0 as its command name and args after it on its command line."""
    return subprocess.Popen([argv0, "-c", code, *args], executable=sys.executable, stdout=subprocess.PIPE)


def _fake_asterisk(conf: Path) -> subprocess.Popen[bytes]:
    """A process whose command line looks like `asterisk -f -n -C conf` (a Python sleeping under that name)."""
    return _python_as("asterisk", "import time; time.sleep(60)", "-f", "-n", "-C", str(conf))


async def _until_cmdline(proc: subprocess.Popen[bytes], conf: Path) -> None:
    await _until(lambda: str(conf).encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes())


async def test_only_an_asterisk_of_this_run_dir_is_stopped(tmp_path: Path) -> None:
    ours_cfg, theirs_cfg = _cfg(tmp_path, "ours"), _cfg(tmp_path, "theirs")
    ours, theirs = _fake_asterisk(ours_cfg.asterisk_conf), _fake_asterisk(theirs_cfg.asterisk_conf)
    # Not an Asterisk at all, though it names our configuration: never signalled either.
    bystander = _python_as("python3", "import time; time.sleep(60)", "-C", str(ours_cfg.asterisk_conf))
    try:
        await _until_cmdline(ours, ours_cfg.asterisk_conf)
        await _until_cmdline(theirs, theirs_cfg.asterisk_conf)
        await _until_cmdline(bystander, ours_cfg.asterisk_conf)
        # A pid file naming someone else's process (a stale file, a reused pid) does not make it ours.
        (ours_cfg.run_dir / "run").mkdir(parents=True)
        (ours_cfg.run_dir / "run" / "asterisk.pid").write_text(f"{theirs.pid}\n")
        assert runs_config(ours.pid, ours_cfg) and not runs_config(theirs.pid, ours_cfg)
        assert not runs_config(bystander.pid, ours_cfg)
        assert own_asterisk_pids(ours_cfg) == [ours.pid]
        assert await stop_leftover_asterisk(ours_cfg, timeout=5.0) == [ours.pid]
        assert ours.wait(timeout=5) == -signal.SIGTERM
        assert theirs.poll() is None and bystander.poll() is None
        assert await stop_leftover_asterisk(ours_cfg) == []
    finally:
        for proc in (ours, theirs, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_a_leftover_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    stubborn = _python_as("asterisk", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "print(1, flush=True); time.sleep(60)", "-C", str(cfg.asterisk_conf))
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"1\n"  # SIGTERM is ignored by now
        began = time.monotonic()
        assert await stop_leftover_asterisk(cfg, timeout=0.5) == [stubborn.pid]
        assert stubborn.wait(timeout=5) == -signal.SIGKILL and time.monotonic() - began < 3
    finally:
        if stubborn.poll() is None:
            os.kill(stubborn.pid, signal.SIGKILL)
            stubborn.wait()
