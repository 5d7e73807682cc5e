"""IVR flows for tests: the shipped flows, a small valid flow to break, a fake vocabulary, prompts that show
their language, a fixed flow source, and small flows published under other names."""
from __future__ import annotations

import wave
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ivr import FlowValidator, compile_flow
from ivr.prompts import fill_prompt_text, synthesize_speech
from tests.support.hotline_process import PROJECT_ROOT

DEFAULT_FLOW = PROJECT_ROOT / "config" / "ivr" / "default.yaml"
EXAMPLE_FLOW = PROJECT_ROOT / "config" / "ivr" / "examples" / "seoul-120.yaml"
QUEUES = ("complaints", "inquiries", "operator")
SEOUL_MONDAY_NOON = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # 12:00 in Seoul, a Monday
SEOUL_SUNDAY = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


class FakeVocabulary:
    """A Korean model that knows a few words."""

    words = {"버스", "하수도", "보도블록", "위생", "쓰레기", "상담원"}

    def missing(self, words: Collection[str]) -> list[str]:
        """The words the model does not know."""
        return [w for w in words if w not in self.words]


def vocabulary_for(language: str, asr_model: str | None) -> FakeVocabulary | None:
    """The fake vocabulary for the 'default' model; no model otherwise."""
    return FakeVocabulary() if asr_model == "default" else None


def validator(**kwargs: Any) -> FlowValidator:
    """A validator with the fake vocabulary and the three test queues."""
    return FlowValidator(vocabulary_for=vocabulary_for, queues=QUEUES, base_dir=DEFAULT_FLOW.parent, **kwargs)


def check(flow: dict[str, Any], **kwargs: Any) -> tuple[list[str], list[str]]:
    """Validate a flow document: its errors and warnings as text."""
    report = validator(**kwargs).validate_text(yaml.safe_dump(flow, allow_unicode=True))
    return [str(e) for e in report.errors], [str(w) for w in report.warnings]


def base_flow() -> dict[str, Any]:
    """A small valid flow to break in one way per test."""
    return {
        "name": "t", "start": "welcome", "default_language": "ko",
        "languages": {"ko": {"voice": "ko", "asr_model": "default",
                             "prompts": {"hi": "안녕하세요", "menu": "메뉴", "bye": "안녕히"}}},
        "nodes": {
            "welcome": {"kind": "play", "prompt": "hi", "next": "menu"},
            "menu": {"kind": "menu", "prompt": "menu", "fallback": "0", "speech": True, "options": [
                {"key": "1", "keywords": {"ko": ["버스"]}, "next": "bus"},
                {"key": "0", "next": "operator"}]},
            "bus": {"kind": "set", "category": "inquiry", "next": "operator"},
            "operator": {"kind": "queue", "queue": "operator"},
        },
    }


def flow_to_queue(queue: str) -> str:
    """The base flow, DTMF only, sending the caller to this queue."""
    flow = base_flow()
    flow["nodes"]["operator"]["queue"] = queue
    flow["nodes"]["menu"]["speech"] = False
    return yaml.safe_dump(flow, allow_unicode=True)


def flood_flow(category: str = "flood_warning", name: str = "flood-warning") -> str:
    """A small flow published under another name: it says the warning and hangs up."""
    return yaml.safe_dump({
        "name": name, "start": "mark", "default_language": "ko",
        "languages": {"ko": {"voice": "ko", "prompts": {"warning": "{hotline_number} 홍수 경보입니다.",
                                                        "bye": "안녕히 계세요."}}},
        "nodes": {
            "mark": {"kind": "set", "category": category, "next": "tell"},
            "tell": {"kind": "play", "prompt": "warning", "next": "bye"},
            "bye": {"kind": "hangup", "prompt": "bye"},
        },
    }, allow_unicode=True)


class LangPrompts:
    """Prompt paths that show the language they were played in."""

    async def prepare(self) -> None:
        """Nothing to synthesize."""

    def path(self, ref: str, language: str) -> str:
        """/<language>/<prompt>."""
        return f"/{language}/{ref}"


class FixedSource:
    """A flow source that always gives the same compiled flow."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded

    async def current(self) -> Any:
        """The compiled flow."""
        return self.loaded


async def flow_source(path_or_text: Path | str, version: int = 1) -> FixedSource:
    """A fixed source of this flow (a file or YAML text), compiled with LangPrompts."""
    text = path_or_text.read_text(encoding="utf-8") if isinstance(path_or_text, Path) else path_or_text
    loaded = await compile_flow("default", version, text, FlowValidator(base_dir=DEFAULT_FLOW.parent),
                                lambda _doc: LangPrompts())
    return FixedSource(loaded)


def prompt_seconds(tmp: Path, name: str, hotline_number: str) -> float:
    """How long the hotline's Korean prompt plays (same text, voice and speed as the hotline synthesizes)."""
    text = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))["languages"]["ko"]["prompts"][name]
    text = fill_prompt_text(text, hotline_number)  # {hotline_number} as the hotline speaks it
    with wave.open(str(synthesize_speech(text, "ko", tmp / f"prompt-{name}.wav"))) as w:
        return w.getnframes() / w.getframerate()
