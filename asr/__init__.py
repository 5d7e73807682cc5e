"""Speech recognition of recordings and call audio with a local Vosk model (knows nothing of telephony)."""
from .audio import read_audio
from .errors import AsrError, AsrModelError, AsrTimeoutError, AudioFormatError, EmptyAudioError
from .model import default_model_path
from .recognizer import SpeechRecognizer
from .scheduling import RecognitionPriority, RecognitionSlots
from .streaming import RecognitionStream
from .transcript import Transcript, WordTiming
from .ws_server import ASR_TOKEN_ENV, VoskWebsocketServer

__all__ = [
    "ASR_TOKEN_ENV",
    "AsrError",
    "AsrModelError",
    "AsrTimeoutError",
    "AudioFormatError",
    "EmptyAudioError",
    "RecognitionPriority",
    "RecognitionSlots",
    "RecognitionStream",
    "SpeechRecognizer",
    "Transcript",
    "VoskWebsocketServer",
    "WordTiming",
    "default_model_path",
    "read_audio",
]
