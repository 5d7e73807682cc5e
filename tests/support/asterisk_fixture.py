"""Shared fixtures for tests against a real Asterisk on test ports (tests/conftest.py registers them)."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from telephony import AGI_SECRET_ENV
from telephony.asterisk_process import AsteriskConfig, AsteriskProcess, QueueConf
from tests.support.ports import PortBlock, module_ports

# Test ports: this module's block (away from a dev instance's 5060/5038/4573, RTP 10000-10999).
_PORTS = module_ports(__name__)
TEST_SIP_PORT = _PORTS.hotline("sip")
TEST_AMI_PORT = _PORTS.hotline("ami")
TEST_AGI_PORT = _PORTS.hotline("agi")
TEST_RTP_PORTS = _PORTS.rtp_range()
TEST_AMI_SECRET = "test-ami-secret"
TEST_AGI_SECRET = "test-agi-secret-0123456789"  # in Asterisk's environment: the dialplan's AGI tokens are made of it
TEST_AGENTS = (
    ("agent1", "agent1-pass", ("complaints", "inquiries", "operator")),
    ("agent2", "agent2-pass", ("inquiries",)),
)
TEST_QUEUES = (
    QueueConf("complaints", timeout_seconds=10, wrapup_seconds=0),
    QueueConf("inquiries", timeout_seconds=10, wrapup_seconds=0),
    QueueConf("operator", timeout_seconds=10, wrapup_seconds=0),
)


def asterisk_ports(block: PortBlock) -> dict[str, int]:
    """make_test_config's port settings for an Asterisk of a module's own, inside that module's block."""
    rtp_start, rtp_end = block.rtp_range()
    return {"sip_port": block.hotline("sip"), "ami_port": block.hotline("ami"), "agi_port": block.hotline("agi"),
            "rtp_port_start": rtp_start, "rtp_port_end": rtp_end}


def make_test_config(run_dir: Path, **overrides: object) -> AsteriskConfig:
    """An AsteriskConfig on the test ports with two agents and the three hotline queues."""
    values: dict[str, object] = dict(
        run_dir=run_dir,
        ami_secret=TEST_AMI_SECRET,
        agents=TEST_AGENTS,
        queues=TEST_QUEUES,
        hotline_number="12345",
        sip_port=TEST_SIP_PORT,
        ami_port=TEST_AMI_PORT,
        agi_port=TEST_AGI_PORT,
        rtp_port_start=TEST_RTP_PORTS[0],
        rtp_port_end=TEST_RTP_PORTS[1],
        ami_username="hotline",
    )
    values.update(overrides)
    return AsteriskConfig(**values)  # type: ignore[arg-type]


def asterisk_pids_using(conf: Path) -> list[int]:
    """Pids of live processes whose command line names this asterisk.conf (ours, not a dev instance)."""
    pids = []
    needle = str(conf).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline and b"asterisk" in cmdline.split(b"\0", 1)[0]:
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def asterisk_config(tmp_path_factory: pytest.TempPathFactory) -> AsteriskConfig:
    """The session's Asterisk configuration (run dir under pytest's tmp dir)."""
    return make_test_config(tmp_path_factory.mktemp("asterisk"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk(asterisk_config: AsteriskConfig) -> AsyncIterator[AsteriskProcess]:
    """A running Asterisk on the test ports for the whole session; stopped (and checked gone) at the end."""
    proc = AsteriskProcess(asterisk_config, env={AGI_SECRET_ENV: TEST_AGI_SECRET})
    await proc.start(ready_timeout=30.0)
    try:
        yield proc
    finally:
        await proc.stop()
        assert not asterisk_pids_using(asterisk_config.asterisk_conf), "Asterisk left running after stop()"


# ---------------------------------------------------------------------------------------------- FastAGI stub


@dataclass
class AgiSession:
    """One FastAGI connection the stub served: the agi_* environment and each command's reply line."""

    env: dict[str, str]
    replies: list[str] = field(default_factory=list)


class FastAgiStub:
    """A tiny FastAGI server: for each connection, read the env block, run `script` and record the replies."""

    def __init__(self, host: str = "127.0.0.1", port: int = TEST_AGI_PORT, reply_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.reply_timeout = reply_timeout
        self.script: list[str] | Callable[[dict[str, str]], list[str]] = []
        self.sessions: asyncio.Queue[AgiSession] = asyncio.Queue()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Listen on host:port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5.0)
            self._server = None

    def reset(self, script: list[str] | Callable[[dict[str, str]], list[str]]) -> None:
        """Use this script for the next connections and forget earlier sessions."""
        self.script = script
        while not self.sessions.empty():
            self.sessions.get_nowait()

    async def next_session(self, timeout: float = 20.0) -> AgiSession:
        """The next finished AGI session."""
        return await asyncio.wait_for(self.sessions.get(), timeout=timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = AgiSession(env={})
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), timeout=5.0)).decode(errors="replace")
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                session.env[key.strip()] = value.strip()
            script = self.script(session.env) if callable(self.script) else list(self.script)
            for command in script:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                reply = await asyncio.wait_for(reader.readline(), timeout=self.reply_timeout)
                session.replies.append(reply.decode(errors="replace").strip())
                if not reply or reply.startswith(b"HANGUP"):
                    break
        except (TimeoutError, ConnectionError) as exc:
            session.replies.append(f"stub error: {type(exc).__name__}")
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=2.0)
            self.sessions.put_nowait(session)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def agi_stub(asterisk_config: AsteriskConfig) -> AsyncIterator[FastAgiStub]:
    """A FastAGI stub on the config's AGI port for the whole session (tests set its script with reset())."""
    stub = FastAgiStub(asterisk_config.agi_host, asterisk_config.agi_port)
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


def espeak_wav(text: str, wav: Path) -> Path:
    """Synthesize text to a WAV with espeak-ng (an error naming the tool if it is missing)."""
    import shutil
    import subprocess

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed (run `make setup`)")
    subprocess.run([binary, "-w", str(wav), text], check=True, timeout=30, capture_output=True)
    return wav


__all__ = [
    "AgiSession",
    "FastAgiStub",
    "TEST_AGI_PORT",
    "TEST_AMI_PORT",
    "TEST_AMI_SECRET",
    "TEST_SIP_PORT",
    "TEST_AGI_SECRET",
    "asterisk_ports",
    "agi_stub",
    "asterisk",
    "asterisk_config",
    "asterisk_pids_using",
    "espeak_wav",
    "make_test_config",
]
