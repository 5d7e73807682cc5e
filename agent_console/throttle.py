"""Login throttling: failed passwords counted per account and per client address, shared by every process.

After `max_failures` failures of an account (or `address_max_failures` from one address) within `window` s,
logins for it are answered 429 with Retry-After until the window ends, even with the right password (else the
lock could be probed). A successful login clears the account's count; the address count runs out by itself,
so an attacker holding one account cannot reset the count of the address they guess other accounts from.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .sessions import ConsoleStoreUnavailable

T = TypeVar("T")


class FailureCounters(Protocol):
    """Counters that expire a fixed window after their first increment."""

    async def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds until it expires) of a counter; (0, 0) if there is none."""
        ...

    async def add(self, key: str, window: int) -> tuple[int, int]:
        """Count one more; (count, seconds left)."""
        ...

    async def clear(self, key: str) -> None:
        """Drop the counter."""
        ...


class RedisFailureCounters:
    """Counters as Redis integers with a TTL set on the first increment."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float = 2.0) -> None:
        self._r = client
        self._prefix = f"{prefix}:console:login-failures"
        self._timeout = timeout

    async def _bounded(self, what: str, op: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await op
        except TimeoutError:
            raise ConsoleStoreUnavailable(f"login throttle: no answer to {what} within {self._timeout:g} s") from None
        except RedisError as exc:
            raise ConsoleStoreUnavailable(f"login throttle: {what} failed ({type(exc).__name__})") from None

    async def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter."""
        async def read() -> tuple[int, int]:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.get(f"{self._prefix}:{key}")
                pipe.ttl(f"{self._prefix}:{key}")
                raw, ttl = await pipe.execute()
            return (int(raw), max(int(ttl), 1)) if raw is not None else (0, 0)

        return await self._bounded("read", read())

    async def add(self, key: str, window: int) -> tuple[int, int]:
        """Count one more failure."""
        async def incr() -> tuple[int, int]:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.incr(f"{self._prefix}:{key}")
                pipe.expire(f"{self._prefix}:{key}", window, nx=True)
                pipe.ttl(f"{self._prefix}:{key}")
                count, _, ttl = await pipe.execute()
            return int(count), max(int(ttl), 1)

        return await self._bounded("count", incr())

    async def clear(self, key: str) -> None:
        """Drop the counter."""
        await self._bounded("reset", self._r.delete(f"{self._prefix}:{key}"))


class MemoryFailureCounters:
    """Counters in this process's memory (tests, single-process demos)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    async def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of a counter."""
        count, until = self._counts.get(key, (0, 0.0))
        left = until - time.monotonic()
        if left <= 0:
            self._counts.pop(key, None)
            return 0, 0
        return count, max(int(left + 0.999), 1)

    async def add(self, key: str, window: int) -> tuple[int, int]:
        """Count one more failure."""
        count, left = await self.peek(key)
        until = time.monotonic() + (left if count else window)
        self._counts[key] = (count + 1, until)
        return count + 1, left or window

    async def clear(self, key: str) -> None:
        """Drop the counter."""
        self._counts.pop(key, None)


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """How many failures a window allows, per account and per client address."""

    max_failures: int = 5
    address_max_failures: int = 20
    window_seconds: int = 300

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.address_max_failures < 1 or self.window_seconds < 1:
            raise ValueError("login throttle: limits and window must be at least 1")


class LoginThrottle:
    """Decides whether a login attempt may be checked at all, and records its outcome."""

    def __init__(self, counters: FailureCounters, limits: ThrottleLimits | None = None) -> None:
        self._counters = counters
        self.limits = limits or ThrottleLimits()

    @staticmethod
    def _account_key(username: str) -> str:
        # Hashed: whatever was typed as a username never becomes a Redis key as such.
        return "account:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]

    @staticmethod
    def _address_key(address: str) -> str:
        return "address:" + address

    async def retry_after(self, username: str, address: str) -> int:
        """0 if the attempt may go ahead, else the seconds until it may."""
        count, left = await self._counters.peek(self._account_key(username))
        wait = left if count >= self.limits.max_failures else 0
        count, left = await self._counters.peek(self._address_key(address))
        if count >= self.limits.address_max_failures:
            wait = max(wait, left)
        return wait

    async def failed(self, username: str, address: str) -> None:
        """Count a wrong password against the account and the address."""
        await self._counters.add(self._account_key(username), self.limits.window_seconds)
        await self._counters.add(self._address_key(address), self.limits.window_seconds)

    async def succeeded(self, username: str) -> None:
        """A right password: the account's count starts over."""
        await self._counters.clear(self._account_key(username))
