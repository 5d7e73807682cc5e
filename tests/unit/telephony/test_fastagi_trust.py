"""The FastAGI listener lets in only our Asterisk: a forged session, a flood and too many connections are refused."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest

from telephony import AgiError, AgiSession, FastAgiServer, agi_token
from tests.support.fake_agi import FakeAgiCall, agi_variables
from tests.support.ports import module_ports

SECRET = "test-agi-secret-0123456789abcdef"
PORT = module_ports(__name__).spare(0)


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


class Cases:
    """What a handler would do for a call that got in: here it only notes the session."""

    def __init__(self) -> None:
        self.opened: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.busy_seconds = 0.0  # how long the case write after ANSWER takes

    async def ivr(self, session: AgiSession) -> None:
        self.opened.append({**session.headers, **{f"param:{k}": v for k, v in session.params.items()}})
        try:
            await session.command("ANSWER")
            await asyncio.sleep(self.busy_seconds)  # writing the case: meanwhile nobody reads the connection
            while True:
                await session.command("STREAM FILE welcome \"\"")
        except AgiError as exc:
            self.errors.append(str(exc))


@pytest.fixture
async def served() -> AsyncIterator[tuple[FastAgiServer, Cases]]:
    cases = Cases()
    server = FastAgiServer("127.0.0.1", PORT, command_timeout=2.0, header_timeout=1.0, secret=SECRET,
                           max_connections=4)
    server.add_route("ivr", cases.ivr)
    await server.start()
    yield server, cases
    await server.close(grace=1.0)


def forged(script: str, uniqueid: str = "1764400000.5") -> bytes:
    """The variables block Asterisk would send for agi://127.0.0.1:PORT/<script>."""
    variables = agi_variables(script, uniqueid, port=PORT, callerid="01099998888")
    return "".join(f"{k}: {v}\n" for k, v in variables.items()).encode() + b"\n"


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent until it closed the connection."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


@pytest.mark.parametrize("script", [
    "ivr?linkedid=1764400000.5",  # no token at all
    "ivr?auth=0123456789abcdef0123456789abcdef01234567&linkedid=1764400000.5",  # a guessed token
    f"ivr?auth={agi_token(SECRET, '1764400000.4')}&linkedid=1764400000.5",  # another channel's token
    f"ivr?auth={agi_token('not-the-secret-at-all-000', '1764400000.5')}",  # made with another secret
], ids=["missing", "guessed", "other-channel", "other-secret"])
async def test_a_forged_session_is_closed_before_any_command_and_opens_no_case(
        served: tuple[FastAgiServer, Cases], script: str, caplog: pytest.LogCaptureFixture) -> None:
    server, cases = served
    with caplog.at_level(logging.INFO, logger="telephony.fastagi"):
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(forged(script))
        await writer.drain()
        sent_to_us = await read_until_closed(reader, 2.0)
        writer.close()
    assert sent_to_us == b""  # not one command
    assert cases.opened == [] and server.sessions_started == 0 and server.bad_requests == 1
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [f"FastAGI: refused 127.0.0.1:{local_port}: missing or wrong AGI secret"]
    assert SECRET not in caplog.text


async def test_asterisks_session_with_the_channels_token_gets_in_and_the_token_goes_no_further(
        served: tuple[FastAgiServer, Cases], caplog: pytest.LogCaptureFixture) -> None:
    server, cases = served
    token = agi_token(SECRET, "1764400000.6")
    variables = agi_variables(f"ivr?auth={token}&linkedid=1764400000.6", "1764400000.6", port=PORT)
    variables["agi_request"] = f"agi://127.0.0.1:{PORT}/{variables['agi_network_script']}"
    with caplog.at_level(logging.DEBUG):
        call = await FakeAgiCall(PORT, variables=variables, replies={"ANSWER": ["200 result=0", "<close>"]}).start()
        await call.wait_closed()
        await call.close()
    assert call.commands[:1] == ["ANSWER"]
    assert server.sessions_started == 1 and len(cases.opened) == 1
    seen = cases.opened[0]
    assert seen["param:linkedid"] == "1764400000.6" and "param:auth" not in seen
    assert seen["agi_network_script"] == "ivr?linkedid=1764400000.6"
    assert seen["agi_request"] == f"agi://127.0.0.1:{PORT}/ivr?linkedid=1764400000.6"
    assert token not in repr(seen) and token not in caplog.text and SECRET not in caplog.text


def flood(payload: bytes, total: int, prefix: bytes = b"") -> tuple[int, float]:
    """Send prefix, then payload repeatedly up to total bytes, from a thread with a blocking socket; return
    (bytes the server took before it cut us off, seconds until then)."""
    sent = 0
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
        sock.sendall(prefix)
        try:
            while sent < total:
                sent += sock.send(payload)
        except OSError:  # reset or broken pipe: the server dropped us
            pass
    return sent, time.monotonic() - start


async def loop_lag_during(work: asyncio.Future[tuple[int, float]]) -> float:
    """The longest the event loop was late on a 5 ms tick while work ran."""
    worst = 0.0
    while not work.done():
        before = time.monotonic()
        await asyncio.sleep(0.005)
        worst = max(worst, time.monotonic() - before - 0.005)
    return worst


NEWLINES = b"\n" * 65536
FLOOD_BYTES = 279 * 1024 * 1024  # what grew the bridge to 3 GB


@pytest.mark.parametrize("prefix, payload", [
    (b"", NEWLINES),  # newlines instead of variables
    (b"agi_network: yes\n", b"agi_x: " + b"y" * 65529),  # a variable line that never ends
    (b"agi_network: yes\n", b"agi_x: 1\n" * 7282),  # variables that never end
], ids=["newlines", "endless-line", "endless-block"])
async def test_an_oversized_header_is_refused_quickly_with_memory_flat(
        served: tuple[FastAgiServer, Cases], prefix: bytes, payload: bytes) -> None:
    server, cases = served
    before = rss_bytes()
    work = asyncio.ensure_future(asyncio.to_thread(flood, payload, FLOOD_BYTES, prefix))
    lag = await loop_lag_during(work)
    sent, seconds = await work
    assert sent < 16 * 1024 * 1024 and seconds < 2.0, (sent, seconds)  # cut off early, not after 279 MB
    assert rss_bytes() - before < 20 * 1024 * 1024
    assert lag < 0.1
    assert cases.opened == [] and server.bad_requests == 1


async def test_a_newline_flood_inside_a_session_ends_it_with_memory_flat(
        served: tuple[FastAgiServer, Cases]) -> None:
    server, cases = served
    cases.busy_seconds = 3.0  # the unbounded version kept every newline of these 3 s and stalled the loop
    before = rss_bytes()
    prefix = forged(f"ivr?auth={agi_token(SECRET, '1764400000.5')}") + b"200 result=0\n"  # ANSWER's answer
    work = asyncio.ensure_future(asyncio.to_thread(flood, NEWLINES, FLOOD_BYTES, prefix))
    lag = await loop_lag_during(work)
    sent, seconds = await work
    assert sent < 16 * 1024 * 1024 and seconds < 2.0, (sent, seconds)
    assert rss_bytes() - before < 20 * 1024 * 1024
    assert lag < 0.1
    await asyncio.sleep(3.2)
    assert len(cases.opened) == 1 and cases.errors and "closed" in cases.errors[-1]
    assert server.active_sessions == 0


async def test_connections_over_the_limit_are_refused_at_once(
        served: tuple[FastAgiServer, Cases], caplog: pytest.LogCaptureFixture) -> None:
    server, cases = served
    held = [await asyncio.open_connection("127.0.0.1", PORT) for _ in range(4)]  # the limit: idle, mid-header
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="telephony.fastagi"):
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        assert await read_until_closed(reader, 1.0) == b""
        refused_after = time.monotonic() - start
        writer.close()
    assert refused_after < 0.2
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        f"FastAGI: refused {writer.get_extra_info('sockname')[0]}:{writer.get_extra_info('sockname')[1]}: "
        "4 connections already open"]
    for _, w in held[:1]:
        w.close()
    await asyncio.sleep(0.05)
    token = agi_token(SECRET, "1764400000.7")
    call = await FakeAgiCall(PORT, variables=agi_variables(f"ivr?auth={token}", "1764400000.7", port=PORT),
                             replies={"ANSWER": "<close>"}).start()  # a place is free again: a real call gets in
    await call.wait_closed()
    await call.close()
    assert len(cases.opened) == 1
    for _, w in held[1:]:
        w.close()
