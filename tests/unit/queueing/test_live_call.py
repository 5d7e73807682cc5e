"""The live call's one description: every field's encoding in the Redis hash, and what is refused."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from queueing.live_call import decode_call, encode_fields, field_names, to_json

QUEUED = datetime(2026, 11, 29, 9, 0, 5, 250000, tzinfo=UTC)


def test_every_kind_of_field_round_trips() -> None:
    fields = {
        "state": "connected", "caller_number": "01012345678", "case_number": "2611290001", "priority": 5,
        "repeat_caller": True, "ivr_path": ["1", "heard:도로에 쓰레기", "recorded"], "position": 2,
        "queue_wait_seconds": 12.5, "callback_id": 7, "queued_at": QUEUED,
        "answered_at": QUEUED.astimezone(timezone(timedelta(hours=9))), "transcript": "길에 쓰레기가 있어요",
    }
    encoded = encode_fields(fields)
    assert all(isinstance(v, str) for v in encoded.values())
    assert encoded["priority"] == "5" and encoded["repeat_caller"] == "1" and encoded["queued_at"] == QUEUED.isoformat()
    call = decode_call({**encoded, "linkedid": "1700000000.1"})
    assert call == {**fields, "linkedid": "1700000000.1"}
    assert call["answered_at"] == QUEUED and call["answered_at"].utcoffset() == timedelta(hours=9)
    assert encode_fields({"repeat_caller": False, "queue_wait_seconds": 3}) == {"repeat_caller": "0",
                                                                                "queue_wait_seconds": "3.0"}


def test_an_undeclared_field_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="a live call has no field 'casenumber'"):
        encode_fields({"state": "queued", "casenumber": "2611290001"})


@pytest.mark.parametrize("name,value,kind", [
    ("position", "3", "int"),  # AMI's strings are converted by the caller, not guessed at here
    ("priority", True, "int"),
    ("queued_at", "2026-11-29T09:00:00+00:00", "datetime"),
    ("repeat_caller", 1, "bool"),
    ("ivr_path", "1", "a list of strings"),
    ("ivr_path", [1, 2], "a list of strings"),
    ("state", "waiting", "one of ivr, queued"),
    ("caller_number", 1012345678, "str"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(name: str, value: object, kind: str) -> None:
    with pytest.raises(ValueError, match=f"live call field '{name}' takes {kind}") as refused:
        encode_fields({name: value})
    assert "\n" not in str(refused.value)


def test_none_clears_and_empty_reads_back_as_none() -> None:
    encoded = encode_fields({"ringing_agent": None, "transcript": "", "priority": None, "ivr_path": None,
                             "answered_at": None})
    assert encoded == {"ringing_agent": "", "transcript": "", "priority": "", "ivr_path": "[]", "answered_at": ""}
    assert decode_call(encoded) == {"ringing_agent": None, "transcript": None, "priority": None, "ivr_path": [],
                                    "answered_at": None}
    assert decode_call({"ivr_path": ""}) == {"ivr_path": []}
    assert decode_call({}) == {}


def test_json_fields_keep_unicode_and_order() -> None:
    path = ["welcome", "1", "heard:\"quoted\", 쉼표", "menu:2"]
    encoded = encode_fields({"ivr_path": path, "transcript": "[not json]"})
    assert encoded["ivr_path"] == '["welcome", "1", "heard:\\"quoted\\", 쉼표", "menu:2"]'
    assert encoded["transcript"] == "[not json]"  # only declared list fields are JSON
    assert decode_call(encoded) == {"ivr_path": path, "transcript": "[not json]"}


def test_reading_what_another_version_wrote() -> None:
    # A field this version does not know is left out; str() of a bool (the old writer) still reads.
    assert decode_call({"state": "queued", "gone_field": "x", "repeat_caller": "False"}) == {
        "state": "queued", "repeat_caller": False}


def test_a_value_that_does_not_parse_names_the_field_or_is_reported() -> None:
    raw = {"state": "queued", "priority": "high", "ivr_path": "{broken", "case_number": "2611290001"}
    with pytest.raises(ValueError, match="live call field 'priority' holds 'high', not int"):
        decode_call(raw)
    problems: list[str] = []
    assert decode_call(raw, problems) == {"state": "queued", "case_number": "2611290001"}
    assert problems == ["live call field 'priority' holds 'high', not int",
                        "live call field 'ivr_path' holds '{broken', not a list of strings"]


def test_change_messages_carry_iso_times() -> None:
    assert to_json({"queued_at": QUEUED, "priority": 3, "agent": None}) == {
        "queued_at": "2026-11-29T09:00:05.250000+00:00", "priority": 3, "agent": None}


def test_the_declared_fields_are_the_ones_writers_use() -> None:
    used = {"state", "caller_number", "channel", "channel_uniqueid", "case_number", "category", "language",
            "priority", "repeat_caller", "ivr_path", "queue", "position", "ringing_agent", "agent",
            "queue_wait_seconds", "overflowed_from", "requeue_queue", "requeue_queued_at", "callback_id",
            "max_wait_recording", "transcript", "transcript_partial", "transcript_status",
            "transcript_live_stopped_by", "started_at", "queued_at", "answered_at", "ended_at", "hangup_cause",
            "outcome", "owner", "ivr_failed", "linkedid"}
    assert field_names() == used
