"""FakeRecognizer: the speech recognizer (asr.Recognizer's transcribe calls) answering from a script."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asr import Transcript, WordTiming

_REPEAT = object()


class FakeRecognizer:
    """Answers each transcription with the next scripted answer (a text, a Transcript, or an exception to raise);
    once they are used up, with `then` (by default the last answer again). `calls` lists the files asked about,
    `grammars` the grammar of each call; with `release` set to an Event, each call waits for it."""

    def __init__(self, *answers: Any, then: Any = _REPEAT, check_files: bool = False) -> None:
        self.answers = list(answers)
        self.then = then
        self.check_files = check_files
        self.calls: list[Path] = []
        self.grammars: list[Any] = []
        self.release: asyncio.Event | None = None
        self._last: Any = answers[-1] if answers else None

    def _next(self) -> Any:
        if self.answers:
            self._last = self.answers.pop(0)
            return self._last
        if self.then is _REPEAT:
            return self._last if self._last is not None else ""
        return self.then

    async def transcribe_file(self, path: Path, grammar: Any = None, timeout: float | None = None) -> Transcript:
        """One file's transcript, as scripted."""
        if self.check_files:
            assert Path(path).exists(), f"asked to transcribe a missing file {path}"
        self.calls.append(Path(path))
        self.grammars.append(list(grammar) if grammar is not None else None)
        if self.release is not None:
            await self.release.wait()
        answer = self._next()
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Transcript) else Transcript(text=str(answer), duration=1.0)

    async def transcribe_stereo(self, path: Path, labels: tuple[str, str] = ("citizen", "agent"), grammar: Any = None,
                                timeout: float | None = None) -> list[Transcript]:
        """A stereo recording: a few words per channel, labelled."""
        self.calls.append(Path(path))
        return [Transcript(text=f"{label} words", channel=label, words=(WordTiming("words", 0.1, 0.5, 0.9),))
                for label in labels]
