"""The call-flow document: named nodes of known kinds, per-language prompts; parsed with pydantic, node by node."""
from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# A prompt reference is a prompt name (text in every language, synthesized) or "file:<path>" (a recorded sound).
FILE_PREFIX = "file:"
_KEY = Annotated[str, Field(pattern=r"^[0-9*#]$")]
_NODE_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
_TIME_RANGE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_MESSAGE = 300  # characters of one problem's text: a sentence naming the value, not the value in full
_MAX_PYDANTIC_ERRORS = 3


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """text as one printable line of at most limit characters: control characters (and lone surrogates, which
    cannot be sent as UTF-8) escaped, the rest cut with an ellipsis."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


class FlowParseError(Exception):
    """The document is not a flow at all (not YAML, not a mapping); the message is one line."""


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def branches(self) -> dict[str, str]:
        """Label → target node name of every way out of this node."""
        return {}

    def prompts(self) -> list[str]:
        """Every prompt reference this node plays."""
        return []


class PlayNode(_Node):
    """Play a prompt; with barge_in, a key of that menu pressed during the prompt answers the menu at once."""

    kind: Literal["play"]
    prompt: str
    next: str
    barge_in: str | None = None

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [self.prompt]


class MenuOption(BaseModel):
    """One choice of a menu: a key, optional spoken keywords per language, and where it leads."""

    model_config = ConfigDict(extra="forbid")

    key: _KEY
    keywords: dict[str, list[str]] = Field(default_factory=dict)
    next: str


class MenuNode(_Node):
    """DTMF (and, with speech, spoken keywords) menu with timeout, retries, invalid/no-input prompts and a fallback."""

    kind: Literal["menu"]
    prompt: str
    options: list[MenuOption] = Field(min_length=1)
    speech: bool = False
    timeout_seconds: float | None = Field(default=None, gt=0, le=60)  # None: the hotline's menu_timeout_seconds
    retries: int | None = Field(default=None, ge=0, le=5)  # None: the hotline's menu_retries
    invalid_prompt: str | None = None
    no_input_prompt: str | None = None
    fallback: str | None = None  # key of the option taken once retries are used up
    on_failure: str | None = None  # or a node taken once retries are used up

    def option(self, key: str) -> MenuOption | None:
        """The option of this key, if any."""
        return next((o for o in self.options if o.key == key), None)

    def branches(self) -> dict[str, str]:
        out = {f"key {o.key}": o.next for o in self.options}
        if self.on_failure:
            out["failure"] = self.on_failure
        return out

    def prompts(self) -> list[str]:
        return [p for p in (self.prompt, self.invalid_prompt, self.no_input_prompt) if p]


class RecordNode(_Node):
    """Record the caller's description (beep, max length, silence end), then transcribe it onto the case."""

    kind: Literal["record"]
    prompt: str
    next: str
    max_seconds: int | None = Field(default=None, ge=3, le=600)
    silence_seconds: int | None = Field(default=None, ge=1, le=30)
    transcribe: bool = True
    # "stream": transcribe live during the call (EAGI → ASR websocket → live state), ending when the caller
    # stops talking; "record": record to silence/#, transcribe afterwards.
    mode: Literal["record", "stream"] = "record"

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [self.prompt]


class AnnounceCaseNode(_Node):
    """Tell the caller the number of the case this call opened."""

    kind: Literal["announce_case"]
    prompt: str
    next: str

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [self.prompt]


class CaseStatusNode(_Node):
    """The caller keys a case number (ending with #) and hears its status."""

    kind: Literal["case_status"]
    prompt: str
    not_found_prompt: str
    status_prompts: dict[str, str]  # case status → prompt
    next: str
    max_digits: int = Field(default=10, ge=1, le=20)
    timeout_seconds: float = Field(default=8.0, gt=0, le=60)

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [self.prompt, self.not_found_prompt, *self.status_prompts.values()]


class HoursNode(_Node):
    """Branch on business hours: weekly ranges ("09:00-18:00") in a time zone, holidays closed."""

    kind: Literal["hours"]
    timezone: str
    weekly: dict[str, list[str]]
    holidays: list[date] = Field(default_factory=list)
    open: str
    closed: str

    @field_validator("weekly")
    @classmethod
    def _ranges(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, ranges in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"weekday {day!r} is not one of {', '.join(WEEKDAYS)}")
            for r in ranges:
                if not _TIME_RANGE.match(r):
                    raise ValueError(f"{day}: {r!r} is not a range like 09:00-18:00")
        return value

    def branches(self) -> dict[str, str]:
        return {"open": self.open, "closed": self.closed}


class LanguageNode(_Node):
    """Let the caller pick a language: the rest of the flow uses its prompts and ASR model."""

    kind: Literal["language"]
    prompt: str
    options: dict[_KEY, str]  # key → language code
    next: str
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [self.prompt]


class SetNode(_Node):
    """Set the case's category and/or priority."""

    kind: Literal["set"]
    category: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    priority: int | None = Field(default=None, ge=0, le=10)
    next: str

    def branches(self) -> dict[str, str]:
        return {"next": self.next}


class QueueNode(_Node):
    """Hand the call to a named app_queue queue with a priority (the dialplan runs Queue())."""

    kind: Literal["queue"]
    queue: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    priority: int | None = Field(default=None, ge=0, le=10)  # None: the priority a set node gave
    prompt: str | None = None
    max_wait_seconds: int | None = Field(default=None, ge=10, le=7200)

    def prompts(self) -> list[str]:
        return [self.prompt] if self.prompt else []


class TransferNode(_Node):
    """Transfer the call to an external number (the dialplan dials HOTLINE_TRANSFER)."""

    kind: Literal["transfer"]
    number: str = Field(pattern=r"^\+?[0-9]{2,20}$")
    prompt: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if self.prompt else []


class CallbackNode(_Node):
    """Offer a call back instead of waiting; pressing accept_key books a durable callback request (and notes it on
    the case), dialed like a queue's callbacks by an agent of `queue` (None: the hotline's default callback queue)."""

    kind: Literal["callback"]
    prompt: str
    queue: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{1,31}$")
    accept_key: _KEY = "1"
    accepted_prompt: str | None = None
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    accepted: str
    declined: str

    def branches(self) -> dict[str, str]:
        return {"accepted": self.accepted, "declined": self.declined}

    def prompts(self) -> list[str]:
        return [p for p in (self.prompt, self.accepted_prompt) if p]


class SurveyNode(_Node):
    """Ask for a 1-5 satisfaction key press and store it against the case."""

    kind: Literal["survey"]
    prompt: str
    thanks_prompt: str | None = None
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    next: str

    def branches(self) -> dict[str, str]:
        return {"next": self.next}

    def prompts(self) -> list[str]:
        return [p for p in (self.prompt, self.thanks_prompt) if p]


class GotoNode(_Node):
    """Jump to another node."""

    kind: Literal["goto"]
    next: str

    def branches(self) -> dict[str, str]:
        return {"next": self.next}


class HangupNode(_Node):
    """Optionally say goodbye, then hang up."""

    kind: Literal["hangup"]
    prompt: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if self.prompt else []


Node = (PlayNode | MenuNode | RecordNode | AnnounceCaseNode | CaseStatusNode | HoursNode | LanguageNode | SetNode
        | QueueNode | TransferNode | CallbackNode | SurveyNode | GotoNode | HangupNode)
NODE_KINDS: dict[str, type[_Node]] = {
    "play": PlayNode, "menu": MenuNode, "record": RecordNode, "announce_case": AnnounceCaseNode,
    "case_status": CaseStatusNode, "hours": HoursNode, "language": LanguageNode, "set": SetNode,
    "queue": QueueNode, "transfer": TransferNode, "callback": CallbackNode, "survey": SurveyNode,
    "goto": GotoNode, "hangup": HangupNode,
}
PERSON_KINDS = ("queue", "transfer")  # nodes that reach a person
TERMINAL_KINDS = ("queue", "transfer", "hangup")


class LanguageSpec(BaseModel):
    """One language of a flow: its espeak-ng voice, its Vosk model and its prompt texts."""

    model_config = ConfigDict(extra="forbid")

    voice: str = Field(min_length=1)
    asr_model: str | None = None  # "default": the hotline's Vosk model; a path; None: no speech menus
    prompts: dict[str, str] = Field(default_factory=dict)


class FlowHeader(BaseModel):
    """Everything of a flow document but its nodes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    description: str = ""
    start: str
    default_language: str
    languages: dict[str, LanguageSpec] = Field(min_length=1)
    nodes: dict[str, Any] = Field(min_length=1)


class FlowDocument(BaseModel):
    """A parsed, typed flow (may still fail FlowValidator's graph checks)."""

    name: str
    description: str
    start: str
    default_language: str
    languages: dict[str, LanguageSpec]
    nodes: dict[str, Node]
    source: str = ""  # the YAML text it came from


class NodeError(Exception):
    """One problem found while parsing, tied to a node (or None for the document)."""

    def __init__(self, node: str | None, message: str) -> None:
        message = one_line(message)
        super().__init__(message)
        self.node = one_line(node, 80) if node is not None else None
        self.message = message


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    errors = exc.errors(include_input=False, include_url=False)
    for err in errors[:_MAX_PYDANTIC_ERRORS]:
        where = ".".join(one_line(str(p), 40) for p in err["loc"] if p != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > _MAX_PYDANTIC_ERRORS:
        parts.append(f"and {len(errors) - _MAX_PYDANTIC_ERRORS} more")
    return "; ".join(parts)


def _load_yaml(text: str) -> Any:
    """The YAML document, or NodeError (one line) for text that is not YAML a flow could be written in."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NodeError(None, f"not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise NodeError(None, "not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:
        # The constructors of dates and numbers: "2026-13-45", an integer of 5000 digits.
        raise NodeError(None, f"not valid YAML: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


def parse_flow(text: str) -> tuple[FlowDocument | None, list[NodeError]]:
    """Parse YAML text node by node; returns the document (None if unusable) and every problem found."""
    try:
        raw = _load_yaml(text)
    except NodeError as exc:
        return None, [exc]
    if not isinstance(raw, dict):
        return None, [NodeError(None, "a flow must be a YAML mapping with name, start, languages and nodes")]
    try:
        header = FlowHeader.model_validate(raw)
    except ValidationError as exc:
        return None, [NodeError(None, _pydantic_message(exc))]
    errors: list[NodeError] = []
    nodes: dict[str, Any] = {}
    for name, body in header.nodes.items():
        name = str(name)
        if not re.match(_NODE_NAME, name):
            errors.append(NodeError(name, "a node name must start with a letter and use letters, digits, _ or -"))
            continue
        if not isinstance(body, dict) or "kind" not in body:
            errors.append(NodeError(name, "a node must be a mapping with a 'kind'"))
            continue
        kind = body["kind"]
        if not isinstance(kind, str):
            # Never printed: an alias of an alias … expands to millions of items.
            errors.append(NodeError(name, f"kind must be a string, one of {', '.join(NODE_KINDS)}"))
            continue
        model = NODE_KINDS.get(kind)
        if model is None:
            errors.append(NodeError(name, f"unknown node kind {one_line(repr(kind), 60)} "
                                          f"(known: {', '.join(NODE_KINDS)})"))
            continue
        try:
            nodes[name] = model.model_validate(body)
        except ValidationError as exc:
            errors.append(NodeError(name, f"{kind}: {_pydantic_message(exc)}"))
    doc = FlowDocument(name=header.name, description=header.description, start=header.start,
                       default_language=header.default_language, languages=header.languages, nodes=nodes,
                       source=text)
    return doc, errors
