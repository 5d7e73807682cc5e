"""Command-line actions of the asr package; the hotline CLI wires them to `hotline asr ...`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .audio import decode_wav
from .errors import AsrError
from .recognizer import SpeechRecognizer


def transcribe_command(
    path: Path,
    grammar: list[str] | None,
    as_json: bool,
    model_path: Path | None,
    *,
    recognizer: SpeechRecognizer | None = None,
) -> int:
    """Print the transcript of a WAV file (text, or JSON with --json); 0 on success, 2 on AsrError."""
    try:
        # Check the recording before spending ~2 s loading the model, so a typo fails at once.
        decode_wav(path)
        owned = recognizer is None
        if recognizer is None:
            recognizer = SpeechRecognizer.load_sync(model_path)
        try:
            transcript = recognizer.transcribe_file_sync(path, grammar or None)
        finally:
            if owned:
                recognizer.close()
    except AsrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(transcript.to_dict(), ensure_ascii=False))
    else:
        print(transcript.text)
    return 0
