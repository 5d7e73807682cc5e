"""FakeRecords: call detail records (queueing.CallRecordStore) in memory."""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from queueing import CallRecord

_FIELDS = {f.name for f in dataclasses.fields(CallRecord)} - {"linkedid"}
_BLANK: dict[str, Any] = {"caller_number": "", "case_number": None, "ivr_path": [], "queue": None,
                          "queue_wait_seconds": None, "agent": None, "talk_seconds": None, "hangup_cause": None,
                          "outcome": "in_ivr", "started_at": None, "answered_at": None, "ended_at": None}


def call_record(linkedid: str, **fields: Any) -> CallRecord:
    """An answered inquiry call's record as the console lists one; fields override."""
    values: dict[str, Any] = {
        "caller_number": "0311112222", "case_number": None, "ivr_path": ["2"], "queue": "inquiries",
        "queue_wait_seconds": 12.0, "agent": "agent2", "talk_seconds": 95.0, "hangup_cause": "16",
        "outcome": "answered", "started_at": datetime.fromisoformat("2026-11-29T09:00:00+00:00"),
        "answered_at": datetime.fromisoformat("2026-11-29T09:00:12+00:00"),
        "ended_at": datetime.fromisoformat("2026-11-29T09:01:47+00:00"),
    }
    values.update(fields)
    return CallRecord(linkedid=linkedid, **values)


class FakeRecords:
    """Call records by linkedid: `rows` holds the fields as written (upsert merges them, as the store does)."""

    def __init__(self, *records: CallRecord) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        for record in records:
            fields = dataclasses.asdict(record)
            del fields["linkedid"]
            self.rows[record.linkedid] = fields

    def _record(self, linkedid: str) -> CallRecord | None:
        row = self.rows.get(linkedid)
        return None if row is None else CallRecord(linkedid=linkedid, **{**_BLANK, **row})

    async def upsert(self, linkedid: str, **fields: Any) -> CallRecord | None:
        """Create or update a call's record; an unknown field is refused as the store refuses it."""
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ValueError(f"unknown call record field(s): {', '.join(sorted(unknown))}")
        self.rows.setdefault(linkedid, {}).update(fields)
        return self._record(linkedid)

    async def get(self, linkedid: str) -> CallRecord | None:
        """The call's record, or None."""
        return self._record(linkedid)

    async def list_recent(self, limit: int = 50) -> list[CallRecord]:
        """Records in the order written, at most limit."""
        return [r for r in (self._record(i) for i in list(self.rows)[:limit]) if r is not None]
