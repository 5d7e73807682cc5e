"""Which Vosk model serves each flow language: the hotline's own model, or others installed next to it."""
from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

from asr import AsrError, RecognitionPriority, SpeechRecognizer, Transcript

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"


class RecognizerVocabulary:
    """The vocabulary of a loaded recognizer (for FlowValidator)."""

    def __init__(self, recognizer: SpeechRecognizer) -> None:
        self._recognizer = recognizer

    def missing(self, words: Collection[str]) -> list[str]:
        """Words the model does not know."""
        unknown = []
        for word in dict.fromkeys(words):
            try:
                self._recognizer.check_grammar([word])
            except AsrError:
                unknown.append(word)
        return unknown


class MenuRecognizer:
    """A recognizer as speech menus use it: the caller is waiting, so each recognition goes ahead of queued
    description and whole-call transcriptions."""

    def __init__(self, recognizer: SpeechRecognizer) -> None:
        self._recognizer = recognizer

    async def transcribe_file(self, path: Path, grammar: list[str] | None = None,
                              timeout: float | None = 10.0) -> Transcript:
        """Recognize a caller's spoken answer (grammar: the menu's keywords) at live priority."""
        return await self._recognizer.transcribe_file(path, grammar, timeout, priority=RecognitionPriority.LIVE)


class SpeechModels:
    """Recognizers by a flow language's asr_model ("default" or a model directory), loaded once each.

    Models other than the default are loaded when first named (load_sync is blocking: call
    `await preload(...)` at start-up or from an executor); a model that is not installed is None, and
    speech menus in that language fall back to DTMF.
    """

    def __init__(self, default: SpeechRecognizer | None, base_dir: Path, workers: int = 1) -> None:
        self._default = default
        self._base_dir = base_dir
        self._workers = workers
        self._loaded: dict[Path, SpeechRecognizer] = {}
        self._missing: set[Path] = set()

    def attach_default(self, recognizer: SpeechRecognizer | None) -> None:
        """Use the hotline's loaded recognizer for asr_model "default" (it is loaded after this registry is made)."""
        self._default = recognizer

    def model_dir(self, asr_model: str | None) -> Path | None:
        """Directory a flow's asr_model names (None for the default model or none)."""
        if asr_model in (None, "", DEFAULT_MODEL):
            return None
        path = Path(asr_model).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def installed(self, asr_model: str | None) -> bool:
        """True when that model can be used."""
        if asr_model is None:
            return False
        if asr_model == DEFAULT_MODEL:
            return self._default is not None
        path = self.model_dir(asr_model)
        return path is not None and (path / "am").is_dir()

    def recognizer(self, language: str, asr_model: str | None) -> SpeechRecognizer | None:
        """The recognizer for that model, or None (not installed / not loaded yet)."""
        if asr_model == DEFAULT_MODEL:
            return self._default
        path = self.model_dir(asr_model)
        if path is None:
            return None
        return self._loaded.get(path)

    def menu_recognizer(self, language: str, asr_model: str | None) -> MenuRecognizer | None:
        """The recognizer of speech menus in that language, at live priority (None: DTMF only)."""
        recognizer = self.recognizer(language, asr_model)
        return MenuRecognizer(recognizer) if recognizer is not None else None

    def vocabulary(self, language: str, asr_model: str | None) -> RecognizerVocabulary | None:
        """Vocabulary of the model (for FlowValidator), None if it is not available."""
        recognizer = self.recognizer(language, asr_model)
        if recognizer is None and self.installed(asr_model):
            recognizer = self._load(asr_model)
        return RecognizerVocabulary(recognizer) if recognizer is not None else None

    def _load(self, asr_model: str | None) -> SpeechRecognizer | None:
        path = self.model_dir(asr_model)
        if path is None or path in self._missing:
            return None
        try:
            recognizer = SpeechRecognizer.load_sync(path, workers=self._workers)
        except AsrError as exc:
            log.warning("ASR model %s cannot be loaded: %s", path, exc)
            self._missing.add(path)
            return None
        self._loaded[path] = recognizer
        return recognizer

    def close(self) -> None:
        """Release the models this registry loaded (not the default one)."""
        for recognizer in self._loaded.values():
            recognizer.close()
        self._loaded.clear()
