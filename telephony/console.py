"""Asterisk's remote-console socket (what `asterisk -rx` talks to): CLI commands for the process that owns Asterisk.

The AMI account holds no `command` class (see README "AMI privileges"): a leaked AMI secret must not run CLI
commands. The few operations that need more than the AMI account holds (reloading res_pjsip after the agents'
endpoints changed, dropping an AstDB record) go through this socket instead, which only the Unix user that runs
Asterisk (and writes its configuration anyway) can open.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

_COMMAND = re.compile(r"^[\x20-\x7e]{1,512}$")  # one printable line: the console reads NUL-terminated commands
_MAX_OUTPUT = 1 << 20
# Verbose messages on a remote console carry a level byte (and the banner ends in a newline).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class AsteriskConsoleError(RuntimeError):
    """The console socket could not be used; the message is one line naming what was wrong."""


class AsteriskConsole:
    """Runs one CLI command per connection on Asterisk's control socket (`cli quit after`, as `asterisk -rx`)."""

    def __init__(self, control_socket: Path, *, timeout: float = 10.0) -> None:
        self.control_socket = Path(control_socket)
        self.timeout = timeout

    async def command(self, text: str, *, timeout: float | None = None) -> str:
        """Run one CLI command and return its output (AsteriskConsoleError if Asterisk cannot be reached)."""
        if not isinstance(text, str) or not _COMMAND.match(text):
            raise AsteriskConsoleError(f"console command {text!r:.80} is not one printable line")
        try:
            return await asyncio.wait_for(self._run(text), timeout=timeout or self.timeout)
        except TimeoutError:
            raise AsteriskConsoleError(
                f"Asterisk console {self.control_socket}: no answer within {timeout or self.timeout:g} s") from None
        except OSError as exc:
            raise AsteriskConsoleError(
                f"Asterisk console {self.control_socket}: {exc.strerror or type(exc).__name__} (is Asterisk running?)"
            ) from None

    async def _run(self, text: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.control_socket), limit=_MAX_OUTPUT)
        try:
            await reader.readline()  # the banner: host/pid/version
            writer.write(b"cli quit after " + text.encode("ascii") + b"\0")
            await writer.drain()
            out = bytearray()
            while len(out) < _MAX_OUTPUT:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
        return _CONTROL.sub("", out.decode("utf-8", errors="replace"))
