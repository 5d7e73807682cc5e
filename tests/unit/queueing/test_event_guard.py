"""Queueing's AMI handlers that fail are retried, then parked with a resync from Asterisk; never dropped silently."""
from __future__ import annotations

import asyncio
from typing import Any

from queueing import AmiEventGuard


class FakeAmi:
    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}
        self.connected: list[Any] = []
        self.lost: list[Any] = []

    def on_event(self, name: str, handler: Any) -> None:
        self.handlers.setdefault(name, []).append(handler)

    def on_connected(self, handler: Any) -> None:
        self.connected.append(handler)

    def on_events_lost(self, handler: Any) -> None:
        self.lost.append(handler)

    async def emit(self, **event: str) -> None:
        for handler in self.handlers.get(event["Event"], []):
            await handler(event)


class Flaky:
    """A handler that fails its first `failures` calls (the database away for a moment)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[str] = []

    async def __call__(self, event: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        self.seen.append(event["Linkedid"])


class Rebuild:
    def __init__(self, failures: int = 0) -> None:
        self.runs = 0
        self.failures = failures

    async def __call__(self) -> None:
        self.runs += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("redis away")


def _guard(**kw: Any) -> tuple[AmiEventGuard, FakeAmi]:
    ami = FakeAmi()
    return AmiEventGuard(retry_delay=0.001, resync_delay=0.01, **kw).attach(ami), ami


async def test_a_handler_failing_once_is_retried_in_order() -> None:
    guard, ami = _guard()
    handler = Flaky(1)
    guard.on_event("Hangup", handler)
    await ami.emit(Event="Hangup", Linkedid="L1")
    await ami.emit(Event="Hangup", Linkedid="L2")
    assert handler.seen == ["L1", "L2"]
    report = guard.health_report()
    assert report["retried_ok"] == 1 and report["parked"] == 0 and not report["resync_pending"]


async def test_a_handler_that_keeps_failing_parks_the_event_and_a_resync_rebuilds() -> None:
    guard, ami = _guard()
    rebuild = Rebuild()
    guard.on_connected(rebuild)
    assert ami.connected == [rebuild]  # still run after each reconnect
    guard.on_event("Hangup", Flaky(10))
    await ami.emit(Event="Hangup", Linkedid="L1")
    report = guard.health_report()
    assert report["handler_failures"] == 1 and report["parked"] == 1 and report["resync_pending"]
    assert guard.parked[0].linkedid == "L1" and "database is locked" in guard.parked[0].error
    runner = asyncio.create_task(guard.run())
    try:
        for _ in range(100):
            if guard.resyncs:
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert rebuild.runs == 1 and guard.health_report()["parked"] == 0


async def test_a_failing_resync_is_tried_again_and_health_says_so() -> None:
    guard, ami = _guard()
    rebuild = Rebuild(failures=2)
    guard.on_connected(rebuild)
    guard.on_event("Hangup", Flaky(10))
    await ami.emit(Event="Hangup", Linkedid="L1")
    assert not await guard.resync_once(["test"])
    assert guard.health_report()["ok"] is False  # parked, and the resync fails: not healthy
    runner = asyncio.create_task(guard.run())
    try:
        for _ in range(300):
            if guard.resyncs:
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert rebuild.runs == 3 and guard.resyncs == 1 and guard.health_report()["ok"] is True


async def test_events_dropped_by_the_ami_client_ask_for_a_resync() -> None:
    guard, ami = _guard()
    ami.lost[0]()
    assert guard.health_report()["resync_pending"] is True


async def test_while_a_resync_is_due_failures_are_parked_without_retries() -> None:
    guard, ami = _guard()
    guard.request_resync("test")
    handler = Flaky(1)
    guard.on_event("Hangup", handler)
    await ami.emit(Event="Hangup", Linkedid="L1")
    assert handler.seen == [] and guard.health_report()["parked"] == 1
