"""FastAGI server: one owned asyncio task per call, panoramisk's AGI result parser, timeouts on every read.

panoramisk's ``fast_agi.Application`` catches ``BaseException`` around handlers and reads headers
without a limit or timeout, so the server loop is ours (an asyncio Protocol per connection); the AGI
result format is parsed by panoramisk.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, cast
from urllib.parse import parse_qsl

from panoramisk.utils import parse_agi_result

from lifecycle import TaskOwner

log = logging.getLogger(__name__)

_MAX_LINE_BYTES = 8 * 1024  # an answer line, and the whole variables block
_MAX_HEADER_LINES = 128  # Asterisk sends ~25 variables plus one per AGI argument
_MAX_HEADER_LINE_BYTES = 2 * 1024  # its longest, agi_request, is the URL with the dialplan's values
# Asterisk answers one command at a time: a HANGUP notice, a 100 Trying, a 520 usage block of a few lines.
# More lines than this waiting unread is no Asterisk (a stream of newlines), so the session ends.
_MAX_PENDING_LINES = 32

# The dialplan proves it is our Asterisk with auth=SHA1(<secret>:<channel uniqueid>) in the AGI URL: the secret
# comes from Asterisk's environment, so neither the rendered dialplan nor Asterisk's "Executing AGI(...)" log
# lines hold it, and a token seen there is good for that one channel only.
AGI_SECRET_ENV = "HOTLINE_AGI_SECRET"
AGI_AUTH_PARAM = "auth"
AGI_AUTH_DIALPLAN = f"{AGI_AUTH_PARAM}=${{SHA1(${{ENV({AGI_SECRET_ENV})}}:${{UNIQUEID}})}}"


def agi_token(secret: str, uniqueid: str) -> str:
    """The auth value the dialplan computes for a channel (AGI_AUTH_DIALPLAN)."""
    return hashlib.sha1(f"{secret}:{uniqueid}".encode()).hexdigest()


class AgiError(Exception):
    """An AGI failure; the message is one line."""


class AgiHangup(AgiError):
    """The channel hung up (or Asterisk closed the AGI session)."""


class AgiCommandError(AgiError):
    """Asterisk rejected a command (510 invalid, 520 usage, other codes)."""


class AgiTimeout(AgiError):
    """Asterisk did not answer a command in time."""


@dataclass(frozen=True)
class AgiResult:
    """A parsed 200 answer: the result value and the text in parentheses, if any."""

    result: str
    data: str
    line: str

    @property
    def value(self) -> int:
        """The result as an int (0 if not a number)."""
        try:
            return int(self.result)
        except ValueError:
            return 0


_quote_re = re.compile(r'(["\\])')
# What MSet can take unquoted: no argument separators, quotes, backslashes or expression characters.
_plain_value_re = re.compile(r"[\w.:@+/-]*")
_empty_result_re = re.compile(r"200 result=\s*\((.*)\)")
# The usual answer (a digit or 0, perhaps with the stream's end position), read without the general parser.
_plain_result_re = re.compile(r"200 result=(\d+)(?: endpos=\d+)?")


def agi_quote(text: str) -> str:
    """Quote one AGI argument (double quotes, backslash escapes); newlines are not allowed."""
    if "\n" in text or "\r" in text:
        raise ValueError("AGI arguments cannot contain line breaks")
    if '"' not in text and "\\" not in text:  # prompt paths and digits: nothing to escape
        return '"' + text + '"'
    return '"' + _quote_re.sub(r"\\\1", text) + '"'


class _AgiWire(asyncio.Protocol):
    """The bytes of one FastAGI connection: the variables block, then whole answer lines for the session.

    A protocol, not asyncio streams: Asterisk writes the ~25 variables one write() each, and here a chunk costs
    a buffer append, not a task wake-up; an answer wakes the waiting call once, with no timeout context or
    stream reader machinery around it (the bridge's CPU per call is mostly this path)."""

    def __init__(self, server: FastAgiServer) -> None:
        self._server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lines: deque[str] = deque()
        self.waiter: asyncio.Future[Any] | None = None  # a line, None (closed) or _TIMED_OUT
        self.eof = False
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._buffer = bytearray()
        self._in_header = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False  # refused or ended by us: whatever else arrives is dropped unread

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses
        server = self._server
        if len(server._wires) >= server._max_connections:
            self._end_header()
            self._refuse(f"{server._max_connections} connections already open", abort=True)
            return
        self._header_timer = self.loop.call_later(server._header_timeout, self._header_timed_out)
        server._wires.add(self)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._buffer += data
        if self._in_header:
            self._take_header()
        else:
            self._take_lines()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._server._wires.discard(self)
        if self._in_header:
            self._end_header()
            self._refuse("connection closed before the variables block ended")
        self._buffer.clear()
        self._deliver(None)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def peer(self) -> str:
        """host:port of the other end (for the log)."""
        name = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{name[0]}:{name[1]}" if isinstance(name, tuple) and len(name) >= 2 else str(name)

    # -- the variables block ---------------------------------------------------------------------------
    def _take_header(self) -> None:
        buf = self._buffer
        end = buf.find(b"\n\n")
        if end < 0:
            first_line = buf.find(b"\n")
            if first_line >= 0 and not buf.startswith(b"agi_"):  # not AGI at all (an HTTP probe, say)
                text = buf[:first_line].decode("utf-8", "replace").rstrip("\r")
                self._reject(f"malformed variable line {text[:80]!r}")
            elif len(buf) > _MAX_LINE_BYTES:
                self._reject(f"variables block over {_MAX_LINE_BYTES} bytes")
            elif buf.count(b"\n") > _MAX_HEADER_LINES:
                self._reject(f"more than {_MAX_HEADER_LINES} variables")
            elif len(buf) - (buf.rfind(b"\n") + 1) > _MAX_HEADER_LINE_BYTES:
                self._reject(f"variable line over {_MAX_HEADER_LINE_BYTES} bytes")
            return
        block = bytes(buf[:end + 1])
        del buf[:end + 2]
        self._end_header()
        headers = _parse_variables(block)
        if isinstance(headers, str):
            self._reject(headers)
            return
        if not self._server._authentic(headers):
            self._reject("missing or wrong AGI secret")
            return
        self._server._start_session(self, headers)
        if buf:
            self._take_lines()

    @property
    def in_header(self) -> bool:
        """Still sending its variables (no call yet)."""
        return self._in_header

    def _end_header(self) -> None:
        self._in_header = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        self._reject(f"no complete variables block within {self._server._header_timeout:g} s")

    def _reject(self, reason: str) -> None:
        self._end_header()
        self._refuse(reason, abort=True)

    def _refuse(self, reason: str, *, abort: bool = False) -> None:
        """Count and log (one line, with the peer) a connection that never became a call, and drop it."""
        if self._refused:
            return
        self._refused = True
        self._buffer.clear()
        self._server._rejected()
        log.warning("FastAGI: refused %s: %s", self.peer, reason)
        if abort and self.transport is not None:
            self.transport.abort()  # nothing owed to it: no close handshake, no buffered data

    # -- answer lines ----------------------------------------------------------------------------------
    def _take_lines(self) -> None:
        buf = self._buffer
        while (nl := buf.find(b"\n")) >= 0:
            line = buf[:nl].decode("utf-8", "replace").rstrip("\r")
            del buf[:nl + 1]
            self._deliver(line)
            if len(self.lines) > _MAX_PENDING_LINES:
                self._end_session(f"over {_MAX_PENDING_LINES} answer lines nobody asked for")
                return
        if len(buf) > _MAX_LINE_BYTES:
            self._end_session(f"answer line over {_MAX_LINE_BYTES} bytes")

    def _end_session(self, reason: str) -> None:
        """Drop a session whose peer does not behave like Asterisk; its call sees the connection close."""
        log.warning("FastAGI: closing the session from %s: %s", self.peer, reason)
        self._refused = True
        self._buffer.clear()
        self.lines.clear()
        if self.transport is not None:
            self.transport.abort()

    def _deliver(self, line: str | None) -> None:
        """Hand a line (None: the connection ended) to the waiting command, or keep it for the next one."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.waiter = None
            waiter.set_result(line)
        elif line is not None:
            self.lines.append(line)

    def abort(self) -> None:
        """Close the connection (the dialplan goes on after the AGI)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _parse_variables(block: bytes) -> dict[str, str] | str:
    """The agi_* variables of a block, or the one-line reason it is no AGI request."""
    headers: dict[str, str] = {}
    lines = block.decode("utf-8", "replace").splitlines()
    if len(lines) > _MAX_HEADER_LINES:
        return f"more than {_MAX_HEADER_LINES} variables"
    for line in lines:
        if not line:
            continue
        if len(line) > _MAX_HEADER_LINE_BYTES:
            return f"variable line over {_MAX_HEADER_LINE_BYTES} bytes"
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith("agi_"):
            return f"malformed variable line {line[:80]!r}"
        headers[key] = value
    if "agi_network_script" not in headers:
        return "request without agi_network_script"
    return headers


def _take_auth(headers: dict[str, str]) -> str:
    """Remove the auth value from the script and request headers (nothing after this can log it); return it."""
    auth = ""
    for name in ("agi_network_script", "agi_request"):
        base, sep, query = headers.get(name, "").partition("?")
        if not sep:
            continue
        kept = []
        for item in query.split("&"):
            if item.startswith(AGI_AUTH_PARAM + "="):
                auth = auth or item[len(AGI_AUTH_PARAM) + 1:]
            else:
                kept.append(item)
        headers[name] = base + ("?" + "&".join(kept) if kept else "")
    return auth


_TIMED_OUT: Final = object()  # what an expired wait hands over instead of a line


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class AgiSession:
    """One FastAGI connection: the agi_* variables and a command channel with timeouts."""

    def __init__(self, wire: _AgiWire, headers: dict[str, str], command_timeout: float) -> None:
        self._wire = wire
        self.headers = headers
        self._command_timeout = command_timeout
        self.hung_up = False

    @property
    def script(self) -> str:
        """The path part of agi://host:port/<script> (without arguments)."""
        return self.headers.get("agi_network_script", "").split("?", 1)[0]

    @cached_property
    def params(self) -> Mapping[str, str]:
        """The query of agi://host:port/<script>?name=value&...: values the dialplan hands over at no cost.

        Every value read here is one AGI round trip (GET VARIABLE) saved on both sides."""
        _, _, query = self.headers.get("agi_network_script", "").partition("?")
        return dict(parse_qsl(query, keep_blank_values=True))

    @property
    def uniqueid(self) -> str:
        """The channel's unique id."""
        return self.headers.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        """The channel name (PJSIP/trunk-00000001)."""
        return self.headers.get("agi_channel", "")

    @property
    def caller_number(self) -> str:
        """The caller id number, or '' when withheld."""
        num = self.headers.get("agi_callerid", "")
        return "" if num in ("unknown", "") else num

    async def command(self, line: str, timeout: float | None = None) -> AgiResult:
        """Send one AGI command and return its 200 result; AgiHangup, AgiCommandError or AgiTimeout otherwise."""
        if self.hung_up:
            raise AgiHangup("caller hung up")
        transport = self._wire.transport
        if transport is None or transport.is_closing():
            self.hung_up = True
            raise AgiHangup("AGI connection closed")
        # No drain(): a command is a line and the next waits for its answer, so at most one is ever buffered.
        transport.write(line.encode("utf-8") + b"\n")
        wait = timeout or self._command_timeout
        while True:
            raw = await self._read_line(wait, line)
            if raw == "HANGUP":
                # Asterisk announces the hang-up out of band, then still answers the running command.
                self.hung_up = True
                continue
            if plain := _plain_result_re.fullmatch(raw):
                return AgiResult(plain.group(1), "", raw)
            try:
                parsed = parse_agi_result(raw)
            except ValueError:  # no status code at all: not an answer Asterisk gives
                raise AgiCommandError(f"AGI command {line.split()[0]!r}: malformed answer {raw[:80]!r}") from None
            code = parsed.get("status_code")
            if code == 100:
                continue
            if code == 520 and raw.startswith("520-"):
                while not raw.startswith("520 "):
                    raw = await self._read_line(wait, line)
                raise AgiCommandError(f"AGI usage error for {line.split()[0]!r}")
            if code == 511:
                self.hung_up = True
                raise AgiHangup("caller hung up")
            error = parsed.get("error")
            if error == "AGIResultHangup" or (self.hung_up and error == "AGIAppError"):
                self.hung_up = True
                raise AgiHangup("caller hung up")
            if error == "AGIAppError":
                return AgiResult("-1", "", raw)
            if error:
                raise AgiCommandError(f"AGI command {line.split()[0]!r} rejected: {raw}")
            value, data = parsed.get("result", ("", ""))
            if not value and (empty := _empty_result_re.match(raw)):  # "200 result= (timeout)": panoramisk drops it
                data = empty.group(1)
            return AgiResult(value, data or "", raw)

    async def _read_line(self, timeout: float, command: str) -> str:
        wire = self._wire
        if wire.lines:
            return wire.lines.popleft()
        if wire.eof:
            self.hung_up = True
            raise AgiHangup("AGI connection closed")
        waiter: asyncio.Future[Any] = wire.loop.create_future()
        wire.waiter = waiter
        # One timer per answer; a cancel of the call's task cancels the plain future and is never swallowed.
        timer = wire.loop.call_later(timeout, _expire, waiter)
        try:
            raw = await waiter
        finally:
            timer.cancel()
            if wire.waiter is waiter:
                wire.waiter = None
        if raw is None:
            self.hung_up = True
            raise AgiHangup("AGI connection closed")
        if raw is _TIMED_OUT:
            raise AgiTimeout(f"AGI command {command.split()[0]!r}: no answer within {timeout:g} s")
        return raw

    # -- convenience wrappers for the commands the IVR uses ---------------------------------------
    async def answer(self) -> None:
        """ANSWER the channel."""
        await self.command("ANSWER")

    async def get_variable(self, name: str) -> str | None:
        """GET FULL VARIABLE (expressions allowed); None when unset."""
        res = await self.command(f"GET FULL VARIABLE {agi_quote('${' + name + '}')}")
        return res.data if res.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        """SET VARIABLE on the channel."""
        await self.command(f"SET VARIABLE {name} {agi_quote(value)}")

    async def set_variables(self, values: Mapping[str, str]) -> None:
        """Set several channel variables in one round trip (EXEC MSet) when every value is plain text."""
        if len(values) > 1 and all(_plain_value_re.fullmatch(v) for v in values.values()):
            res = await self.command("EXEC MSet " + agi_quote(",".join(f"{k}={v}" for k, v in values.items())))
            if res.result != "-2":  # -2: no MSet application (never in Asterisk 16+); fall back below
                return
        for name, value in values.items():
            await self.set_variable(name, value)

    async def stream_file(self, path: str, escape_digits: str = "") -> str:
        """STREAM FILE (no extension); returns the digit that interrupted it, or ''."""
        res = await self.command(f"STREAM FILE {agi_quote(path)} {agi_quote(escape_digits)}")
        return chr(res.value) if res.value > 0 else ""

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """GET DATA: play a prompt and collect digits; returns (digits, timed_out)."""
        res = await self.command(f"GET DATA {agi_quote(path)} {timeout_ms} {max_digits}",
                                 timeout=timeout_ms / 1000 + 120)
        return (res.result if res.result not in ("-1",) else ""), res.data == "timeout"

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str:
        """GET OPTION: play a prompt any of escape_digits interrupts, then wait timeout_ms for one of them.

        One command, like the dialplan's Background() then WaitExten(): no gap between the prompt and the wait
        in which a key could be lost, and, unlike GET DATA, no silence generator running while it waits (with
        transmit_silence it sends 50 packets a second of silence to the caller). Returns the key, or ''."""
        res = await self.command(f"GET OPTION {agi_quote(path)} {agi_quote(escape_digits)} {timeout_ms}",
                                 timeout=timeout_ms / 1000 + 120)
        return chr(res.value) if res.value > 0 else ""

    async def wait_for_digit(self, timeout_ms: int) -> str:
        """WAIT FOR DIGIT; returns the digit or '' on timeout."""
        res = await self.command(f"WAIT FOR DIGIT {timeout_ms}", timeout=timeout_ms / 1000 + 10)
        return chr(res.value) if res.value > 0 else ""

    async def say_digits(self, digits: str, escape_digits: str = "") -> None:
        """SAY DIGITS."""
        await self.command(f"SAY DIGITS {digits} {agi_quote(escape_digits)}", timeout=60)

    async def record_file(self, path: str, fmt: str, escape_digits: str, max_ms: int, silence_s: int,
                          beep: bool = True) -> AgiResult:
        """RECORD FILE with silence detection; returns the raw result (data says dtmf/timeout/hangup)."""
        args = f"RECORD FILE {agi_quote(path)} {fmt} {agi_quote(escape_digits)} {max_ms} 0"
        if beep:
            args += " BEEP"
        args += f" s={silence_s}"
        return await self.command(args, timeout=max_ms / 1000 + 30)

    async def close(self) -> None:
        """Close the connection (the dialplan continues after the AGI)."""
        self._wire.abort()
        try:
            await asyncio.wait_for(asyncio.shield(self._wire.closed), 2.0)
        except TimeoutError:
            pass


AgiHandler = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer:
    """Listens for FastAGI connections and runs the routed handler of each as its own named, owned task."""

    def __init__(self, host: str, port: int, *, command_timeout: float = 120.0, header_timeout: float = 5.0,
                 secret: str | None = None, max_connections: int = 512) -> None:
        """secret: the AGI secret every session must prove (AGI_AUTH_DIALPLAN); None only for tests and benchmarks
        whose own dialplans call it. max_connections: open connections beyond it are refused at once."""
        self._host, self._port = host, port
        self._command_timeout = command_timeout
        self._header_timeout = header_timeout
        self._secret = secret.encode() if secret is not None else None
        self._max_connections = max_connections
        self._routes: dict[str, AgiHandler] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks = TaskOwner(f"FastAGI {host}:{port}")
        self._wires: set[_AgiWire] = set()  # open connections (those still sending variables have no task yet)
        self.sessions_started = 0
        self.sessions_failed = 0
        self.bad_requests = 0

    def add_route(self, script: str, handler: AgiHandler) -> None:
        """Route agi://host:port/<script> to handler(session)."""
        if script in self._routes:
            raise ValueError(f"FastAGI route {script!r} already exists")
        self._routes[script] = handler

    @property
    def active_sessions(self) -> int:
        """Calls currently inside a handler."""
        return len(self._tasks)

    async def start(self) -> None:
        """Bind and listen (OSError with a clear message if the port is taken)."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _AgiWire(self), self._host, self._port,
                                                    reuse_address=True)
        except OSError as exc:
            raise AgiError(f"FastAGI cannot listen on {self._host}:{self._port}: {exc.strerror or exc}") from None
        log.info("FastAGI listening on %s:%s", self._host, self._port)

    def health_report(self) -> dict[str, Any]:
        """Listener facts for /healthz."""
        return {"ok": self._server is not None and self._server.is_serving(), "address": f"{self._host}:{self._port}",
                "active_sessions": self.active_sessions, "sessions_started": self.sessions_started,
                "sessions_failed": self.sessions_failed, "bad_requests": self.bad_requests}

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, give running calls a grace period, then cancel and await them."""
        if self._server is not None:
            self._server.close()
        for wire in list(self._wires):
            if wire.in_header:
                wire.abort()  # still sending its variables: no call to finish
        await self._tasks.wait(grace)
        await self._tasks.aclose()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), grace)
            except TimeoutError:
                log.warning("FastAGI: listener did not close within %.1f s", grace)
            self._server = None

    # -- called by the connections ---------------------------------------------------------------------
    def _rejected(self) -> None:
        self.bad_requests += 1

    def _authentic(self, headers: dict[str, str]) -> bool:
        """Whether the session carries the channel's token (always, without a secret); strips it either way."""
        given = _take_auth(headers)
        if self._secret is None:
            return True
        expected = hashlib.sha1(self._secret + b":" + headers.get("agi_uniqueid", "").encode()).hexdigest()
        return hmac.compare_digest(given.encode(), expected.encode())

    def _start_session(self, wire: _AgiWire, headers: dict[str, str]) -> None:
        session = AgiSession(wire, headers, self._command_timeout)
        self._tasks.spawn(self._run(session, wire), f"agi-{session.script}-{session.uniqueid}")

    async def _run(self, session: AgiSession, wire: _AgiWire) -> None:
        try:
            handler = self._routes.get(session.script)
            if handler is None:
                self.bad_requests += 1
                log.error("FastAGI: no route for %r (from %s)", session.script, session.channel)
                return
            self.sessions_started += 1
            try:
                await handler(session)
            except AgiError as exc:
                log.info("FastAGI %s on %s ended: %s", session.script, session.channel, exc)
            except Exception:  # one failing call never takes the server down
                self.sessions_failed += 1
                log.exception("FastAGI handler %r failed on %s", session.script, session.channel)
        finally:
            wire.abort()
