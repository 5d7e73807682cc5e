"""Runs the real `hotline run` (Asterisk + bridge + console) as a child process on test ports."""
from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from config import Settings, load_settings, resolve_secrets
from tests.support.ports import PortBlock

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class HotlineUnderTest:
    """A `hotline run` child on its own ports, run dir and Redis key prefix."""

    def __init__(self, run_dir: Path, *, ports: PortBlock, env: dict[str, str] | None = None) -> None:
        # ports: the test module's block (tests.support.ports.module_ports); RTP and every listener stay inside it.
        self.run_dir = run_dir
        self.ports = ports
        rtp_start, rtp_end = ports.rtp_range()
        self.env = {
            "HOTLINE_RUN_DIR": str(run_dir),
            "HOTLINE_SIP_PORT": str(ports.hotline("sip")),
            "HOTLINE_AMI_PORT": str(ports.hotline("ami")),
            "HOTLINE_AGI_PORT": str(ports.hotline("agi")),
            "HOTLINE_HTTP_PORT": str(ports.hotline("http")),
            "HOTLINE_ASR_WS_PORT": str(ports.hotline("asr_ws")),
            "HOTLINE_RTP_PORT_START": str(rtp_start),
            "HOTLINE_RTP_PORT_END": str(rtp_end),
            "DATABASE_URL": f"sqlite+aiosqlite:///{run_dir / 'hotline.db'}",
            "HOTLINE_REDIS_KEY_PREFIX": f"hotline-test-{os.getpid()}-{ports.start}",
            "HOTLINE_RECORD_SILENCE_SECONDS": "2",
            "HOTLINE_RECORD_MAX_SECONDS": "20",
            "HOTLINE_MENU_TIMEOUT_SECONDS": "3",
            "HOTLINE_AMI_PING_INTERVAL": "1",
            "HOTLINE_LOG_LEVEL": "INFO",
        }
        self.env.update(env or {})
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = run_dir / "hotline.log"
        self._staff: urllib.request.OpenerDirector | None = None  # logged in as admin, for /admin/health

    def settings(self) -> Settings:
        """The settings the child runs with (same env, same secrets file)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return resolve_secrets(load_settings())
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def http_url(self) -> str:
        """Base URL of the console."""
        return f"http://127.0.0.1:{self.env['HOTLINE_HTTP_PORT']}"

    def child_env(self) -> dict[str, str]:
        """The environment of the child process."""
        env = dict(os.environ)
        env.update(self.env)
        return env

    async def start(self, timeout: float = 120.0, *, keep_run_dir: bool = False) -> None:
        """Start `hotline run` and wait until /healthz says ok (keep_run_dir: restart on what is there)."""
        if self.run_dir.exists() and not keep_run_dir:
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = await asyncio.to_thread(open, self.log_path, "wb")  # handed to the child, which keeps its own copy
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hotline", "run", stdout=log, stderr=asyncio.subprocess.STDOUT,
                env=self.child_env(), cwd=str(PROJECT_ROOT))
        finally:
            log.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"hotline run exited with {self.process.returncode}: {self.log_tail()}")
            health = await self.public_health()
            if health is not None and health.get("status") == "ok":
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"hotline run not healthy after {timeout} s: {self.log_tail()}")

    async def public_health(self) -> dict[str, Any] | None:
        """GET /healthz as anyone sees it, {"status": "ok" | "unavailable"} (None if nothing answers)."""
        def fetch() -> dict[str, Any] | None:
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=2) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return json.loads(exc.read() or b"{}")
            except OSError:
                return None
        return await asyncio.get_running_loop().run_in_executor(None, fetch)

    def _staff_opener(self) -> urllib.request.OpenerDirector:
        """A client logged in to the console as admin (the details of /admin/health are for staff)."""
        if self._staff is not None:
            return self._staff
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(self.http_url + "/login", timeout=5) as resp:
            token = re.search(r'name="csrf_token" value="([^"]+)"', resp.read().decode())
        assert token, "login form has no CSRF token"
        body = json.dumps({"username": "admin", "password": self.settings().admin_password}).encode()
        request = urllib.request.Request(self.http_url + "/login", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-CSRF-Token": token.group(1)})
        with opener.open(request, timeout=10):
            pass
        self._staff = opener
        return opener

    async def health(self) -> dict[str, Any] | None:
        """Every component's report from /admin/health, logged in as admin (None if nothing answers)."""
        def fetch() -> dict[str, Any] | None:
            for _ in range(2):
                try:
                    with self._staff_opener().open(self.http_url + "/admin/health", timeout=15) as resp:
                        return json.loads(resp.read())
                except urllib.error.HTTPError as exc:
                    if exc.code != 401:
                        return json.loads(exc.read() or b"{}")
                    self._staff = None  # the session ended (e.g. Redis restarted empty): log in again
                except OSError:
                    return None
            return None
        return await asyncio.get_running_loop().run_in_executor(None, fetch)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the child printed."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the child and wait; SIGKILL if it does not stop in time. Returns its exit code."""
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return self.process.returncode


@contextlib.asynccontextmanager
async def running_hotline(hotline: HotlineUnderTest) -> AsyncIterator[HotlineUnderTest]:
    """Start `hotline run` for a test module and stop it after; a stop that is not clean fails the module."""
    await hotline.start()
    try:
        yield hotline
    finally:
        code = await hotline.stop()
    assert code == 0, f"hotline run did not stop cleanly: {hotline.log_tail()}"


async def run_hotline_command(args: list[str], env: dict[str, str], timeout: float = 120.0) -> tuple[int, str, str]:
    """Run `python -m hotline ARGS` with env; return (exit code, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=full_env, cwd=str(PROJECT_ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"hotline {' '.join(args)} did not finish in {timeout} s: {err.decode()[-2000:]}") from None
    return proc.returncode or 0, out.decode(), err.decode()
