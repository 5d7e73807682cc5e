"""Synthetic speech for tests: espeak-ng text-to-speech converted by sox to telephone-style WAV files."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

_PCM16_MONO = ("-c", "1", "-b", "16", "-e", "signed-integer")  # sox output options, as Asterisk records


class SpeechToolError(RuntimeError):
    """espeak-ng or sox is missing or failed; the message is one line."""


def synthesize(
    text: str,
    path: Path,
    voice: str = "ko",
    rate: int = 8000,
    speed: int = 130,
    pad_seconds: float = 0.0,
) -> Path:
    """Speak text with espeak-ng into a mono 16-bit WAV at rate Hz, with pad_seconds of silence each side."""
    if not text.strip():
        raise ValueError("synthesize: text is empty")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # espeak-ng writes 22.05 kHz; a temporary file keeps a failed run from leaving a half-made path.
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        _run([_tool("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text])
        effects = ["pad", f"{pad_seconds:g}", f"{pad_seconds:g}"] if pad_seconds > 0 else []
        _run([_tool("sox"), str(raw), *_PCM16_MONO, "-r", str(rate), str(path), *effects])
    return path


def convert(source: Path, path: Path, *sox_output_options: str) -> Path:
    """Re-encode a WAV with sox output options, e.g. convert(a, b, "-r", "44100", "-c", "2")."""
    path = Path(path)
    # -D: no dither, so a re-encoded signal is deterministic (sox otherwise adds random noise on bit-depth cuts).
    _run([_tool("sox"), "-D", str(source), *sox_output_options, str(path)])
    return path


def merge_channels(paths: list[Path], path: Path) -> Path:
    """One multi-channel WAV with each input as a channel, in order (sox -M; shorter inputs padded)."""
    if len(paths) < 2:
        raise ValueError("merge_channels: needs at least two input files")
    path = Path(path)
    _run([_tool("sox"), "-M", *(str(p) for p in paths), str(path)])
    return path


def concatenate(paths: list[Path], path: Path) -> Path:
    """One WAV playing the inputs one after another (sox; inputs must share rate and channels)."""
    if not paths:
        raise ValueError("concatenate: needs at least one input file")
    path = Path(path)
    _run([_tool("sox"), *(str(p) for p in paths), str(path)])
    return path


def silence(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of digital silence."""
    path = Path(path)
    _run([_tool("sox"), "-n", *_PCM16_MONO, "-r", str(rate), str(path), "trim", "0", f"{seconds:g}"])
    return path


def _tool(name: str) -> str:
    """Absolute path of a command-line tool, or a one-line error saying how to get it."""
    found = shutil.which(name)
    if found is None:
        raise SpeechToolError(f"{name} is not installed (run scripts/setup-system.sh or apt-get install {name})")
    return found


def _run(argv: list[str]) -> None:
    """Run a tool, turning a failure into a one-line SpeechToolError with its last stderr line."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise SpeechToolError(f"{Path(argv[0]).name} failed: {detail}")
