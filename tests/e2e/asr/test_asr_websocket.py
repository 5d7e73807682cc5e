"""The vosk-server protocol websocket, driven by the `websockets` client against the real Korean model."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import pytest_asyncio
import websockets

from asr import SpeechRecognizer, VoskWebsocketServer, read_audio
from tests.support.ports import module_ports
from tests.support.speech import concatenate, silence, synthesize

pytestmark = pytest.mark.vosk

PORT = module_ports(__name__).spare(0)
URL = f"ws://127.0.0.1:{PORT}/"
CHUNK = 1600  # 0.1 s at 8 kHz, as an EAGI script or a phone bridge would send


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    recognizer = await SpeechRecognizer.load(workers=2)
    ws_server = VoskWebsocketServer(recognizer, idle_timeout=10.0)
    await ws_server.start("127.0.0.1", PORT)
    yield ws_server
    await ws_server.close()
    await recognizer.aclose()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ws-speech")
    sentence = synthesize("안녕하세요 우리 집 앞에 하수도가 막혔습니다", d / "sentence.wav")
    keyword = synthesize("하수도", d / "keyword.wav", pad_seconds=0.3)
    # Two utterances with a long pause between: Vosk's endpointing must close the first one mid-stream.
    two = concatenate([synthesize("버스", d / "a.wav"), silence(d / "gap.wav", 2.0),
                       synthesize("위생", d / "b.wav")], d / "two.wav")
    return {"sentence": sentence, "keyword": keyword, "two": two}


async def stream(pcm: bytes, config: dict | None = None, chunk: int = CHUNK) -> list[dict]:
    """Send config, chunks and eof; return every JSON answer in order."""
    answers = []
    async with websockets.connect(URL, open_timeout=10) as ws:
        if config is not None:
            await ws.send(json.dumps({"config": config}))
        for offset in range(0, len(pcm), chunk * 2):
            await ws.send(pcm[offset:offset + chunk * 2])
            answers.append(json.loads(await ws.recv()))
        await ws.send('{"eof" : 1}')
        answers.append(json.loads(await ws.recv()))
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
    return answers


async def test_free_speech_gives_partials_then_final_with_word_timings(server, speech):
    pcm, rate = read_audio(speech["sentence"])
    answers = await stream(pcm, {"sample_rate": rate, "words": 1})
    # One answer per chunk plus the eof answer, each either a partial or a final result.
    assert len(answers) == -(-len(pcm) // (CHUNK * 2)) + 1
    assert all(("partial" in a) != ("text" in a) for a in answers)
    assert any(a.get("partial") for a in answers[:-1]), "no partial words while speech was streaming"
    finals = [a for a in answers if "text" in a]
    words = [w for a in finals for w in a.get("result", [])]
    assert " ".join(a["text"] for a in finals).strip(), "no final text"
    assert words and all(0 <= w["start"] < w["end"] and 0 < w["conf"] <= 1 for w in words)


async def test_phrase_list_constrains_to_the_keyword(server, speech):
    pcm, rate = read_audio(speech["keyword"])
    answers = await stream(pcm, {"sample_rate": rate, "phrase_list": ["버스", "하수도", "위생", "[unk]"]})
    text = " ".join(a["text"] for a in answers if a.get("text"))
    assert text.split() == ["하수도"]


async def test_endpointing_closes_an_utterance_before_eof(server, speech):
    pcm, rate = read_audio(speech["two"])
    answers = await stream(pcm, {"sample_rate": rate, "phrase_list": ["버스", "위생", "[unk]"]})
    finals_before_eof = [a for a in answers[:-1] if a.get("text")]
    assert finals_before_eof and finals_before_eof[0]["text"] == "버스"
    assert answers[-1]["text"] == "위생"


async def test_reset_gives_final_and_keeps_the_stream(server, speech):
    pcm, rate = read_audio(speech["keyword"])
    async with websockets.connect(URL, open_timeout=10) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate, "phrase_list": ["하수도", "버스", "[unk]"]}}))
        await ws.send(pcm)
        await ws.recv()
        await ws.send('{"reset": 1}')
        assert "하수도" in json.loads(await ws.recv())["text"]
        await ws.send(pcm)
        await ws.recv()
        await ws.send('{"eof": 1}')
        assert "하수도" in json.loads(await ws.recv())["text"]


async def test_default_config_is_8khz_telephone_audio(server, speech):
    pcm, _ = read_audio(speech["keyword"])
    answers = await stream(pcm, None)
    assert "text" in answers[-1]


async def test_parallel_streams_share_one_model(server, speech):
    pcm, rate = read_audio(speech["keyword"])
    config = {"sample_rate": rate, "phrase_list": ["하수도", "버스", "[unk]"]}
    results = await asyncio.gather(*(stream(pcm, config) for _ in range(4)))
    for answers in results:
        assert " ".join(a["text"] for a in answers if a.get("text")).split() == ["하수도"]
    assert server.active_streams == 0


async def refused(messages: list) -> tuple[dict, int]:
    async with websockets.connect(URL, open_timeout=10) as ws:
        for m in messages:
            await ws.send(m)
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    return error, closed.value.rcvd.code


@pytest.mark.parametrize("messages, expected", [
    ([json.dumps({"config": {"model": "/tmp/other-model"}})], "model cannot be chosen"),
    ([json.dumps({"config": {"sample_rate": 1234}})], "sample rate 1234"),
    ([json.dumps({"config": {"sample_rate": "fast"}})], "sample rate 'fast'"),
    ([json.dumps({"config": {"phrase_list": ["도로"]}})], "not in the vocabulary"),
    ([json.dumps({"config": {"phrase_list": "버스"}})], "phrase_list must be a list"),
    ([json.dumps({"config": {"speaker": 1}})], "unknown setting"),
    ([json.dumps({"config": {"max_alternatives": 99}})], "max_alternatives 99"),
    (["hello"], "not JSON"),
    (['{"stop": 1}'], "unknown text message"),
    ([b"\x00\x01\x02"], "not a whole number of 16-bit samples"),
    ([b"\x00" * 1600, json.dumps({"config": {"sample_rate": 16000}})], "config after audio"),
])
async def test_bad_messages_get_a_one_line_error_and_close(server, messages, expected):
    if isinstance(messages[0], bytes) and len(messages) > 1:
        # the audio chunk is answered first; then the late config is refused
        async with websockets.connect(URL, open_timeout=10) as ws:
            await ws.send(messages[0])
            assert "partial" in json.loads(await ws.recv())
            await ws.send(messages[1])
            error = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        code = closed.value.rcvd.code
    else:
        error, code = await refused(messages)
    assert expected in error["error"] and "\n" not in error["error"]
    assert code == 1008


async def test_model_is_unchanged_after_a_client_asked_for_another(server, speech):
    await refused([json.dumps({"config": {"model": "/nonexistent"}})])
    pcm, rate = read_audio(speech["keyword"])
    answers = await stream(pcm, {"sample_rate": rate, "phrase_list": ["하수도", "버스", "[unk]"]})
    assert "하수도" in " ".join(a["text"] for a in answers if a.get("text"))
