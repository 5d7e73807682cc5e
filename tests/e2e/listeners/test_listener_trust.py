"""The running hotline's local listeners let in only their own clients: a forged FastAGI session and a newline
flood get nowhere while a real SIPp call still reaches the IVR; the ASR websocket refuses clients without the
token, and a huge phrase list is refused at once while another client is answered."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import websockets

from cases import CaseStore
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-listener-trust", ports=PORTS, env={
        "HOTLINE_AGI_MAX_CONNECTIONS": "40"})
    async with running_hotline(h):
        yield h


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cases(hotline: HotlineUnderTest) -> AsyncIterator[CaseStore]:
    engine = create_engine_from_url(hotline.settings().database_url)
    yield CaseStore(engine)
    await engine.dispose()


def bridge_rss(hotline: HotlineUnderTest) -> int:
    """The bridge process's resident memory in bytes."""
    assert hotline.process is not None
    status = Path(f"/proc/{hotline.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


async def callers(cases: CaseStore) -> list[str]:
    return [c.caller_number for c in await cases.list_recent(limit=200)]


FORGED_CALLER = "01099990001"


def forged_session(port: int, script: str) -> bytes:
    """What a local process sends to pose as Asterisk: a plausible variables block, then answers to anything."""
    variables = {"agi_network": "yes", "agi_network_script": script, "agi_request": f"agi://127.0.0.1:{port}/{script}",
                 "agi_channel": "PJSIP/trunk-00000abc", "agi_language": "ko", "agi_type": "PJSIP",
                 "agi_uniqueid": "1764400999.1", "agi_callerid": FORGED_CALLER, "agi_dnid": "12345",
                 "agi_context": "hotline-inbound", "agi_extension": "12345", "agi_priority": "3"}
    answers = "200 result=0\n" * 14  # enough for the 14 commands the forged session ran before
    return ("".join(f"{k}: {v}\n" for k, v in variables.items()) + "\n" + answers).encode()


async def test_a_forged_agi_session_runs_no_command_and_files_no_case(
        hotline: HotlineUnderTest, cases: CaseStore) -> None:
    settings = hotline.settings()
    for script in ("ivr?linkedid=1764400999.1", "ivr?auth=" + "0" * 40 + "&linkedid=1764400999.1"):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.agi_port)
        writer.write(forged_session(settings.agi_port, script))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a single command
        writer.close()
    await asyncio.sleep(2)  # what a session that got in would have written by now
    assert FORGED_CALLER not in await callers(cases)
    log = hotline.log_path.read_text(errors="replace")
    assert log.count("missing or wrong AGI secret") == 2
    assert settings.agi_secret is not None and settings.asr_ws_token is not None
    asterisk_log = (hotline.run_dir / "asterisk" / "log" / "messages").read_text(errors="replace")
    for secret in (settings.agi_secret, settings.asr_ws_token):
        assert secret not in log and secret not in asterisk_log
        for conf in (hotline.run_dir / "asterisk" / "etc").glob("*.conf"):
            assert secret not in conf.read_text(), conf


def newline_flood(port: int, total: int) -> tuple[int, float]:
    """Send up to total bytes of newlines; (bytes taken before the bridge cut us off, seconds until then)."""
    chunk = b"\n" * 65536
    sent, start = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            while sent < total:
                sent += sock.send(chunk)
        except OSError:
            pass
    return sent, time.monotonic() - start


async def test_a_newline_flood_is_cut_off_and_the_bridge_stays_small_and_connected(
        hotline: HotlineUnderTest) -> None:
    settings = hotline.settings()
    before = bridge_rss(hotline)
    sent, seconds = await asyncio.to_thread(newline_flood, settings.agi_port, 279 * 1024 * 1024)
    grown = bridge_rss(hotline) - before
    print(f"newline flood: {sent} bytes taken in {seconds:.3f} s, bridge RSS {grown / 1e6:+.1f} MB")
    assert sent < 16 * 1024 * 1024 and seconds < 2, (sent, seconds)
    assert grown < 20 * 1024 * 1024
    health = await hotline.health()
    assert health is not None and health["ok"] and health["components"]["ami"]["ok"], health


async def test_connections_over_the_limit_are_refused_and_calls_go_on_after(hotline: HotlineUnderTest) -> None:
    settings = hotline.settings()
    held = [socket.create_connection(("127.0.0.1", settings.agi_port), timeout=5)
            for _ in range(settings.agi_max_connections)]
    try:
        await asyncio.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", settings.agi_port), timeout=5)
        start = time.monotonic()
        try:
            assert await asyncio.to_thread(extra.recv, 1) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 0.5
        extra.close()
    finally:
        for sock in held:
            sock.close()
    assert "connections already open" in hotline.log_path.read_text(errors="replace")


async def test_a_real_call_still_reaches_the_ivr_with_asterisks_token(
        hotline: HotlineUnderTest, cases: CaseStore, tmp_path: Path) -> None:
    settings = hotline.settings()
    caller = "01055516001"
    call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="trusted", steps=[("pause", 1500), ("dtmf", "2"),
                                                                          ("pause", 4000)],
                       hangup="caller", timeout=60)
    result = await call.run()
    assert result.answered, result.describe()
    deadline = time.monotonic() + 20
    case = None
    while time.monotonic() < deadline and case is None:
        case = next((c for c in await cases.list_recent(limit=50) if c.caller_number == caller), None)
        await asyncio.sleep(0.3)
    assert case is not None and case.menu_path[:1] == ["2"], case


async def test_the_asr_websocket_refuses_a_client_without_the_token(hotline: HotlineUnderTest) -> None:
    url = f"ws://127.0.0.1:{hotline.settings().asr_ws_port}/"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=5):
            pass
    assert refused.value.response.status_code == 401
    assert "asr websocket: refused 127.0.0.1: missing or wrong token" in hotline.log_path.read_text(errors="replace")


async def test_a_huge_phrase_list_is_refused_at_once_while_another_clients_ping_is_answered(
        hotline: HotlineUnderTest) -> None:
    settings = hotline.settings()
    url = f"ws://127.0.0.1:{settings.asr_ws_port}/"
    bearer = {"Authorization": f"Bearer {settings.asr_ws_token}"}
    huge = json.dumps({"config": {"phrase_list": [f"낱말{i}" for i in range(16000)]}}, ensure_ascii=False)
    assert len(huge.encode()) > 220 * 1024  # the 229 KB message that froze the bridge for 3.3 s
    async with websockets.connect(url, open_timeout=5, additional_headers=bearer) as other, \
            websockets.connect(url, open_timeout=5, additional_headers=bearer, max_size=None) as attacker:
        await other.send(json.dumps({"config": {"sample_rate": 8000, "phrase_list": ["버스", "위생"]}}))
        start = time.monotonic()
        await attacker.send(huge)
        pongs = []
        for _ in range(5):
            waiter = await other.ping()
            sent = time.monotonic()
            await asyncio.wait_for(waiter, 2)
            pongs.append(time.monotonic() - sent)
        answer = json.loads(await asyncio.wait_for(attacker.recv(), 2))
        refused_after = time.monotonic() - start
        assert answer["error"].startswith("text message of ") and "\n" not in answer["error"]
        # the other client is still served: silence gives it an (empty) final result
        await other.send(b"\0\0" * 1600)
        assert "partial" in json.loads(await asyncio.wait_for(other.recv(), 5))
        await other.send('{"eof": 1}')
        assert "text" in json.loads(await asyncio.wait_for(other.recv(), 5))
    print(f"huge phrase_list refused after {refused_after * 1000:.1f} ms; "
          f"pings {[round(p * 1000, 1) for p in pongs]} ms")
    assert max(pongs) < 0.1, pongs
    assert refused_after < 1.0
