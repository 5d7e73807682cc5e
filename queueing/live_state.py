"""Live state of calls in progress, in Redis, keyed by Asterisk linkedid and shared by every process.

Each call is one hash whose fields are declared in live_call.LiveCall; writers pass typed keyword arguments,
readers get a LiveCall back."""
from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Unpack

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .live_call import LiveCall, LiveCallFields, decode_call, encode_fields, to_json
from .redis_text import hash_mapping, read_hash, read_set

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
    """A Redis client with timeouts on every call and retries with exponential backoff (no I/O yet)."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class LiveCallState:
    """Calls in progress: one Redis hash per call, a set of live linkedids, and pub/sub change messages."""

    def __init__(self, client: aioredis.Redis, prefix: str = "hotline", ended_ttl_seconds: int = 3600) -> None:
        self._r = client
        self._prefix = prefix
        self._ended_ttl = ended_ttl_seconds
        self.errors = 0
        self.last_error: str | None = None

    @property
    def channel(self) -> str:
        """The pub/sub channel on which every change is published as JSON."""
        return f"{self._prefix}:events"

    def _key(self, linkedid: str) -> str:
        return f"{self._prefix}:call:{linkedid}"

    @property
    def _live_key(self) -> str:
        return f"{self._prefix}:calls:live"

    async def ping(self) -> None:
        """Raise RedisError if Redis does not answer."""
        await self._r.ping()

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._r.aclose()

    def health_report(self) -> dict[str, Any]:
        """Error counters for /healthz (the ping is done by the caller)."""
        return {"errors": self.errors, "last_error": self.last_error}

    def _failed(self, what: str, exc: RedisError) -> None:
        # Live state is a mirror: losing a write must not fail the call; rebuild fixes it later.
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        log.warning("live state: %s failed: %s", what, exc)

    async def start_call(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> None:
        """Register a new live call (state 'ivr' unless given); ValueError names a field LiveCall lacks."""
        fields.setdefault("state", "ivr")
        fields.setdefault("started_at", datetime.now(UTC))
        fields.setdefault("ivr_path", [])
        encoded = encode_fields({**fields, "linkedid": linkedid})
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(linkedid), mapping=hash_mapping(encoded))
                pipe.persist(self._key(linkedid))
                pipe.sadd(self._live_key, linkedid)
                await pipe.execute()
            await self._publish("call_started", linkedid, fields)
        except RedisError as exc:
            self._failed("start_call", exc)

    async def update(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> None:
        """Set fields on a live call and publish the change; ValueError names a field LiveCall lacks."""
        encoded = encode_fields(fields)
        try:
            await self._r.hset(self._key(linkedid), mapping=hash_mapping(encoded))
            await self._publish("call_updated", linkedid, fields)
        except RedisError as exc:
            self._failed("update", exc)

    async def update_existing(self, linkedid: str, **fields: Unpack[LiveCallFields]) -> bool:
        """Set fields on a call whose hash is still there (live, or ended and kept for late readers) and publish
        the change; a call already gone is not brought back. False when there was no such call (or Redis is away).
        """
        encoded = encode_fields(fields)
        if not encoded:
            return False
        flat = [part for item in encoded.items() for part in item]
        try:
            # One script: the hash cannot expire between the check and the write (it would live on without a TTL).
            written = await self._r.eval(_SET_IF_EXISTS, 1, self._key(linkedid), *flat)
            if not written:
                return False
            await self._publish("call_updated", linkedid, fields)
        except RedisError as exc:
            self._failed("update_existing", exc)
            return False
        return True

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
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(linkedid), mapping=hash_mapping(encoded))
                pipe.expire(self._key(linkedid), self._ended_ttl)
                pipe.srem(self._live_key, linkedid)
                await pipe.execute()
            await self._publish("call_ended", linkedid, fields)
        except RedisError as exc:
            self._failed("end_call", exc)

    async def get_call(self, linkedid: str) -> LiveCall | None:
        """The call's typed fields, or None if unknown (or Redis is away). A value that does not parse is left
        out and counted as an error: the rest of the call still drives its hang-up."""
        try:
            raw = await read_hash(self._r, self._key(linkedid))
        except RedisError as exc:
            self._failed("get_call", exc)
            return None
        if not raw:
            return None
        problems: list[str] = []
        call = decode_call(raw, problems)
        for problem in problems:
            self.errors += 1
            self.last_error = f"get_call {linkedid}: {problem}"
            log.warning("live state: call %s: %s", linkedid, problem)
        return call

    async def live_ids(self) -> set[str]:
        """Linkedids of calls in progress."""
        try:
            return await read_set(self._r, self._live_key)
        except RedisError as exc:
            self._failed("live_ids", exc)
            return set()

    async def list_calls(self) -> list[LiveCall]:
        """Every call in progress, oldest first."""
        ids = await self.live_ids()
        calls = []
        for linkedid in ids:
            call = await self.get_call(linkedid)
            if call is not None:
                calls.append(call)
            else:  # hash expired or lost: the set entry is stale
                try:
                    await self._r.srem(self._live_key, linkedid)
                except RedisError as exc:
                    self._failed("list_calls", exc)
        calls.sort(key=lambda c: (c.get("started_at") is not None, c.get("started_at") or _EPOCH))
        return calls

    async def _publish(self, kind: str, linkedid: str, fields: LiveCallFields) -> None:
        message = {"type": kind, "linkedid": linkedid, "at": time.time(), "fields": to_json(fields)}
        await self._r.publish(self.channel, json.dumps(message, ensure_ascii=False, default=str))

