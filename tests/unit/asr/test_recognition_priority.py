"""The recognizer pool's admission rules with small fakes: a caller's menu answer never waits behind queued
description jobs, batch work is capped, and a wait that is cancelled or times out holds no slot."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import asr.recognizer as recognizer_module
from asr import AsrTimeoutError, RecognitionPriority, RecognitionSlots, SpeechRecognizer, Transcript

LIVE, BATCH = RecognitionPriority.LIVE, RecognitionPriority.BATCH


async def _started(task: asyncio.Task[None]) -> bool:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return task.done()


async def test_a_free_slot_goes_to_the_live_recognition_before_queued_batch_ones() -> None:
    slots = RecognitionSlots(1, 1)
    order: list[str] = []

    async def take(name: str, priority: RecognitionPriority) -> None:
        await slots.acquire(priority)
        order.append(name)

    await take("description-1", BATCH)
    queued = [asyncio.create_task(take(f"description-{i}", BATCH)) for i in (2, 3)]
    await asyncio.sleep(0)
    menu = asyncio.create_task(take("menu", LIVE))  # the caller asks last
    assert not await _started(menu) and slots.waiting == 3
    slots.release(BATCH)  # description-1 done
    assert await _started(menu) and order == ["description-1", "menu"]
    slots.release(LIVE)
    await asyncio.sleep(0)
    slots.release(BATCH)
    await asyncio.gather(*queued)
    assert order == ["description-1", "menu", "description-2", "description-3"]  # batch ones in arrival order


async def test_batch_work_is_capped_so_a_caller_always_finds_a_slot() -> None:
    slots = RecognitionSlots(3, 2)
    await slots.acquire(BATCH)
    await slots.acquire(BATCH)
    third = asyncio.create_task(slots.acquire(BATCH))
    assert not await _started(third)  # a slot is free, but it is kept for callers
    await asyncio.wait_for(slots.acquire(LIVE), 1)
    assert slots.running == {LIVE: 1, BATCH: 2}
    slots.release(LIVE)
    assert not await _started(third)
    slots.release(BATCH)
    assert await _started(third) and slots.running == {LIVE: 0, BATCH: 2}


async def test_a_cancelled_wait_holds_no_slot() -> None:
    slots = RecognitionSlots(1, 1)
    await slots.acquire(BATCH)
    gave_up = asyncio.create_task(slots.acquire(LIVE))
    behind = asyncio.create_task(slots.acquire(BATCH))
    await asyncio.sleep(0)
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    slots.release(BATCH)
    await asyncio.wait_for(behind, 1)
    assert slots.running == {LIVE: 0, BATCH: 1} and slots.waiting == 0


async def test_a_slot_granted_as_the_wait_is_cancelled_is_handed_on() -> None:
    slots = RecognitionSlots(1, 1)
    await slots.acquire(BATCH)
    first = asyncio.create_task(slots.acquire(LIVE))
    second = asyncio.create_task(slots.acquire(LIVE))
    await asyncio.sleep(0)
    slots.release(BATCH)  # grants first...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert slots.running == {LIVE: 1, BATCH: 0}


def test_bad_sizes_are_refused_with_one_line() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecognitionSlots(0, 1)
    with pytest.raises(ValueError, match="batch limit 3 is not from 1 to 2"):
        RecognitionSlots(2, 3)
    slots = RecognitionSlots(1, 1)
    with pytest.raises(RuntimeError, match="not held"):
        slots.release(LIVE)


# -- the same rules in the real SpeechRecognizer, with the Vosk decoding replaced by a blocking fake -----------

class Vocabulary:
    """A model that knows every word."""

    def vosk_model_find_word(self, word: str) -> int:
        return 1


class FakeDecoding:
    """Stands in for Vosk: records which recording each worker thread starts, and holds batch ones on a gate."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def read_audio(self, path: Path | str, channel: int | None = None) -> tuple[bytes, int]:
        return Path(path).stem.encode(), 8000

    def recognize(self, model: Any, pcm: bytes, rate: int, grammar: Any, stop: threading.Event) -> Transcript:
        name = pcm.decode()
        with self._lock:
            self.started.append(name)
        if name.startswith("description"):
            while not self.gate.wait(0.01):
                if stop.is_set():
                    raise RuntimeError("stopped")
        return Transcript(text=name, duration=1.0)


@pytest.fixture
def decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDecoding]:
    fake = FakeDecoding()
    monkeypatch.setattr(recognizer_module, "read_audio", fake.read_audio)
    monkeypatch.setattr(recognizer_module, "recognize_pcm", fake.recognize)
    yield fake
    fake.gate.set()


def _recognizer(tmp_path: Path, threads: int, batch_limit: int) -> SpeechRecognizer:
    (tmp_path / "graph").mkdir(exist_ok=True)
    (tmp_path / "graph" / "HCLr.fst").write_bytes(b"")
    return SpeechRecognizer(Vocabulary(), tmp_path, ThreadPoolExecutor(threads),  # type: ignore[arg-type]
                            slots=RecognitionSlots(threads, batch_limit))


async def test_a_menu_answer_is_recognized_while_description_jobs_hold_the_pool(tmp_path: Path,
                                                                                decoding: FakeDecoding) -> None:
    # As SpeechRecognizer.load(workers=1) builds it: one thread for batch work and one kept for callers.
    recognizer = _recognizer(tmp_path, threads=2, batch_limit=1)
    try:
        jobs = [asyncio.create_task(recognizer.transcribe_file(tmp_path / f"description-{i}.wav"))
                for i in range(3)]
        await asyncio.sleep(0.1)
        menu = await asyncio.wait_for(
            recognizer.transcribe_file(tmp_path / "menu.wav", ["쓰레기"], timeout=2, priority=LIVE), 3)
        assert menu.text == "menu"
        assert decoding.started == ["description-0", "menu"]  # the other descriptions are still queued
        decoding.gate.set()
        assert [t.text for t in await asyncio.gather(*jobs)] == [f"description-{i}" for i in range(3)]
    finally:
        decoding.gate.set()  # a failed check must not leave threads blocked for the aclose
        await recognizer.aclose()


async def test_without_a_reserve_the_menu_answer_is_next_when_a_thread_frees(tmp_path: Path,
                                                                             decoding: FakeDecoding) -> None:
    recognizer = _recognizer(tmp_path, threads=1, batch_limit=1)
    try:
        jobs = [asyncio.create_task(recognizer.transcribe_file(tmp_path / f"description-{i}.wav"))
                for i in range(3)]
        await asyncio.sleep(0.1)
        menu = asyncio.create_task(recognizer.transcribe_file(tmp_path / "menu.wav", ["쓰레기"], timeout=5,
                                                              priority=LIVE))
        await asyncio.sleep(0.1)
        decoding.gate.set()
        await asyncio.gather(menu, *jobs)
        assert decoding.started == ["description-0", "menu", "description-1", "description-2"]
    finally:
        decoding.gate.set()  # a failed check must not leave threads blocked for the aclose
        await recognizer.aclose()


async def test_the_timeout_counts_the_wait_for_a_slot_and_frees_it(tmp_path: Path, decoding: FakeDecoding) -> None:
    recognizer = _recognizer(tmp_path, threads=1, batch_limit=1)
    try:
        job = asyncio.create_task(recognizer.transcribe_file(tmp_path / "description-0.wav"))
        await asyncio.sleep(0.1)
        with pytest.raises(AsrTimeoutError, match="timed out after 0.2 s"):
            await recognizer.transcribe_file(tmp_path / "menu.wav", ["쓰레기"], timeout=0.2, priority=LIVE)
        decoding.gate.set()
        await job
        again = await asyncio.wait_for(recognizer.transcribe_file(tmp_path / "menu.wav", priority=LIVE), 2)
        assert again.text == "menu" and decoding.started == ["description-0", "menu"]
    finally:
        decoding.gate.set()  # a failed check must not leave threads blocked for the aclose
        await recognizer.aclose()
