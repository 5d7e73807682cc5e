"""Keep the hotline's Asterisk running: restart it when it dies (backoff, a limit), and clear an Asterisk an
earlier bridge left running from the same run dir before starting a new one."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifecycle import TaskOwner

from .asterisk_process import AsteriskConfig, AsteriskProcess, AsteriskStartError

log = logging.getLogger(__name__)

RestartedHandler = Callable[[], None]


@dataclass(frozen=True)
class RestartPolicy:
    """How a dead Asterisk is restarted: exponential backoff, and at most max_restarts within window_seconds."""

    initial_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    max_restarts: int = 5
    window_seconds: float = 300.0

    def delay(self, recent: int) -> float:
        """The wait before the next restart when `recent` restarts were already tried within the window."""
        return min(self.initial_delay * self.factor ** max(recent, 0), self.max_delay)


class RestartBudget:
    """Counts restart attempts in a sliding window, so a crash loop ends instead of restarting forever."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._attempts: deque[float] = deque()

    def recent(self) -> int:
        """How many restarts were tried within the last window_seconds."""
        horizon = self._clock() - self._policy.window_seconds
        while self._attempts and self._attempts[0] <= horizon:
            self._attempts.popleft()
        return len(self._attempts)

    def exhausted(self) -> bool:
        """True once max_restarts were tried within the window: stay down."""
        return self.recent() >= self._policy.max_restarts

    def next_delay(self) -> float:
        """The backoff before the next attempt."""
        return self._policy.delay(self.recent())

    def record(self) -> None:
        """Count one restart attempt now."""
        self._attempts.append(self._clock())


# ---------------------------------------------------------------------------------------------- orphans


def _argv(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None  # empty: a zombie


def runs_config(pid: int, cfg: AsteriskConfig) -> bool:
    """True if pid is a live Asterisk started with exactly this run dir's asterisk.conf (-C), i.e. one the
    project started from this run dir; anything else (another run dir, a dev instance, a reused pid) is not."""
    argv = _argv(pid)
    if not argv or not os.path.basename(argv[0]).startswith("asterisk"):
        return False
    conf = str(cfg.asterisk_conf)
    return any(a == "-C" and b == conf for a, b in zip(argv, argv[1:], strict=False))


def _pid_from_file(cfg: AsteriskConfig) -> int | None:
    try:
        text = (cfg.run_dir / "run" / "asterisk.pid").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def own_asterisk_pids(cfg: AsteriskConfig) -> list[int]:
    """Pids of Asterisks running this run dir's configuration: the pid file's first, then any other /proc
    entry whose command line names the same asterisk.conf (a pid file can be stale or overwritten)."""
    found: list[int] = []
    from_file = _pid_from_file(cfg)
    if from_file is not None and runs_config(from_file, cfg):
        found.append(from_file)
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) not in found and runs_config(int(entry.name), cfg):
                found.append(int(entry.name))
    return found


async def _wait_pidfd(pidfd: int, timeout: float) -> bool:
    """Wait until the process behind pidfd has exited (the fd becomes readable); False on timeout."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        async with asyncio.timeout(timeout):
            await gone
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)


async def stop_leftover_asterisk(cfg: AsteriskConfig, timeout: float = 10.0) -> list[int]:
    """Stop every Asterisk still running this run dir's configuration (SIGTERM, then SIGKILL); return their pids.

    Each pid is pinned with a pidfd and checked again after pinning, so a reused pid is never signalled."""
    stopped = []
    for pid in own_asterisk_pids(cfg):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not runs_config(pid, cfg):  # exited and the pid went to someone else between scan and open
                continue
            log.warning("an Asterisk (pid %d) left running from %s by an earlier start; stopping it", pid, cfg.run_dir)
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)  # a stopped process acts on SIGTERM only once resumed
            except ProcessLookupError:
                continue
            except PermissionError:
                raise AsteriskStartError(
                    f"an Asterisk (pid {pid}) of another user runs from {cfg.run_dir}; cannot stop it") from None
            if not await _wait_pidfd(pidfd, timeout):
                log.warning("Asterisk pid %d did not stop within %g s; killing it", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                if not await _wait_pidfd(pidfd, 5.0):
                    raise AsteriskStartError(f"the Asterisk left running from {cfg.run_dir} (pid {pid}) "
                                             "did not die after SIGKILL")
            stopped.append(pid)
        finally:
            os.close(pidfd)
    return stopped


# ---------------------------------------------------------------------------------------------- supervisor


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


def _describe_exit(code: int) -> tuple[int | None, str | None]:
    if code < 0:
        try:
            return None, signal.Signals(-code).name
        except ValueError:
            return None, f"signal {-code}"
    return code, None


class AsteriskSupervisor:
    """Runs one AsteriskProcess and restarts it when it dies, with backoff and a limit; stop() never restarts."""

    def __init__(self, process: AsteriskProcess, policy: RestartPolicy | None = None,
                 ready_timeout: float = 30.0) -> None:
        self.process = process
        self.policy = policy or RestartPolicy()
        self._ready_timeout = ready_timeout
        self._budget = RestartBudget(self.policy)
        self._tasks = TaskOwner("asterisk-supervisor")
        self._restarted_handlers: list[RestartedHandler] = []
        self._stopping = False
        self.state = "stopped"  # starting, running, restarting, gave_up, stopped
        self.restarts = 0  # successful restarts
        self.failed_restarts = 0
        self.last_exit_code: int | None = None
        self.last_exit_signal: str | None = None
        self.last_exit_at: float | None = None
        self.last_restart_at: float | None = None
        self.last_restart_seconds: float | None = None  # from noticing the death to FullyBooted again
        self.last_error: str | None = None
        self.stopped_leftovers: list[int] = []  # pids of earlier Asterisks from this run dir stopped at start

    def on_restarted(self, handler: RestartedHandler) -> None:
        """Call handler() each time Asterisk is back after a restart (e.g. to reconnect AMI at once)."""
        self._restarted_handlers.append(handler)

    @property
    def running(self) -> bool:
        """True while Asterisk runs."""
        return self.process.running

    @property
    def pid(self) -> int | None:
        """The running Asterisk's pid (None while it is down)."""
        return self.process.pid if self.process.running else None

    async def start(self) -> None:
        """Stop an Asterisk left from this run dir, start Asterisk (AsteriskStartError) and watch it."""
        self._stopping = False
        self.state = "starting"
        try:
            self.stopped_leftovers = await stop_leftover_asterisk(self.process.cfg)
            await self.process.start(ready_timeout=self._ready_timeout)
        except AsteriskStartError as exc:
            self.state = "stopped"
            self.last_error = str(exc)
            raise
        self.state = "running"
        self._tasks.spawn(self._watch(), "asterisk-watch")

    async def stop(self) -> None:
        """Stop watching, then stop Asterisk; no restart follows."""
        self._stopping = True
        await self._tasks.cancel_all()
        try:
            await self.process.stop()
        finally:
            self.state = "stopped"

    async def _watch(self) -> None:
        while True:
            code = await self.process.wait()
            if self._stopping:
                return
            noticed = time.monotonic()
            self.last_exit_at = time.time()
            self.last_exit_code, self.last_exit_signal = _describe_exit(code)
            log.error("Asterisk (pid %s) died: %s", self.process.pid,
                      f"killed by {self.last_exit_signal}" if self.last_exit_signal else f"exit status {code}")
            if not await self._restart():
                return
            self.last_restart_seconds = time.monotonic() - noticed

    async def _restart(self) -> bool:
        """Try until Asterisk runs again or the budget is spent (then stay down and say so)."""
        while True:
            if self._budget.exhausted():
                self.state = "gave_up"
                self.last_error = (f"Asterisk restarted {self.policy.max_restarts} times within "
                                   f"{self.policy.window_seconds:g} s; not restarting again")
                log.error("%s: calls cannot be taken until the hotline is restarted", self.last_error)
                return False
            self.state = "restarting"
            delay = self._budget.next_delay()
            log.warning("restarting Asterisk in %.1f s", delay)
            await asyncio.sleep(delay)
            self._budget.record()
            try:
                await self.process.start(ready_timeout=self._ready_timeout)
            except (AsteriskStartError, OSError) as exc:  # OSError: its log or run dir cannot be written
                self.failed_restarts += 1
                self.last_error = str(exc)
                log.error("Asterisk restart failed: %s", exc)
                continue
            self.state = "running"
            self.restarts += 1
            self.last_restart_at = time.time()
            self.last_error = None
            log.warning("Asterisk restarted (pid %s) after %d restart(s)", self.process.pid, self.restarts)
            for handler in self._restarted_handlers:
                try:
                    handler()
                except Exception:  # a failing listener must not stop supervision
                    log.exception("Asterisk restart handler failed")
            return True

    def health_report(self) -> dict[str, Any]:
        """Facts for /healthz: ok while running; restarts, the last exit and whether the supervisor gave up."""
        return {
            "ok": self.state == "running" and self.process.running,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "failed_restarts": self.failed_restarts,
            "restart_limit": f"{self.policy.max_restarts} in {self.policy.window_seconds:g} s",
            "last_exit": None if self.last_exit_at is None else {
                "code": self.last_exit_code, "signal": self.last_exit_signal, "at": _iso(self.last_exit_at)},
            "last_restart_at": _iso(self.last_restart_at),
            "last_restart_seconds": (round(self.last_restart_seconds, 2)
                                     if self.last_restart_seconds is not None else None),
            "last_error": self.last_error,
        }
