"""A fake Asterisk FastAGI *client*: connects to a FastAGI server like Asterisk's AGI() application does.

It sends the ``agi_*`` variable block and the blank line that ends it, then answers each command
from a script that maps a command prefix to reply lines, records every command, and can misbehave:
send ``HANGUP`` out of band, answer with a 520 multi-line usage error, never answer, close the socket.

ChannelAgi and ScriptedAgi, below, are in-process AGI sessions for the routes and the IVR flow.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from telephony import AgiHangup, AgiResult

# a reply: lines separated by '\n' (sent as they are, each ended by '\n'), one of the tokens below, a list of
# replies used one per matching command (the last one then repeats), or a function of the command line.
Reply = str | list[str] | Callable[[str], str]

SILENT = "<silent>"  # never answer this command
CLOSE = "<close>"  # close the connection instead of answering (the channel went away)

USAGE_ERROR = (
    "520-Invalid command syntax.  Proper usage follows:\n"
    " Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
    "     Stream the given file, and receive DTMF data.\n"
    "520 End of proper usage."
)
DEAD_CHANNEL = "511 Command Not Permitted on a dead channel or intercept routine"
INVALID = "510 Invalid or unknown command"


def agi_variables(script: str = "ivr", uniqueid: str = "1764400000.1", *, channel: str = "PJSIP/trunk-00000001",
                  callerid: str = "01012345678", port: int = 4573, **extra: str) -> dict[str, str]:
    """The variables Asterisk 20 sends for AGI(agi://127.0.0.1:<port>/<script>), in its order."""
    variables = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": channel,
        "agi_language": "ko",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "20.5.2",
        "agi_callerid": callerid,
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "12345",
        "agi_rdnis": "unknown",
        "agi_context": "from-trunk",
        "agi_extension": "12345",
        "agi_priority": "2",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",  # Asterisk sends "agi_accountcode: " (value empty, separator kept)
        "agi_threadid": "140224375682624",
    }
    variables.update(extra)
    return variables


class FakeAgiCall:
    """One call's AGI connection. ``await start()``, then the server's handler drives it; ``await finished``."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", variables: Mapping[str, str] | None = None,
                 raw_header: bytes | None = None, replies: Mapping[str, Reply] | None = None,
                 default_reply: str = INVALID) -> None:
        self.host, self.port = host, port
        self.variables = dict(variables if variables is not None else agi_variables(port=port))
        self.raw_header = raw_header
        self.replies: dict[str, Reply] = dict(replies or {})
        self.default_reply = default_reply
        self.commands: list[str] = []
        self.server_closed = asyncio.Event()  # the server ended the AGI session (EOF)
        self.command_seen = asyncio.Event()  # set on every command (clear it to wait for the next one)
        self._used: dict[str, int] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def uniqueid(self) -> str:
        return self.variables.get("agi_uniqueid", "")

    async def start(self) -> FakeAgiCall:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        if self.raw_header is not None:
            self._writer.write(self.raw_header)
        else:
            self._writer.write("".join(f"{k}: {v}\n" for k, v in self.variables.items()).encode() + b"\n")
        await self._writer.drain()
        self._task = asyncio.create_task(self._serve(), name=f"fake-agi-{self.uniqueid}")
        return self

    async def wait_closed(self, timeout: float = 3.0) -> None:
        """Wait until the server closed the session."""
        await asyncio.wait_for(self.server_closed.wait(), timeout)

    async def wait_for_command(self, prefix: str, timeout: float = 3.0) -> str:
        """Wait until a command starting with prefix arrived; return it."""
        async with asyncio.timeout(timeout):
            while True:
                for cmd in self.commands:
                    if cmd.startswith(prefix):
                        return cmd
                self.command_seen.clear()
                await self.command_seen.wait()

    def send_hangup(self) -> None:
        """Announce the hang-up out of band, as Asterisk does when the channel goes away mid-command."""
        self.send_line("HANGUP")

    def send_line(self, line: str) -> None:
        assert self._writer is not None
        if not self._writer.is_closing():
            self._writer.write(line.encode() + b"\n")

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _reply_for(self, command: str) -> str:
        matches = [p for p in self.replies if command.startswith(p)]
        if not matches:
            return self.default_reply
        prefix = max(matches, key=len)
        reply = self.replies[prefix]
        if callable(reply):
            return reply(command)
        if isinstance(reply, list):
            n = self._used.get(prefix, 0)
            self._used[prefix] = n + 1
            return reply[min(n, len(reply) - 1)]
        return reply

    async def _serve(self) -> None:
        assert self._reader is not None and self._writer is not None
        try:
            while True:
                raw = await self._reader.readline()
                if not raw:
                    return
                command = raw.decode().rstrip("\n")
                self.commands.append(command)
                self.command_seen.set()
                reply = self._reply_for(command)
                if reply == SILENT:
                    continue
                if reply == CLOSE:
                    self._writer.close()
                    return
                for line in reply.split("\n"):
                    self._writer.write(line.encode() + b"\n")
                await self._writer.drain()
        except ConnectionError:
            return
        finally:
            self.server_closed.set()
            with contextlib.suppress(Exception):
                self._writer.close()


class ChannelAgi:
    """An in-process stand-in for an AGI session of a FastAGI route: the channel's variables, the caller, and
    what was played (for routes that read and set variables and play prompts, not for the wire protocol)."""

    def __init__(self, variables: Mapping[str, str], caller: str = "0105", uniqueid: str = "300.1", *,
                 spoken: int = 16000, hang_up_while_recording: bool = False) -> None:
        # spoken: bytes of audio RECORD FILE leaves behind; hang_up_while_recording: the caller hangs up then.
        self.variables = dict(variables)
        self.caller_number = caller
        self.uniqueid = uniqueid
        self.played: list[str] = []
        self.recorded: list[str] = []
        self._spoken = spoken
        self._hang_up = hang_up_while_recording

    async def get_variable(self, name: str) -> str | None:
        """The variable's value, None when unset."""
        return self.variables.get(name)

    async def set_variable(self, name: str, value: str) -> None:
        """Set one variable."""
        self.variables[name] = value

    async def set_variables(self, values: Mapping[str, str]) -> None:
        """Set several variables."""
        self.variables.update(values)

    async def stream_file(self, path: str, escape_digits: str = "") -> str:
        """Record the prompt as played; no key is pressed."""
        self.played.append(path)
        return ""

    async def record_file(self, path: str, fmt: str, escape: str, max_ms: int, silence_s: int,
                          beep: bool = True) -> None:
        """RECORD FILE: leaves `spoken` bytes of audio (or the caller hangs up while recording)."""
        self.recorded.append(path)
        Path(f"{path}.{fmt}").write_bytes(b"\0" * (44 + self._spoken))
        if self._hang_up:
            raise AgiHangup("caller hung up")


class ScriptedAgi:
    """An in-process AGI session for the IVR flow: keys for GET DATA (one string per prompt), barge-in keys per
    prompt, what the caller does when recorded ("dtmf:2", "say" for some speech, "" for silence), a recording
    to leave behind, and a point to hang up at (an event such as "play:/ko/welcome", or a kind: "play", "get",
    "record", "say") or to block at until `release` is set. `log` lists what the flow did, in order."""

    params: dict[str, str] = {}  # the AGI URL's query (none here: the linkedid is asked for)

    def __init__(self, keys: list[str] | None = None, listen: list[str] | None = None,
                 barge: dict[str, str] | None = None, block_on: str | None = None, hang_up_on: str | None = None,
                 caller: str = "01011112222", uniqueid: str = "1.1", recording: Path | None = None) -> None:
        self.keys = list(keys or [])
        self.listen = list(listen or [])
        self.barge = barge or {}
        self.block_on = block_on
        self.release = asyncio.Event()
        self.blocked = asyncio.Event()
        self.hang_up_on = hang_up_on
        self.recording = recording
        self.uniqueid = uniqueid
        self.channel = "PJSIP/trunk-1"
        self.caller_number = caller
        self.variables: dict[str, str] = {}
        self.log: list[str] = []

    async def _event(self, what: str) -> None:
        self.log.append(what)
        if self.hang_up_on in (what, what.split(":", 1)[0]):
            raise AgiHangup("caller hung up")
        if self.block_on == what:
            self.blocked.set()
            await self.release.wait()

    async def set_variables(self, values: Mapping[str, str]) -> None:
        """Set several channel variables."""
        for name, value in values.items():
            await self.set_variable(name, value)

    async def get_variable(self, name: str) -> str:
        """Every variable asked for is the linkedid (`linked-<uniqueid>`)."""
        return f"linked-{self.uniqueid}"

    async def stream_file(self, path: str, escape_digits: str = "") -> str:
        """Play a prompt; a barge-in key for it is pressed if it is an escape digit."""
        await self._event(f"play:{path}")
        key = self.barge.get(path, "")
        return key if key and key in escape_digits else ""

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and take the next scripted keys ("" is a timeout)."""
        await self._event(f"get:{path}")
        digits = self.keys.pop(0) if self.keys else ""
        return digits, digits == ""

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str:
        """GET OPTION: one scripted key."""
        digits, _ = await self.get_data(path, timeout_ms, 1)
        return digits

    async def record_file(self, path: str, fmt: str = "wav", escape_digits: str = "", max_ms: int = 0,
                          silence_s: int = 0, beep: bool = True) -> AgiResult:
        """Record: the next scripted action (a key ends it; speech leaves audio; silence times out)."""
        if self.recording is not None:
            Path(f"{path}.{fmt}").write_bytes(self.recording.read_bytes())
        await self._event(f"record:{Path(path).parent.name}")
        action = self.listen.pop(0) if self.listen else ""
        if action.startswith("dtmf:"):
            key = action.split(":", 1)[1]
            return AgiResult(str(ord(key)), "dtmf", f"200 result={ord(key)} (dtmf)")
        if action and self.recording is None:
            Path(f"{path}.{fmt}").write_bytes(b"RIFF" + b"\0" * 16000)
        return AgiResult("0", "timeout", "200 result=0 (timeout)")

    async def say_digits(self, digits: str, escape_digits: str = "") -> None:
        """Say digits (logged as say:<digits>)."""
        await self._event(f"say:{digits}")

    async def set_variable(self, name: str, value: str) -> None:
        """Set one channel variable."""
        self.variables[name] = value
