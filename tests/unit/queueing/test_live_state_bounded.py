"""Live state against a fake Redis that can be paused (as `DEBUG SLEEP` or SIGSTOP does): no call waits on it, every
operation has a bounded total wait, the calls stay known from memory, and everything is written back (and the
rebuilds run) once it answers again."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from lifecycle import TaskOwner
from queueing import LiveCallState, QueueLiveState
from queueing.redis_guard import RedisGuard

OP_TIMEOUT = 0.3


class FakeRedis:
    """The few commands live state uses, on dicts; while paused every command waits (for minutes if need be)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.sets: dict[str, set[str]] = {}
        self.strings: dict[str, str] = {}
        self.ttl: dict[str, int] = {}
        self.published: list[tuple[str, str]] = []
        self.commands = 0
        self._running = asyncio.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def _serve(self) -> None:
        await self._running.wait()  # a paused server: the command waits, it does not fail
        self.commands += 1

    # -- commands applied at once (used by the pipeline too) ---------------------------------------
    def _hset(self, key: str, mapping: dict[str, str]) -> None:
        self.hashes.setdefault(key, {}).update(mapping)

    def _sadd(self, key: str, *members: str) -> None:
        self.sets.setdefault(key, set()).update(members)

    def _srem(self, key: str, *members: str) -> None:
        self.sets.setdefault(key, set()).difference_update(members)

    async def ping(self) -> bool:
        await self._serve()
        return True

    async def hgetall(self, key: str) -> dict[str, str]:
        await self._serve()
        return dict(self.hashes.get(key, {}))

    async def smembers(self, key: str) -> set[str]:
        await self._serve()
        return set(self.sets.get(key, set()))

    async def srem(self, key: str, *members: str) -> None:
        await self._serve()
        self._srem(key, *members)

    async def hset(self, key: str, mapping: dict[str, str]) -> None:
        await self._serve()
        self._hset(key, mapping)

    async def hincrby(self, key: str, field: str, amount: int) -> None:
        await self._serve()
        row = self.hashes.setdefault(key, {})
        row[field] = str(int(row.get(field, "0")) + amount)

    async def exists(self, key: str) -> int:
        await self._serve()
        return int(key in self.strings)

    async def set(self, key: str, value: str) -> None:
        await self._serve()
        self.strings[key] = value

    async def publish(self, channel: str, message: str) -> None:
        await self._serve()
        self.published.append((channel, message))

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    async def aclose(self) -> None:
        pass


class FakePipeline:
    """Commands queued, applied together by execute (after the server answers)."""

    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._ops: list[Callable[[], None]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ops.clear()

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self._ops.append(lambda: self._redis._hset(key, dict(mapping)))

    def sadd(self, key: str, *members: str) -> None:
        self._ops.append(lambda: self._redis._sadd(key, *members))

    def srem(self, key: str, *members: str) -> None:
        self._ops.append(lambda: self._redis._srem(key, *members))

    def persist(self, key: str) -> None:
        self._ops.append(lambda: self._redis.ttl.pop(key, None) and None)

    def expire(self, key: str, seconds: int) -> None:
        self._ops.append(lambda: self._redis.ttl.__setitem__(key, seconds))

    def publish(self, channel: str, message: str) -> None:
        self._ops.append(lambda: self._redis.published.append((channel, message)))

    def delete(self, key: str) -> None:
        self._ops.append(lambda: self._redis.hashes.pop(key, None) and None)

    def hdel(self, key: str, field: str) -> None:
        self._ops.append(lambda: self._redis.hashes.get(key, {}).pop(field, None) and None)

    def hincrby(self, key: str, field: str, amount: int) -> None:
        def bump() -> None:
            row = self._redis.hashes.setdefault(key, {})
            row[field] = str(int(row.get(field, "0")) + amount)
        self._ops.append(bump)

    async def execute(self) -> None:
        await self._redis._serve()
        for op in self._ops:
            op()


def _client(fake: FakeRedis) -> aioredis.Redis:
    return cast(aioredis.Redis, fake)  # duck-typed: only the commands above are used


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeRedis]:
    server = FakeRedis()
    yield server
    server.resume()


async def _until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    # Polled: the state checked changes inside the writer task, which signals nothing a test could wait on.
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _timed(awaitable: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


async def test_a_new_call_does_not_wait_for_a_paused_redis_and_is_written_back(fake: FakeRedis) -> None:
    live = LiveCallState(_client(fake), prefix="t", guard=RedisGuard(OP_TIMEOUT))
    rebuilds: list[str] = []

    async def rebuild() -> None:
        rebuilds.append("queues and calls from Asterisk")

    live.on_back(rebuild)
    tasks = TaskOwner("test live state")
    live.start(tasks, interval=0.1)
    try:
        fake.pause()
        # What the IVR does before the welcome, and the menu key: none of it waits on Redis.
        _, took = await _timed(live.start_call("L1", caller_number="0101", channel_uniqueid="L1", case_number="C1"))
        assert took < 0.05
        _, took = await _timed(live.update("L1", ivr_path=["2"], category="inquiry"))
        assert took < 0.05
        # A read waits at most the deadline (and once Redis is known away, not at all); it answers from memory.
        call, took = await _timed(live.get_call("L1"))
        assert took < OP_TIMEOUT + 0.2
        assert call is not None and call["ivr_path"] == ["2"] and call["case_number"] == "C1"
        await _until(lambda: not live.guard.up)
        call, took = await _timed(live.get_call("L1"))
        assert took < 0.05 and call is not None and call["category"] == "inquiry"
        # The queue join, as the call tracker writes it, while Redis is still away.
        await live.update("L1", state="queued", queue="inquiries")
        assert await live.live_ids() == {"L1"}
        report = live.health_report()
        assert report["up"] is False and report["queued_writes"] == 1 and report["dropped_writes"] == 0
        assert fake.hashes == {}

        fake.resume()
        await _until(lambda: live.guard.up and live.pending_writes == 0 and rebuilds)
        stored = fake.hashes["t:call:L1"]
        assert stored["state"] == "queued" and stored["queue"] == "inquiries" and stored["ivr_path"] == '["2"]'
        assert stored["case_number"] == "C1" and fake.sets["t:calls:live"] == {"L1"}
        assert rebuilds == ["queues and calls from Asterisk"]
        assert live.health_report()["rebuilds"] == 1 and live.health_report()["queued_writes"] == 0
    finally:
        await tasks.aclose()


async def test_without_the_background_writer_each_operation_still_has_a_bounded_total_wait(fake: FakeRedis) -> None:
    live = LiveCallState(_client(fake), prefix="t", guard=RedisGuard(OP_TIMEOUT))
    fake.pause()
    for operation in (live.start_call("L2", case_number="C2"), live.update("L2", state="queued"),
                      live.get_call("L2"), live.live_ids(), live.list_calls()):
        _, took = await _timed(operation)
        assert took < OP_TIMEOUT + 0.2
    with pytest.raises(Exception, match="no answer within 0.3 s"):
        await live.ping()
    assert [c["linkedid"] for c in await live.list_calls()] == ["L2"]
    assert live.pending_writes == 1
    fake.resume()
    await live.update("L2", position=1)  # the next write sends what was kept too
    assert fake.hashes["t:call:L2"]["state"] == "queued" and fake.hashes["t:call:L2"]["position"] == "1"
    assert live.pending_writes == 0


async def test_the_write_backlog_is_bounded_and_calls_in_progress_still_come_back(fake: FakeRedis) -> None:
    live = LiveCallState(_client(fake), prefix="t", guard=RedisGuard(OP_TIMEOUT), max_pending=2)
    tasks = TaskOwner("test live state")
    live.start(tasks, interval=0.1)
    try:
        fake.pause()
        await live.start_call("A", case_number="CA")
        await live.start_call("B", case_number="CB")
        await live.end_call("B", outcome="abandoned_in_ivr")
        await live.start_call("C", case_number="CC")  # a third call while two are waiting: its write is dropped
        for _ in range(50):  # many changes to calls already waiting are merged, not queued
            await live.update("A", ivr_path=["1"])
        report = live.health_report()
        assert report["queued_writes"] == 2 and report["dropped_writes"] == 1
        assert await live.live_ids() == {"A", "C"}
        fake.resume()
        await _until(lambda: live.guard.up and live.pending_writes == 0)
        # C's dropped write is rebuilt from memory; B ended and left the live set with its hash kept a while.
        assert fake.sets["t:calls:live"] == {"A", "C"}
        assert fake.hashes["t:call:C"]["case_number"] == "CC" and fake.hashes["t:call:A"]["ivr_path"] == '["1"]'
        assert fake.hashes["t:call:B"]["outcome"] == "abandoned_in_ivr" and fake.ttl["t:call:B"] == 3600
    finally:
        await tasks.aclose()


async def test_queue_live_state_answers_within_the_deadline_while_redis_is_paused(fake: FakeRedis) -> None:
    guard = RedisGuard(OP_TIMEOUT)
    queues = QueueLiveState(_client(fake), prefix="t", guard=guard)
    await queues.set_waiting("inquiries", {"u1": {"uniqueid": "u1", "position": 1}})
    fake.pause()
    for operation in (queues.waiting("inquiries"), queues.agents(), queues.counters("inquiries"),
                      queues.set_agent("agent1", {"state": "available"}), queues.bump_counter("inquiries", "offered")):
        _, took = await _timed(operation)
        assert took < OP_TIMEOUT + 0.2
    with pytest.raises(Exception, match="no answer within"):
        await queues.marker_present()
    assert guard.report()["up"] is False and queues.errors == 5
    fake.resume()
    assert [e["uniqueid"] for e in await queues.waiting("inquiries")] == ["u1"]
    assert guard.up


async def test_a_watched_outage_fails_at_once_instead_of_waiting_each_deadline(fake: FakeRedis) -> None:
    guard = RedisGuard(OP_TIMEOUT)
    live = LiveCallState(_client(fake), prefix="t", guard=guard)
    queues = QueueLiveState(_client(fake), prefix="t", guard=guard)
    tasks = TaskOwner("test live state")
    live.start(tasks, interval=0.1)
    try:
        fake.pause()
        await live.start_call("L3", case_number="C3")
        await _until(lambda: not guard.up)
        started = time.monotonic()
        for _ in range(20):  # a console refresh of twenty agents and queues
            await queues.agents()
            await queues.waiting("complaints")
        assert time.monotonic() - started < 0.2
        assert guard.report()["skipped"] >= 40
    finally:
        await tasks.aclose()
