"""A redis-server child started by a test on its own port (never the machine's shared one), without persistence."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import redis.asyncio as aioredis


class OwnRedis:
    """redis-server on 127.0.0.1:port with DEBUG allowed (to pause it with DEBUG SLEEP), data in work_dir."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.work_dir = work_dir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The URL the hotline is given."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it answers (AssertionError after 10 s)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--enable-debug-command", "local", "--dir", str(self.work_dir),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = aioredis.Redis(port=self.port)
        try:
            for _ in range(100):
                try:
                    await asyncio.wait_for(client.ping(), 1)
                    return
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.1)
            raise AssertionError(f"redis-server on port {self.port} did not answer within 10 s")
        finally:
            await client.aclose()

    async def sleep(self, seconds: float) -> None:
        """Block the server for seconds (DEBUG SLEEP, as a stalled Redis does); returns when it answers again."""
        proc = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(self.port), "DEBUG", "SLEEP", str(seconds),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
        assert proc.returncode == 0, f"DEBUG SLEEP failed: {err.decode()[-300:]}"

    async def kill(self) -> None:
        """SIGKILL it (only this child) and wait."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
