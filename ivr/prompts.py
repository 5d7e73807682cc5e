"""Prompt audio: text synthesized with espeak-ng into 8 kHz WAV, cached by content hash; recorded files win."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# Bump when the synthesis recipe changes, so cached audio is regenerated.
_RECIPE = "espeak-ng/sox 8k mono s16 v1"
# Written in a prompt text, spoken as the configured hotline number (settings hotline_number).
HOTLINE_NUMBER_PLACEHOLDER = "{hotline_number}"
# A prompt name becomes part of a file name, a language code a folder name and a voice an espeak-ng argument:
# plain identifiers only, so none can climb out of a folder or pass for a command-line option.
PROMPT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
LANGUAGE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,15}$")
VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,63}$")
PROMPT_NAME_RULE = "a prompt name starts with a letter and has only letters, digits and _ (at most 64)"
LANGUAGE_CODE_RULE = "a language code starts with a letter and has only letters, digits, - and _ (at most 16)"
VOICE_NAME_RULE = "an espeak-ng voice name starts with a letter or digit and has only letters, digits, -, + and _"


def fill_prompt_text(text: str, hotline_number: str | None) -> str:
    """The text to speak: {hotline_number} replaced by the number (other braces, e.g. {minutes}, left alone)."""
    if not hotline_number:
        return text
    # Digit by digit, as a phone number is said: espeak-ng reads "12345" as "twelve thousand three hundred ..."
    # (만 이천삼백..., 一万两千...) in every voice, but "1 2 3 4 5" as one-two-three-four-five (일 이 삼, 一 二 三).
    return text.replace(HOTLINE_NUMBER_PLACEHOLDER, " ".join(hotline_number))


class PromptError(Exception):
    """A prompt could not be produced; the message is one line."""


@dataclass(frozen=True)
class PromptSet:
    """The texts of one language's prompts and the espeak-ng voice that speaks them."""

    language: str
    voice: str
    texts: dict[str, str]


def load_prompt_sets(path: Path, hotline_number: str | None = None) -> dict[str, PromptSet]:
    """Read prompts.yaml: {language: {voice: ..., name: text, ...}}; {hotline_number} filled in when given."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PromptError(f"prompt file {path}: {exc}") from None
    sets: dict[str, PromptSet] = {}
    for language, entry in data.items():
        if not isinstance(entry, dict) or "voice" not in entry:
            raise PromptError(f"prompt file {path}: language {language!r} needs a 'voice' and prompt texts")
        texts = {k: fill_prompt_text(str(v), hotline_number) for k, v in entry.items() if k != "voice"}
        sets[str(language)] = PromptSet(str(language), str(entry["voice"]), texts)
    return sets


def synthesize_speech(text: str, voice: str, target: Path, speed: int = 150) -> Path:
    """Speak text with espeak-ng into an 8 kHz mono 16-bit WAV at target (atomically); PromptError on failure."""
    import subprocess

    if not VOICE_NAME.fullmatch(voice):
        raise PromptError(f"voice {voice!r}: {VOICE_NAME_RULE}")
    raw = target.with_suffix(".raw.wav")
    tmp = target.with_suffix(".tmp.wav")
    try:
        # The text goes on standard input, never on the command line: a text such as "-f/etc/hostname" or
        # "-w/some/path" would otherwise be read as an option (speak that file, write there).
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), "--stdin"],
                       input=text.encode("utf-8"), check=True, capture_output=True, timeout=30)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(tmp)],
                       check=True, capture_output=True, timeout=30)
    except FileNotFoundError as exc:
        raise PromptError(f"{exc.filename} is not installed (run `make setup`)") from None
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise PromptError(f"synthesizing {target.name}: {err[-1] if err else exc}") from None
    except subprocess.TimeoutExpired:
        raise PromptError(f"synthesizing {target.name}: timed out") from None
    finally:
        raw.unlink(missing_ok=True)
    tmp.replace(target)  # atomic: a half-written file is never served
    log.info("speech synthesized: %s", target.name)
    return target


class PromptLibrary:
    """Resolves a prompt name to an Asterisk-playable path (no extension), synthesizing and caching as needed.

    hotline_number: spoken wherever a text says {hotline_number} (the cache key is of the spoken text, so a
    changed number gets new audio)."""

    def __init__(self, prompt_set: PromptSet, cache_dir: Path, override_dir: Path | None = None,
                 speed: int = 150, hotline_number: str | None = None) -> None:
        self._set = prompt_set
        self._cache_dir = cache_dir
        self._override_dir = override_dir
        self._speed = speed
        self._hotline_number = hotline_number
        self._paths: dict[str, str] = {}

    @property
    def language(self) -> str:
        """The language of these prompts."""
        return self._set.language

    def path(self, name: str) -> str:
        """Playable path (without .wav) of a prepared prompt; PromptError if it was never prepared."""
        try:
            return self._paths[name]
        except KeyError:
            raise PromptError(f"prompt {name!r} is not prepared (language {self._set.language})") from None

    async def prepare_all(self) -> None:
        """Make every prompt's audio (off the event loop); fails with a one-line PromptError."""
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                raise PromptError(f"{tool} is not installed (run `make setup`)")
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for name, text in self._set.texts.items():
            self._paths[name] = await loop.run_in_executor(None, self._prepare_one, name, text)

    def _prepare_one(self, name: str, text: str) -> str:
        if not PROMPT_NAME.fullmatch(name):
            raise PromptError(f"prompt {name!r}: {PROMPT_NAME_RULE}")
        if not LANGUAGE_CODE.fullmatch(self._set.language):
            raise PromptError(f"language {self._set.language!r}: {LANGUAGE_CODE_RULE}")
        if self._override_dir is not None:
            recorded = self._override_dir / self._set.language / f"{name}.wav"
            if recorded.exists():
                return str(recorded.with_suffix(""))
        text = fill_prompt_text(text, self._hotline_number)
        digest = hashlib.sha256(f"{_RECIPE}\0{self._set.voice}\0{self._speed}\0{text}".encode()).hexdigest()[:20]
        target = self._cache_dir / f"{name}-{digest}.wav"
        if not target.exists():
            synthesize_speech(text, self._set.voice, target, self._speed)
        return str(target.with_suffix(""))
