"""Reading WAV recordings into the 16-bit mono PCM the recognizer takes."""
from __future__ import annotations

import struct
import sys
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path

from .errors import AudioFormatError, EmptyAudioError

with warnings.catch_warnings():
    # audioop is deprecated (gone in Python 3.13, where the audioop-lts package provides the same
    # module) but it is the only C-speed resampler and µ-law/A-law decoder in the standard library.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MIN_SECONDS = 0.3  # shorter clips hold no word the decoder can score and are almost always mistakes
SAMPLE_WIDTH = 2  # the recognizer takes signed 16-bit little-endian samples

_FORMAT_PCM = 0x0001
_FORMAT_ALAW = 0x0006
_FORMAT_MULAW = 0x0007
_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
}
_SUPPORTED = "PCM 8/16/24/32-bit, µ-law or A-law"


@dataclass(frozen=True)
class DecodedAudio:
    """A recording decoded to interleaved signed 16-bit native-order PCM, before channel choice."""

    label: str  # names the source in error messages, e.g. "recording /var/spool/x.wav"
    pcm: bytes
    sample_rate: int
    channels: int

    @property
    def frames(self) -> int:
        """Number of sample frames (one sample per channel each)."""
        return len(self.pcm) // (SAMPLE_WIDTH * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    def mono(self, channel: int | None = None) -> tuple[bytes, int]:
        """One channel (or the downmix of all when None) as mono PCM at the recognizer's rate."""
        if channel is not None and not 0 <= channel < self.channels:
            plural = "channel" if self.channels == 1 else "channels"
            raise AudioFormatError(f"{self.label}: has {self.channels} {plural}, no channel {channel}")
        pcm = _select_channel(self.pcm, self.channels, channel)
        return resample_for_recognizer(pcm, self.sample_rate)


def read_audio(path: Path | str, channel: int | None = None) -> tuple[bytes, int]:
    """Read a WAV file as 16-bit mono PCM at 8000 or 16000 Hz; channel None downmixes all channels."""
    return decode_wav(path).mono(channel)


def decode_wav(path: Path | str) -> DecodedAudio:
    """Read and decode a WAV file, raising AudioFormatError (one line) for anything unusable."""
    path = Path(path)
    label = f"recording {path}"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise AudioFormatError(f"{label}: file does not exist") from None
    except IsADirectoryError:
        raise AudioFormatError(f"{label}: is a directory, not a WAV file") from None
    except PermissionError:
        raise AudioFormatError(f"{label}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise AudioFormatError(f"{label}: cannot read it ({exc.strerror or exc})") from None
    return decode_wav_bytes(blob, label)


def decode_wav_bytes(blob: bytes, label: str) -> DecodedAudio:
    """Decode the bytes of a WAV file; label names the source in error messages."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        if not blob:
            raise EmptyAudioError(f"{label}: not a WAV file (the file is empty)")
        raise AudioFormatError(f"{label}: not a WAV file (no RIFF/WAVE header)")
    fmt, data = _find_chunks(blob)
    if fmt is None:
        raise AudioFormatError(f"{label}: damaged WAV file (no 'fmt ' chunk)")
    if len(fmt) < 16:
        raise AudioFormatError(f"{label}: damaged WAV file ('fmt ' chunk is {len(fmt)} bytes)")
    encoding, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if encoding == _FORMAT_EXTENSIBLE and len(fmt) >= 26:
        # The real format code is the first two bytes of the SubFormat GUID.
        (encoding,) = struct.unpack_from("<H", fmt, 24)
    if channels == 0 or rate == 0:
        raise AudioFormatError(f"{label}: damaged WAV header ({channels} channels at {rate} Hz)")
    if data is None:
        raise AudioFormatError(f"{label}: damaged WAV file (no 'data' chunk)")
    width = block_align // channels if block_align else (bits + 7) // 8
    pcm = _to_pcm16(data, encoding, width, channels, bits, label)
    audio = DecodedAudio(label=label, pcm=pcm, sample_rate=rate, channels=channels)
    check_duration(label, audio.frames, rate)
    return audio


def check_duration(label: str, frames: int, sample_rate: int) -> None:
    """Reject audio with no frames or less than MIN_SECONDS of them."""
    if frames == 0:
        raise EmptyAudioError(f"{label}: empty (0 s of audio)")
    seconds = frames / sample_rate
    if seconds < MIN_SECONDS:
        raise EmptyAudioError(f"{label}: too short ({seconds:.2g} s; at least {MIN_SECONDS:g} s needed)")


def resample_for_recognizer(pcm: bytes, sample_rate: int) -> tuple[bytes, int]:
    """Mono 16-bit PCM at 8000 Hz (from rates up to 8 kHz) or 16000 Hz (anything higher)."""
    # 8 kHz telephone audio stays 8 kHz: Kaldi upsamples it itself with a proper filter, and
    # audioop's linear interpolation would only add artefacts. Wider audio keeps up to 8 kHz of
    # bandwidth, which is what the 16 kHz models were trained on.
    target = 8000 if sample_rate <= 8000 else 16000
    if sample_rate == target:
        return pcm, sample_rate
    converted, _state = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, sample_rate, target, None)
    return converted, target


def _find_chunks(blob: bytes) -> tuple[bytes | None, bytes | None]:
    """The 'fmt ' and 'data' chunk bodies of a RIFF/WAVE file (None when absent)."""
    fmt = data = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        if chunk_id == b"data" and size in (0, 0xFFFFFFFF):
            # Asterisk writes size 0 and fixes it when the recording closes (streaming writers use
            # 0xFFFFFFFF): a recording whose writer died still holds its audio up to the end.
            size = len(blob) - pos - 8
        # A size larger than the file (a cut copy): slicing keeps whatever audio is there.
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            data = body
        if fmt is not None and data is not None:
            break
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return fmt, data


def _to_pcm16(data: bytes, encoding: int, width: int, channels: int, bits: int, label: str) -> bytes:
    """Convert the data chunk to interleaved signed 16-bit native-order samples."""
    if encoding == _FORMAT_PCM:
        if width not in (1, 2, 3, 4):
            raise AudioFormatError(
                f"{label}: unsupported WAV sample size {bits} bits (supported: {_SUPPORTED})"
            )
        data = _whole_frames(data, width * channels)
        if sys.byteorder == "big":
            # WAV is little-endian; audioop works in native order.
            data = audioop.byteswap(data, width)
        if width == 1:
            # 8-bit WAV is unsigned; audioop expects signed samples.
            data = audioop.bias(data, 1, -128)
        return data if width == SAMPLE_WIDTH else audioop.lin2lin(data, width, SAMPLE_WIDTH)
    if encoding in (_FORMAT_MULAW, _FORMAT_ALAW):
        data = _whole_frames(data, channels)
        decode = audioop.ulaw2lin if encoding == _FORMAT_MULAW else audioop.alaw2lin
        return decode(data, SAMPLE_WIDTH)
    name = _FORMAT_NAMES.get(encoding, f"format code 0x{encoding:04x}")
    raise AudioFormatError(f"{label}: unsupported WAV encoding {name} (supported: {_SUPPORTED})")


def _whole_frames(data: bytes, frame_bytes: int) -> bytes:
    """Drop a trailing partial frame, which a truncated recording may end with."""
    return data[: len(data) - len(data) % frame_bytes]


def _select_channel(pcm: bytes, channels: int, channel: int | None) -> bytes:
    """Mono 16-bit PCM: one channel of interleaved audio, or the average of all channels."""
    if channels == 1:
        return pcm
    samples = array("h", pcm)
    if channel is not None:
        return samples[channel::channels].tobytes()
    mixed = b""
    for index in range(channels):
        part = audioop.mul(samples[index::channels].tobytes(), SAMPLE_WIDTH, 1.0 / channels)
        mixed = part if not mixed else audioop.add(mixed, part, SAMPLE_WIDTH)
    return mixed
