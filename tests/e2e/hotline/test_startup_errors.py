"""`hotline run` refuses to start with one clear line when a part is missing, and leaves nothing running."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.hotline_process import HotlineUnderTest, run_hotline_command


def _env(tmp_path: Path, base: int, **extra: str) -> dict[str, str]:
    env = HotlineUnderTest(tmp_path / "run", base_port=base).env
    env.update(extra)
    return env


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, f"expected exactly one error line, got: {stderr[-2000:]}"
    return lines[0]


async def test_bad_setting_is_named(tmp_path: Path) -> None:
    code, _, err = await run_hotline_command(["run"], _env(tmp_path, 31000, HOTLINE_SIP_HOST="not-an-ip"))
    assert code == 2
    assert "sip_host" in _error_line(err) and "not an IP address" in err


async def test_database_unreachable(tmp_path: Path) -> None:
    env = _env(tmp_path, 31100, DATABASE_URL="postgresql+asyncpg://postgres:pw@127.0.0.1:1/nowhere")
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    line = _error_line(err)
    assert line.startswith("error: database postgresql+asyncpg://postgres:***@127.0.0.1:1/nowhere")
    assert "pw@" not in err


@pytest.mark.redis
async def test_redis_unreachable(tmp_path: Path) -> None:
    code, _, err = await run_hotline_command(["run"], _env(tmp_path, 31200, REDIS_URL="redis://127.0.0.1:1/0"))
    assert code == 1
    assert _error_line(err).startswith("error: Redis at redis://127.0.0.1:1/0:")


async def test_http_port_taken(tmp_path: Path) -> None:
    env = _env(tmp_path, 31300)
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["HOTLINE_HTTP_PORT"])))
        s.listen()
        code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert f"port {env['HOTLINE_HTTP_PORT']}/tcp (HTTP console) on 127.0.0.1 is already in use" in _error_line(err)


@pytest.mark.vosk
async def test_asterisk_not_installed(tmp_path: Path) -> None:
    env = _env(tmp_path, 31400, HOTLINE_ASTERISK_BINARY="/nonexistent/asterisk")
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert "Asterisk is not installed" in _error_line(err)


@pytest.mark.vosk
async def test_ami_refused_with_external_asterisk(tmp_path: Path) -> None:
    code, _, err = await run_hotline_command(["run", "--no-asterisk"], _env(tmp_path, 31500))
    assert code == 1
    assert _error_line(err) == "error: AMI at 127.0.0.1:31538: connection refused"


@pytest.mark.vosk
async def test_missing_vosk_model(tmp_path: Path) -> None:
    env = _env(tmp_path, 31600, VOSK_MODEL_PATH=str(tmp_path / "no-model"))
    code, _, err = await run_hotline_command(["run"], env)
    assert code == 1
    assert str(tmp_path / "no-model") in _error_line(err)
