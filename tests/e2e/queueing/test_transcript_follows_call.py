"""A description's transcript follows its call after the caller went on, through the real parts: SQLite cases and
job table, the worker and its case observer, and LiveCallState in the real Redis (pub/sub included)."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asr import Transcript
from cases import CaseStore, NewCase
from queueing import LiveCallState, connect_redis
from storage import create_engine_from_url, migrate_database
from tests.support.descriptions import DescriptionPipelines, description_pipelines

pytestmark = pytest.mark.redis


class HeldRecognizer:
    """Answers each description only when released (the ASR is saturated)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.release = asyncio.Event()

    async def transcribe_file(self, path: Path, grammar: Any = None, timeout: float | None = None) -> Transcript:
        await self.release.wait()
        return Transcript(text=self.text, duration=2.0)


PREFIX = f"hotline-follow-{os.getpid()}"


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[Any]:
    client = connect_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    yield client
    keys = [k async for k in client.scan_iter(f"{PREFIX}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def live(redis: Any) -> AsyncIterator[LiveCallState]:
    state = LiveCallState(connect_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")), prefix=PREFIX,
                          ended_ttl_seconds=60)
    await state.ping()
    yield state
    await state.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def stores(tmp_path: Path) -> AsyncIterator[tuple[CaseStore, DescriptionPipelines]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    try:
        async with description_pipelines(url) as pipelines:
            yield CaseStore(engine), pipelines
    finally:
        await engine.dispose()


async def _described_case(cases: CaseStore, linkedid: str, wav: Path) -> str:
    case = await cases.open(NewCase(caller_number="01055507001", category="complaint", source_ref=linkedid),
                            actor="ivr")
    await cases.attach_recording(case.case_number, str(wav), actor="ivr")
    return case.case_number


async def test_the_transcript_reaches_a_call_already_with_an_agent_and_is_published(
        live: LiveCallState, redis: Any, stores: tuple[CaseStore, DescriptionPipelines], tmp_path: Path) -> None:
    cases, pipelines = stores
    wav = tmp_path / "d.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 2000)
    recognizer = HeldRecognizer("하수도가 막혔어요")
    pipeline = pipelines.start(cases, recognizer, live=live)
    number = await _described_case(cases, "F1", wav)
    await live.start_call("F1", case_number=number, transcript_status="pending")
    await pipeline.descriptions.submit(number, wav)
    await live.update("F1", state="connected", agent="agent1")  # the caller went on; an agent took the call
    pubsub = redis.pubsub()
    await pubsub.subscribe(live.channel)
    try:
        recognizer.release.set()
        seen: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "transcript" not in seen and loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                event = json.loads(message["data"])
                if event["linkedid"] == "F1":
                    seen.update(event["fields"])
    finally:
        await pubsub.aclose()
    assert seen.get("transcript") == "하수도가 막혔어요" and seen.get("transcript_status") == "done", seen
    call = await live.get_call("F1")
    assert call is not None and call["state"] == "connected" and call["agent"] == "agent1"
    assert call["transcript"] == "하수도가 막혔어요" and call["transcript_status"] == "done"
    case = await cases.get(number)
    assert case.transcript == "하수도가 막혔어요" and case.transcript_status == "done"


async def test_an_ended_call_keeps_its_expiry_and_a_gone_one_is_not_brought_back(
        live: LiveCallState, redis: Any, stores: tuple[CaseStore, DescriptionPipelines], tmp_path: Path) -> None:
    cases, pipelines = stores
    wav = tmp_path / "d.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 2000)
    recognizer = HeldRecognizer("가로등이 꺼졌어요")
    pipeline = pipelines.start(cases, recognizer, live=live)
    ended = await _described_case(cases, "F2", wav)
    gone = await _described_case(cases, "F3", wav)
    for linkedid, number in (("F2", ended), ("F3", gone)):
        await live.start_call(linkedid, case_number=number, transcript_status="pending")
        await pipeline.descriptions.submit(number, wav)
        await live.end_call(linkedid, outcome="completed")
    await redis.delete(f"{PREFIX}:call:F3")  # its hash expired
    recognizer.release.set()
    for number in (ended, gone):
        for _ in range(200):
            if (await cases.get(number)).transcript_status == "done":
                break
            await asyncio.sleep(0.05)
        assert (await cases.get(number)).transcript == "가로등이 꺼졌어요"
    call = await live.get_call("F2")
    assert call is not None and call["state"] == "ended" and call["transcript"] == "가로등이 꺼졌어요"
    assert 0 < await redis.ttl(f"{PREFIX}:call:F2") <= 60  # still expires like every ended call
    assert await live.get_call("F3") is None and not await redis.exists(f"{PREFIX}:call:F3")
