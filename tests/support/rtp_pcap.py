"""Write RTP (PCMU audio, RFC 4733 DTMF) as pcap files that SIPp's play_pcap_audio can replay."""
from __future__ import annotations

import random
import struct
import warnings
import wave
from dataclasses import dataclass, field
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # stdlib until 3.12; `audioop-lts` provides it later
    except ImportError:  # pragma: no cover - Python 3.13+
        audioop = None  # type: ignore[assignment]

RATE = 8000
FRAME_MS = 20
SAMPLES_PER_FRAME = RATE * FRAME_MS // 1000  # 160
ULAW_SILENCE = b"\xff"
PT_PCMU = 0
PT_DTMF = 101
_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


@dataclass
class RtpStream:
    """RTP sender state (SSRC, sequence, timestamp) shared by the pcaps of one call so they join up."""

    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(15))
    timestamp: int = field(default_factory=lambda: random.getrandbits(31))

    def packet(self, payload_type: int, payload: bytes, marker: bool = False, advance: bool = True) -> bytes:
        """One RTP packet at the current timestamp; moves seq on by one and (if advance) the clock by one frame."""
        header = struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF,
            self.ssrc
        )
        self.seq = (self.seq + 1) & 0xFFFF
        if advance:
            self.timestamp = (self.timestamp + SAMPLES_PER_FRAME) & 0xFFFFFFFF
        return header + payload

    def skip(self, milliseconds: int) -> None:
        """Advance the RTP clock over a gap in which nothing is sent (a pause in the scenario)."""
        self.timestamp = (self.timestamp + RATE * milliseconds // 1000) & 0xFFFFFFFF


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(rtp: bytes, src_port: int = 6000, dst_port: int = 10000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    ether = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ether + ip + udp


def write_pcap(pcap: Path, packets: list[tuple[float, bytes]]) -> None:
    """Write (seconds offset, RTP bytes) packets as an Ethernet/IPv4/UDP pcap (127.0.0.1 -> 127.0.0.1)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    base = 1_700_000_000
    for offset, rtp in packets:
        frame = _frame(rtp)
        usec_total = round(offset * 1_000_000)
        out.append(struct.pack("<IIII", base + usec_total // 1_000_000, usec_total % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    Path(pcap).write_bytes(b"".join(out))


def _ulaw_encode_py(pcm: bytes) -> bytes:  # pragma: no cover - only without audioop
    out = bytearray()
    for (sample,) in struct.iter_unpack("<h", pcm):
        sign = 0x80 if sample < 0 else 0
        magnitude = min(abs(sample), 32635) + 0x84
        exponent = max(0, magnitude.bit_length() - 8)
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def _read_wav_as_8k_mono16(wav: Path) -> bytes:
    try:
        with wave.open(str(wav), "rb") as fh:
            channels, width, rate = fh.getnchannels(), fh.getsampwidth(), fh.getframerate()
            pcm = fh.readframes(fh.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{wav}: not a readable PCM WAV file ({exc})") from None
    if (channels, width, rate) == (1, 2, RATE):
        return pcm
    if audioop is None:
        raise ValueError(f"{wav}: expected 8 kHz 16-bit mono WAV, got {rate} Hz {width * 8}-bit {channels}ch")
    if width != 2:
        pcm = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"{wav}: {channels} channels; expected mono or stereo")
    if rate != RATE:
        pcm, _ = audioop.ratecv(pcm, 2, 1, rate, RATE, None)
    return pcm


def wav_to_rtp_pcap(wav: Path, pcap: Path, pad_seconds: float = 3.0, *, stream: RtpStream | None = None) -> float:
    """Convert a WAV (ideally 8 kHz 16-bit mono) into a PCMU RTP pcap padded with silence; return its seconds."""
    pcm = _read_wav_as_8k_mono16(Path(wav))
    ulaw = audioop.lin2ulaw(pcm, 2) if audioop is not None else _ulaw_encode_py(pcm)
    ulaw += ULAW_SILENCE * round(pad_seconds * RATE)
    remainder = len(ulaw) % SAMPLES_PER_FRAME
    if remainder:
        ulaw += ULAW_SILENCE * (SAMPLES_PER_FRAME - remainder)
    stream = stream or RtpStream()
    packets = []
    for index in range(len(ulaw) // SAMPLES_PER_FRAME):
        chunk = ulaw[index * SAMPLES_PER_FRAME : (index + 1) * SAMPLES_PER_FRAME]
        packets.append((index * FRAME_MS / 1000, stream.packet(PT_PCMU, chunk, marker=index == 0)))
    write_pcap(Path(pcap), packets)
    return len(packets) * FRAME_MS / 1000


def dtmf_rtp_pcap(digit: str, pcap: Path, *, duration_ms: int = 200, stream: RtpStream | None = None) -> float:
    """Write one RFC 4733 telephone-event (payload type 101) for digit; return the seconds it lasts."""
    if digit not in _DTMF_EVENTS:
        raise ValueError(f"DTMF digit {digit!r} is not one of 0-9 * # A-D")
    stream = stream or RtpStream()
    event, volume = _DTMF_EVENTS[digit], 10
    frames = max(1, duration_ms // FRAME_MS)
    packets = []
    for index in range(frames):
        duration = (index + 1) * SAMPLES_PER_FRAME
        payload = struct.pack("!BBH", event, volume, duration)
        packets.append((index * FRAME_MS / 1000, stream.packet(PT_DTMF, payload, marker=index == 0, advance=False)))
    end_payload = struct.pack("!BBH", event, 0x80 | volume, frames * SAMPLES_PER_FRAME)
    for repeat in range(3):  # the end packet is sent three times (RFC 4733 2.5.1.4)
        packets.append(((frames + repeat) * FRAME_MS / 1000, stream.packet(PT_DTMF, end_payload, advance=False)))
    stream.skip(duration_ms + 3 * FRAME_MS)
    write_pcap(Path(pcap), packets)
    return (frames + 3) * FRAME_MS / 1000
