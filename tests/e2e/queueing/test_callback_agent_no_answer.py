"""A callback whose agents never answer, with the real dispatcher loop on real SQLite and Redis: it is tried
max_attempts times with growing pauses, then FAILED for a supervisor (published on Redis), and never dialed
again — not every 2 seconds forever."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from queueing import CallbackDispatcher, CallbackStore
from queueing.live_state import LiveCallState, connect_redis
from queueing.queue_live import QueueLiveState
from storage import create_engine_from_url, migrate_database

pytestmark = [pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"


class NobodyAnswersAmi:
    """Asterisk as the dispatcher sees it when the agent's phone rings out: OriginateResponse Failure."""

    connected = True

    def __init__(self) -> None:
        self.originates: list[tuple[float, str]] = []

    async def action(self, fields: dict[str, Any], **kw: Any) -> Any:
        if fields["Action"] == "Originate":
            self.originates.append((time.monotonic(), fields["Channel"]))
            return [{"Response": "Success"}, {"Event": "OriginateResponse", "Response": "Failure", "Reason": "3"}]
        if fields["Action"] == "DBGet":
            return {"Response": "Error", "Message": "Database entry not found"}
        return {"Response": "Success"}

    async def event_list(self, fields: dict[str, Any], **kw: Any) -> list[Any]:
        return []


async def test_agents_not_answering_end_in_failed_for_a_supervisor(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    prefix = f"hotline-test-cb-noanswer-{uuid.uuid4().hex[:8]}"
    queue_live = QueueLiveState(connect_redis(REDIS_URL), prefix=prefix)
    live_calls = LiveCallState(connect_redis(REDIS_URL), prefix=prefix)
    listener = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    pubsub = listener.pubsub()
    await pubsub.subscribe(queue_live.channel)
    store = CallbackStore(engine)
    ami = NobodyAnswersAmi()
    dispatcher = CallbackDispatcher(store, ami, queue_live, live_calls, dial_template="PJSIP/trunk/sip:{number}@x",
                                    max_attempts=3, retry_seconds=1.0, originate_grace_seconds=0)
    runner = asyncio.create_task(dispatcher.run(interval=0.1))
    try:
        for name in ("agent1", "agent2"):
            await queue_live.set_agent(name, {"name": name, "state": "available", "queues": ["complaints"]})
        cb = await store.request(queue="complaints", caller_number="01055507001", case_number="2612040001",
                                 linkedid="cb-noanswer.1", priority=0, queued_at=datetime.now(UTC))
        failed_message = None
        deadline = time.monotonic() + 20
        while failed_message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and json.loads(message["data"]).get("type") == "callback_failed":
                failed_message = json.loads(message["data"])
        assert failed_message is not None, f"not failed within 20 s; dialed {len(ami.originates)} times"
        assert failed_message["callback"]["id"] == cb.id
        await asyncio.sleep(3.0)  # a looping dispatcher would dial again meanwhile
        row = await store.get(cb.id)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await dispatcher.aclose()
        await pubsub.aclose()
        await listener.delete(*[k async for k in listener.scan_iter(f"{prefix}:*")] or ["-"])
        await listener.aclose()
        await queue_live.aclose()
        await live_calls.aclose()
        await engine.dispose()
    assert row is not None and row.status == "failed" and row.attempts == 3
    assert "no agent answered in 3 attempt(s)" in row.last_error
    assert len(ami.originates) == 3
    # Backed off: 1 s after the first miss, 2 s after the second; and the two agents took turns.
    gaps = [b[0] - a[0] for a, b in zip(ami.originates, ami.originates[1:], strict=False)]
    assert 0.9 <= gaps[0] < 1.8 and 1.9 <= gaps[1] < 2.8, gaps
    assert [channel for _, channel in ami.originates] == ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent1"]
