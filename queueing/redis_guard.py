"""RedisGuard: a bounded total wait for every live-state Redis operation, and whether Redis answers at all.

redis-py's own socket timeouts and retries stack up (several seconds per command against a paused server); the
guard puts one deadline around the whole operation, retries included. Live state is a mirror of the truth (the
database and Asterisk), so an operation that misses its deadline is a failed operation, never a wait."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

log = logging.getLogger(__name__)


class RedisGuard:
    """Runs Redis operations within op_timeout seconds each (RedisError otherwise) and tracks Redis up or down
    (a timeout or a lost connection is down; an error reply is not).

    While a watcher is probing (LiveCallState.run), operations made while Redis is down fail at once instead of
    each waiting out its deadline; the watcher's pings find out when Redis is back."""

    def __init__(self, op_timeout: float = 0.5) -> None:
        self.op_timeout = op_timeout
        self.down_since: float | None = None  # time.time() of the first failure of the current outage
        self.outages = 0
        self.errors = 0
        self.skipped = 0  # operations not tried because Redis was known to be away
        self.last_error: str | None = None
        self.probing = False
        self._came_back = False

    @property
    def up(self) -> bool:
        """False from a failed operation until the next one that succeeds."""
        return self.down_since is None

    async def call(self, what: str, operation: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """The operation's result; RedisError if it fails or takes longer than op_timeout (retries included)."""
        if self.down_since is not None and self.probing and not probe:
            self.skipped += 1
            raise RedisConnectionError(f"{what}: Redis is away (since {time.time() - self.down_since:.1f} s)")
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await operation()
        except TimeoutError:
            self.failed(what, f"no answer within {self.op_timeout:g} s")
            raise RedisTimeoutError(f"{what}: no answer within {self.op_timeout:g} s") from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.failed(what, str(exc) or type(exc).__name__)
            raise
        except RedisError as exc:  # Redis answered, with an error (a wrong type, say): it is not away
            self.errors += 1
            self.last_error = f"{what}: {exc}"
            raise
        if self.down_since is not None:
            log.warning("Redis answers again after %.1f s away", time.time() - self.down_since)
            self.down_since = None
            self._came_back = True
        return result

    def failed(self, what: str, error: str) -> None:
        """Count a failed operation; the first of an outage marks Redis down (and is logged)."""
        self.errors += 1
        self.last_error = f"{what}: {error}"
        if self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            log.warning("Redis is away (%s); live state is kept in memory until it is back", self.last_error)
        else:
            log.debug("Redis still away: %s", self.last_error)

    def take_came_back(self) -> bool:
        """True once after each outage has ended (the caller rebuilds what Redis missed)."""
        came_back, self._came_back = self._came_back, False
        return came_back

    def report(self) -> dict[str, Any]:
        """Up or down, since when, and the counters, for /healthz."""
        return {"up": self.up,
                "down_for_seconds": None if self.down_since is None else round(time.time() - self.down_since, 1),
                "outages": self.outages, "errors": self.errors, "skipped": self.skipped,
                "last_error": self.last_error, "op_timeout_seconds": self.op_timeout}
