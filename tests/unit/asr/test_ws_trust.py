"""The ASR websocket serves only clients with the token, and a huge config costs nobody else anything."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import websockets

from asr import ASR_TOKEN_ENV, AsrError, SpeechRecognizer, VoskWebsocketServer
from ivr import live_transcript
from tests.support.ports import module_ports

TOKEN = "asr-test-token-0123456789abcdef"
PORT = module_ports(__name__).spare(0)
URL = f"ws://127.0.0.1:{PORT}/"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class FakeStream:
    """A recognition that hears nothing."""

    audio_seconds = 0.0

    async def accept(self, pcm: bytes) -> dict[str, Any]:
        self.audio_seconds += len(pcm) / 16000
        return {"partial": ""}

    async def finish(self) -> dict[str, Any]:
        return {"text": ""}


class FakeRecognizer:
    """Checks grammars slowly, as a model's vocabulary look-ups can, in whatever thread calls it."""

    def __init__(self, check_seconds: float = 0.0) -> None:
        self.check_seconds = check_seconds
        self.checked: list[int] = []
        self.opened: list[Sequence[str] | None] = []

    def check_grammar(self, grammar: Sequence[str]) -> None:
        time.sleep(self.check_seconds)  # blocking on purpose: on the loop it would freeze every client
        self.checked.append(len(grammar))
        if "없는말" in grammar:
            raise AsrError("grammar word not in the vocabulary of the Vosk model at /m: '없는말'")

    async def open_stream(self, sample_rate: int, grammar: Sequence[str] | None = None, **_: Any) -> FakeStream:
        self.opened.append(grammar)
        return FakeStream()


@pytest.fixture
async def recognizer() -> FakeRecognizer:
    return FakeRecognizer()


@pytest.fixture
async def server(recognizer: FakeRecognizer) -> AsyncIterator[VoskWebsocketServer]:
    ws_server = VoskWebsocketServer(recognizer, idle_timeout=5.0, token=TOKEN)  # type: ignore[arg-type]
    await ws_server.start("127.0.0.1", PORT)
    yield ws_server
    await ws_server.close()


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer not-the-token"},
                                     {"Authorization": f"Basic {TOKEN}"}], ids=["none", "wrong", "not-bearer"])
async def test_a_client_without_the_token_is_refused_before_the_websocket_opens(
        server: VoskWebsocketServer, recognizer: FakeRecognizer, headers: dict[str, str] | None,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="asr.ws_server"), \
            pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(URL, open_timeout=5, additional_headers=headers):
            pass
    assert refused.value.response.status_code == 401
    assert refused.value.response.body == b"ASR websocket: missing or wrong token\n"
    assert server.refused_clients == 1 and server.total_streams == 0 and recognizer.opened == []
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["asr websocket: refused 127.0.0.1: missing or wrong token"]
    assert TOKEN not in caplog.text


async def test_a_client_with_the_token_is_served(server: VoskWebsocketServer, recognizer: FakeRecognizer) -> None:
    async with websockets.connect(URL, open_timeout=5, additional_headers=BEARER) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 8000, "phrase_list": ["버스", "위생"]}}))
        await ws.send(b"\0\0" * 800)
        assert json.loads(await ws.recv()) == {"partial": ""}
        await ws.send('{"eof": 1}')
        assert json.loads(await ws.recv()) == {"text": ""}
    assert recognizer.checked == [2] and recognizer.opened == [["버스", "위생"]]


async def refusal(config_message: str) -> tuple[dict[str, Any], float]:
    """Send one config message; the server's answer and how long it took."""
    async with websockets.connect(URL, open_timeout=5, additional_headers=BEARER, max_size=None) as ws:
        start = time.monotonic()
        await ws.send(config_message)
        answer = json.loads(await ws.recv())
        seconds = time.monotonic() - start
        with pytest.raises(websockets.ConnectionClosedError):
            await ws.recv()
    return answer, seconds


# 229 KB, as the message that froze the process for 3.3 s (16,000 distinct phrases)
HUGE = json.dumps({"config": {"phrase_list": [f"낱말{i}" for i in range(16000)]}}, ensure_ascii=False)


@pytest.mark.parametrize("message, error", [
    (HUGE, f"text message of {len(HUGE)} characters is over 65536"),
    (json.dumps({"config": {"phrase_list": ["버스"] * 1001}}),
     "config: phrase_list has 1001 phrases, at most 1000 are allowed"),
    (json.dumps({"config": {"phrase_list": ["버스", "가" * 101]}}),
     f"config: phrase {'가' * 40!r}... is 101 characters, at most 100 are allowed"),
], ids=["too-big", "too-many", "too-long"])
async def test_an_oversized_config_is_refused_with_one_line_before_any_work(
        server: VoskWebsocketServer, recognizer: FakeRecognizer, message: str, error: str) -> None:
    answer, seconds = await refusal(message)
    assert answer == {"error": error} and seconds < 0.1
    assert recognizer.checked == [] and recognizer.opened == []


async def test_a_slow_grammar_check_runs_off_the_loop_and_other_clients_pings_are_answered(
        server: VoskWebsocketServer, recognizer: FakeRecognizer) -> None:
    recognizer.check_seconds = 1.0
    async with websockets.connect(URL, open_timeout=5, additional_headers=BEARER) as other:
        async with websockets.connect(URL, open_timeout=5, additional_headers=BEARER) as busy:
            await busy.send(json.dumps({"config": {"phrase_list": ["버스", "없는말"]}}))
            await asyncio.sleep(0.1)  # the check is running now
            pongs = []
            for _ in range(5):
                waiter = await other.ping()
                start = time.monotonic()
                await asyncio.wait_for(waiter, 1.0)
                pongs.append(time.monotonic() - start)
                await asyncio.sleep(0.05)
            assert json.loads(await busy.recv()) == {
                "error": "grammar word not in the vocabulary of the Vosk model at /m: '없는말'"}
    assert max(pongs) < 0.1, pongs
    assert recognizer.checked == [2]


def test_deduplicating_a_long_grammar_is_linear(tmp_path: Path) -> None:
    class Vocabulary:
        """A model that knows every word."""

        def vosk_model_find_word(self, word: str) -> int:
            return 1

    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "HCLr.fst").write_bytes(b"")
    recognizer = SpeechRecognizer(Vocabulary(), tmp_path, ThreadPoolExecutor(1))  # type: ignore[arg-type]
    try:
        phrases = [f"낱말{i}" for i in range(30000)] * 2
        start = time.monotonic()
        recognizer.check_grammar(phrases)
        assert time.monotonic() - start < 0.3  # the list membership test took seconds for this
        compiled = recognizer._compile_grammar(["버스", " 버스 ", "위생", "버스"])
        assert compiled is not None and compiled.phrases == ("버스", "위생")  # first-seen order kept
    finally:
        recognizer.close()


def test_the_live_transcriber_reads_the_token_where_the_hotline_puts_it() -> None:
    assert live_transcript.ASR_TOKEN_ENV == ASR_TOKEN_ENV
