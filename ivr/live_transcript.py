"""Live transcription during the call: an EAGI script streams the caller's audio (fd 3) to the ASR websocket.

Run by Asterisk as ``EAGI(<venv>/bin/python,-m,ivr.live_transcript,--linkedid,...)`` (Asterisk 16 passes the
comma-separated arguments after the script as argv). Asterisk hands the caller's audio on file descriptor 3
as 8 kHz signed 16-bit linear; this script sends it in 0.1 s chunks to the vosk-server protocol websocket,
mirrors partial and final words into the call's live state (fields ``transcript_partial`` / ``transcript``,
published on the events channel), writes the audio to a WAV (the case keeps the recording), and ends when the
caller stops talking: a final result followed by ``silence_seconds`` of audio without new words, or
``max_seconds`` of audio, or the caller hanging up (fd 3 closes).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import stat
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import websockets

SAMPLE_RATE = 8000
CHUNK_BYTES = 1600 * 2  # 0.1 s of 16-bit samples at 8 kHz
EAGI_AUDIO_FD = 3
# Where the script finds the Redis URL (it may hold a password, so it is not an argument): in the environment it
# inherits from Asterisk, which the hotline starts with it.
REDIS_URL_ENV = "HOTLINE_REDIS_URL"
# The ASR websocket's bearer token comes the same way (asr.ASR_TOKEN_ENV; this program runs without the asr package).
ASR_TOKEN_ENV = "HOTLINE_ASR_WS_TOKEN"

log = logging.getLogger(__name__)


class LiveFields(Protocol):
    """Where the words go: the call's live state (queueing's LiveCallState in the hotline)."""

    async def update(self, linkedid: str, *, transcript: str | None = ..., transcript_partial: str | None = ...,
                     transcript_live_stopped_by: str | None = ...) -> None:
        """Set these fields on a live call and publish the change."""


@dataclass
class LiveTranscript:
    """What one live transcription heard: the final text, and why it stopped."""

    text: str = ""
    audio_seconds: float = 0.0
    stopped_by: str = "eof"  # "silence", "max_length", "eof" (hang-up) or "error"
    partials_published: int = 0
    error: str | None = None
    finals: list[str] = field(default_factory=list)


async def read_audio_fd(fd: int, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Chunks of raw audio read from a file descriptor (EAGI's fd 3) until it closes."""
    loop = asyncio.get_running_loop()
    if stat.S_ISREG(os.fstat(fd).st_mode):  # a file (a test, a replay): no pipe transport, read it in a thread
        while chunk := await loop.run_in_executor(None, os.read, fd, chunk_bytes):
            yield chunk[: len(chunk) - len(chunk) % 2]
        return
    reader = asyncio.StreamReader(limit=chunk_bytes * 4)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0, closefd=False))
    try:
        while True:
            try:
                chunk = await reader.readexactly(chunk_bytes)
            except asyncio.IncompleteReadError as short:
                if short.partial:
                    yield short.partial[: len(short.partial) - len(short.partial) % 2]
                return
            yield chunk
    finally:
        transport.close()


class LiveTranscriber:
    """Streams one caller's audio to the ASR websocket, mirroring words into live state and audio into a WAV."""

    def __init__(self, *, ws_url: str, live: LiveFields, linkedid: str, wav_path: Path, max_seconds: float = 60.0,
                 silence_seconds: float = 1.5, no_speech_seconds: float = 10.0,
                 phrase_list: list[str] | None = None, timeout: float = 10.0, token: str | None = None) -> None:
        self._url = ws_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._live = live
        self._linkedid = linkedid
        self._wav_path = wav_path
        self._max = max_seconds
        self._silence = silence_seconds
        self._no_speech = no_speech_seconds
        self._phrases = phrase_list
        self._timeout = timeout

    async def run(self, audio: AsyncIterator[bytes]) -> LiveTranscript:
        """Stream until the caller stops talking; the WAV keeps every byte read even if the websocket fails."""
        result = LiveTranscript()
        # Audio seconds end the stream normally; this wall-clock bound covers a channel that stops sending frames.
        audio = _until(audio, asyncio.get_running_loop().time() + self._max + self._no_speech, result)
        self._wav_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A citizen's voice: readable by the hotline's user only, whatever umask Asterisk started this with.
        fd = os.open(self._wav_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        raw = os.fdopen(fd, "wb")
        wav = wave.open(raw, "wb")  # noqa: SIM115 - closed in finally, written chunk by chunk
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        try:
            await self._stream(audio, wav, result)
        except (OSError, TimeoutError, websockets.WebSocketException, ValueError) as exc:
            result.stopped_by, result.error = "error", f"{type(exc).__name__}: {exc}"
            log.warning("live transcript %s: ASR websocket failed: %s", self._linkedid, result.error)
            # Keep recording to the caller's end so the file transcription fallback has the whole description.
            async for chunk in audio:
                wav.writeframes(chunk)
                result.audio_seconds += len(chunk) / (2 * SAMPLE_RATE)
                if result.audio_seconds >= self._max:
                    break
        finally:
            wav.close()
            raw.close()  # wave closes only the files it opened itself
        result.text = " ".join(result.finals).strip()
        await self._live.update(self._linkedid, transcript_partial=result.text, transcript=result.text,
                                transcript_live_stopped_by=result.stopped_by)
        return result

    async def _stream(self, audio: AsyncIterator[bytes], wav: wave.Wave_write, result: LiveTranscript) -> None:
        config: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "words": 1}
        if self._phrases:
            config["phrase_list"] = self._phrases
        async with websockets.connect(self._url, open_timeout=self._timeout, close_timeout=2,
                                      additional_headers=self._headers) as ws:
            await asyncio.wait_for(ws.send(json.dumps({"config": config})), self._timeout)
            last_partial = ""
            words_until = None  # audio time of the last final result (None: no words yet)
            heard_at = 0.0  # audio time new words were last heard (partial grew or a final came)
            async for chunk in audio:
                wav.writeframes(chunk)
                result.audio_seconds += len(chunk) / (2 * SAMPLE_RATE)
                await asyncio.wait_for(ws.send(chunk), self._timeout)
                answer = _answer(await asyncio.wait_for(ws.recv(), self._timeout))
                if answer.get("text"):
                    result.finals.append(answer["text"])
                    words_until = heard_at = result.audio_seconds
                    last_partial = ""
                    await self._publish(result, "")
                elif answer.get("partial") and answer["partial"] != last_partial:
                    last_partial = answer["partial"]
                    heard_at = result.audio_seconds
                    await self._publish(result, last_partial)
                if self._should_stop(result, words_until, heard_at, last_partial):
                    break
            await asyncio.wait_for(ws.send('{"eof": 1}'), self._timeout)
            answer = _answer(await asyncio.wait_for(ws.recv(), self._timeout))
            if answer.get("text"):
                result.finals.append(answer["text"])

    def _should_stop(self, result: LiveTranscript, words_until: float | None, heard_at: float,
                     partial: str) -> bool:
        now = result.audio_seconds
        if now >= self._max:
            result.stopped_by = "max_length"
        elif words_until is not None and not partial and now - max(words_until, heard_at) >= self._silence:
            result.stopped_by = "silence"
        elif words_until is None and not partial and now >= self._no_speech:
            result.stopped_by = "silence"  # nobody spoke at all
        else:
            return False
        return True

    async def _publish(self, result: LiveTranscript, partial: str) -> None:
        said = " ".join([*result.finals, partial]).strip()
        result.partials_published += 1
        if partial:
            await self._live.update(self._linkedid, transcript_partial=said)
        else:
            await self._live.update(self._linkedid, transcript_partial=said, transcript=" ".join(result.finals).strip())


async def _until(audio: AsyncIterator[bytes], deadline: float, result: LiveTranscript) -> AsyncIterator[bytes]:
    """The audio chunks until the wall-clock deadline (then stopped_by is "max_length")."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(audio), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return
        except TimeoutError:
            result.stopped_by = "max_length"
            return
        yield chunk


def _answer(raw: str | bytes) -> dict[str, Any]:
    answer = json.loads(raw)
    if not isinstance(answer, dict):
        # ValueError, not TypeError: a protocol error, handled with the other ValueErrors
        raise ValueError(f"ASR websocket answered {str(raw)[:60]!r}, not a JSON object")  # noqa: TRY004
    if "error" in answer:
        raise ValueError(f"ASR websocket refused the stream: {answer['error']}")
    return answer


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The EAGI script's arguments (passed by the dialplan / the IVR's EXEC EAGI)."""
    p = argparse.ArgumentParser(prog="python -m ivr.live_transcript", description=__doc__.splitlines()[0])
    p.add_argument("--linkedid", required=True)
    p.add_argument("--wav", required=True, type=Path, help="where the caller's audio is kept")
    p.add_argument("--ws-url", required=True, help="ws://host:port of the ASR websocket")
    p.add_argument("--redis-url", default=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
                   help=f"default: ${REDIS_URL_ENV} (an argument would show a password in `ps`)")
    p.add_argument("--redis-prefix", default="hotline")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--silence-seconds", type=float, default=1.5)
    p.add_argument("--no-speech-seconds", type=float, default=10.0)
    p.add_argument("--phrase", action="append", dest="phrases", help="limit recognition to these words")
    p.add_argument("--audio-fd", type=int, default=EAGI_AUDIO_FD)
    p.add_argument("--no-agi", action="store_true", help="do not read the AGI environment from stdin (tests)")
    return p.parse_args(argv)


async def run_eagi(args: argparse.Namespace) -> LiveTranscript:
    """Stream fd 3 for one call and write the results into its live state."""
    from lifecycle import TaskOwner
    from queueing import LiveCallState
    from queueing.live_state import connect_redis

    live = LiveCallState(connect_redis(args.redis_url), prefix=args.redis_prefix)
    # Partial results are written in the background: a stalled Redis must not hold up reading the call's audio.
    writer = TaskOwner("live transcript state")
    live.start(writer)
    try:
        transcriber = LiveTranscriber(ws_url=args.ws_url, live=live, linkedid=args.linkedid, wav_path=args.wav,
                                      max_seconds=args.max_seconds, silence_seconds=args.silence_seconds,
                                      no_speech_seconds=args.no_speech_seconds, phrase_list=args.phrases,
                                      token=os.environ.get(ASR_TOKEN_ENV) or None)
        return await transcriber.run(read_audio_fd(args.audio_fd))
    finally:
        await writer.aclose()
        await live.aclose()  # the last results are sent before the IVR reads them


def main(argv: list[str] | None = None) -> int:
    """EAGI entry point: read the AGI environment, stream fd 3, report on stderr (Asterisk's log)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="live_transcript: %(message)s")
    agi = None
    if not args.no_agi:
        from asterisk.agi import AGI

        agi = AGI()  # pyst2: reads the AGI environment Asterisk writes on stdin
    result = asyncio.run(run_eagi(args))
    log.info("call %s: %.1f s streamed, stopped by %s, %d updates: %r", args.linkedid, result.audio_seconds,
             result.stopped_by, result.partials_published, result.text)
    if agi is not None:
        from asterisk.agi import AGIException

        try:
            agi.set_variable("HOTLINE_LIVE_STOPPED", result.stopped_by)
        except AGIException as exc:  # the caller hung up: the results are in live state already
            log.info("call %s: could not set HOTLINE_LIVE_STOPPED: %s", args.linkedid, exc)
    return 0  # always 0: a non-zero exit would make Asterisk hang the caller up


if __name__ == "__main__":
    sys.exit(main())
