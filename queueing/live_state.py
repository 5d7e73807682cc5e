"""Live state of calls in progress, in Redis, keyed by Asterisk linkedid and shared by every process.

Each call is one hash whose fields are declared in live_call.LiveCall; writers pass typed keyword arguments,
readers get a LiveCall back.

Redis is a mirror here, never the truth, and a call must not wait for it: every operation has one bounded total
wait (RedisGuard), writes are merged per call into a bounded in-process backlog that a background writer
(`LiveCallState.run`) sends on, and reads fall back to what this process wrote while Redis is away. When Redis
answers again after an outage, the calls in progress are written back and the `on_back` handlers (the rebuilds
from Asterisk) run."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, Unpack

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lifecycle import TaskOwner

from .live_call import LiveCall, LiveCallFields, decode_call, encode_fields, to_json
from .redis_guard import RedisGuard
from .redis_text import hash_mapping, read_hash, read_set

T = TypeVar("T")
# Run after Redis is back from an outage (after the calls in progress were written back).
BackHandler = Callable[[], Awaitable[object]]

log = logging.getLogger(__name__)

_EPOCH = datetime.fromtimestamp(0, UTC)
_SET_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], unpack(ARGV))
  return 1
end
return 0
"""


def connect_redis(url: str, *, timeout: float = 2.0) -> aioredis.Redis:
    """A Redis client with timeouts on every call and retries with exponential backoff (no I/O yet).

    These bound each socket wait, not an operation's total (retries stack up): callers on a call's path also put
    a RedisGuard deadline around each operation."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@dataclass
class _Change:
    """What is still to be written of one call: its fields merged (newest wins) and whether it started or ended."""

    kind: str
    typed: dict[str, Any]
    encoded: dict[str, str]
    start: bool = False
    end: bool = False
    since: float = field(default_factory=time.monotonic)

    def absorb(self, newer: _Change) -> None:
        """Merge a newer change into this one."""
        self.typed.update(newer.typed)
        self.encoded.update(newer.encoded)
        if newer.end:
            self.end, self.kind = True, newer.kind
        elif newer.start:
            self.start, self.end, self.kind = True, False, newer.kind


class LiveCallState:
    """Calls in progress: one Redis hash per call, a set of live linkedids, and pub/sub change messages.

    Writes never wait for Redis once `run()` is running (the hotline): they are merged per call into a backlog of
    at most max_pending calls and written in the background. Without it (tools, tests) each write is sent at once,
    within the same bounded wait. Reads take at most the guard's op_timeout and, while Redis is away, answer from
    the calls this process registered."""

    def __init__(self, client: aioredis.Redis, prefix: str = "hotline", ended_ttl_seconds: int = 3600, *,
                 guard: RedisGuard | None = None, max_pending: int = 10000, max_known: int = 10000,
                 batch_size: int = 64, owner: str | None = None) -> None:
        # owner: this process run, stamped on each call it registers: a call whose owner is another run (one
        # that died) lost its IVR session with that process, it was not the caller who hung up.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._r = client
        self._prefix = prefix
        self._ended_ttl = ended_ttl_seconds
        self.guard = guard or RedisGuard()
        self._max_pending = max_pending
        self._max_known = max_known
        self._batch_size = batch_size
        self._pending: dict[str, _Change] = {}  # by linkedid, oldest first
        # The encoded fields of every call in progress this process wrote: what is answered while Redis is away
        # and written back when it returns.
        self._known: dict[str, dict[str, str]] = {}
        self._back: list[BackHandler] = []
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._background = False
        self.errors = 0
        self.last_error: str | None = None
        self.written = 0
        self.dropped_writes = 0
        self.recoveries = 0

    @property
    def channel(self) -> str:
        """The pub/sub channel on which every change is published as JSON."""
        return f"{self._prefix}:events"

    def _key(self, linkedid: str) -> str:
        return f"{self._prefix}:call:{linkedid}"

    @property
    def _live_key(self) -> str:
        return f"{self._prefix}:calls:live"

    @property
    def pending_writes(self) -> int:
        """Calls with changes not yet in Redis."""
        return len(self._pending)

    def on_back(self, handler: BackHandler) -> None:
        """Run handler each time Redis answers again after an outage (from `run()`), after the calls in progress
        were written back; a handler that fails is logged and the next one still runs."""
        self._back.append(handler)

    async def ping(self, timeout: float | None = None) -> None:
        """Raise RedisError if Redis does not answer within the guard's op_timeout (or timeout, e.g. the first
        connection at start, which may take longer than an operation on an open one)."""
        if timeout is None:
            await self.guard.call("ping", self._ping, probe=True)
            return
        try:
            await asyncio.wait_for(self._ping(), timeout)
        except TimeoutError:
            raise RedisTimeoutError(f"ping: no answer within {timeout:g} s") from None

    async def _ping(self) -> None:
        await self._r.ping()

    async def aclose(self) -> None:
        """Send what is still pending (one bounded try) and close the Redis connections."""
        if self._pending:
            await self.flush()
            if self._pending:
                log.warning("live state: %d call(s) not written to Redis before closing", len(self._pending))
        await self._r.aclose()

    def health_report(self) -> dict[str, Any]:
        """Redis up or down, the write backlog and the error counters, for /healthz (the ping is the caller's)."""
        oldest = min((c.since for c in self._pending.values()), default=None)
        return {**self.guard.report(), "errors": self.errors, "last_error": self.last_error,
                "queued_writes": len(self._pending), "dropped_writes": self.dropped_writes,
                "oldest_queued_seconds": None if oldest is None else round(time.monotonic() - oldest, 1),
                "written": self.written, "calls_in_memory": len(self._known), "rebuilds": self.recoveries}

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.guard.call(what, operation)
        except RedisError as exc:
            # Live state is a mirror: losing a write must not fail the call; the rebuild fixes it later.
            self.errors += 1
            self.last_error = f"{what}: {exc}"
            raise

    # -- writes -------------------------------------------------------------------------------------
    async def start_call(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> None:
        """Register a new live call (state 'ivr' unless given, owned by this process run); ValueError names a
        field LiveCall lacks."""
        fields.setdefault("state", "ivr")
        fields.setdefault("owner", self.owner)
        fields.setdefault("started_at", datetime.now(UTC))
        fields.setdefault("ivr_path", [])
        encoded = encode_fields({**fields, "linkedid": linkedid})
        known = self._known.get(linkedid)
        if known is None:
            if len(self._known) >= self._max_known:  # calls whose end was never seen; the oldest goes
                self._known.pop(next(iter(self._known)))
            self._known[linkedid] = dict(encoded)
        else:
            known.update(encoded)
        await self._change(linkedid, _Change("call_started", dict(fields), encoded, start=True))

    async def update(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> None:
        """Set fields on a live call and publish the change; ValueError names a field LiveCall lacks."""
        encoded = encode_fields(fields)
        if (known := self._known.get(linkedid)) is not None:
            known.update(encoded)
        await self._change(linkedid, _Change("call_updated", dict(fields), encoded))

    async def update_existing(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> bool:
        """Set fields on a call whose hash is still there (live, or ended and kept for late readers) and publish
        the change; a call already gone is not brought back. False when there was no such call (or Redis is away).
        """
        encoded = encode_fields(fields)
        if not encoded:
            return False
        flat = [part for item in encoded.items() for part in item]
        key = self._key(linkedid)

        async def write() -> bool:
            # One script: the hash cannot expire between the check and the write (it would live on without a TTL).
            if not await self._r.eval(_SET_IF_EXISTS, 1, key, *flat):
                return False
            await self._r.publish(self.channel, self._message("call_updated", linkedid, dict(fields)))
            return True

        try:
            written = await self._call("update_existing", write)
        except RedisError:
            return False
        if written and (known := self._known.get(linkedid)) is not None:
            known.update(encoded)
        return written

    async def append_path(self, linkedid: str, step: str) -> list[str]:
        """Append one step to the call's IVR path (menu choices, prompts) and return the path."""
        call = await self.get_call(linkedid)
        path = [*((call.get("ivr_path") or []) if call else []), step]
        await self.update(linkedid, ivr_path=path)
        return path

    async def end_call(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> None:
        """Mark a call ended: keep its hash for a while (for late readers), drop it from the live set."""
        fields.setdefault("state", "ended")
        fields.setdefault("ended_at", datetime.now(UTC))
        encoded = encode_fields(fields)
        self._known.pop(linkedid, None)
        await self._change(linkedid, _Change("call_ended", dict(fields), encoded, end=True))

    async def _change(self, linkedid: str, change: _Change) -> None:
        queued = self._pending.get(linkedid)
        if queued is not None:
            queued.absorb(change)
        elif len(self._pending) >= self._max_pending:
            # Bounded: a call in progress is still written back from memory when Redis returns.
            self.dropped_writes += 1
            if self.dropped_writes == 1 or self.dropped_writes % 1000 == 0:
                log.warning("live state: write backlog full (%d calls); %d change(s) dropped so far",
                            len(self._pending), self.dropped_writes)
            return
        else:
            self._pending[linkedid] = change
        if self._background:
            self._wake.set()
        else:
            await self.flush()

    async def flush(self) -> bool:
        """Write every pending change now, in batches; False if Redis did not take them (they are kept)."""
        async with self._flush_lock:
            while self._pending:
                batch = [(linkedid, self._pending.pop(linkedid))
                         for linkedid in list(self._pending)[:self._batch_size]]
                try:
                    await self._call("write", functools.partial(self._write, batch))
                except (RedisConnectionError, RedisTimeoutError):
                    self._keep(batch)
                    return False
                except asyncio.CancelledError:  # stopping mid-write: aclose's last try still has them
                    self._keep(batch)
                    raise
                except RedisError as exc:  # Redis refused it (answered with an error): retrying would not help
                    self.dropped_writes += len(batch)
                    log.warning("live state: %d call change(s) refused by Redis: %s", len(batch), exc)
                    continue
                self.written += len(batch)
        return True

    def _keep(self, batch: list[tuple[str, _Change]]) -> None:
        for linkedid, change in batch:  # back in the backlog, with anything newer merged over it
            newer = self._pending.pop(linkedid, None)
            if newer is not None:
                change.absorb(newer)
            self._pending[linkedid] = change

    async def _write(self, batch: list[tuple[str, _Change]]) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            for linkedid, change in batch:
                key = self._key(linkedid)
                if change.encoded:
                    pipe.hset(key, mapping=hash_mapping(change.encoded))
                if change.end:
                    pipe.expire(key, self._ended_ttl)
                    pipe.srem(self._live_key, linkedid)
                elif change.start:
                    pipe.persist(key)
                    pipe.sadd(self._live_key, linkedid)
                pipe.publish(self.channel, self._message(change.kind, linkedid, change.typed))
            await pipe.execute()

    def _message(self, kind: str, linkedid: str, fields: dict[str, Any]) -> str:
        message = {"type": kind, "linkedid": linkedid, "at": time.time(), "fields": to_json(fields)}
        return json.dumps(message, ensure_ascii=False, default=str)

    # -- the background writer ----------------------------------------------------------------------
    def start(self, tasks: TaskOwner, interval: float = 1.0) -> None:
        """Run the background writer as a task of tasks; from now on writes only queue (cancelled with tasks)."""
        self._background = True
        tasks.spawn(self.run(interval), "live-state-writer")

    async def run(self, interval: float = 1.0) -> None:
        """Write changes as they come, ping Redis when idle, and after an outage write the calls in progress back
        and run the on_back handlers; runs until cancelled (owned by the caller's TaskOwner)."""
        self._background = True
        self.guard.probing = True  # while down, other operations fail at once; these pings find it back
        try:
            while True:
                if not self.guard.up:
                    try:
                        await self.guard.call("ping", self._ping, probe=True)
                    except RedisError:
                        await asyncio.sleep(interval)
                        continue
                if self.guard.take_came_back():
                    await self._recover()
                if self._pending:
                    await self.flush()
                    continue
                self._wake.clear()
                try:
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
                except TimeoutError:  # idle: check Redis is still there, so /healthz and the rebuild know
                    try:
                        await self.guard.call("ping", self._ping, probe=True)
                    except RedisError:
                        pass
        finally:
            self._background = False
            self.guard.probing = False

    async def _recover(self) -> None:
        """Redis is back: write every call in progress this process knows (merged under newer changes), then run
        the rebuilds."""
        self.recoveries += 1
        for linkedid, encoded in list(self._known.items()):
            restore = _Change("call_restored", dict(decode_call(encoded)), dict(encoded), start=True)
            newer = self._pending.pop(linkedid, None)
            if newer is not None:
                restore.absorb(newer)
            self._pending[linkedid] = restore
        await self.flush()
        log.info("live state: Redis is back; %d call(s) in progress written back", len(self._known))
        for handler in list(self._back):
            try:
                await handler()
            except Exception as exc:  # one rebuild failing (AMI away, say) must not stop the others
                log.warning("live state: rebuild after Redis came back (%s) failed: %s",
                            getattr(handler, "__qualname__", handler), exc)

    # -- reads ----------------------------------------------------------------------------------------
    async def get_call(self, linkedid: str) -> LiveCall | None:
        """The call's typed fields, or None if unknown. Redis's hash with this process's own writes over it (the
        ones not yet sent); while Redis is away, what this process wrote. A value that does not parse is left
        out and counted as an error: the rest of the call still drives its hang-up."""
        raw = await self._raw_call(linkedid)
        if not raw:
            return None
        problems: list[str] = []
        call = decode_call(raw, problems)
        for problem in problems:
            self.errors += 1
            self.last_error = f"get_call {linkedid}: {problem}"
            log.warning("live state: call %s: %s", linkedid, problem)
        return call

    def _remembered(self, linkedid: str) -> LiveCall | None:
        known = self._known.get(linkedid)
        return decode_call(known, []) if known else None

    async def _raw_call(self, linkedid: str) -> dict[str, str]:
        try:
            stored = await self._call("get_call", lambda: read_hash(self._r, self._key(linkedid)))
        except RedisError:
            stored = {}
        pending = self._pending.get(linkedid)
        return {**self._known.get(linkedid, {}), **stored, **(pending.encoded if pending else {})}

    async def live_ids(self) -> set[str]:
        """Linkedids of calls in progress (Redis's set and the calls this process has in progress)."""
        return (await self._live_ids())[0]

    async def _live_ids(self) -> tuple[set[str], bool]:
        try:
            ids = await self._call("live_ids", lambda: read_set(self._r, self._live_key))
            answered = True
        except RedisError:
            ids, answered = set(), False
        ended = {linkedid for linkedid, change in self._pending.items() if change.end}
        return (ids | set(self._known)) - ended, answered

    async def list_calls(self) -> list[LiveCall]:
        """Every call in progress, oldest first (within one operation's wait: if Redis does not answer for the
        list, the calls come from memory)."""
        ids, answered = await self._live_ids()
        calls = []
        for linkedid in ids:
            call = await self.get_call(linkedid) if answered else self._remembered(linkedid)
            if call is not None:
                calls.append(call)
            elif self.guard.up:  # hash expired or lost: the set entry is stale
                try:
                    await self._call("list_calls", functools.partial(self._forget, linkedid))
                except RedisError:
                    pass
        calls.sort(key=lambda c: (c.get("started_at") is not None, c.get("started_at") or _EPOCH))
        return calls

    async def _forget(self, linkedid: str) -> None:
        await self._r.srem(self._live_key, linkedid)
