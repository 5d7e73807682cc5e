"""The EAGI live-transcription script: a pipe as fd 3, the real websocket service and model, real Redis."""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import threading
import uuid
import wave

import pytest
import pytest_asyncio
import yaml

from asr import SpeechRecognizer, VoskWebsocketServer, read_audio
from cases import TranscriptStatus
from ivr import HotlineCallFlow, IvrOptions
from ivr.live_transcript import LiveTranscriber, parse_args, read_audio_fd, run_eagi
from queueing import LiveCallState
from queueing.live_state import connect_redis
from telephony import AgiResult
from tests.support.cases import FakeCases
from tests.support.descriptions import eventually
from tests.support.fake_agi import ScriptedAgi
from tests.support.flows import base_flow, flow_source
from tests.support.ports import module_ports
from tests.support.recognizer import FakeRecognizer
from tests.support.records import FakeRecords
from tests.support.speech import concatenate, silence, synthesize
from transcripts import JobStatus

pytestmark = [pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)
PORT = PORTS.spare(0)
NOBODY_PORT = PORTS.spare(1)  # nothing listens here: the live service is away
URL = f"ws://127.0.0.1:{PORT}/"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ws_server():
    recognizer = await SpeechRecognizer.load(workers=2)
    server = VoskWebsocketServer(recognizer, idle_timeout=10.0)
    await server.start("127.0.0.1", PORT)
    yield server
    await server.close()
    await recognizer.aclose()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("eagi-speech")
    talk = synthesize("안녕하세요 우리 집 앞에 하수도가 막혔습니다", d / "talk.wav")
    # The caller talks, then stays on the line in silence: the script must stop on its own, long before the end.
    keyword = synthesize("하수도", d / "keyword.wav", pad_seconds=0.3)
    return {"talk_then_silence": concatenate([talk, silence(d / "long.wav", 8.0)], d / "call.wav"),
            "keyword_then_silence": concatenate([keyword, silence(d / "long2.wav", 6.0)], d / "kw.wav"),
            "silence": silence(d / "quiet.wav", 4.0)}


@pytest_asyncio.fixture(loop_scope="session")
async def live():
    prefix = f"test-eagi-{uuid.uuid4().hex[:8]}"
    state = LiveCallState(connect_redis("redis://127.0.0.1:6379/0"), prefix=prefix)
    yield state
    client = connect_redis("redis://127.0.0.1:6379/0")
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await state.aclose()


def feed_pipe(pcm: bytes, frame: int = 320) -> tuple[int, threading.Thread]:
    """A pipe whose read end plays fd 3: a thread writes 20 ms frames as Asterisk does, until the reader leaves."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        try:
            for offset in range(0, len(pcm), frame):
                os.write(write_fd, pcm[offset:offset + frame])
        except BrokenPipeError:
            pass  # the script stopped reading (caller done talking), as Asterisk sees on a real call
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return read_fd, thread


async def collect_events(live: LiveCallState, linkedid: str, sink: list[dict]) -> None:
    client = connect_redis("redis://127.0.0.1:6379/0")
    pubsub = client.pubsub()
    await pubsub.subscribe(live.channel)
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg and json.loads(msg["data"]).get("linkedid") == linkedid:
                sink.append(json.loads(msg["data"]))
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_partials_reach_live_state_and_it_stops_after_silence(ws_server, live, speech, tmp_path):
    pcm, rate = read_audio(speech["talk_then_silence"])
    assert rate == 8000
    linkedid = f"call-{uuid.uuid4().hex[:6]}"
    await live.start_call(linkedid, case_number="C-1")
    events: list[dict] = []
    watcher = asyncio.create_task(collect_events(live, linkedid, events), name="watch-live-events")
    await asyncio.sleep(0.2)
    read_fd, writer = feed_pipe(pcm)
    try:
        transcriber = LiveTranscriber(ws_url=URL, live=live, linkedid=linkedid, wav_path=tmp_path / "C-1.wav",
                                      silence_seconds=1.5)
        result = await asyncio.wait_for(transcriber.run(read_audio_fd(read_fd)), 60)
    finally:
        os.close(read_fd)
        writer.join(5)
    await asyncio.sleep(0.3)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)

    total = len(pcm) / (2 * rate)
    assert result.stopped_by == "silence"
    # Stopped by the silence after the words, seconds before the audio (talk + 8 s of silence) ran out.
    assert result.audio_seconds < total - 4, (result.audio_seconds, total)
    assert result.text.strip(), "no final text"  # free speech: espeak Korean is only roughly recognized
    partials = [e["fields"]["transcript_partial"] for e in events if e["fields"].get("transcript_partial")]
    assert len(partials) >= 3 and partials[0] != partials[-1], partials
    first_partial = next(i for i, e in enumerate(events) if e["fields"].get("transcript_partial"))
    first_final = next(i for i, e in enumerate(events) if e["fields"].get("transcript"))
    assert first_partial < first_final, "partial words must be published before the final text"
    call = await live.get_call(linkedid)
    assert call["transcript"] == result.text and call["transcript_live_stopped_by"] == "silence"
    with wave.open(str(tmp_path / "C-1.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() * 2 == pytest.approx(result.audio_seconds * 2 * rate, abs=2)


async def test_silent_caller_stops_at_no_speech_limit(ws_server, live, speech, tmp_path):
    pcm, _ = read_audio(speech["silence"])
    read_fd, writer = feed_pipe(pcm)
    try:
        transcriber = LiveTranscriber(ws_url=URL, live=live, linkedid="quiet", wav_path=tmp_path / "q.wav",
                                      no_speech_seconds=2.0)
        result = await asyncio.wait_for(transcriber.run(read_audio_fd(read_fd)), 30)
    finally:
        os.close(read_fd)
        writer.join(5)
    assert result.stopped_by == "silence" and result.text == ""
    assert 2.0 <= result.audio_seconds < 2.5


async def test_max_length_and_hangup_end_the_stream(ws_server, live, speech, tmp_path):
    pcm, _ = read_audio(speech["talk_then_silence"])
    read_fd, writer = feed_pipe(pcm)
    try:
        result = await asyncio.wait_for(LiveTranscriber(
            ws_url=URL, live=live, linkedid="long", wav_path=tmp_path / "l.wav", max_seconds=1.0,
        ).run(read_audio_fd(read_fd)), 30)
    finally:
        os.close(read_fd)
        writer.join(5)
    assert result.stopped_by == "max_length" and result.audio_seconds == pytest.approx(1.0)
    # Hang-up: fd 3 closes after half a second of audio.
    read_fd, writer = feed_pipe(pcm[:8000])
    try:
        result = await asyncio.wait_for(LiveTranscriber(
            ws_url=URL, live=live, linkedid="gone", wav_path=tmp_path / "g.wav").run(read_audio_fd(read_fd)), 30)
    finally:
        os.close(read_fd)
        writer.join(5)
    assert result.stopped_by == "eof" and result.audio_seconds == pytest.approx(0.5)


async def test_websocket_down_still_keeps_the_whole_recording(live, speech, tmp_path):
    pcm, _ = read_audio(speech["silence"])
    read_fd, writer = feed_pipe(pcm)
    try:
        result = await asyncio.wait_for(LiveTranscriber(
            ws_url=f"ws://127.0.0.1:{NOBODY_PORT}/", live=live, linkedid="down", wav_path=tmp_path / "d.wav",
            max_seconds=3.0, timeout=2.0).run(read_audio_fd(read_fd)), 30)
    finally:
        os.close(read_fd)
        writer.join(5)
    assert result.stopped_by == "error" and result.error
    with wave.open(str(tmp_path / "d.wav")) as w:
        assert w.getnframes() == 3 * 8000


async def test_eagi_entry_point_streams_from_the_audio_fd(ws_server, live, speech, tmp_path):
    pcm, _ = read_audio(speech["keyword_then_silence"])
    read_fd, writer = feed_pipe(pcm)
    try:
        args = parse_args(["--linkedid", "eagi-1", "--wav", str(tmp_path / "e.wav"), "--ws-url", URL,
                           "--redis-prefix", live.channel.removesuffix(":events"), "--audio-fd", str(read_fd),
                           "--phrase", "하수도", "--phrase", "버스", "--phrase", "위생", "--no-agi"])
        result = await asyncio.wait_for(run_eagi(args), 60)
    finally:
        os.close(read_fd)
        writer.join(5)
    assert result.stopped_by == "silence" and result.text == "하수도"
    assert (await live.get_call("eagi-1"))["transcript"] == result.text


# -- the flow hand-over: a record node with mode "stream" runs the EAGI program as Asterisk would --------------

class EagiRunningAgi(ScriptedAgi):
    """A fake FastAGI channel whose EXEC EAGI runs the real program: AGI env on stdin, caller audio on fd 3."""

    def __init__(self, pcm: bytes) -> None:
        super().__init__()
        self.pcm = pcm
        self.exec_args: list[str] = []
        self.eagi_variables: dict[str, str] = {}

    async def command(self, line: str, timeout: float | None = None) -> AgiResult:
        assert line.startswith('EXEC EAGI "') and line.endswith('"'), line
        self.exec_args = line[len('EXEC EAGI "'):-1].split(",")
        await self._event("eagi")
        read_fd, writer = feed_pipe(self.pcm)
        proc = await asyncio.create_subprocess_exec(
            *self.exec_args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            pass_fds=(3,), preexec_fn=lambda: os.dup2(read_fd, 3, inheritable=True))
        os.close(read_fd)
        assert proc.stdin and proc.stdout
        proc.stdin.write(b"agi_request: eagi_stream\nagi_channel: PJSIP/trunk-1\nagi_enhanced: 1.0\n\n")
        await proc.stdin.drain()
        while line_out := (await asyncio.wait_for(proc.stdout.readline(), timeout or 60)).decode():
            command, name, value = shlex.split(line_out)[1:]
            assert command == "VARIABLE", line_out
            self.eagi_variables[name] = value
            proc.stdin.write(b"200 result=1\n")
            await proc.stdin.drain()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        writer.join(5)
        return AgiResult("0", "", "200 result=0")


async def test_stream_record_node_runs_eagi_and_puts_the_live_transcript_on_the_case(ws_server, live, speech,
                                                                                    tmp_path, pipelines):
    flow = base_flow()
    flow["nodes"]["welcome"]["next"] = "describe"
    flow["nodes"]["describe"] = {"kind": "record", "prompt": "hi", "mode": "stream", "silence_seconds": 2,
                                 "max_seconds": 30, "next": "menu"}
    cases = FakeCases()
    recognizer = FakeRecognizer("from the file")
    prefix = live.channel.removesuffix(":events")
    engine = HotlineCallFlow(
        options=IvrOptions(recordings_dir=tmp_path, live_transcript_command=(
            sys.executable, "-m", "ivr.live_transcript", "--ws-url", URL, "--redis-prefix", prefix)),
        flows=await flow_source(yaml.safe_dump(flow, allow_unicode=True)), cases=cases, records=FakeRecords(),
        live=live,
        descriptions=pipelines.start(cases, recognizer, max_attempts=1).descriptions)
    pcm, _ = read_audio(speech["talk_then_silence"])
    agi = EagiRunningAgi(pcm)
    await asyncio.wait_for(engine.handle(agi), 90)  # type: ignore[arg-type]

    case = cases.only()
    assert agi.log.index("play:/ko/hi") < agi.log.index("eagi")
    assert agi.exec_args[agi.exec_args.index("--linkedid") + 1] == "linked-1.1"
    assert agi.eagi_variables == {"HOTLINE_LIVE_STOPPED": "silence"}
    call = await live.get_call("linked-1.1")
    assert case.transcript and case.transcript == call["transcript"]  # what was heard live
    assert case.transcript_status == TranscriptStatus.DONE and recognizer.calls == []
    assert await pipelines.store.get(f"description:{case.case_number}") is None  # heard live: no job
    assert case.recording_path == str(tmp_path / f"{case.case_number}.wav")
    with wave.open(case.recording_path) as w:
        assert 2 < w.getnframes() / 8000 < len(pcm) / 16000 - 3  # ended on silence, kept what was said


async def test_stream_record_node_falls_back_to_file_transcription(live, speech, tmp_path, pipelines):
    flow = base_flow()
    flow["nodes"]["welcome"]["next"] = "describe"
    flow["nodes"]["describe"] = {"kind": "record", "prompt": "hi", "mode": "stream", "max_seconds": 3,
                                 "next": "menu"}
    cases = FakeCases()
    prefix = live.channel.removesuffix(":events")
    engine = HotlineCallFlow(
        options=IvrOptions(recordings_dir=tmp_path, live_transcript_command=(
            sys.executable, "-m", "ivr.live_transcript", "--ws-url", f"ws://127.0.0.1:{NOBODY_PORT}/",
            "--redis-prefix", prefix)),
        flows=await flow_source(yaml.safe_dump(flow, allow_unicode=True)), cases=cases, records=FakeRecords(),
        live=live,
        descriptions=pipelines.start(cases, FakeRecognizer("from the file"), max_attempts=1, live=live).descriptions)
    pcm, _ = read_audio(speech["silence"])
    agi = EagiRunningAgi(pcm)
    await asyncio.wait_for(engine.handle(agi), 60)  # type: ignore[arg-type]
    assert agi.eagi_variables == {"HOTLINE_LIVE_STOPPED": "error"}
    await eventually(lambda: cases.only().transcript_status != TranscriptStatus.PENDING, what="transcript reported")
    case = cases.only()
    # Nothing came live: the kept recording went through the durable description job instead.
    assert case.transcript == "from the file" and case.transcript_status == TranscriptStatus.DONE
    job = await pipelines.store.get(f"description:{case.case_number}")
    assert job is not None and job.status == JobStatus.DONE and job.recordings[0].path == case.recording_path
    assert (await live.get_call("linked-1.1"))["transcript"] == "from the file"


async def test_a_channel_that_sends_no_audio_ends_at_the_wall_clock_bound(ws_server, live, tmp_path):
    read_fd, write_fd = os.pipe()  # nothing is ever written: a caller whose phone sends no RTP
    try:
        result = await asyncio.wait_for(LiveTranscriber(
            ws_url=URL, live=live, linkedid="mute", wav_path=tmp_path / "m.wav", max_seconds=1.0,
            no_speech_seconds=1.0).run(read_audio_fd(read_fd)), 10)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert result.stopped_by == "max_length" and result.audio_seconds == 0


def test_the_redis_password_stays_off_the_eagi_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command line shows in `ps` and in Asterisk's log; the URL comes through Asterisk's environment.
    from config import Settings
    from hotline.app import live_transcript_command

    url = "redis://:s3cret-pass@127.0.0.1:6379/2"
    command = live_transcript_command(Settings(redis_url=url))
    assert command is not None and not any("s3cret-pass" in part for part in command)
    monkeypatch.setenv("HOTLINE_REDIS_URL", url)
    args = parse_args([*command[3:], "--linkedid", "x", "--wav", "/tmp/x.wav"])
    assert args.redis_url == url
