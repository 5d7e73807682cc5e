"""AmiClient against a fake Asterisk Manager on loopback TCP: login, actions, timeouts, events, liveness, reconnect."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from telephony.ami import AmiActionFailed, AmiClient, AmiConnectError, AmiNotConnected, AmiTimeout
from tests.support.fake_ami import FakeAmiServer, free_port

USER, SECRET = "hotline", "s3cret"
PING_INTERVAL = 0.2
ACTION_TIMEOUT = 0.2

_names = iter(range(1_000_000))


def client_for(fake: FakeAmiServer, *, secret: str = SECRET, **kwargs: Any) -> AmiClient:
    """A client with small timings and a name unique to this test (for the task check)."""
    opts: dict[str, Any] = dict(action_timeout=1.0, ping_interval=5.0, connect_timeout=1.0, backoff_initial=0.05,
                                backoff_max=0.4)
    opts.update(kwargs)
    return AmiClient(fake.host, fake.port, USER, secret, name=f"amitest{next(_names)}", **opts)


def owned_tasks(client: AmiClient) -> list[asyncio.Task[Any]]:
    prefix = client._name  # the name given above; every task the client creates starts with it
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until predicate() is true; return the time it took (fail the test after timeout)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmiServer]:
    server = FakeAmiServer(USER, SECRET)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[AmiClient]]:
    """Clients put here are closed after the test, and must leave no task behind."""
    made: list[AmiClient] = []
    yield made
    for client in made:
        await client.close()
        assert owned_tasks(client) == []


# --- connect and log in ---------------------------------------------------------------------------


async def test_connection_refused_is_one_line_naming_the_address() -> None:
    port = free_port()
    client = AmiClient("127.0.0.1", port, USER, SECRET, connect_timeout=1.0, name="amirefused")
    with pytest.raises(AmiConnectError) as info:
        await client.start()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "refused" in text
    assert "\n" not in text and text.strip() == text
    assert not client.connected
    assert client.health_report()["ok"] is False
    assert owned_tasks(client) == []


async def test_wrong_secret_is_refused(fake: FakeAmiServer) -> None:
    client = client_for(fake, secret="wrong")
    with pytest.raises(AmiConnectError) as info:
        await client.start()
    text = str(info.value)
    assert "refused" in text and "Authentication failed" in text
    assert f"{fake.host}:{fake.port}" in text and repr(USER) in text
    assert "\n" not in text
    assert fake.logins_refused == 1
    login = fake.actions_named("Login")[0]
    assert login["username"] == USER and login["secret"] == "wrong" and login["events"] == "on"
    assert not client.connected and client.health_report()["connects"] == 0
    assert owned_tasks(client) == []


async def test_login_and_health_report(fake: FakeAmiServer, clients: list[AmiClient]) -> None:
    client = client_for(fake)
    clients.append(client)
    connected_calls = 0

    async def on_connected() -> None:
        nonlocal connected_calls
        connected_calls += 1

    client.on_connected(on_connected)
    await client.start()
    assert client.connected
    await client.wait_connected(0.1)
    assert connected_calls == 1
    report = client.health_report()
    assert report["ok"] is True
    assert report["address"] == f"127.0.0.1:{fake.port}"
    assert report["connects"] == 1 and report["reconnects"] == 0 and report["last_error"] is None
    assert {t.get_name() for t in owned_tasks(client)} == {f"{client._name}-events", f"{client._name}-supervisor",
                                                          f"{client._name}-ping"}


# --- actions --------------------------------------------------------------------------------------


async def test_action_is_answered(fake: FakeAmiServer, clients: list[AmiClient]) -> None:
    client = client_for(fake)
    clients.append(client)
    await client.start()
    resp = await client.action({"Action": "Ping"})
    assert resp.success and resp["Ping"] == "Pong"
    sent = fake.actions_named("Ping")[-1]
    assert sent["actionid"] == resp["ActionID"]


async def test_unknown_action_fails_with_the_message(fake: FakeAmiServer, clients: list[AmiClient]) -> None:
    client = client_for(fake)
    clients.append(client)
    await client.start()
    with pytest.raises(AmiActionFailed, match="Invalid/unknown command"):
        await client.action({"Action": "NoSuchThing"})
    resp = await client.action({"Action": "NoSuchThing"}, check=False)
    assert resp["Response"] == "Error"
    assert client.connected


async def test_event_lists_return_their_events(fake: FakeAmiServer, clients: list[AmiClient]) -> None:
    fake.channels = [
        {"Channel": "PJSIP/trunk-00000001", "Uniqueid": "1764400000.1", "CallerIDNum": "01012345678",
         "ChannelStateDesc": "Up", "Application": "AGI"},
        {"Channel": "PJSIP/agent1001-00000002", "Uniqueid": "1764400000.2", "CallerIDNum": "1001",
         "ChannelStateDesc": "Ringing", "Application": "Queue"},
    ]
    fake.queue_entries = [{"Queue": "general", "Position": "1", "Channel": "PJSIP/trunk-00000003", "Wait": "7"}]
    client = client_for(fake)
    clients.append(client)
    await client.start()
    channels = await client.event_list({"Action": "CoreShowChannels"})
    assert [c["Channel"] for c in channels] == ["PJSIP/trunk-00000001", "PJSIP/agent1001-00000002"]
    assert channels[1]["ChannelStateDesc"] == "Ringing" and channels[0]["Event"] == "CoreShowChannel"
    entries = await client.event_list({"Action": "QueueStatus"})
    assert len(entries) == 1 and entries[0]["Event"] == "QueueEntry" and entries[0]["Wait"] == "7"
    fake.channels = []
    assert await client.event_list({"Action": "CoreShowChannels"}) == []
    # the full answer, with the opening response and the closing event, is there for who asks
    full = await client.action({"Action": "QueueStatus"}, as_list=True)
    assert full[0]["EventList"] == "start" and full[-1]["Event"] == "QueueStatusComplete"
    # list events carry the ActionID, so they are answers and never reach on_event handlers
    assert client.health.events_received == 1  # FullyBooted only


async def test_unanswered_action_times_out(fake: FakeAmiServer, clients: list[AmiClient]) -> None:
    fake.never_answer = {"status"}
    client = client_for(fake)
    clients.append(client)
    await client.start()
    start = time.monotonic()
    with pytest.raises(AmiTimeout) as info:
        await client.action({"Action": "Status"}, timeout=0.25)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.8
    assert "Status" in str(info.value) and "0.25" in str(info.value)
    # the default action timeout applies when none is given
    start = time.monotonic()
    with pytest.raises(AmiTimeout):
        await client.action({"Action": "Status"})
    assert 0.9 <= time.monotonic() - start < 1.6
    # the connection is still usable, and the timed-out actions left nothing behind
    assert (await client.action({"Action": "Ping"}))["Ping"] == "Pong"
    assert client._protocol is not None and client._protocol.responses == {}


async def test_actions_in_flight_fail_fast_when_the_connection_drops(fake: FakeAmiServer,
                                                                     clients: list[AmiClient]) -> None:
    fake.never_answer = {"status"}
    fake.partial_lists = {"coreshowchannels"}
    fake.channels = [{"Channel": "PJSIP/trunk-00000001", "Uniqueid": "1.1"}]
    client = client_for(fake, action_timeout=5.0)
    clients.append(client)
    await client.start()
    unanswered = asyncio.create_task(client.action({"Action": "Status"}))
    half_answered = asyncio.create_task(client.event_list({"Action": "CoreShowChannels"}))
    await fake.wait_for_action("Status")
    await fake.wait_for_action("CoreShowChannels")
    await asyncio.sleep(0.05)  # let the start of the list arrive
    start = time.monotonic()
    await fake.drop_connections()
    with pytest.raises(AmiNotConnected):
        await unanswered
    with pytest.raises(AmiNotConnected):
        await half_answered
    assert time.monotonic() - start < 1.0  # not the 5 s action timeout
    with pytest.raises(AmiNotConnected):
        await client.action({"Action": "Ping"})  # while disconnected (backoff: reconnecting soon)
    await client.wait_connected(3.0)


# --- events ---------------------------------------------------------------------------------------


async def test_events_are_dispatched_in_order_to_sync_and_async_handlers(fake: FakeAmiServer,
                                                                         clients: list[AmiClient]) -> None:
    client = client_for(fake)
    clients.append(client)
    seen_sync: list[str] = []
    seen_async: list[str] = []
    seen_all: list[tuple[str, str]] = []
    got_last = asyncio.Event()

    def on_newstate(event: Any) -> None:
        seen_sync.append(event["Seq"])

    async def on_newstate_slow(event: Any) -> None:
        # a handler that yields (unevenly) must not let later events overtake it
        await asyncio.sleep(0.002 if int(event["Seq"]) % 3 == 0 else 0)
        seen_async.append(event["Seq"])
        if event["Seq"] == "59":
            got_last.set()

    def on_any(event: Any) -> None:
        seen_all.append((event["Event"], event.get("Seq", "")))

    client.on_event("Newstate", on_newstate)
    client.on_event("newstate", on_newstate_slow)  # names are case-insensitive
    client.on_event("*", on_any)
    await client.start()
    for i in range(60):
        if i == 30:
            fake.push_event("Hangup", {"Seq": "h", "Channel": "PJSIP/trunk-00000001", "Cause": "16"})
        fake.push_event("Newstate", {"Seq": str(i), "Channel": "PJSIP/trunk-00000001", "ChannelState": "6"})
    await asyncio.wait_for(got_last.wait(), 3.0)
    await eventually(lambda: len(seen_all) >= 62, 1.0, "the '*' handler saw every event")
    expected = [str(i) for i in range(60)]
    assert seen_sync == expected
    assert seen_async == expected
    assert seen_all[0] == ("FullyBooted", "")
    assert [s for e, s in seen_all[1:]] == expected[:30] + ["h"] + expected[30:]
    assert client.health.events_received == 62 and client.health.events_skipped == 0


async def test_a_failing_handler_does_not_stop_later_events(fake: FakeAmiServer, clients: list[AmiClient],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    client = client_for(fake)
    clients.append(client)
    delivered: list[str] = []
    after_failure: list[str] = []

    def flaky(event: Any) -> None:
        if event["Seq"] in ("2", "5"):
            raise KeyError("broken handler")
        delivered.append(event["Seq"])

    async def flaky_async(event: Any) -> None:
        if event["Seq"] == "7":
            raise RuntimeError("broken async handler")

    def later_handler(event: Any) -> None:
        after_failure.append(event["Seq"])

    client.on_event("UserEvent", flaky)
    client.on_event("UserEvent", flaky_async)
    client.on_event("UserEvent", later_handler)
    await client.start()
    with caplog.at_level(logging.ERROR, logger="telephony.ami"):
        for i in range(10):
            fake.push_event("UserEvent", {"UserEvent": "Test", "Seq": str(i)})
        await eventually(lambda: len(after_failure) == 10, 2.0, "all ten events reached the last handler")
    assert delivered == ["0", "1", "3", "4", "6", "7", "8", "9"]
    assert after_failure == [str(i) for i in range(10)]  # the same event still reaches the next handler
    assert client.health.events_skipped == 3
    assert client.health_report()["events_skipped"] == 3
    assert sum("event skipped" in r.getMessage() for r in caplog.records) == 3
    assert client.connected


async def test_malformed_messages_are_skipped_and_the_connection_stays_up(fake: FakeAmiServer,
                                                                          clients: list[AmiClient]) -> None:
    client = client_for(fake)
    clients.append(client)
    events: list[str] = []
    client.on_event("*", lambda e: events.append(e["Event"]))
    await client.start()
    fake.send_raw(b"garbage without a colon\r\nmore garbage\r\n\r\n")  # no key: value lines at all
    fake.send_raw(b"X-Weird: 1\r\nAnother-Odd-Key: yes\r\n\r\n")  # neither Event nor Response
    fake.send_raw(b"Event: Newchannel\r\nActionID: a\r\nActionID: b\r\n\r\n")  # a list as id breaks the lookup
    fake.send_raw(b"Response: Success\r\nMessage: answer to nothing\r\n\r\n")  # a response nobody asked for
    fake.send_raw(b"\r\n\r\n\r\n")  # stray blank lines
    fake.send_raw(b"\xff\xfe\x00binary: noise\r\n\r\n")
    fake.push_event("Newexten", {"Channel": "PJSIP/trunk-00000001", "Exten": "s"})
    await eventually(lambda: "Newexten" in events, 2.0, "the good event after the bad ones")
    assert events == ["FullyBooted", "Newexten"]
    assert client.connected
    assert (await client.action({"Action": "Ping"}))["Ping"] == "Pong"
    assert client.health.reconnects == 0 and len(fake.connections) == 1


# --- liveness and reconnect -----------------------------------------------------------------------


async def test_silent_peer_is_noticed_by_ping_and_the_client_reconnects(fake: FakeAmiServer,
                                                                        clients: list[AmiClient]) -> None:
    client = client_for(fake, ping_interval=PING_INTERVAL, action_timeout=ACTION_TIMEOUT)
    clients.append(client)
    rebuilds = 0

    async def rebuild() -> None:
        nonlocal rebuilds
        rebuilds += 1

    client.on_connected(rebuild)
    await client.start()
    await fake.wait_for_action("Ping", count=2)  # pings are answered: nothing happens
    assert client.connected and client.health.reconnects == 0
    fake.stop_answering_pings()
    noticed = await eventually(lambda: not client.connected, 2.0, "the dead peer was noticed")
    assert noticed <= PING_INTERVAL + ACTION_TIMEOUT + 0.25
    report = client.health_report()
    assert report["ok"] is False and "ping failed" in report["last_error"]
    await client.wait_connected(2.0)
    first = fake.connections[0]
    await asyncio.wait_for(first.closed.wait(), 1.0)  # the client gave up the dead connection
    report = client.health_report()
    assert report["ok"] is True and report["reconnects"] >= 1 and report["connects"] == 2
    assert rebuilds == 2
    assert len(fake.actions_named("Login")) == 2
    assert (await client.action({"Action": "Ping"}))["Ping"] == "Pong"  # the new connection answers


async def test_reconnects_with_backoff_after_asterisk_comes_back(fake: FakeAmiServer, clients: list[AmiClient],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    fake.channels = [{"Channel": "PJSIP/trunk-00000001", "Uniqueid": "1.1"}]
    client = client_for(fake, ping_interval=PING_INTERVAL, action_timeout=ACTION_TIMEOUT, backoff_initial=0.1,
                        backoff_max=0.4)
    clients.append(client)
    live_channels: list[list[str]] = []

    async def rebuild_live_state() -> None:  # what queueing.call_tracker does on every (re)connect
        channels = await client.event_list({"Action": "CoreShowChannels"})
        live_channels.append([c["Uniqueid"] for c in channels])

    client.on_connected(rebuild_live_state)
    await client.start()
    assert live_channels == [["1.1"]]
    with caplog.at_level(logging.INFO, logger="telephony.ami"):
        await fake.go_down()
        await eventually(lambda: not client.connected, 1.0, "the lost connection was noticed")
        assert client.health_report()["ok"] is False
        assert "connection lost" in client.health_report()["last_error"]
        await eventually(lambda: client.health.reconnects >= 4, 3.0, "several refused reconnects")
        assert not client.connected
        assert "127.0.0.1" in client.health_report()["last_error"]  # the refused attempt, one line
        fake.channels = [{"Channel": "PJSIP/trunk-00000002", "Uniqueid": "2.2"},
                         {"Channel": "PJSIP/trunk-00000003", "Uniqueid": "3.3"}]
        await asyncio.sleep(0.3)
        await fake.come_back()
        await client.wait_connected(2.0)
        await eventually(lambda: len(live_channels) == 2, 1.0, "the on_connected hook ran again")
    assert live_channels[1] == ["2.2", "3.3"]
    report = client.health_report()
    assert report["ok"] is True and report["reconnects"] >= 1 and report["connects"] == 2
    delays = [float(m.group(1)) for r in caplog.records
              if (m := re.search(r"reconnecting to \S+ in ([\d.]+) s", r.getMessage()))]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]  # doubles from backoff_initial ...
    assert max(delays) == 0.4  # ... up to backoff_max
    assert (await client.action({"Action": "Ping"}))["Ping"] == "Pong"
    # after a successful reconnect the backoff starts small again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="telephony.ami"):
        await fake.drop_connections()
        await eventually(lambda: client.health.connects == 3, 2.0, "the second reconnect")
    delays = [float(m.group(1)) for r in caplog.records
              if (m := re.search(r"reconnecting to \S+ in ([\d.]+) s", r.getMessage()))]
    assert delays == [0.1]
    await client.wait_connected(1.0)


async def test_close_leaves_no_task_running(fake: FakeAmiServer) -> None:
    client = client_for(fake, ping_interval=0.05, action_timeout=0.5)
    await client.start()
    await fake.wait_for_action("Ping", count=2)
    assert owned_tasks(client)
    await client.close()
    assert owned_tasks(client) == []
    assert not client.connected and client.health_report()["ok"] is False
    await asyncio.wait_for(fake.connections[0].closed.wait(), 1.0)  # the socket is closed too
    with pytest.raises(AmiNotConnected):
        await client.action({"Action": "Ping"})


async def test_close_during_reconnect_backoff_leaves_no_task(fake: FakeAmiServer) -> None:
    client = client_for(fake, backoff_initial=0.3, backoff_max=0.3)
    await client.start()
    await fake.go_down()
    await eventually(lambda: client.health.reconnects >= 1, 1.0, "reconnecting")
    await client.close()
    assert owned_tasks(client) == []


async def test_close_right_as_a_ping_answer_arrives_still_stops_the_ping_loop(fake: FakeAmiServer) -> None:
    # Python 3.11's asyncio.wait_for swallows a cancel that lands while the awaited answer is already in:
    # the ping loop then outlived close() (which waited for it forever). Recreate exactly that instant.
    client = client_for(fake, ping_interval=0.02, action_timeout=1.0)
    await client.start()
    protocol = client._protocol
    assert protocol is not None
    original = protocol.handle_message
    fired = asyncio.Event()

    def handle_message(message: Any) -> None:
        original(message)  # resolves the ping's future ...
        if message.get("Ping") == "Pong" and not fired.is_set():
            fired.set()
            for task in owned_tasks(client):  # ... and close() starts cancelling before the ping task resumes
                task.cancel()

    protocol.handle_message = handle_message  # type: ignore[method-assign]
    await asyncio.wait_for(fired.wait(), 2.0)
    await asyncio.sleep(0.1)  # one cancel only, as in close(); a second one would mask the bug
    assert owned_tasks(client) == []  # the ping loop did not swallow the cancel
    pings = len(fake.actions_named("Ping"))
    await asyncio.sleep(0.1)
    assert len(fake.actions_named("Ping")) == pings
    await asyncio.wait_for(client.close(), 2.0)
    assert owned_tasks(client) == []
