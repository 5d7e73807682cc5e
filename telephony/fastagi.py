"""FastAGI server: one owned asyncio task per call, panoramisk's AGI result parser, timeouts on every read.

panoramisk's ``fast_agi.Application`` catches ``BaseException`` around handlers and reads headers
without a limit or timeout, so the server loop is ours; the AGI wire format is panoramisk's.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from panoramisk.utils import parse_agi_result

log = logging.getLogger(__name__)

_MAX_LINE_BYTES = 8 * 1024


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


def agi_quote(text: str) -> str:
    """Quote one AGI argument (double quotes, backslash escapes); newlines are not allowed."""
    if "\n" in text or "\r" in text:
        raise ValueError("AGI arguments cannot contain line breaks")
    return '"' + _quote_re.sub(r"\\\1", text) + '"'


class AgiSession:
    """One FastAGI connection: the agi_* variables and a command channel with timeouts."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                 command_timeout: float) -> None:
        self._reader, self._writer = reader, writer
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
        self._writer.write(line.encode("utf-8") + b"\n")
        transport = self._writer.transport
        if transport.is_closing() or transport.get_write_buffer_size():
            # Only a backed-up or closing socket needs drain(); commands are small and usually go out at once.
            try:
                async with asyncio.timeout(5.0):  # not wait_for: see _read_line
                    await self._writer.drain()
            except (ConnectionError, TimeoutError):
                self.hung_up = True
                raise AgiHangup("AGI connection closed") from None
        wait = timeout or self._command_timeout
        while True:
            raw = await self._read_line(wait, line)
            if raw == "HANGUP":
                # Asterisk announces the hang-up out of band, then still answers the running command.
                self.hung_up = True
                continue
            parsed = parse_agi_result(raw)
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
        try:
            # not wait_for: on Python 3.11 it swallows a cancel that races with the answer (close() would hang)
            async with asyncio.timeout(timeout):
                raw = await self._reader.readline()
        except TimeoutError:
            raise AgiTimeout(f"AGI command {command.split()[0]!r}: no answer within {timeout:g} s") from None
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            self.hung_up = True
            raise AgiHangup("AGI connection closed") from None
        if not raw:
            self.hung_up = True
            raise AgiHangup("AGI connection closed")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

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
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (ConnectionError, TimeoutError):
            pass


AgiHandler = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer:
    """Listens for FastAGI connections and runs the routed handler of each as its own named, owned task."""

    def __init__(self, host: str, port: int, *, command_timeout: float = 120.0, header_timeout: float = 5.0) -> None:
        self._host, self._port = host, port
        self._command_timeout = command_timeout
        self._header_timeout = header_timeout
        self._routes: dict[str, AgiHandler] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
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
        try:
            self._server = await asyncio.start_server(self._on_connection, self._host, self._port,
                                                      limit=_MAX_LINE_BYTES, reuse_address=True)
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
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), grace)
            except TimeoutError:
                log.warning("FastAGI: listener did not close within %.1f s", grace)
            self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            headers = await self._read_headers(reader)
            if headers is None:
                self.bad_requests += 1
                return
            session = AgiSession(reader, writer, headers, self._command_timeout)
            task.set_name(f"agi-{session.script}-{session.uniqueid}")
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
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _read_headers(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        try:
            async with asyncio.timeout(self._header_timeout):
                # The first line says whether this is AGI at all; the rest is read as one block, which
                # costs far less than a read per variable.
                block = await reader.readline()
                if block.startswith(b"agi_"):
                    more = await reader.readline()
                    block += more
                    if more not in (b"\n", b"\r\n", b""):
                        block += await reader.readuntil(b"\n\n")
        except TimeoutError:
            log.warning("FastAGI: no complete variables block within %.1f s", self._header_timeout)
            return None
        except asyncio.IncompleteReadError:
            log.warning("FastAGI: connection closed before the variables block ended")
            return None
        except asyncio.LimitOverrunError:
            log.warning("FastAGI: variables block over %d bytes; request skipped", _MAX_LINE_BYTES)
            return None
        except (ConnectionError, ValueError):
            log.warning("FastAGI: connection broke while reading variables")
            return None
        for line in block.decode("utf-8", "replace").splitlines():
            if not line:
                continue
            key, sep, value = line.partition(": ")
            if not sep or not key.startswith("agi_"):
                log.warning("FastAGI: malformed variable line %r; request skipped", line[:80])
                return None
            headers[key] = value
        if "agi_network_script" not in headers:
            log.warning("FastAGI: request without agi_network_script skipped")
            return None
        return headers
