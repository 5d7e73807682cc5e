"""Streaming recognition: one KaldiRecognizer fed chunk by chunk, its work run on a thread pool."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor
from typing import Any

import vosk

from .errors import AudioFormatError

MIN_STREAM_RATE, MAX_STREAM_RATE = 8000, 48000


class RecognitionStream:
    """One live recognition (e.g. a caller speaking): accept() PCM chunks, then finish() for the last words.

    Results are Vosk's own JSON documents (``{"partial": ...}``, ``{"text": ..., "result": [...]}``),
    so they can be passed on unchanged to clients of alphacep's vosk-server protocol. Calls must not
    overlap (a KaldiRecognizer is not thread-safe); each one runs on the executor, never the loop.
    """

    def __init__(self, kaldi: vosk.KaldiRecognizer, sample_rate: int, executor: Executor) -> None:
        self._kaldi = kaldi
        self._executor = executor
        self.sample_rate = sample_rate
        self.audio_seconds = 0.0
        self._pending: asyncio.Future[str] | None = None

    async def accept(self, pcm: bytes) -> dict[str, Any]:
        """Feed mono signed 16-bit little-endian PCM; a final result when an utterance ended, else a partial."""
        if len(pcm) % 2:
            raise AudioFormatError(f"audio chunk of {len(pcm)} bytes is not a whole number of 16-bit samples")
        self.audio_seconds += len(pcm) / (2 * self.sample_rate)
        return json.loads(await self._call(self._accept_blocking, bytes(pcm)))

    async def finish(self) -> dict[str, Any]:
        """The final result of what is left (the stream may go on afterwards, as after a reset)."""
        return json.loads(await self._call(self._kaldi.FinalResult))

    def _accept_blocking(self, pcm: bytes) -> str:
        if self._kaldi.AcceptWaveform(pcm):
            return self._kaldi.Result()
        return self._kaldi.PartialResult()

    async def _call(self, func: Any, *args: Any) -> str:
        if self._pending is not None and not self._pending.done():
            # A cancelled caller left a chunk decoding in a thread: the recognizer is not thread-safe,
            # so the next call waits for it rather than running beside it.
            await asyncio.wait({self._pending})
        future = asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        self._pending = future
        return await asyncio.shield(future)


def check_stream_rate(sample_rate: Any) -> int:
    """The sample rate as an int, or AudioFormatError (one line) if it is not one Vosk can take."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise AudioFormatError(f"sample rate {sample_rate!r} is not a number")
    if sample_rate != int(sample_rate) or not MIN_STREAM_RATE <= sample_rate <= MAX_STREAM_RATE:
        raise AudioFormatError(
            f"sample rate {sample_rate!r} is not an integer from {MIN_STREAM_RATE} to {MAX_STREAM_RATE} Hz"
        )
    return int(sample_rate)
