"""The result of one recognition: text, word timings and confidence."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WordTiming:
    """One recognized word with its start/end in seconds and the decoder's confidence (0..1)."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Transcript:
    """Recognized text of one audio stream (or one channel of it) with per-word timings."""

    text: str
    words: tuple[WordTiming, ...] = field(default_factory=tuple)
    confidence: float = 0.0  # mean word confidence; 0.0 when nothing was recognized
    duration: float = 0.0  # seconds of audio that were fed to the recognizer
    channel: str | None = None  # label such as "citizen"/"agent" for one channel of a stereo recording

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (see from_dict for the way back)."""
        return {
            "text": self.text,
            "words": [
                {"word": w.word, "start": w.start, "end": w.end, "conf": w.conf} for w in self.words
            ],
            "confidence": self.confidence,
            "duration": self.duration,
            "channel": self.channel,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """Rebuild a Transcript from the output of to_dict (e.g. one stored as JSON)."""
        return cls(
            text=data["text"],
            words=tuple(
                WordTiming(str(w["word"]), float(w["start"]), float(w["end"]), float(w["conf"]))
                for w in data.get("words", ())
            ),
            confidence=float(data.get("confidence", 0.0)),
            duration=float(data.get("duration", 0.0)),
            channel=data.get("channel"),
        )
