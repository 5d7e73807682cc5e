"""Prompt audio of a flow: per-language libraries (espeak-ng, cached by hash) and recorded "file:" sounds."""
from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from .flow_model import FILE_PREFIX, FlowDocument
from .flow_validator import contained_sound_file, resolve_sound_file
from .prompts import PromptError, PromptLibrary, PromptSet


class PromptResolver(Protocol):
    """Turns a node's prompt reference into a path Asterisk can play, once prepare() has made the audio."""

    async def prepare(self) -> None:
        """Make (or find) the audio of every prompt."""

    def path(self, ref: str, language: str) -> str:
        """Playable path (no extension)."""


@lru_cache(maxsize=4096)
def _file_path(ref: str, base_dir: Path | None, folders: tuple[Path, ...]) -> str:
    # Asked for on every prompt of every call: worth remembering (a published flow's files were checked the same
    # way by the validator; this is the second lock on the same door).
    path = resolve_sound_file(ref, base_dir)
    playable = contained_sound_file(path, folders)
    if playable is None:
        raise PromptError(f"prompt file {path} is missing or outside the prompt folders")
    return str(playable)


class FlowPrompts:
    """The prepared prompts of one flow document, every language; prepare() synthesizes what is missing
    ({hotline_number} in a text is spoken as hotline_number)."""

    def __init__(self, document: FlowDocument, cache_dir: Path, override_dir: Path | None = None,
                 base_dir: Path | None = None, hotline_number: str | None = None) -> None:
        self._doc = document
        self._base_dir = base_dir
        self._folders = tuple(d for d in (base_dir, override_dir) if d is not None)
        self._libraries = {
            language: PromptLibrary(PromptSet(language, spec.voice, dict(spec.prompts)), cache_dir, override_dir,
                                    hotline_number=hotline_number)
            for language, spec in document.languages.items()
        }

    async def prepare(self) -> None:
        """Synthesize (or find cached/recorded) audio of every prompt in every language; PromptError on failure."""
        for library in self._libraries.values():
            await library.prepare_all()
        # A recorded sound that is missing or outside the prompt folders fails here, not in a call.
        await asyncio.get_running_loop().run_in_executor(None, self._check_files)

    def _check_files(self) -> None:
        for node in self._doc.nodes.values():
            for ref in node.prompts():
                if ref.startswith(FILE_PREFIX):
                    _file_path(ref, self._base_dir, self._folders)

    def path(self, ref: str, language: str) -> str:
        """Playable path of a prompt reference in a language (the default language's if that one lacks it)."""
        if ref.startswith(FILE_PREFIX):
            return _file_path(ref, self._base_dir, self._folders)
        library = self._libraries.get(language) or self._libraries[self._doc.default_language]
        try:
            return library.path(ref)
        except PromptError:
            return self._libraries[self._doc.default_language].path(ref)


class FixedPrompts:
    """One prepared prompt library used for every language (tests, or a single-language deployment)."""

    def __init__(self, library: PromptLibrary, base_dir: Path | None = None) -> None:
        self._library = library
        self._base_dir = base_dir

    async def prepare(self) -> None:
        """Nothing to do: the library was prepared by its owner."""

    def path(self, ref: str, language: str) -> str:
        """Playable path of a prompt reference."""
        if ref.startswith(FILE_PREFIX):
            return _file_path(ref, self._base_dir, (self._base_dir,) if self._base_dir else ())
        return self._library.path(ref)
