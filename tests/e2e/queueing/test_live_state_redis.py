"""LiveCallState against the real Redis: typed values in and out, refused fields write nothing, a corrupt value
is reported without losing the call."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from queueing import LiveCallState, connect_redis

pytestmark = pytest.mark.redis


@pytest_asyncio.fixture(loop_scope="session")
async def live() -> AsyncIterator[LiveCallState]:
    client = connect_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"hotline-livecall-{os.getpid()}"
    state = LiveCallState(client, prefix=prefix)
    try:
        await state.ping()
    except Exception as exc:  # noqa: BLE001 - a missing Redis is a skip reason on a developer box only
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    yield state
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await state.aclose()


async def test_typed_values_in_and_out(live: LiveCallState) -> None:
    queued = datetime.now(UTC) - timedelta(seconds=30)
    await live.start_call("T1", caller_number="0101", channel_uniqueid="T1.1", case_number="2611290101")
    await live.update("T1", state="queued", queue="inquiries", position=2, queued_at=queued, priority=5,
                      repeat_caller=True, ivr_path=["1", "recorded"], queue_wait_seconds=None)
    call = await live.get_call("T1")
    assert call is not None
    assert call["linkedid"] == "T1" and call["state"] == "queued" and call["position"] == 2
    assert call["queued_at"] == queued and call["priority"] == 5 and call["repeat_caller"] is True
    assert call["ivr_path"] == ["1", "recorded"] and call["queue_wait_seconds"] is None
    assert isinstance(call["started_at"], datetime) and call["started_at"] <= datetime.now(UTC)
    await live.start_call("T0", started_at=call["started_at"] - timedelta(seconds=5))
    assert [c["linkedid"] for c in await live.list_calls()] == ["T0", "T1"]  # oldest first
    await live.end_call("T1", outcome="completed")
    ended = await live.get_call("T1")
    assert ended is not None and ended["state"] == "ended" and isinstance(ended["ended_at"], datetime)
    assert "T1" not in await live.live_ids()


async def test_an_unknown_field_is_refused_and_nothing_is_written(live: LiveCallState) -> None:
    await live.start_call("T2", case_number="2611290102")
    with pytest.raises(ValueError, match="a live call has no field 'agnet'"):
        await live.update("T2", state="connected", agnet="agent1")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="live call field 'position' takes int, not str"):
        await live.update("T2", position="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a live call has no field 'casenumber'"):
        await live.start_call("T3", casenumber="2611290103")  # type: ignore[call-arg]
    call = await live.get_call("T2")
    assert call is not None and call["state"] == "ivr" and "agent" not in call and "position" not in call
    assert await live.get_call("T3") is None and live.errors == 0


async def test_a_corrupt_value_is_reported_and_the_rest_of_the_call_kept(live: LiveCallState) -> None:
    await live.start_call("T4", case_number="2611290104", channel_uniqueid="T4.1")
    await live._r.hset(live._key("T4"), mapping={"priority": "high"})  # what no writer here can produce
    before = live.errors
    call = await live.get_call("T4")
    assert call is not None and call["case_number"] == "2611290104" and "priority" not in call
    assert live.errors == before + 1
    assert live.health_report()["last_error"] == "get_call T4: live call field 'priority' holds 'high', not int"


async def test_change_messages_carry_the_typed_fields_as_json(live: LiveCallState) -> None:
    pubsub = live._r.pubsub()
    await pubsub.subscribe(live.channel)
    try:
        await asyncio.wait_for(pubsub.get_message(timeout=1), 2)  # the subscribe confirmation
        queued = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
        await live.update("T5", queued_at=queued, priority=3, agent=None)
        message: dict[str, Any] | None = None
        async with asyncio.timeout(5):
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        body = json.loads(message["data"])
        assert body["type"] == "call_updated" and body["linkedid"] == "T5"
        assert body["fields"] == {"queued_at": "2026-11-29T09:00:00+00:00", "priority": 3, "agent": None}
    finally:
        await pubsub.aclose()
