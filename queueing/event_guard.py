"""What queueing does when one of its AMI event handlers fails or AMI events are lost: the event is retried at
once (in order: the event stream waits), then parked and the live state is resynced from Asterisk, the way it is
after a reconnect — never dropped silently."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .ports import AmiConnectedHandler, AmiEventHandler, AmiEvents

log = logging.getLogger(__name__)


class LossReporting(Protocol):
    """An AMI client that says when its bounded event queue overflowed (telephony.AmiClient)."""

    def on_events_lost(self, handler: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class ParkedEvent:
    """An event whose handler still failed after its retries, kept for /healthz until the resync that covers it."""

    name: str
    linkedid: str | None
    error: str
    at: float


class AmiEventGuard:
    """Wraps the AMI subscriptions of queueing's services (an AmiEvents itself): handlers that fail are retried,
    then parked with a resync of every on-connect rebuild scheduled; a resync that fails is tried again, backing off.

    attach() subscribes nothing by itself: subscribers register through it; run() (an owned task) does resyncs."""

    def __init__(self, *, retries: int = 2, retry_delay: float = 0.2, resync_delay: float = 1.0,
                 resync_backoff_max: float = 30.0, max_parked: int = 100) -> None:
        self._ami: AmiEvents | None = None
        self._retries = retries
        self._retry_delay = retry_delay
        self._resync_delay = resync_delay
        self._backoff_max = resync_backoff_max
        self._rebuilds: list[AmiConnectedHandler] = []
        self._wanted = asyncio.Event()
        self._reasons: list[str] = []
        self.parked: deque[ParkedEvent] = deque(maxlen=max_parked)
        self.retried_ok = 0
        self.failures = 0
        self.parked_total = 0
        self.resyncs = 0
        self.resync_failures = 0
        self.last_error: str | None = None

    def attach(self, ami: AmiEvents) -> AmiEventGuard:
        """Subscribe through this guard to this AMI client (and, if it reports them, to its lost events)."""
        self._ami = ami
        on_lost = getattr(ami, "on_events_lost", None)
        if on_lost is not None:
            on_lost(lambda: self.request_resync("AMI events were dropped (event queue full)"))
        return self

    # -- AmiEvents ---------------------------------------------------------------------------
    def on_event(self, name: str, handler: AmiEventHandler) -> None:
        """Register handler for this event, guarded."""
        if self._ami is None:
            raise RuntimeError("AmiEventGuard.attach(ami) must come before subscribing")
        self._ami.on_event(name, self._guarded(name, handler))

    def on_connected(self, handler: AmiConnectedHandler) -> None:
        """Register a rebuild run after each (re)connect, and by each resync."""
        if self._ami is None:
            raise RuntimeError("AmiEventGuard.attach(ami) must come before subscribing")
        self._rebuilds.append(handler)
        self._ami.on_connected(handler)

    # -- failures ----------------------------------------------------------------------------
    def _guarded(self, name: str, handler: AmiEventHandler) -> AmiEventHandler:
        async def guarded(event: Any) -> None:
            await self._handle(name, handler, event)
        guarded.__qualname__ = f"guarded({getattr(handler, '__qualname__', handler)})"
        return guarded

    async def _handle(self, name: str, handler: AmiEventHandler, event: Any) -> None:
        # While a resync is already due (the database or Redis is away), retrying each event only slows the
        # stream: park it at once, the resync covers it.
        tries = 1 if self._wanted.is_set() else 1 + self._retries
        for attempt in range(1, tries + 1):
            try:
                await handler(event)
            except Exception as exc:  # the event is retried or parked, never lost without a trace
                error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                if attempt < tries:
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                self._park(name, event, error)
                return
            if attempt > 1:
                self.retried_ok += 1
                log.info("AMI %s handler succeeded on try %d", name, attempt)
            return

    def _park(self, name: str, event: Any, error: str) -> None:
        self.failures += 1
        self.parked_total += 1
        self.last_error = f"{name}: {error}"
        linkedid = (str(event.get("Linkedid") or "") or None) if hasattr(event, "get") else None
        self.parked.append(ParkedEvent(name, linkedid, error, time.time()))
        log.warning("AMI %s (call %s): handler failed (%s); parked, live state is resynced from Asterisk", name,
                    linkedid or "-", error)
        self.request_resync(f"{name} handler failed")

    def request_resync(self, reason: str) -> None:
        """Rebuild the live state from Asterisk soon (requests close together share one resync)."""
        self._reasons.append(reason)
        self._wanted.set()

    # -- resync ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run the resyncs asked for, until cancelled (an owned task)."""
        backoff = self._resync_delay
        while True:
            await self._wanted.wait()
            await asyncio.sleep(backoff)  # let a burst of failures (or the overflowing queue) settle first
            reasons, self._reasons = self._reasons, []
            if await self.resync_once(reasons):
                backoff = self._resync_delay
            else:
                self._reasons = reasons + self._reasons
                backoff = min(backoff * 2, self._backoff_max)

    async def resync_once(self, reasons: list[str] | None = None) -> bool:
        """Run every registered rebuild once; True if all succeeded (the parked events are then settled)."""
        self._wanted.clear()
        parked = len(self.parked)
        for rebuild in self._rebuilds:
            try:
                await rebuild()
            except Exception as exc:  # Asterisk, Redis or the database still away: tried again, backing off
                self.resync_failures += 1
                self.last_error = f"resync: {type(exc).__name__}: {exc}"
                log.warning("AMI resync (%s) failed in %s: %s; trying again", ", ".join(reasons or []) or "asked",
                            getattr(rebuild, "__qualname__", rebuild), exc)
                self._wanted.set()
                return False
        self.resyncs += 1
        for _ in range(parked):
            self.parked.popleft()
        log.info("AMI resync done (%s); %d parked event(s) settled", ", ".join(reasons or []) or "asked", parked)
        return True

    def health_report(self) -> dict[str, Any]:
        """Counters for /healthz: ok unless events are parked and their resync keeps failing."""
        return {
            "ok": not (self.parked and self.resync_failures and self._wanted.is_set()),
            "handler_failures": self.failures,
            "retried_ok": self.retried_ok,
            "parked": len(self.parked),
            "resyncs": self.resyncs,
            "resync_failures": self.resync_failures,
            "resync_pending": self._wanted.is_set(),
            "last_error": self.last_error,
        }
