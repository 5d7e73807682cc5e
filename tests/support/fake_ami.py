"""A fake Asterisk Manager Interface server speaking the real AMI wire protocol over loopback TCP.

It sends the banner, parses actions (``Key: Value`` lines ended by a blank line, CRLF), answers
Login / Ping / CoreShowChannels / QueueStatus like Asterisk 20 does, pushes events, and can
misbehave on request: stop answering pings (a silent dead peer), drop every connection, stop
listening and come back later on the same port, send malformed messages, or never answer an action.

FakeAmi, below, is the in-process stand-in: the AMI client as the domains call it.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from telephony import AmiActionFailed, AmiNotConnected

BANNER = b"Asterisk Call Manager/5.0.1\r\n"
EOL = "\r\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for 'connection refused' and fixed-port restarts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def encode_message(fields: Iterable[tuple[str, Any]]) -> bytes:
    """One AMI message: ``Key: Value`` lines and the blank line that ends it."""
    return ("".join(f"{k}: {v}{EOL}" for k, v in fields) + EOL).encode("utf-8")


@dataclass
class FakeAmiConnection:
    """One client connected to the fake."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    logged_in: bool = False
    answer_pings: bool = True
    actions: list[dict[str, str]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, fields: Iterable[tuple[str, Any]]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(fields))

    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class FakeAmiServer:
    """A small Asterisk Manager: ``await start()``, point an AmiClient at ``host``/``port``, ``await close()``."""

    def __init__(self, username: str = "hotline", secret: str = "s3cret", *, host: str = "127.0.0.1",
                 port: int = 0, fully_booted: bool = True) -> None:
        self.host, self.port = host, port
        self.username, self.secret = username, secret
        self.fully_booted = fully_booted
        self.actions: list[dict[str, str]] = []  # every action received, in order, over all connections
        self.connections: list[FakeAmiConnection] = []
        self.never_answer: set[str] = set()  # lower-case action names that get no answer at all
        self.partial_lists: set[str] = set()  # event-list actions answered with the start and one event only
        self.channels: list[dict[str, str]] = []
        self.queue_entries: list[dict[str, str]] = []
        self.logins_refused = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._action_seen = asyncio.Condition()

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (on a free port if port was 0; the same port again after go_down())."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def go_down(self) -> None:
        """Stop listening and drop every connection (Asterisk stopped: new connects are refused)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def close(self) -> None:
        await self.go_down()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- misbehaviour -----------------------------------------------------------------------
    async def drop_connections(self) -> None:
        """Abort every open connection (TCP reset, as when Asterisk dies)."""
        for conn in list(self.connections):
            if not conn.writer.is_closing():
                conn.writer.transport.abort()
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 2.0)

    def stop_answering_pings(self) -> None:
        """The connections open now stay open but never answer Ping again (a silent dead peer)."""
        for conn in self.live_connections:
            conn.answer_pings = False

    def push_event(self, name: str, fields: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        """Send one event to every logged-in connection."""
        items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        for conn in self.live_connections:
            conn.send([("Event", name), *items])

    def send_raw(self, data: bytes) -> None:
        """Send raw bytes (e.g. a malformed message) to every logged-in connection."""
        for conn in self.live_connections:
            conn.send_raw(data)

    @property
    def live_connections(self) -> list[FakeAmiConnection]:
        return [c for c in self.connections if c.logged_in and not c.closed.is_set()]

    # -- inspection -------------------------------------------------------------------------
    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("action", "").lower() == name.lower()]

    async def wait_for_action(self, name: str, count: int = 1, timeout: float = 3.0) -> dict[str, str]:
        """Wait until `count` actions of this name arrived; return the last one."""
        async with asyncio.timeout(timeout):
            async with self._action_seen:
                await self._action_seen.wait_for(lambda: len(self.actions_named(name)) >= count)
        return self.actions_named(name)[count - 1]

    # -- protocol ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = FakeAmiConnection(reader, writer)
        self.connections.append(conn)
        try:
            writer.write(BANNER)
            while True:
                action = await self._read_action(reader)
                if action is None:
                    return
                conn.actions.append(action)
                self.actions.append(action)
                async with self._action_seen:
                    self._action_seen.notify_all()
                if not self._answer(conn, action):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            conn.closed.set()
            self._handlers.discard(task)
            if not writer.is_closing():
                writer.close()

    @staticmethod
    async def _read_action(reader: asyncio.StreamReader) -> dict[str, str] | None:
        """One action as a dict with lower-case keys (None when the client closed)."""
        action: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if not raw:
                return None
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if action:
                    return action
                continue
            key, _, value = line.partition(":")
            action[key.strip().lower()] = value.strip()

    def _answer(self, conn: FakeAmiConnection, action: dict[str, str]) -> bool:
        """Answer one action; False to close the connection."""
        name = action.get("action", "").lower()
        aid = action.get("actionid", "")
        if name in self.never_answer:
            return True
        if name == "login":
            if action.get("username") == self.username and action.get("secret") == self.secret:
                conn.logged_in = True
                conn.send([("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")])
                if self.fully_booted:
                    conn.send([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", "12"),
                               ("LastReload", "12"), ("Status", "Fully Booted")])
                return True
            self.logins_refused += 1
            conn.send([("Response", "Error"), ("ActionID", aid), ("Message", "Authentication failed")])
            return False  # Asterisk hangs up after a failed login
        if not conn.logged_in:
            conn.send([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")])
            return True
        if name == "ping":
            if conn.answer_pings:
                conn.send([("Response", "Success"), ("ActionID", aid), ("Ping", "Pong"),
                           ("Timestamp", "1764400000.000000")])
            return True
        if name == "logoff":
            conn.send([("Response", "Goodbye"), ("ActionID", aid), ("Message", "Thanks for all the fish.")])
            return False
        if name == "coreshowchannels":
            self._event_list(conn, aid, "Channels will follow", "CoreShowChannel", self.channels,
                             "CoreShowChannelsComplete", partial=name in self.partial_lists)
            return True
        if name == "queuestatus":
            self._event_list(conn, aid, "Queue status will follow", "QueueEntry", self.queue_entries,
                             "QueueStatusComplete", partial=name in self.partial_lists)
            return True
        conn.send([("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")])
        return True

    @staticmethod
    def _event_list(conn: FakeAmiConnection, aid: str, message: str, event: str, items: list[dict[str, str]],
                    complete: str, *, partial: bool) -> None:
        conn.send([("Response", "Success"), ("ActionID", aid), ("EventList", "start"), ("Message", message)])
        for item in items[:1] if partial else items:
            conn.send([("Event", event), ("ActionID", aid), *item.items()])
        if partial:
            return
        conn.send([("Event", complete), ("ActionID", aid), ("EventList", "Complete"),
                   ("ListItems", str(len(items)))])


# --- in process: the AMI client as domains see it -------------------------------------------------


class AmiRefused(AmiActionFailed):
    """Asterisk refusing an action, as the fake says it."""


class AmiAway(AmiNotConnected):
    """AMI not connected, as the fake says it."""


class FakeAmi:
    """telephony.AmiClient in process, as the domains use it: event handlers (emit() delivers an event), actions
    recorded in `actions`, queue members (QueueAdd / QueueRemove / QueuePause, refused like Asterisk refuses
    duplicates), QueueStatus answered from `members` and `entries`, CoreShowChannels from `channels`, AstDB
    (DBGet on `astdb`; DBDel is refused, as for the hotline's account, which holds no `system` class: deletes go
    through the console, FakeConsole), and Originate answered with `originate_result` (an OriginateResponse value,
    an exception to raise, or a future to await). `away=True`: every action fails as with AMI disconnected."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.members: dict[tuple[str, str], dict[str, str]] = {}
        self.handlers: dict[str, list[Any]] = {}
        self.connected_handlers: list[Any] = []
        self.channels: list[dict[str, str]] = []
        self.entries: list[dict[str, str]] = []
        self.astdb: dict[str, str] = {}
        self.originate_result: str | Exception | asyncio.Future[Any] = "Success"
        self.connected = True
        self.away = False
        self.dbgets = 0

    def on_event(self, name: str, handler: Any) -> None:
        """Subscribe a handler to one event name."""
        self.handlers.setdefault(name, []).append(handler)

    def on_connected(self, handler: Any) -> None:
        """Subscribe a handler to (re)connects."""
        self.connected_handlers.append(handler)

    async def emit(self, **event: str) -> None:
        """Deliver one event to its handlers, in order."""
        for handler in self.handlers.get(event["Event"], []):
            await handler(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        """The actions of one name sent so far."""
        return [a for a in self.actions if a["Action"] == name]

    @property
    def originates(self) -> list[dict[str, Any]]:
        """The Originate actions sent so far."""
        return self.named("Originate")

    async def action(self, fields: dict[str, Any], *, timeout: float | None = None, as_list: bool | None = None,
                     check: bool = True) -> Any:
        """Answer one action as Asterisk would."""
        if self.away:
            raise AmiAway("AMI at 127.0.0.1:5038: not connected")
        self.actions.append(dict(fields))
        name = fields["Action"]
        if name == "QueueAdd":
            key = (fields["Queue"], fields["Interface"])
            if key in self.members:
                raise AmiRefused("AMI action QueueAdd failed: Unable to add interface: Already there")
            self.members[key] = {"Event": "QueueMember", "Queue": fields["Queue"], "Location": fields["Interface"],
                                 "StateInterface": fields["Interface"], "Name": fields["MemberName"],
                                 "Membership": "dynamic", "Paused": "1" if fields["Paused"] == "true" else "0"}
        elif name == "QueueRemove":
            if self.members.pop((fields["Queue"], fields["Interface"]), None) is None:
                raise AmiRefused("AMI action QueueRemove failed: Unable to remove interface: Not there")
        elif name == "QueuePause":
            for (_queue, interface), member in self.members.items():
                if interface == fields["Interface"]:
                    member["Paused"] = "1" if fields["Paused"] == "true" else "0"
                    member["PausedReason"] = fields.get("Reason", "")
        elif name == "Originate":
            outcome = self.originate_result
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, asyncio.Future):
                outcome = await outcome
            return [{"Response": "Success"}, {"Event": "OriginateResponse", "Response": outcome}]
        elif name == "DBGet":
            self.dbgets += 1
            key = f"{fields['Family']}/{fields['Key']}"
            if key not in self.astdb:
                return {"Response": "Error", "Message": "Database entry not found"}
            return [{"Response": "Success", "EventList": "start", "Message": "Result will follow"},
                    {"Event": "DBGetResponse", "Family": fields["Family"], "Key": fields["Key"],
                     "Val": self.astdb[key]}, {"Event": "DBGetComplete", "EventList": "Complete"}]
        elif name == "DBDel":
            return {"Response": "Error", "Message": "Permission denied"}  # the account holds no `system` class
        return {"Response": "Success"}

    async def event_list(self, fields: dict[str, Any], *, timeout: float | None = None) -> list[dict[str, str]]:
        """QueueStatus: the members and waiting entries; CoreShowChannels: the channels."""
        if self.away:
            raise AmiAway("AMI at 127.0.0.1:5038: not connected")
        if fields["Action"] == "QueueStatus":
            return [*self.members.values(), *self.entries]
        assert fields["Action"] == "CoreShowChannels", fields
        return list(self.channels)


class FakeConsole:
    """telephony.AsteriskConsole in process (Asterisk's control socket): records every CLI command in `commands`;
    `database del FAMILY KEY` deletes from `astdb` (give it a FakeAmi's to share one AstDB)."""

    def __init__(self, astdb: dict[str, str] | None = None) -> None:
        self.commands: list[str] = []
        self.astdb: dict[str, str] = astdb if astdb is not None else {}

    async def command(self, text: str, *, timeout: float | None = None) -> str:
        """Run one CLI command: AstDB deletes answer as Asterisk does, other commands print nothing."""
        self.commands.append(text)
        if text.startswith("database del "):
            verb, family, key = text.rsplit(" ", 2)
            assert verb == "database del", text
            removed = self.astdb.pop(f"{family}/{key}", None) is not None
            return "Database entry removed.\n" if removed else "Database entry not found.\n"
        return ""
