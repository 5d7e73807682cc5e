"""ASR latency: end of the caller's speech → final transcript, through the vosk-server websocket.

10-second descriptions (espeak-ng Korean, 8 kHz) are streamed at real time in 0.1 s chunks, as the
EAGI step or a phone bridge would, by 1 and 2 parallel callers; the clock runs from the last audio
chunk (speech over) to the final result of {"eof": 1}. Baseline: the same audio through a bare
KaldiRecognizer in this thread, timing its FinalResult after the same real-time feeding (no network,
no pool). Prints p50/p99 in milliseconds.

    .venv/bin/python benchmarks/asr_latency.py [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vosk  # noqa: E402
import websockets  # noqa: E402

from asr import SpeechRecognizer, VoskWebsocketServer, read_audio  # noqa: E402
from tests.support.speech import synthesize  # noqa: E402

PORT = 35095
CHUNK_BYTES = 1600 * 2
TEXT = "안녕하세요 우리 집 앞 하수도가 막혀서 물이 넘치고 냄새가 심하게 납니다 빨리 와서 확인해 주세요"


def description_pcm(tmp: Path) -> tuple[bytes, int]:
    """About 10 s of speech at 8 kHz."""
    return read_audio(synthesize(TEXT, tmp / "description.wav", speed=110, pad_seconds=0.5))


async def one_caller(pcm: bytes, rate: int) -> float:
    async with websockets.connect(f"ws://127.0.0.1:{PORT}/", open_timeout=10) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate}}))
        step = CHUNK_BYTES / (2 * rate)
        start = time.perf_counter()
        for n, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
            await ws.send(pcm[offset:offset + CHUNK_BYTES])
            await ws.recv()
            delay = start + (n + 1) * step - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # real time: a caller cannot speak faster
        speech_over = time.perf_counter()
        await ws.send('{"eof": 1}')
        json.loads(await ws.recv())
        return time.perf_counter() - speech_over


def bare_latency(model: vosk.Model, pcm: bytes, rate: int) -> float:
    rec = vosk.KaldiRecognizer(model, rate)
    rec.SetWords(True)
    step = CHUNK_BYTES / (2 * rate)
    start = time.perf_counter()
    for n, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
        rec.AcceptWaveform(pcm[offset:offset + CHUNK_BYTES])
        delay = start + (n + 1) * step - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    speech_over = time.perf_counter()
    rec.FinalResult()
    return time.perf_counter() - speech_over


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcm, rate = description_pcm(Path(tmp))
    recognizer = await SpeechRecognizer.load()
    server = VoskWebsocketServer(recognizer)
    await server.start("127.0.0.1", PORT)
    rows = []
    try:
        bare = [await asyncio.get_running_loop().run_in_executor(None, bare_latency, recognizer._model, pcm, rate)
                for _ in range(args.rounds)]  # noqa: SLF001 - the same loaded model, for a fair baseline
        rows.append(("bare Vosk, 1 stream", bare))
        for streams in (1, 2):
            lat: list[float] = []
            for _ in range(args.rounds):
                lat += await asyncio.gather(*(one_caller(pcm, rate) for _ in range(streams)))
            rows.append((f"websocket service, {streams} stream(s)", lat))
    finally:
        await server.close()
        await recognizer.aclose()
    print(f"\nend of speech → final transcript, {len(pcm) / (2 * rate):.1f} s descriptions at {rate} Hz")
    print(f"{'runner':<34} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, lat in rows:
        mean_ms = statistics.mean(lat) * 1000
        print(f"{name:<34} {len(lat):>3} {pct(lat, 0.5):>8.0f} {pct(lat, 0.99):>8.0f} {mean_ms:>8.0f}")


if __name__ == "__main__":
    asyncio.run(main())
