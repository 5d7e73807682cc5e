"""`hotline run` refuses to start with one clear line when a part is missing, and leaves nothing running."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.hotline_process import HotlineUnderTest, run_hotline_command
from tests.support.ports import module_ports

PORTS = module_ports(__name__)  # each test's hotline refuses to start, so the tests can share the block


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = HotlineUnderTest(tmp_path / "run", ports=PORTS).env
    env.update(extra)
    return env


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, f"expected exactly one error line, got: {stderr[-2000:]}"
    return lines[0]


async def test_bad_setting_is_named(tmp_path: Path) -> None:
    code, _, err = await run_hotline_command(["run"], _env(tmp_path, HOTLINE_SIP_HOST="not-an-ip"))
    assert code == 2
    assert "sip_host" in _error_line(err) and "not an IP address" in err


async def test_database_unreachable(tmp_path: Path) -> None:
    env = _env(tmp_path, DATABASE_URL="postgresql+asyncpg://postgres:pw@127.0.0.1:1/nowhere")
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    line = _error_line(err)
    assert line.startswith("error: database postgresql+asyncpg://postgres:***@127.0.0.1:1/nowhere")
    assert "pw@" not in err


@pytest.mark.redis
async def test_redis_unreachable(tmp_path: Path) -> None:
    code, _, err = await run_hotline_command(["run"], _env(tmp_path, REDIS_URL="redis://127.0.0.1:1/0"))
    assert code == 1
    assert _error_line(err).startswith("error: Redis at redis://127.0.0.1:1/0:")


async def test_http_port_taken(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["HOTLINE_HTTP_PORT"])))
        s.listen()
        code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert f"port {env['HOTLINE_HTTP_PORT']}/tcp (HTTP console) on 127.0.0.1 is already in use" in _error_line(err)


@pytest.mark.vosk
async def test_asterisk_not_installed(tmp_path: Path) -> None:
    env = _env(tmp_path, HOTLINE_ASTERISK_BINARY="/nonexistent/asterisk")
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert "Asterisk is not installed" in _error_line(err)


@pytest.mark.vosk
async def test_ami_refused_with_external_asterisk(tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, _, err = await run_hotline_command(["run", "--no-asterisk"], env)
    assert code == 1
    assert _error_line(err) == f"error: AMI at 127.0.0.1:{env['HOTLINE_AMI_PORT']}: connection refused"


@pytest.mark.vosk
async def test_missing_vosk_model(tmp_path: Path) -> None:
    env = _env(tmp_path, VOSK_MODEL_PATH=str(tmp_path / "no-model"))
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert str(tmp_path / "no-model") in _error_line(err)
