"""Errors raised by the asr package; every message is one line naming what was wrong."""
from __future__ import annotations


class AsrError(Exception):
    """Base of every speech-recognition error; str() is a one-line message."""


class AsrModelError(AsrError):
    """The Vosk model directory is missing, incomplete or cannot be loaded."""


class AudioFormatError(AsrError):
    """Audio that cannot be transcribed: missing, not WAV, unsupported encoding, empty or too short."""


class EmptyAudioError(AudioFormatError):
    """Audio that holds no speech to hear: an empty file, no frames, or too short to recognize anything."""


class AsrTimeoutError(AsrError, TimeoutError):
    """A transcription did not finish within its time limit."""
