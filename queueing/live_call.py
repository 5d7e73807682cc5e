"""What a live call's Redis hash holds: every field declared once with its type, and its text encoding.

`LiveCall` is the one description; `encode_fields` (writes) and `decode_call` (reads) are the only places that
turn it into the hash's strings and back. A name that is not declared is refused, so a typo cannot start a new
field that nobody reads.
"""
from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypedDict

# Where a call is: the IVR, the queue, an agent, or done. The console shows these words.
CallState = Literal["ivr", "queued", "ringing", "connected", "abandoned", "callback_requested",
                    "recorded_at_max_wait", "ended"]


class LiveCallFields(TypedDict, total=False):
    """The fields a live call's writers set (the keyword arguments of LiveCallState.start_call/update/end_call);
    None clears a field."""

    state: CallState
    caller_number: str | None
    channel: str | None
    channel_uniqueid: str | None  # the citizen's own channel: its hang-up ends the call
    case_number: str | None
    category: str | None
    language: str | None
    priority: int | None  # queue priority (QUEUE_PRIO)
    repeat_caller: bool | None  # the caller has another open case
    ivr_path: list[str]  # menu choices and prompts, in order (JSON in the hash)
    queue: str | None
    position: int | None  # place in the queue when it joined
    ringing_agent: str | None
    agent: str | None
    queue_wait_seconds: float | None
    overflowed_from: str | None  # the queue whose maximum wait sent the call on
    requeue_queue: str | None  # back in this queue after pressing the callback key too early...
    requeue_queued_at: datetime | None  # ...keeping this first join time
    callback_id: int | None
    max_wait_recording: str | None  # path of the description recorded at the maximum wait
    transcript: str | None
    transcript_partial: str | None  # what live transcription has heard so far
    transcript_status: str | None  # cases.TranscriptStatus value
    transcript_live_stopped_by: str | None  # "silence", "max_length", "eof" or "error"
    started_at: datetime | None
    queued_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    hangup_cause: str | None
    outcome: str | None
    owner: str | None  # the bridge process run that registered the call (its IVR session lives there)
    ivr_failed: str | None  # why the IVR failed on this call (the hotline's failure, not the caller's hang-up)


class LiveCall(LiveCallFields, total=False):
    """A call in progress as its Redis hash holds it; a field never written is absent, one cleared is None.

    Text fields read back an empty string as None (the hash cannot tell them apart)."""

    linkedid: str  # Asterisk's linkedid of the citizen's call (or callback-<id> for a callback's leg)


Encoder = Callable[[object], str]
Decoder = Callable[[str], object]


@functools.cache
def _codecs() -> dict[str, tuple[str, Encoder, Decoder]]:
    """field -> (type name for errors, encode a non-None value, decode a non-empty string)."""
    out: dict[str, tuple[str, Encoder, Decoder]] = {}
    for name, hint in typing.get_type_hints(LiveCall).items():  # LiveCallFields' and the linkedid
        args = [a for a in typing.get_args(hint) if a is not type(None)] \
            if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
        (base,) = args
        out[name] = _codec_for(base)
    return out


def _codec_for(base: Any) -> tuple[str, Encoder, Decoder]:
    if typing.get_origin(base) is Literal:
        allowed = tuple(str(a) for a in typing.get_args(base))
        return f"one of {', '.join(allowed)}", _literal(allowed), _literal(allowed)
    if typing.get_origin(base) is list:
        return "a list of strings", _encode_texts, _decode_texts
    codecs: dict[Any, tuple[str, Encoder, Decoder]] = {
        str: ("str", _typed(str), str),
        bool: ("bool", _encode_bool, _decode_bool),
        int: ("int", _encode_int, int),
        float: ("float", _encode_float, float),
        datetime: ("datetime", _encode_datetime, datetime.fromisoformat),
    }
    return codecs[base]


def _typed(kind: type) -> Encoder:
    def encode(value: object) -> str:
        if not isinstance(value, kind):
            raise TypeError
        return str(value)
    return encode


def _literal(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in allowed:
            raise TypeError
        return str(value)
    return check


def _encode_bool(value: object) -> str:
    if not isinstance(value, bool):
        raise TypeError
    return "1" if value else "0"


def _decode_bool(text: str) -> bool:
    # "True"/"False": what str() wrote before fields were typed (hashes live up to an hour after the call).
    if text in ("1", "True"):
        return True
    if text in ("0", "False"):
        return False
    raise ValueError(text)


def _encode_int(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return str(value)


def _encode_float(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return repr(float(value))


def _encode_datetime(value: object) -> str:
    if not isinstance(value, datetime):
        raise TypeError
    return value.isoformat()


def _encode_texts(value: object) -> str:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError
    return json.dumps(list(value), ensure_ascii=False)


def _decode_texts(text: str) -> list[str]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(text)
    return value


def field_names() -> frozenset[str]:
    """Every field a live call may hold."""
    return frozenset(_codecs())


def encode_fields(fields: Mapping[str, object]) -> dict[str, str]:
    """The hash strings of these fields; ValueError names an undeclared field or a value of the wrong type.

    None is written as an empty string (read back as None); a list field given None is written as empty."""
    codecs = _codecs()
    out: dict[str, str] = {}
    for name, value in fields.items():
        if name not in codecs:
            raise ValueError(f"a live call has no field {name!r}")
        kind, encode, _ = codecs[name]
        if value is None:
            out[name] = "[]" if kind == "a list of strings" else ""
            continue
        try:
            out[name] = encode(value)
        except TypeError:
            raise ValueError(f"live call field {name!r} takes {kind}, not {type(value).__name__} "
                             f"{str(value)[:40]!r}") from None
    return out


def decode_call(raw: Mapping[str, str], problems: list[str] | None = None) -> LiveCall:
    """The typed call from its hash strings. A field this version does not declare (written by another
    version) is left out. A value that does not parse raises ValueError naming the field, unless `problems`
    is given: then the field is left out and the message appended there."""
    codecs = _codecs()
    out: dict[str, object] = {}
    for name, text in raw.items():
        if name not in codecs:
            continue
        kind, _, decode = codecs[name]
        if text == "":
            out[name] = [] if kind == "a list of strings" else None
            continue
        try:
            out[name] = decode(text)
        except (TypeError, ValueError):
            message = f"live call field {name!r} holds {text[:40]!r}, not {kind}"
            if problems is None:
                raise ValueError(message) from None
            problems.append(message)
    return typing.cast(LiveCall, out)


def to_json(fields: Mapping[str, object]) -> dict[str, object]:
    """Fields as JSON values (datetimes as ISO strings), for change messages."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
