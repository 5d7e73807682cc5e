"""ASR throughput: seconds of audio recognized per wall-clock second, SpeechRecognizer vs bare Vosk.

Runs the same 8 kHz recordings (espeak-ng Korean speech, or WAV files given on the command line)
through 1, 2 and 4 parallel streams of one SpeechRecognizer, and through a bare single-threaded
Vosk loop as the baseline, both free-form and with a keyword grammar. Also reports the model-load
time and the process RSS after the load and per extra stream. Bounded: about a minute on 2 idle
CPUs; no pass starts after --budget seconds.

    .venv/bin/python benchmarks/asr_throughput.py [WAV ...]
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a plain script: make asr and tests.support importable

import vosk  # noqa: E402

from asr import AsrError, SpeechRecognizer, default_model_path, read_audio  # noqa: E402
from tests.support.speech import synthesize  # noqa: E402

SENTENCES = [
    "안녕하세요 우리 집 앞에 쓰레기가 너무 많이 쌓여 있습니다",
    "버스 정류장 근처 보도블록이 깨져서 위험합니다",
    "하수도에서 냄새가 심하게 나요 빨리 확인해 주세요",
]
KEYWORDS = ["버스", "하수도", "보도블록", "위생"]
STREAM_COUNTS = (1, 2, 4)
CHUNK_FRAMES = 4000  # same feeding as SpeechRecognizer, so the baseline differs only in plumbing


@dataclass(frozen=True)
class Run:
    """One measured pass: how much audio went through in how long, and the peak RSS meanwhile."""

    mode: str
    runner: str
    streams: int
    audio_seconds: float
    wall_seconds: float
    rss_before_mb: float
    peak_rss_mb: float

    @property
    def rss_growth_mb(self) -> float:
        """How far RSS rose above its level at the start of the pass."""
        return self.peak_rss_mb - self.rss_before_mb

    @property
    def throughput(self) -> float:
        """Seconds of audio recognized per wall-clock second (all streams together)."""
        return self.audio_seconds / self.wall_seconds


def release_free_memory() -> None:
    """Hand freed heap back to the OS (glibc malloc_trim), so each pass starts from a true RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS growth figures will just be lower bounds


def rss_mb() -> float:
    """Resident set size of this process in MB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


class RssSampler:
    """Samples RSS every 20 ms while a pass runs, keeping the peak (recognizer memory is transient)."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # our caller was cancelled too: pass it on
                raise
        self.peak = max(self.peak, rss_mb())


async def measure_streams(
    recognizer: SpeechRecognizer,
    files: list[Path],
    audio_seconds: float,
    streams: int,
    grammar: list[str] | None,
) -> Run:
    """`streams` concurrent callers, each transcribing every file in turn (like parallel calls)."""

    async def one_stream() -> None:
        for path in files:
            await recognizer.transcribe_file(path, grammar, timeout=None)

    release_free_memory()
    before = rss_mb()
    async with RssSampler() as sampler:
        started = time.perf_counter()
        await asyncio.gather(*(one_stream() for _ in range(streams)))
        wall = time.perf_counter() - started
    mode = "grammar" if grammar else "free-form"
    return Run(mode, "SpeechRecognizer", streams, audio_seconds * streams, wall, before, sampler.peak)


def measure_bare_vosk(
    model: vosk.Model, files: list[Path], audio_seconds: float, grammar: list[str] | None
) -> Run:
    """The baseline: one thread reading each file with the wave module into a fresh KaldiRecognizer."""
    grammar_json = json.dumps(grammar, ensure_ascii=False) if grammar else None
    release_free_memory()
    before = peak = rss_mb()
    started = time.perf_counter()
    for path in files:
        with wave.open(str(path), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        if grammar_json:
            rec = vosk.KaldiRecognizer(model, rate, grammar_json)
        else:
            rec = vosk.KaldiRecognizer(model, rate)
        rec.SetWords(True)
        step = CHUNK_FRAMES * 2
        for offset in range(0, len(pcm), step):
            rec.AcceptWaveform(pcm[offset : offset + step])
        rec.FinalResult()
        peak = max(peak, rss_mb())
    wall = time.perf_counter() - started
    mode = "grammar" if grammar else "free-form"
    return Run(mode, "bare Vosk, 1 thread", 1, audio_seconds, wall, before, peak)


_LOAD_PROBE = """
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from asr import SpeechRecognizer

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def main():
    before, started = rss_mb(), time.perf_counter()
    recognizer = await SpeechRecognizer.load(workers=1)
    print(json.dumps([time.perf_counter() - started, before, rss_mb()]))
    await recognizer.aclose()

asyncio.run(main())
"""


def measure_load_in_subprocess() -> tuple[float, float, float]:
    """(seconds for SpeechRecognizer.load, RSS MB before it, RSS MB after), in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(REPO)], capture_output=True, text=True, check=True
    )
    seconds, before, after = json.loads(done.stdout)
    return seconds, before, after


def telephone_audio_seconds(files: list[Path]) -> float:
    """Total length of the recordings, which must be 8 kHz mono 16-bit WAV (as Asterisk writes)."""
    total = 0.0
    for path in files:
        read_audio(path)  # one-line AsrError for anything unusable
        with wave.open(str(path), "rb") as wav:
            # The bare baseline feeds files as they are; only this format makes it the same work.
            if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (8000, 1, 2):
                raise AsrError(f"recording {path}: benchmark needs 8 kHz mono 16-bit WAV")
            total += wav.getnframes() / 8000
    return total


def print_table(runs: list[Run]) -> None:
    header = (
        f"{'mode':<10} {'runner':<22} {'streams':>7} {'audio s':>8} {'wall s':>7} {'audio s/wall s':>15}"
        f" {'x baseline':>10} {'peak RSS MB':>11} {'RSS growth MB':>13}"
    )
    print(header)
    print("-" * len(header))
    baselines = {r.mode: r.throughput for r in runs if r.runner.startswith("bare")}
    for r in runs:
        ratio = r.throughput / baselines[r.mode] if r.mode in baselines else float("nan")
        print(
            f"{r.mode:<10} {r.runner:<22} {r.streams:>7} {r.audio_seconds:>8.1f} {r.wall_seconds:>7.2f}"
            f" {r.throughput:>15.2f} {ratio:>10.2f} {r.peak_rss_mb:>11.0f} {r.rss_growth_mb:>13.1f}"
        )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wavs", nargs="*", type=Path, help="recordings to use instead of synthetic speech")
    parser.add_argument(
        "--budget", type=float, default=90.0, help="seconds after which no further pass starts (default 90)"
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget
    skipped: list[str] = []

    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        files = args.wavs or [synthesize(text, Path(tmp) / f"s{i}.wav") for i, text in enumerate(SENTENCES)]
        try:
            audio_seconds = telephone_audio_seconds(files)
        except AsrError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

        # Load figures come from the real entry point, in a fresh process holding nothing else.
        load_seconds, rss_start, rss_loaded = measure_load_in_subprocess()

        # The throughput passes share one bare model between the baseline and a SpeechRecognizer
        # built around it, so both decode with the same warm model and differ only in plumbing.
        vosk.SetLogLevel(-1)
        model_path = default_model_path()
        bare_model = vosk.Model(str(model_path))
        executor = ThreadPoolExecutor(max_workers=max(STREAM_COUNTS), thread_name_prefix="asr")
        recognizer = SpeechRecognizer(bare_model, model_path, executor)
        runs: list[Run] = []
        try:
            for grammar in (KEYWORDS, None):  # the cheap grammar passes first, so a tight budget keeps them
                # One untimed pass each first, so page-faulting the model in is charged to no one.
                measure_bare_vosk(bare_model, files[:1], 0.0, grammar)
                await recognizer.transcribe_file(files[0], grammar, timeout=None)
                runs.append(measure_bare_vosk(bare_model, files, audio_seconds, grammar))
                for streams in STREAM_COUNTS:
                    if time.monotonic() > deadline:
                        skipped.append(f"{'grammar' if grammar else 'free-form'} x{streams}")
                        continue
                    runs.append(await measure_streams(recognizer, files, audio_seconds, streams, grammar))
        finally:
            await recognizer.aclose()

    print(f"ASR throughput: {len(files)} recordings, {audio_seconds:.1f} s of audio per stream pass, "
          f"{os.cpu_count()} CPUs, model {default_model_path()}")
    print(f"model load (SpeechRecognizer.load): {load_seconds:.2f} s")
    print(
        f"RSS: {rss_start:.0f} MB before load, {rss_loaded:.0f} MB after load"
        f" (+{rss_loaded - rss_start:.0f} MB)"
    )
    print()
    print_table(runs)
    print()
    if skipped:
        print(f"skipped (over the {args.budget:g} s budget; machine busy?): {', '.join(skipped)}")
    for mode in ("free-form", "grammar"):
        mine = {r.streams: r for r in runs if r.mode == mode and r.runner == "SpeechRecognizer"}
        if 1 not in mine or max(STREAM_COUNTS) not in mine:
            continue
        most = max(STREAM_COUNTS)
        per_stream = (mine[most].rss_growth_mb - mine[1].rss_growth_mb) / (most - 1)
        print(
            f"RSS per extra stream ({mode}): {per_stream:+.1f} MB"
            f" (RSS growth during the {most}-stream pass vs the 1-stream pass, over {most - 1})"
        )
    print("audio s/wall s above 1.0 means faster than real time. The recognizer runs with "
          f"{max(STREAM_COUNTS)} workers; streams beyond the {os.cpu_count()} CPUs cannot add throughput.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
