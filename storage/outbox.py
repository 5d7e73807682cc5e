"""A durable outbox: writes the database did not take in time wait in a local journal and are replayed in order.

A call must not be dropped because the database is locked, slow or away. The call side submits each write as a
named operation with JSON arguments; the outbox tries it at once with a short timeout and, when that fails for a
reason that may pass (a lock, a timeout, a lost connection), appends it to a journal file (one JSON line, flushed
to disk) and replays the journal in order as soon as the database answers. Each operation carries an id that its
handler writes in the same transaction as its change, so an attempt that timed out but committed later, or a
replay interrupted by a restart, is never applied twice. An operation that fails for good (the database refused
it for a reason that will not pass) is parked in a second file with its error and logged, not retried forever.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from lifecycle import TaskOwner

log = logging.getLogger(__name__)

# Failures that may pass: the write waits in the journal. Anything else is the operation's own fault.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, PoolTimeout, TimeoutError, ConnectionError,
                                                 OSError)


def is_transient(exc: Exception) -> bool:
    """Whether a database failure may pass (lock, timeout, lost connection) rather than refuse the write for good."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(frozen=True)
class OutboxEntry:
    """One write: its id (the idempotency key its handler records), operation name, JSON arguments, and when it
    happened (handlers stamp the change with this time, not the replay's)."""

    id: str
    op: str
    args: dict[str, Any]
    at: datetime

    def to_json(self) -> str:
        """One journal line."""
        return json.dumps({"id": self.id, "op": self.op, "args": self.args, "at": self.at.isoformat()},
                          ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> OutboxEntry:
        """Parse a journal line (ValueError if it is not one)."""
        data = json.loads(line)
        return cls(str(data["id"]), str(data["op"]), dict(data["args"]), datetime.fromisoformat(data["at"]))


Handler = Callable[[OutboxEntry], Awaitable[object]]


class Outbox:
    """Tries each write now with a timeout; keeps what the database did not take in a journal, replayed in order.

    Handlers are registered by operation name before start(); each must be idempotent on the entry's id."""

    def __init__(self, directory: Path, *, name: str = "outbox", write_timeout: float = 2.0,
                 retry_min: float = 0.5, retry_max: float = 10.0, clock: Callable[[], datetime] | None = None) -> None:
        self._journal = directory / f"{name}.jsonl"
        self._parked = directory / f"{name}.parked.jsonl"
        self._directory = directory
        self._write_timeout = write_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._clock = clock or (lambda: datetime.now(UTC))
        self._handlers: dict[str, Handler] = {}
        self._pending: list[OutboxEntry] = []
        self._done: set[str] = set()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._file_lock = asyncio.Lock()
        self._tasks = TaskOwner(f"{name} replay")
        self.journaled = 0
        self.replayed = 0
        self.parked = 0
        self.last_error: str | None = None

    def register(self, op: str, handler: Handler) -> None:
        """Name an operation and the coroutine that applies it (idempotent on entry.id)."""
        if op in self._handlers:
            raise ValueError(f"outbox operation {op!r} is registered twice")
        self._handlers[op] = handler

    @property
    def pending(self) -> int:
        """Writes waiting in the journal."""
        return len(self._pending)

    def health_report(self) -> dict[str, Any]:
        """For /healthz: ok while nothing has waited through a failed replay; counts of journaled/parked writes."""
        return {"ok": not self._pending or self.last_error is None, "pending": len(self._pending),
                "journaled": self.journaled, "replayed": self.replayed, "parked": self.parked,
                "last_error": self.last_error}

    # --- start / stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what an earlier process left in the journal and start replaying it."""
        loop = asyncio.get_running_loop()
        self._pending = await loop.run_in_executor(None, self._load)
        if self._pending:
            log.warning("outbox: %d write(s) left by an earlier run; replaying them", len(self._pending))
            self._drained.clear()
            self._wake.set()
        self._tasks.spawn(self._replay_loop(), "outbox-replay")

    async def aclose(self) -> None:
        """Stop replaying (what is still pending stays in the journal for the next start)."""
        await self._tasks.aclose()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until the journal is empty; False if it is not within timeout seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    # --- submitting -------------------------------------------------------------------------------

    def entry(self, op: str, args: Mapping[str, Any]) -> OutboxEntry:
        """A new entry (not submitted yet): a fresh id, the current time."""
        if op not in self._handlers:
            raise ValueError(f"unknown outbox operation {op!r}")
        return OutboxEntry(uuid.uuid4().hex, op, dict(args), self._clock())

    async def submit(self, entry: OutboxEntry) -> bool:
        """Apply now if nothing is waiting and the database answers in time (True); else journal it (False).

        A write the database refuses for good raises its error at once (the caller's input was wrong). A write that
        does not answer in time is left to finish on its own (stores finish what they started) and journaled too:
        its id makes the replay a no-op if the late attempt commits."""
        if self._pending:
            await self._append(entry)
            return False
        attempt: asyncio.Task[object] = self._tasks.spawn(self._apply(entry), f"outbox-{entry.op}")
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self._write_timeout)
        except asyncio.CancelledError:
            # The caller went away (a hang-up) while the write was in flight: keep it before going.
            attempt.add_done_callback(self._late_result)
            await self._append(entry)
            raise
        if attempt in done:
            exc = attempt.exception()
            if exc is None:
                return True
            if not isinstance(exc, Exception) or not is_transient(exc):
                raise exc
            self._note_failure(entry, exc)
        else:
            attempt.add_done_callback(self._late_result)
            self._note_failure(entry, TimeoutError(f"no answer within {self._write_timeout:g} s"))
        await self._append(entry)
        return False

    async def _apply(self, entry: OutboxEntry) -> object:
        return await self._handlers[entry.op](entry)

    @staticmethod
    def _late_result(task: asyncio.Task[object]) -> None:
        # The journaled copy is replayed whatever happened here; only say so.
        if not task.cancelled() and task.exception() is not None:
            log.info("outbox: late attempt %s failed (replayed from the journal): %s", task.get_name(),
                     _first_line(task.exception() or Exception()))

    # --- inside -----------------------------------------------------------------------------------

    def _note_failure(self, entry: OutboxEntry, exc: Exception) -> None:
        self.last_error = f"{entry.op}: {_first_line(exc)}"
        log.warning("outbox: %s not written now (%s); kept in the journal", entry.op, _first_line(exc))

    async def _append(self, entry: OutboxEntry) -> None:
        # Journal first, then hand to the replayer: a crash between the two replays it at the next start.
        async with self._file_lock:
            await asyncio.get_running_loop().run_in_executor(None, self._write_line, self._journal,
                                                             entry.to_json())
        self._pending.append(entry)
        self.journaled += 1
        self._drained.clear()
        self._wake.set()

    async def _replay_loop(self) -> None:
        delay = self._retry_min
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                entry = self._pending[0]
                try:
                    # Bounded by the engine's statement timeout (and SQLite's busy timeout).
                    await self._handlers[entry.op](entry)
                except Exception as exc:
                    if is_transient(exc):
                        self.last_error = f"{entry.op}: {_first_line(exc)}"
                        log.info("outbox: replay of %s waits %.1f s: %s", entry.op, delay, _first_line(exc))
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self._retry_max)
                        continue
                    await self._park(entry, exc)
                else:
                    self.replayed += 1
                    log.info("outbox: %s written from the journal (%d left)", entry.op, len(self._pending) - 1)
                delay = self._retry_min
                await self._finish(entry)
            self.last_error = None
            self._drained.set()

    async def _finish(self, entry: OutboxEntry) -> None:
        self._pending.pop(0)
        self._done.add(entry.id)
        loop = asyncio.get_running_loop()
        async with self._file_lock:
            if self._pending:
                await loop.run_in_executor(None, self._write_line, self._journal, json.dumps({"done": entry.id}))
            else:  # everything written: start the journal afresh
                await loop.run_in_executor(None, self._truncate)
                self._done.clear()

    async def _park(self, entry: OutboxEntry, exc: Exception) -> None:
        self.parked += 1
        log.error("outbox: %s refused by the database, parked in %s: %s", entry.op, self._parked, _first_line(exc))
        line = json.dumps({"entry": json.loads(entry.to_json()), "error": _first_line(exc)}, ensure_ascii=False)
        async with self._file_lock:
            await asyncio.get_running_loop().run_in_executor(None, self._write_line, self._parked, line)

    def _load(self) -> list[OutboxEntry]:
        if not self._journal.exists():
            return []
        entries: dict[str, OutboxEntry] = {}
        with self._journal.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    data = json.loads(line)
                    if "done" in data:
                        entries.pop(str(data["done"]), None)
                        continue
                    entry = OutboxEntry.from_json(line)
                except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash
                    log.warning("outbox: journal line %d unreadable, skipped: %s", number, exc)
                    continue
                entries[entry.id] = entry
        return list(entries.values())

    def _write_line(self, path: Path, line: str) -> None:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _truncate(self) -> None:
        if self._journal.exists():
            fd = os.open(self._journal, os.O_WRONLY | os.O_TRUNC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    line = text[0]
    if line.startswith("(") and ") " in line:  # SQLAlchemy's "(driver.Error) message"
        line = line.split(") ", 1)[1]
    return line
