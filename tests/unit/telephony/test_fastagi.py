"""FastAgiServer / AgiSession against a fake Asterisk FastAGI client on loopback TCP."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from telephony.fastagi import (
    AgiCommandError,
    AgiError,
    AgiHangup,
    AgiResult,
    AgiSession,
    AgiTimeout,
    FastAgiServer,
)
from tests.support.fake_agi import (
    CLOSE,
    DEAD_CHANNEL,
    SILENT,
    USAGE_ERROR,
    FakeAgiCall,
    agi_variables,
)
from tests.support.fake_ami import free_port

Handler = Callable[[AgiSession], Awaitable[None]]


def agi_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("agi-") and not t.done()]


class Harness:
    """A started server on a free loopback port, and the fake calls made against it (all closed afterwards)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: FastAgiServer | None = None
        self.calls: list[FakeAgiCall] = []

    async def start(self, routes: dict[str, Handler], **kwargs: Any) -> FastAgiServer:
        self.server = FastAgiServer("127.0.0.1", self.port, **kwargs)
        for script, handler in routes.items():
            self.server.add_route(script, handler)
        await self.server.start()
        return self.server

    async def call(self, script: str = "ivr", uniqueid: str = "1764400000.1", **kwargs: Any) -> FakeAgiCall:
        variables = kwargs.pop("variables", None) or agi_variables(script, uniqueid, port=self.port)
        call = FakeAgiCall(self.port, variables=variables, **kwargs)
        self.calls.append(call)
        return await call.start()

    async def aclose(self) -> None:
        if self.server is not None:
            await self.server.close(grace=1.0)
        for call in self.calls:
            await call.close()


@pytest.fixture
async def agi() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.aclose()
    assert agi_tasks() == []


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


# --- a call's commands ----------------------------------------------------------------------------


async def test_handler_gets_headers_and_command_results(agi: Harness) -> None:
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def ivr(session: AgiSession) -> None:
        seen["headers"] = dict(session.headers)
        seen["ids"] = (session.script, session.uniqueid, session.channel, session.caller_number)
        seen["task"] = asyncio.current_task().get_name()  # type: ignore[union-attr]
        await session.answer()
        seen["callerid"] = await session.get_variable("CALLERID(num)")
        seen["unset"] = await session.get_variable("NO_SUCH_VAR")
        seen["spaced"] = await session.get_variable("CASE_TITLE")
        await session.set_variable("CASE_NOTE", 'say "hi" \\ bye')
        seen["menu"] = await session.get_data("ivr/menu", 5000, 4)
        seen["menu_partial_timeout"] = await session.get_data("ivr/menu", 5000, 4)
        seen["menu_silent_timeout"] = await session.get_data("ivr/menu", 5000, 4)
        seen["menu_pound_only"] = await session.get_data("ivr/menu", 5000, 4)
        seen["escape"] = await session.stream_file("ivr/welcome", "123")
        seen["no_escape"] = await session.stream_file("ivr/welcome", "123")
        seen["digit"] = await session.wait_for_digit(3000)
        seen["no_digit"] = await session.wait_for_digit(3000)
        seen["option"] = await session.get_option("ivr/menu", "0123456789*#", 6000)
        seen["no_option"] = await session.get_option("ivr/menu", "0123456789*#", 6000)
        seen["exec"] = await session.command("EXEC Playback ivr/bye")
        seen["record"] = await session.record_file("/tmp/rec-1", "wav", "#", 30000, 3)
        done.set()

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    call = await agi.call(replies={
        "ANSWER": "200 result=0",
        'GET FULL VARIABLE "${CALLERID(num)}"': "200 result=1 (01012345678)",
        'GET FULL VARIABLE "${NO_SUCH_VAR}"': "200 result=0",
        'GET FULL VARIABLE "${CASE_TITLE}"': "200 result=1 (pothole on main street)",
        "SET VARIABLE": "200 result=1",
        "GET DATA": ["200 result=1234", "200 result=12 (timeout)", "200 result= (timeout)", "200 result="],
        "STREAM FILE": ["200 result=50 endpos=12640", "200 result=0 endpos=48000"],
        "WAIT FOR DIGIT": ["200 result=55", "200 result=0"],
        "GET OPTION": ["200 result=49 endpos=9522", "200 result=0 endpos=8036"],  # as Asterisk 16 answers
        "EXEC": "100 result=0 Trying...\n200 result=0",
        "RECORD FILE": "200 result=0 (timeout) endpos=24000",
    })
    await asyncio.wait_for(done.wait(), 3.0)
    await call.wait_closed()

    headers = seen["headers"]
    assert headers["agi_network_script"] == "ivr" and headers["agi_request"].endswith("/ivr")
    assert headers["agi_accountcode"] == "" and headers["agi_language"] == "ko"
    assert len(headers) == len(agi_variables())
    assert seen["ids"] == ("ivr", "1764400000.1", "PJSIP/trunk-00000001", "01012345678")
    assert seen["task"] == "agi-ivr-1764400000.1"
    assert seen["callerid"] == "01012345678"
    assert seen["unset"] is None
    assert seen["spaced"] == "pothole on main street"
    assert seen["menu"] == ("1234", False)
    assert seen["menu_partial_timeout"] == ("12", True)
    assert seen["menu_silent_timeout"] == ("", True)  # no digit at all before the timeout
    assert seen["menu_pound_only"] == ("", False)  # '#' pressed straight away: not a timeout
    assert seen["escape"] == "2" and seen["no_escape"] == ""
    assert seen["digit"] == "7" and seen["no_digit"] == ""
    assert seen["option"] == "1" and seen["no_option"] == ""  # a key during or after the prompt; none in time
    assert seen["exec"] == AgiResult("0", "", "200 result=0")  # the 100 Trying line is skipped
    assert seen["record"].value == 0 and seen["record"].data == "timeout"
    assert call.commands == [
        "ANSWER",
        'GET FULL VARIABLE "${CALLERID(num)}"',
        'GET FULL VARIABLE "${NO_SUCH_VAR}"',
        'GET FULL VARIABLE "${CASE_TITLE}"',
        'SET VARIABLE CASE_NOTE "say \\"hi\\" \\\\ bye"',
        *['GET DATA "ivr/menu" 5000 4'] * 4,
        *['STREAM FILE "ivr/welcome" "123"'] * 2,
        "WAIT FOR DIGIT 3000",
        "WAIT FOR DIGIT 3000",
        *['GET OPTION "ivr/menu" "0123456789*#" 6000'] * 2,
        "EXEC Playback ivr/bye",
        'RECORD FILE "/tmp/rec-1" wav "#" 30000 0 BEEP s=3',
    ]
    server = agi.server
    assert server is not None
    assert server.sessions_started == 1 and server.sessions_failed == 0 and server.bad_requests == 0
    await eventually(lambda: server.active_sessions == 0, 1.0, "the session ended")


async def test_result_minus_one_is_an_app_error_not_a_hangup(agi: Harness) -> None:
    results: list[Any] = []

    async def ivr(session: AgiSession) -> None:
        results.append(await session.command("EXEC Dial PJSIP/nowhere"))
        results.append(await session.stream_file("ivr/missing"))
        results.append(session.hung_up)

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    call = await agi.call(replies={"EXEC": "200 result=-1", "STREAM FILE": "200 result=-1 endpos=0"})
    await call.wait_closed()
    assert results[0].result == "-1" and results[0].value == -1
    assert results[1:] == ["", False]


# --- hang-ups and errors --------------------------------------------------------------------------


async def test_hangup_mid_command_raises_agihangup_in_the_handler(agi: Harness) -> None:
    outcomes: dict[str, Any] = {}

    async def ivr(session: AgiSession) -> None:
        try:
            await session.stream_file("ivr/welcome", "0123456789")
        except AgiHangup as exc:
            outcomes["first"] = exc
        outcomes["hung_up"] = session.hung_up
        try:
            await session.answer()  # after a hang-up nothing more is sent
        except AgiHangup as exc:
            outcomes["second"] = exc
        raise AgiHangup("leaving")  # the server treats this as a normal end of call

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    # Asterisk: the out-of-band HANGUP, then the interrupted command's own answer
    call = await agi.call(replies={"STREAM FILE": "HANGUP\n200 result=-1 endpos=9120"})
    await call.wait_closed()
    assert isinstance(outcomes["first"], AgiHangup) and outcomes["hung_up"] is True
    assert isinstance(outcomes["second"], AgiHangup)
    assert call.commands == ['STREAM FILE "ivr/welcome" "0123456789"']
    server = agi.server
    assert server is not None and server.sessions_failed == 0


async def test_out_of_band_hangup_while_waiting_then_close(agi: Harness) -> None:
    caught: list[BaseException] = []
    waiting = asyncio.Event()

    async def ivr(session: AgiSession) -> None:
        waiting.set()
        try:
            await session.command("EXEC Queue general")
        except BaseException as exc:
            caught.append(exc)
            raise

    await agi.start({"ivr": ivr}, command_timeout=5.0)
    call = await agi.call(replies={"EXEC": SILENT})
    await asyncio.wait_for(waiting.wait(), 2.0)
    await call.wait_for_command("EXEC Queue")
    start = time.monotonic()
    call.send_hangup()  # the channel is gone: HANGUP, then Asterisk closes the AGI socket
    await asyncio.sleep(0.05)
    await call.close()
    await eventually(lambda: bool(caught), 2.0, "the handler saw the hang-up")
    assert isinstance(caught[0], AgiHangup)
    assert time.monotonic() - start < 1.0  # not the 5 s command timeout


async def test_dead_channel_511_is_a_hangup(agi: Harness) -> None:
    caught: list[BaseException] = []

    async def ivr(session: AgiSession) -> None:
        try:
            await session.get_variable("CALLERID(num)")
        except AgiError as exc:
            caught.append(exc)
        caught.append(session.hung_up)  # type: ignore[arg-type]

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    call = await agi.call(replies={"GET FULL VARIABLE": DEAD_CHANNEL})
    await call.wait_closed()
    assert isinstance(caught[0], AgiHangup) and caught[1] is True


async def test_result_data_hangup_and_closed_socket_are_hangups(agi: Harness) -> None:
    caught: list[BaseException] = []

    async def ivr(session: AgiSession) -> None:
        try:
            await session.record_file("/tmp/rec-2", "wav", "#", 30000, 3)
        except AgiError as exc:
            caught.append(exc)

    async def gone(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiError as exc:
            caught.append(exc)

    await agi.start({"ivr": ivr, "gone": gone}, command_timeout=2.0)
    call = await agi.call(replies={"RECORD FILE": "200 result=-1 (hangup) endpos=0"})
    await call.wait_closed()
    call2 = await agi.call("gone", "1764400000.2", replies={"ANSWER": CLOSE})
    await call2.wait_closed()
    await eventually(lambda: len(caught) == 2, 1.0, "both handlers saw a hang-up")
    assert all(isinstance(exc, AgiHangup) for exc in caught)


async def test_usage_error_is_a_command_error_and_the_session_goes_on(agi: Harness) -> None:
    seen: list[Any] = []

    async def ivr(session: AgiSession) -> None:
        try:
            await session.command("GET DATA")
        except AgiCommandError as exc:
            seen.append(exc)
        try:
            await session.command("FROB KNOB")
        except AgiCommandError as exc:
            seen.append(exc)
        seen.append(await session.get_variable("CALLERID(num)"))  # the channel is still in step

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    call = await agi.call(replies={"GET DATA": USAGE_ERROR, "FROB": "510 Invalid or unknown command",
                                   "GET FULL VARIABLE": "200 result=1 (01012345678)"})
    await call.wait_closed()
    assert isinstance(seen[0], AgiCommandError) and "GET" in str(seen[0]) and "\n" not in str(seen[0])
    assert isinstance(seen[1], AgiCommandError) and "510" in str(seen[1])
    assert seen[2] == "01012345678"
    server = agi.server
    assert server is not None and server.sessions_failed == 0


async def test_unanswered_command_times_out(agi: Harness) -> None:
    caught: list[Any] = []

    async def ivr(session: AgiSession) -> None:
        start = time.monotonic()
        try:
            await session.answer()
        except AgiTimeout as exc:
            caught.append((exc, time.monotonic() - start))
        start = time.monotonic()
        try:
            await session.command("EXEC Wait 10", timeout=0.1)  # a per-command timeout wins
        except AgiTimeout as exc:
            caught.append((exc, time.monotonic() - start))

    await agi.start({"ivr": ivr}, command_timeout=0.2)
    call = await agi.call(replies={"ANSWER": SILENT, "EXEC": SILENT})
    await call.wait_closed(3.0)
    (first, t1), (second, t2) = caught
    assert isinstance(first, AgiTimeout) and "ANSWER" in str(first) and "0.2" in str(first)
    assert 0.15 <= t1 < 0.7
    assert isinstance(second, AgiTimeout) and 0.05 <= t2 < 0.5


# --- the server -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_header", [
    b"agi_network: yes\nagi_network_script=ivr\nagi_uniqueid: 1.1\n\n",  # no ': ' separator
    b"agi_network: yes\nagi_network_script: ivr\nfoo: bar\n\n",  # not an agi_ variable
    b"agi_network: yes\nagi_uniqueid: 1.1\nagi_channel: PJSIP/x-1\n\n",  # no agi_network_script
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # someone else's protocol
], ids=["no-separator", "not-agi", "no-script", "http"])
async def test_malformed_variables_are_skipped_and_the_server_keeps_serving(agi: Harness, raw_header: bytes) -> None:
    handled: list[str] = []

    async def ivr(session: AgiSession) -> None:
        handled.append(session.uniqueid)
        await session.answer()

    server = await agi.start({"ivr": ivr}, command_timeout=2.0)
    bad = await agi.call(raw_header=raw_header)
    await bad.wait_closed()
    assert server.bad_requests == 1 and handled == [] and bad.commands == []
    good = await agi.call(uniqueid="1764400000.9", replies={"ANSWER": "200 result=0"})
    await good.wait_closed()
    assert handled == ["1764400000.9"] and good.commands == ["ANSWER"]
    assert server.bad_requests == 1 and server.sessions_started == 1


async def test_header_that_never_ends_is_dropped_after_the_header_timeout(agi: Harness) -> None:
    server = await agi.start({"ivr": lambda s: asyncio.sleep(0)}, command_timeout=1.0, header_timeout=0.2)
    start = time.monotonic()
    call = await agi.call(raw_header=b"agi_network: yes\nagi_network_script: ivr\n")  # no blank line
    await call.wait_closed()
    assert 0.15 <= time.monotonic() - start < 1.0
    assert server.bad_requests == 1 and server.sessions_started == 0


async def test_unknown_route_is_logged_and_counted(agi: Harness, caplog: pytest.LogCaptureFixture) -> None:
    async def ivr(session: AgiSession) -> None:
        raise AssertionError("must not be called")

    server = await agi.start({"ivr": ivr}, command_timeout=1.0)
    with caplog.at_level(logging.ERROR, logger="telephony.fastagi"):
        call = await agi.call(variables=agi_variables("survey", "1764400000.7", channel="PJSIP/trunk-00000007"))
        await call.wait_closed()
    assert server.bad_requests == 1 and server.sessions_started == 0 and server.sessions_failed == 0
    assert call.commands == []
    messages = [r.getMessage() for r in caplog.records if r.name == "telephony.fastagi"]
    assert any("no route for 'survey'" in m and "PJSIP/trunk-00000007" in m for m in messages)


async def test_route_is_the_script_path_without_arguments(agi: Harness) -> None:
    scripts: list[str] = []

    async def ivr(session: AgiSession) -> None:
        scripts.append(session.script)

    await agi.start({"ivr": ivr}, command_timeout=1.0)
    call = await agi.call(variables=agi_variables("ivr?lang=ko&menu=2", "1764400000.3"))
    await call.wait_closed()
    assert scripts == ["ivr"]
    with pytest.raises(ValueError):
        assert agi.server is not None
        agi.server.add_route("ivr", ivr)


async def test_a_failing_handler_does_not_kill_the_server(agi: Harness, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def ivr(session: AgiSession) -> None:
        calls.append(session.uniqueid)
        if session.uniqueid.endswith(".1"):
            raise ZeroDivisionError("bug in the IVR")
        await session.answer()

    server = await agi.start({"ivr": ivr}, command_timeout=1.0)
    with caplog.at_level(logging.ERROR, logger="telephony.fastagi"):
        bad = await agi.call(uniqueid="1764400000.1")
        await bad.wait_closed()  # the failed call's connection is closed (the dialplan goes on)
    assert server.sessions_failed == 1
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    good = await agi.call(uniqueid="1764400000.2", replies={"ANSWER": "200 result=0"})
    await good.wait_closed()
    assert calls == ["1764400000.1", "1764400000.2"] and good.commands == ["ANSWER"]
    assert server.sessions_failed == 1 and server.sessions_started == 2
    assert server.health_report()["ok"] is True


async def test_close_cancels_handlers_after_the_grace_period(agi: Harness) -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def stuck(session: AgiSession) -> None:
        started.set()
        try:
            await session.command("EXEC Queue general")  # never answered; long command timeout
        except asyncio.CancelledError:
            events.append(f"cancelled {session.uniqueid}")
            raise

    async def finishing(session: AgiSession) -> None:
        await asyncio.sleep(0.1)
        events.append(f"finished {session.uniqueid}")

    server = await agi.start({"stuck": stuck, "finishing": finishing}, command_timeout=60.0)
    stuck_call = await agi.call("stuck", "1764400000.1", replies={"EXEC": SILENT})
    quick_call = await agi.call("finishing", "1764400000.2")
    await asyncio.wait_for(started.wait(), 2.0)
    await eventually(lambda: server.active_sessions == 2, 1.0, "both calls in their handlers")
    assert {t.get_name() for t in agi_tasks()} == {"agi-stuck-1764400000.1", "agi-finishing-1764400000.2"}
    start = time.monotonic()
    await server.close(grace=0.4)
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 2.0
    assert events == ["finished 1764400000.2", "cancelled 1764400000.1"]
    assert agi_tasks() == [] and server.active_sessions == 0
    await stuck_call.wait_closed(1.0)
    await quick_call.wait_closed(1.0)
    assert server.health_report()["ok"] is False
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", agi.port)  # no longer listening


async def test_close_that_lands_as_an_answer_arrives_still_cancels_the_handler(agi: Harness) -> None:
    # On Python 3.11 asyncio.wait_for() returns the result instead of raising when a cancel races with the
    # answer; the handler then ran on and close() waited for it. Cancel exactly when a line has been read.
    commands = 0
    handler_task: asyncio.Task[Any] | None = None
    cancelled = asyncio.Event()

    async def ivr(session: AgiSession) -> None:
        nonlocal commands, handler_task
        handler_task = asyncio.current_task()
        wire = session._wire
        deliver = wire._deliver

        def deliver_then_cancel(line: str | None) -> None:  # called by the transport, outside any task
            deliver(line)  # the answer is in: the handler is woken up ...
            if commands == 3:
                assert handler_task is not None
                handler_task.cancel()  # ... and close() cancels it (grace over) before it resumes

        wire._deliver = deliver_then_cancel  # type: ignore[method-assign]
        try:
            while commands < 50:  # bounded, so that a swallowed cancel fails the test instead of hanging it
                await session.command("WAIT FOR DIGIT 10")
                commands += 1
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await agi.start({"ivr": ivr}, command_timeout=5.0)
    call = await agi.call(replies={"WAIT FOR DIGIT": "200 result=0"})
    await call.wait_closed()
    assert cancelled.is_set() and commands == 3  # not one more command after the cancel
    assert len(call.commands) == 4
    assert agi_tasks() == []


async def test_listener_binds_where_asked_and_a_taken_port_is_a_clear_error(agi: Harness) -> None:
    async def ivr(session: AgiSession) -> None:
        await session.answer()

    server = await agi.start({"ivr": ivr}, command_timeout=1.0)
    report = server.health_report()
    assert report["ok"] is True and report["address"] == f"127.0.0.1:{agi.port}"
    with socket.create_connection(("127.0.0.1", agi.port), timeout=1.0):
        pass  # listening on exactly that address and port
    second = FastAgiServer("127.0.0.1", agi.port)
    with pytest.raises(AgiError) as info:
        await second.start()
    text = str(info.value)
    assert f"127.0.0.1:{agi.port}" in text and "in use" in text and "\n" not in text
    # the first listener is unharmed
    call = await agi.call(replies={"ANSWER": "200 result=0"})
    await call.wait_closed()
    assert call.commands == ["ANSWER"]


async def test_twenty_concurrent_calls_each_in_their_own_task(agi: Harness) -> None:
    release_slow = asyncio.Event()
    finished: list[str] = []
    tasks: dict[str, asyncio.Task[Any]] = {}
    in_handler = 0
    most_in_handler = 0

    async def ivr(session: AgiSession) -> None:
        nonlocal in_handler, most_in_handler
        task = asyncio.current_task()
        assert task is not None
        tasks[session.uniqueid] = task
        in_handler += 1
        most_in_handler = max(most_in_handler, in_handler)
        try:
            if session.uniqueid == "slow.0":
                await release_slow.wait()
            digit = await session.stream_file("ivr/welcome", "123")
            await session.set_variable("MENU", digit)
            finished.append(session.uniqueid)
        finally:
            in_handler -= 1

    server = await agi.start({"ivr": ivr}, command_timeout=2.0)
    replies = {"STREAM FILE": "200 result=49 endpos=100", "SET VARIABLE": "200 result=1"}
    uids = ["slow.0"] + [f"fast.{i}" for i in range(1, 20)]
    calls = await asyncio.gather(*(agi.call(uniqueid=u, replies=replies) for u in uids))
    await asyncio.gather(*(c.wait_closed() for c in calls[1:]))  # the 19 others finish while one is blocked
    assert sorted(finished) == sorted(uids[1:])
    assert server.active_sessions == 1 and not calls[0].server_closed.is_set()
    assert [t.get_name() for t in agi_tasks()] == ["agi-ivr-slow.0"]
    release_slow.set()
    await calls[0].wait_closed()
    assert finished[-1] == "slow.0" and len(finished) == 20
    assert len({id(t) for t in tasks.values()}) == 20  # one task per call
    assert {t.get_name() for t in tasks.values()} == {f"agi-ivr-{u}" for u in uids}
    assert most_in_handler >= 2
    assert all(c.commands == ['STREAM FILE "ivr/welcome" "123"', 'SET VARIABLE MENU "1"'] for c in calls)
    assert server.sessions_started == 20 and server.sessions_failed == 0 and server.active_sessions == 0


# --- what the dialplan hands over, and fewer round trips -------------------------------------------


async def test_url_query_values_are_params_and_cost_no_command(agi: Harness) -> None:
    seen: dict[str, Any] = {}

    async def ivr(session: AgiSession) -> None:
        seen["params"] = dict(session.params)
        seen["script"] = session.script

    await agi.start({"ivr": ivr}, command_timeout=1.0)
    call = await agi.call(variables=agi_variables("ivr?linkedid=1764400000.7&queue=&case=C%2F1", "1764400000.8"))
    await call.wait_closed()
    assert seen == {"params": {"linkedid": "1764400000.7", "queue": "", "case": "C/1"}, "script": "ivr"}
    assert call.commands == []  # nothing was asked of Asterisk


async def test_set_variables_is_one_mset_for_plain_values_and_single_sets_otherwise(agi: Harness) -> None:
    async def ivr(session: AgiSession) -> None:
        await session.set_variables({"HOTLINE_CASE": "2611290001", "HOTLINE_PRIORITY": "5", "HOTLINE_QUEUE": "민원"})
        await session.set_variables({"A": "x,y", "B": 'say "hi"'})  # MSet would split or mangle these
        await session.set_variables({"ONLY": "one"})

    await agi.start({"ivr": ivr}, command_timeout=1.0)
    call = await agi.call(replies={"EXEC": "200 result=0", "SET VARIABLE": "200 result=1"})
    await call.wait_closed()
    assert call.commands == [
        'EXEC MSet "HOTLINE_CASE=2611290001,HOTLINE_PRIORITY=5,HOTLINE_QUEUE=민원"',
        'SET VARIABLE A "x,y"',
        'SET VARIABLE B "say \\"hi\\""',
        'SET VARIABLE ONLY "one"',
    ]


def test_the_server_runs_on_uvloop_the_hotlines_default_loop() -> None:
    # The hotline runs on uvloop (Settings.event_loop); its transports are not asyncio's classes.
    from hotline.cli import run_event_loop

    async def scenario() -> int:
        harness = Harness()
        results: list[str] = []

        async def ivr(session: AgiSession) -> None:
            results.append(await session.stream_file("ivr/welcome", "12"))
            await session.set_variables({"HOTLINE_QUEUE": "general", "HOTLINE_PRIORITY": "0"})

        try:
            await harness.start({"ivr": ivr}, command_timeout=2.0)
            calls = await asyncio.gather(*(harness.call(uniqueid=f"uv.{i}", replies={
                "STREAM FILE": "200 result=50 endpos=10", "EXEC": "200 result=0"}) for i in range(5)))
            await asyncio.gather(*(c.wait_closed() for c in calls))
        finally:
            await harness.aclose()
        assert results == ["2"] * 5
        assert all(c.commands[-1] == 'EXEC MSet "HOTLINE_QUEUE=general,HOTLINE_PRIORITY=0"' for c in calls)
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        return 0

    assert run_event_loop(scenario(), "uvloop") == 0


async def test_variables_a_line_per_write_and_answers_split_across_packets(agi: Harness) -> None:
    """Asterisk writes each variable with its own write(); an answer may arrive in pieces (even mid-character)."""
    seen: list[Any] = []

    async def ivr(session: AgiSession) -> None:
        seen.append(session.caller_number)
        seen.append(await session.get_variable("CASE_TITLE"))
        seen.append(await session.stream_file("ivr/welcome", "12"))

    await agi.start({"ivr": ivr}, command_timeout=2.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    try:
        for key, value in agi_variables(port=agi.port).items():
            writer.write(f"{key}: {value}\n".encode())
            await writer.drain()
            await asyncio.sleep(0.002)  # separate TCP segments, as from Asterisk's setup_env()
        writer.write(b"\n")
        assert (await asyncio.wait_for(reader.readline(), 2.0)).startswith(b"GET FULL VARIABLE")
        answer = "200 result=1 (보도블록 파손)\n".encode()
        cut = answer.index("블".encode()) + 1  # inside a UTF-8 character
        writer.write(answer[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer[cut:])
        assert (await asyncio.wait_for(reader.readline(), 2.0)).startswith(b"STREAM FILE")
        writer.write(b"200 result=49 ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"endpos=1200\n")
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # the handler ended: the session is closed
    finally:
        writer.close()
    assert seen == ["01012345678", "보도블록 파손", "1"]
