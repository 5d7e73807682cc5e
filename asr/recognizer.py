"""SpeechRecognizer: one loaded Vosk model shared by recognitions running on a thread pool."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import vosk

from .audio import SAMPLE_WIDTH, DecodedAudio, check_duration, decode_wav, read_audio, resample_for_recognizer
from .errors import AsrError, AsrTimeoutError, AudioFormatError
from .model import default_model_path, load_vosk_model
from .scheduling import RecognitionPriority, RecognitionSlots
from .streaming import RecognitionStream, check_stream_rate
from .transcript import Transcript, WordTiming

CHUNK_FRAMES = 4000  # ~0.25-0.5 s per AcceptWaveform call: keeps the stop flag responsive
DEFAULT_TIMEOUT = 120.0
_MIN_PCM_RATE, _MAX_PCM_RATE = 8000, 48000
LIVE_RESERVED_SLOTS = 1  # threads beyond `workers` that only live (caller-waiting) recognitions may use

_T = TypeVar("_T")


class _RecognitionStopped(Exception):
    """Raised inside a worker thread whose caller timed out or was cancelled."""


@dataclass(frozen=True)
class KeywordGrammar:
    """The phrases a grammar-restricted recognition may return, checked against the model vocabulary."""

    phrases: tuple[str, ...]
    with_unk: bool  # only models whose vocabulary has "[unk]" can map out-of-grammar speech to it

    def vosk_json(self) -> str:
        """The grammar as the JSON list KaldiRecognizer takes."""
        phrases = list(self.phrases) + (["[unk]"] if self.with_unk else [])
        # ensure_ascii=False: Vosk's JSON reader keeps \uXXXX escapes literally, so escaped Hangul
        # would match no vocabulary word and Vosk would drop every keyword without an error.
        return json.dumps(phrases, ensure_ascii=False)

    def pick(self, words: Sequence[WordTiming]) -> tuple[str, tuple[WordTiming, ...]]:
        """The single phrase the decoded words support best, with its words ("" when none)."""
        # Vosk's grammar is a loop over the phrases, so a noisy utterance can come back as several
        # phrases ("버스 하수도") or one repeated; callers want exactly one keyword. Each phrase scores
        # the confidence-weighted time its words cover, i.e. how much of the speech it explains.
        tokens = [phrase.split() for phrase in self.phrases]
        scores: dict[str, float] = {}
        found: dict[str, list[WordTiming]] = {}
        index = 0
        while index < len(words):
            best = None
            for phrase, parts in zip(self.phrases, tokens, strict=True):
                span = words[index : index + len(parts)]
                if [w.word for w in span] == parts and (best is None or len(parts) > len(best[1])):
                    best = (phrase, span)
            if best is None:
                index += 1  # "[unk]" or anything else that is no phrase
                continue
            phrase, span = best
            scores[phrase] = scores.get(phrase, 0.0) + sum(w.conf * (w.end - w.start) for w in span)
            found.setdefault(phrase, []).extend(span)
            index += len(span)
        if not scores:
            return "", ()
        winner = max(scores, key=lambda phrase: scores[phrase])  # ties: the phrase heard first
        return winner, tuple(found[winner])


def recognize_pcm(
    model: vosk.Model,
    pcm: bytes,
    sample_rate: int,
    grammar: KeywordGrammar | None,
    stop: threading.Event,
) -> Transcript:
    """Decode mono 16-bit PCM with a fresh KaldiRecognizer (blocking: run it in a worker thread)."""
    if grammar is None:
        recognizer = vosk.KaldiRecognizer(model, sample_rate)
    else:
        recognizer = vosk.KaldiRecognizer(model, sample_rate, grammar.vosk_json())
    recognizer.SetWords(True)
    words: list[WordTiming] = []
    step = CHUNK_FRAMES * SAMPLE_WIDTH
    for offset in range(0, len(pcm), step):
        if stop.is_set():
            raise _RecognitionStopped()
        if recognizer.AcceptWaveform(pcm[offset : offset + step]):
            # An endpoint closed an utterance; its words are gone from FinalResult, so keep them.
            words.extend(_parse_words(recognizer.Result()))
    words.extend(_parse_words(recognizer.FinalResult()))
    if grammar is None:
        text, chosen = " ".join(w.word for w in words), tuple(words)
    else:
        text, chosen = grammar.pick(words)
    confidence = sum(w.conf for w in chosen) / len(chosen) if chosen else 0.0
    duration = len(pcm) / (SAMPLE_WIDTH * sample_rate)
    return Transcript(text=text, words=chosen, confidence=confidence, duration=duration)


def _parse_words(result_json: str) -> list[WordTiming]:
    """Word timings from one Vosk result document (SetWords(True) output)."""
    result = json.loads(result_json)
    return [
        WordTiming(
            word=item["word"],
            start=float(item["start"]),
            end=float(item["end"]),
            conf=float(item.get("conf", 1.0)),
        )
        for item in result.get("result", ())
    ]


def _worker_count(workers: int | None) -> int:
    """The thread-pool size: the CPU count when None, else a positive int."""
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer (got {workers!r})")
    return workers


def _pool(workers: int | None, batch_limit: int | None) -> tuple[ThreadPoolExecutor, RecognitionSlots]:
    """Threads for `workers` batch recognitions plus the live reserve, and the slots admitting them."""
    batch = _worker_count(workers)
    if batch_limit is not None:
        batch = min(batch, _worker_count(batch_limit))
    threads = _worker_count(workers) + LIVE_RESERVED_SLOTS
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asr")
    return executor, RecognitionSlots(threads, batch)


class SpeechRecognizer:
    """Owns one loaded Vosk model and a thread pool; many recognitions in parallel.

    Recognitions of files and PCM are admitted by priority (RecognitionSlots): a LIVE one (a caller waits on a
    speech menu) goes ahead of every queued BATCH one (descriptions, whole calls), and BATCH ones never take the
    threads kept for LIVE. Streams (open_stream) have their own threads."""

    def __init__(self, model: vosk.Model, model_path: Path, executor: ThreadPoolExecutor, *,
                 slots: RecognitionSlots | None = None) -> None:
        """Wrap an already loaded model; load()/load_sync() are the usual way (this stats model files).

        slots: admission to executor's threads (default: as many as it has, with no reserve for LIVE)."""
        self._model = model
        self._model_path = model_path
        self._executor = executor
        if slots is None:
            size = max(1, int(getattr(executor, "_max_workers", 1)))  # ThreadPoolExecutor keeps no public size
            slots = RecognitionSlots(size, size)
        self._slots = slots
        # Live streams get their own threads: a chunk of a caller speaking must never queue behind a
        # whole-call transcription holding every batch worker; the OS shares the cores between them.
        self._live_executor = ThreadPoolExecutor(max_workers=_worker_count(None), thread_name_prefix="asr-live")
        self._closed = False
        self._knows_unk = model.vosk_model_find_word("[unk]") != -1
        # Vosk only applies runtime grammars to lookahead models (HCLr.fst + Gr.fst); a model with
        # a static HCLG.fst silently ignores them, which would make every keyword answer empty.
        graph = model_path / "graph"
        self._supports_grammar = not (graph / "HCLG.fst").exists() and (graph / "HCLr.fst").exists()

    @classmethod
    async def load(cls, model_path: Path | None = None, workers: int | None = None,
                   batch_limit: int | None = None) -> SpeechRecognizer:
        """Check and load the model (default: the packaged Korean one) in a worker thread.

        workers: recognitions of recordings at once (default: the CPU count), at most batch_limit of them BATCH;
        one more thread is kept for LIVE recognitions."""
        path = Path(model_path) if model_path is not None else default_model_path()
        executor, slots = _pool(workers, batch_limit)
        loaded = False
        try:
            # The constructor stats model files, so it runs in the pool too, next to the model load.
            recognizer = await asyncio.get_running_loop().run_in_executor(
                executor, lambda: cls(load_vosk_model(path), path, executor, slots=slots)
            )
            loaded = True
        finally:
            if not loaded:
                executor.shutdown(wait=False)
        return recognizer

    @classmethod
    def load_sync(cls, model_path: Path | None = None, workers: int = 1) -> SpeechRecognizer:
        """Check and load the model in the calling thread (for the CLI and scripts)."""
        path = Path(model_path) if model_path is not None else default_model_path()
        executor, slots = _pool(workers, None)
        loaded = False
        try:
            recognizer = cls(load_vosk_model(path), path, executor, slots=slots)
            loaded = True
        finally:
            if not loaded:
                executor.shutdown(wait=False)
        return recognizer

    @property
    def model_path(self) -> Path:
        """Directory of the loaded Vosk model."""
        return self._model_path

    def check_grammar(self, grammar: Sequence[str]) -> None:
        """Raise AsrError (one line) if grammar cannot be used with this model, e.g. at start-up."""
        self._compile_grammar(grammar)

    async def transcribe_file(
        self, path: Path, grammar: list[str] | None = None, timeout: float | None = DEFAULT_TIMEOUT, *,
        priority: RecognitionPriority = RecognitionPriority.BATCH,
    ) -> Transcript:
        """Transcribe a WAV file; with a grammar the text is one of its phrases or "".

        priority LIVE: a caller waits on it, so it goes ahead of queued BATCH work (timeout includes the wait)."""
        path = Path(path)
        compiled = self._compile_grammar(grammar)
        return await self._run(
            f"transcription of {path}", timeout, priority, self._transcribe_file_blocking, path, compiled
        )

    def transcribe_file_sync(self, path: Path, grammar: list[str] | None = None) -> Transcript:
        """Transcribe a WAV file in the calling thread."""
        path = Path(path)
        compiled = self._compile_grammar(grammar)
        return self._transcribe_file_blocking(path, compiled, threading.Event())

    async def transcribe_pcm(
        self,
        pcm: bytes,
        sample_rate: int,
        grammar: list[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        priority: RecognitionPriority = RecognitionPriority.BATCH,
    ) -> Transcript:
        """Transcribe raw mono signed 16-bit little-endian PCM (e.g. audio captured from a call)."""
        label = "PCM audio"
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise AudioFormatError(f"{label}: expected bytes, got {type(pcm).__name__}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not (
            _MIN_PCM_RATE <= sample_rate <= _MAX_PCM_RATE
        ):
            raise AudioFormatError(
                f"{label}: sample rate {sample_rate!r} is not an integer"
                f" from {_MIN_PCM_RATE} to {_MAX_PCM_RATE} Hz"
            )
        pcm = bytes(pcm)
        if len(pcm) % SAMPLE_WIDTH:
            raise AudioFormatError(f"{label}: {len(pcm)} bytes is not a whole number of 16-bit samples")
        check_duration(label, len(pcm) // SAMPLE_WIDTH, sample_rate)
        compiled = self._compile_grammar(grammar)
        return await self._run(
            "transcription of PCM audio", timeout, priority, self._transcribe_pcm_blocking, pcm, sample_rate,
            compiled
        )

    async def transcribe_stereo(
        self,
        path: Path,
        labels: Sequence[str] = ("citizen", "agent"),
        grammar: list[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[Transcript]:
        """Transcribe each channel of a multi-channel recording separately, labelled in channel order."""
        path = Path(path)
        labels = tuple(labels)
        if not labels:
            raise ValueError("labels must name at least one channel")
        compiled = self._compile_grammar(grammar)
        audio = await self._run(f"reading {path}", timeout, RecognitionPriority.BATCH, _decode_blocking, path)
        if audio.channels != len(labels):
            plural = "channel" if audio.channels == 1 else "channels"
            raise AudioFormatError(
                f"recording {path}: has {audio.channels} {plural},"
                f" expected {len(labels)} ({', '.join(labels)})"
            )
        return list(
            await asyncio.gather(
                *(
                    self._run(
                        f"transcription of {path} channel {index} ({label})",
                        timeout,
                        RecognitionPriority.BATCH,
                        self._transcribe_channel_blocking,
                        audio,
                        index,
                        label,
                        compiled,
                    )
                    for index, label in enumerate(labels)
                )
            )
        )

    async def open_stream(
        self, sample_rate: int, grammar: Sequence[str] | None = None, *, words: bool = True,
        partial_words: bool = False, max_alternatives: int = 0,
    ) -> RecognitionStream:
        """A streaming recognition of mono 16-bit PCM at sample_rate (grammar: only these phrases, plus [unk])."""
        if self._closed:
            raise AsrError("streaming recognition: the speech recognizer is closed")
        rate = check_stream_rate(sample_rate)
        phrases = list(grammar) if grammar is not None else None
        if isinstance(max_alternatives, bool) or not isinstance(max_alternatives, int) or not (
            0 <= max_alternatives <= 10
        ):
            raise AsrError(f"max_alternatives {max_alternatives!r} is not an integer from 0 to 10")

        def create() -> vosk.KaldiRecognizer:
            # Checking and compiling a grammar is the model's CPU work: off the event loop too.
            compiled = self._compile_grammar(phrases)
            if compiled is None:
                kaldi = vosk.KaldiRecognizer(self._model, rate)
            else:
                kaldi = vosk.KaldiRecognizer(self._model, rate, compiled.vosk_json())
            kaldi.SetWords(bool(words))
            kaldi.SetPartialWords(bool(partial_words))
            if max_alternatives:
                kaldi.SetMaxAlternatives(max_alternatives)
            return kaldi

        kaldi = await asyncio.get_running_loop().run_in_executor(self._live_executor, create)
        return RecognitionStream(kaldi, rate, self._live_executor)

    async def aclose(self) -> None:
        """Stop accepting work and wait for running recognitions to finish."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        await asyncio.get_running_loop().run_in_executor(None, self._live_executor.shutdown, True)

    def close(self) -> None:
        """Synchronous aclose() for the CLI and scripts."""
        self._closed = True
        self._executor.shutdown(wait=True)
        self._live_executor.shutdown(wait=True)

    async def __aenter__(self) -> SpeechRecognizer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _compile_grammar(self, grammar: Sequence[str] | None) -> KeywordGrammar | None:
        """Normalise and check a grammar; None or [] means free-form transcription."""
        if grammar is None:
            return None
        if isinstance(grammar, str):
            raise AsrError(f"grammar must be a list of words or phrases, not the single string {grammar!r}")
        unique: dict[str, None] = {}  # first-seen order, one look-up per phrase (a list here was quadratic)
        for entry in grammar:
            if not isinstance(entry, str):
                raise AsrError(f"grammar entries must be strings, got {entry!r}")
            phrase = " ".join(entry.split())
            if not phrase:
                raise AsrError("grammar contains an empty entry")
            unique[phrase] = None
        phrases = list(unique)
        if not phrases:
            return None
        if not self._supports_grammar:
            raise AsrError(
                f"Vosk model at {self._model_path}: has a static graph (graph/HCLG.fst),"
                " so it cannot take a grammar"
            )
        missing = [w for p in phrases for w in p.split() if self._model.vosk_model_find_word(w) == -1]
        if missing:
            listed = ", ".join(repr(w) for w in dict.fromkeys(missing))
            noun = "word" if len(set(missing)) == 1 else "words"
            raise AsrError(
                f"grammar {noun} not in the vocabulary of the Vosk model at {self._model_path}: {listed}"
            )
        return KeywordGrammar(phrases=tuple(phrases), with_unk=self._knows_unk)

    async def _run(self, what: str, timeout: float | None, priority: RecognitionPriority,
                   func: Callable[..., _T], *args: object) -> _T:
        """Run func(*args, stop_event) on the pool once a slot of this priority is free, bounded by timeout
        (which includes the wait for the slot)."""
        if self._closed:
            raise AsrError(f"{what}: the speech recognizer is closed")
        stop = threading.Event()
        loop = asyncio.get_running_loop()

        async def admitted() -> _T:
            await self._slots.acquire(priority)
            try:
                running = self._executor.submit(functools.partial(func, *args, stop))
            except RuntimeError:  # the pool was shut down (aclose raced this call)
                self._slots.release(priority)
                raise AsrError(f"{what}: the speech recognizer is closed") from None
            # The slot is free when the thread is, not when the caller stops waiting: a stopped recognition
            # still runs to its next chunk, and the thread pool must not be overbooked meanwhile.
            running.add_done_callback(lambda _done: _call_soon(loop, self._slots.release, priority))
            return await asyncio.wrap_future(running)

        try:
            return await asyncio.wait_for(admitted(), timeout)
        except TimeoutError:
            raise AsrTimeoutError(f"{what}: timed out after {timeout:g} s") from None
        finally:
            # A running thread cannot be killed: on timeout or cancellation this makes it give up
            # at its next chunk, so abandoned work does not keep a worker busy.
            stop.set()

    def _transcribe_file_blocking(
        self, path: Path, grammar: KeywordGrammar | None, stop: threading.Event
    ) -> Transcript:
        pcm, rate = read_audio(path)
        return recognize_pcm(self._model, pcm, rate, grammar, stop)

    def _transcribe_pcm_blocking(
        self, pcm: bytes, sample_rate: int, grammar: KeywordGrammar | None, stop: threading.Event
    ) -> Transcript:
        pcm, rate = resample_for_recognizer(pcm, sample_rate)
        return recognize_pcm(self._model, pcm, rate, grammar, stop)

    def _transcribe_channel_blocking(
        self,
        audio: DecodedAudio,
        index: int,
        label: str,
        grammar: KeywordGrammar | None,
        stop: threading.Event,
    ) -> Transcript:
        pcm, rate = audio.mono(index)
        return replace(recognize_pcm(self._model, pcm, rate, grammar, stop), channel=label)


def _call_soon(loop: asyncio.AbstractEventLoop, func: Callable[..., object], *args: object) -> None:
    """Schedule func on loop from a worker thread (a loop already closed has nobody left to tell)."""
    try:
        loop.call_soon_threadsafe(func, *args)
    except RuntimeError:
        pass


def _decode_blocking(path: Path, stop: threading.Event) -> DecodedAudio:
    """decode_wav with the stop-flag signature _run passes (reading is too short to interrupt)."""
    return decode_wav(path)
