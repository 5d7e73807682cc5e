"""A websocket speech-recognition endpoint speaking the protocol of alphacep's vosk-server.

Protocol (as vosk-server's ``asr_server.py``): the client may first send a text message
``{"config": {"sample_rate": 8000, "words": 1, "phrase_list": [...], "max_alternatives": 0}}``, then
binary chunks of mono signed 16-bit little-endian PCM; after every chunk the server answers with one
JSON text message, a final result (``{"text": ..., "result": [...]}``) when an utterance ended, else a
partial (``{"partial": ...}``). ``{"reset": 1}`` answers the final result and goes on; ``{"eof": 1}``
answers the final result and closes. Differences, all on purpose: the model is the one this process
loaded (a config naming a ``model`` is refused, so a client can never change it), a config after audio
is refused, and anything malformed gets ``{"error": "<one line>"}`` and the connection is closed.

Only clients that present the server's token get in: ``Authorization: Bearer <token>`` on the upgrade request
(the hotline's own live transcriber reads it from the environment Asterisk gives it). The config message is
checked (size, number and length of phrases) before any work, and the grammar is checked off the event loop.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from .errors import AsrError
from .recognizer import SpeechRecognizer
from .streaming import RecognitionStream, check_stream_rate

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 8000
_CONFIG_KEYS = {"sample_rate", "words", "phrase_list", "max_alternatives", "partial_words", "model", "grammar"}
CLOSE_PROTOCOL_ERROR = 1008  # policy violation: the client broke the protocol
# Where clients of the hotline (the live-transcription EAGI program) find the token: the environment, never argv.
ASR_TOKEN_ENV = "HOTLINE_ASR_WS_TOKEN"
# A phrase list is a menu's keywords or a complaint grammar: tens of entries, a few words each.
MAX_TEXT_BYTES = 64 * 1024
MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 100


class _ProtocolError(Exception):
    """A client message this server refuses; str() is the one-line reason sent back."""


class VoskWebsocketServer:
    """Serves streaming recognitions of one shared SpeechRecognizer to vosk-server protocol clients."""

    def __init__(self, recognizer: SpeechRecognizer, *, max_streams: int = 32, idle_timeout: float = 30.0,
                 send_timeout: float = 10.0, max_chunk_bytes: int = 256 * 1024, token: str | None = None) -> None:
        """token: what clients must present as ``Authorization: Bearer``; None only for tests with no other
        local users (the hotline always sets one)."""
        self._recognizer = recognizer
        self._token = token.encode() if token is not None else None
        self._max_streams = max_streams
        self._idle_timeout = idle_timeout
        self._send_timeout = send_timeout
        self._max_chunk_bytes = max_chunk_bytes
        self._runner: web.AppRunner | None = None
        self.active_streams = 0
        self.total_streams = 0
        self.audio_seconds = 0.0
        self.refused_clients = 0

    def web_app(self) -> web.Application:
        """An aiohttp application answering the websocket at "/" (vosk-server clients connect there)."""
        app = web.Application(client_max_size=self._max_chunk_bytes)
        app.router.add_get("/", self.handle)
        return app

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (raises OSError if the port is taken)."""
        runner = web.AppRunner(self.web_app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def health_report(self) -> dict[str, Any]:
        """Counters for /healthz."""
        return {"ok": True, "active_streams": self.active_streams, "streams": self.total_streams,
                "audio_seconds": round(self.audio_seconds, 1), "refused_clients": self.refused_clients}

    def _authentic(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One websocket connection: config, audio chunks, results, eof."""
        if not self._authentic(request):
            self.refused_clients += 1
            log.warning("asr websocket: refused %s: missing or wrong token", request.remote)
            return web.Response(status=401, text="ASR websocket: missing or wrong token\n",
                                headers={"WWW-Authenticate": "Bearer"})
        ws = web.WebSocketResponse(max_msg_size=self._max_chunk_bytes, heartbeat=self._idle_timeout / 2)
        await ws.prepare(request)
        if self.active_streams >= self._max_streams:
            await self._refuse(ws, f"server busy: {self._max_streams} streams already open")
            return ws
        self.active_streams += 1
        self.total_streams += 1
        try:
            await self._serve(ws)
        except _ProtocolError as exc:
            await self._refuse(ws, str(exc))
        except AsrError as exc:
            await self._refuse(ws, str(exc))
        except (ConnectionResetError, TimeoutError) as exc:
            log.info("asr websocket %s: connection dropped (%s)", request.remote, type(exc).__name__)
        finally:
            self.active_streams -= 1
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        config: dict[str, Any] = {}
        stream: RecognitionStream | None = None
        try:
            while True:
                msg = await ws.receive(timeout=self._idle_timeout)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                if msg.type == WSMsgType.ERROR:
                    raise _ProtocolError(f"websocket error: {ws.exception()}")
                if msg.type == WSMsgType.BINARY:
                    if stream is None:
                        stream = await self._open(config)
                    if len(msg.data) % 2:
                        raise _ProtocolError(
                            f"audio chunk of {len(msg.data)} bytes is not a whole number of 16-bit samples")
                    await self._send(ws, await stream.accept(msg.data))
                    continue
                if msg.type != WSMsgType.TEXT:
                    raise _ProtocolError(f"unexpected websocket message type {msg.type.name}")
                if len(msg.data) > MAX_TEXT_BYTES:  # before parsing: no work for a message no client needs
                    raise _ProtocolError(f"text message of {len(msg.data)} characters is over {MAX_TEXT_BYTES}")
                command = _parse_text(msg.data)
                if "config" in command:
                    if stream is not None:
                        raise _ProtocolError("config after audio: send the config message first")
                    config = _check_config(command["config"])
                    if config.get("phrase_list"):
                        # Refuse a bad grammar now, not silently at the first audio chunk; the vocabulary
                        # look-ups are the model's work, so off the loop.
                        await asyncio.get_running_loop().run_in_executor(
                            None, self._recognizer.check_grammar, config["phrase_list"])
                    continue
                if stream is None:
                    stream = await self._open(config)
                final = await stream.finish()
                await self._send(ws, final)
                if "eof" in command:
                    await ws.close()
                    return
        finally:
            if stream is not None:
                self.audio_seconds += stream.audio_seconds

    async def _open(self, config: dict[str, Any]) -> RecognitionStream:
        return await self._recognizer.open_stream(
            config.get("sample_rate", DEFAULT_SAMPLE_RATE),
            config.get("phrase_list"),
            words=bool(config.get("words", True)),
            partial_words=bool(config.get("partial_words", False)),
            max_alternatives=config.get("max_alternatives", 0),
        )

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        async with asyncio.timeout(self._send_timeout):
            await ws.send_str(json.dumps(payload, ensure_ascii=False))

    async def _refuse(self, ws: web.WebSocketResponse, reason: str) -> None:
        log.info("asr websocket: refused: %s", reason)
        if ws.closed:
            return
        try:
            await self._send(ws, {"error": reason})
            await ws.close(code=CLOSE_PROTOCOL_ERROR, message=reason[:120].encode())
        except (ConnectionResetError, TimeoutError):
            pass  # the client is gone; nothing left to tell it


def _parse_text(data: str) -> dict[str, Any]:
    """A text message as a command: {"config": {...}}, {"eof": 1} or {"reset": 1}."""
    try:
        command = json.loads(data)
    except ValueError:
        raise _ProtocolError(f"text message is not JSON: {data[:60]!r}") from None
    if not isinstance(command, dict) or not ({"config", "eof", "reset"} & command.keys()):
        raise _ProtocolError(f"unknown text message {data[:60]!r} (expected config, eof or reset)")
    return command


def _check_config(config: Any) -> dict[str, Any]:
    """The config message's settings, refusing a model change and anything malformed."""
    if not isinstance(config, dict):
        raise _ProtocolError("config must be a JSON object")
    if "model" in config:
        raise _ProtocolError("config: the model cannot be chosen by a client (this server has one loaded)")
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise _ProtocolError(f"config: unknown setting(s) {', '.join(unknown)}")
    checked = dict(config)
    if "grammar" in checked:  # some clients name the phrase list "grammar"
        checked.setdefault("phrase_list", checked.pop("grammar"))
    phrases = checked.get("phrase_list")
    if phrases is not None:
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            raise _ProtocolError("config: phrase_list must be a list of strings")
        if len(phrases) > MAX_PHRASES:
            raise _ProtocolError(f"config: phrase_list has {len(phrases)} phrases, at most {MAX_PHRASES} are allowed")
        if longest := max((p for p in phrases if len(p) > MAX_PHRASE_CHARS), key=len, default=None):
            raise _ProtocolError(f"config: phrase {longest[:40]!r}... is {len(longest)} characters, "
                                 f"at most {MAX_PHRASE_CHARS} are allowed")
    if "sample_rate" in checked:
        try:
            checked["sample_rate"] = check_stream_rate(checked["sample_rate"])
        except AsrError as exc:
            raise _ProtocolError(f"config: {exc}") from None
    alternatives = checked.get("max_alternatives", 0)
    if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 0 <= alternatives <= 10:
        raise _ProtocolError(f"config: max_alternatives {alternatives!r} is not an integer from 0 to 10")
    if phrases is not None:
        # vosk-server clients add "[unk]" for out-of-grammar speech; the recognizer adds it itself when
        # the model knows it (the Korean small model does not), so it is not a vocabulary word to check.
        checked["phrase_list"] = [p for p in phrases if p.strip() != "[unk]"] or None
    return checked
