"""Call detail records: one row per call (Asterisk linkedid), merged from AMI events in whatever order they come."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Row, String, case, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from cases import is_provisional, normalise_menu_path
from storage import Base, Outbox, OutboxEntry, UTCDateTime, dialect_insert, finish_on_cancel, is_transient

# How far a call has got. An outcome never moves back to an earlier stage, so a late or repeated
# event cannot undo a later one; outcomes of equal rank (the final ones) replace each other.
OUTCOME_RANK: dict[str, int] = {
    "in_ivr": 0,
    "queued": 1,
    "answered": 2,
    "abandoned_in_ivr": 3,
    "abandoned_in_queue": 3,
    "interrupted": 3,  # the hotline failed during the call (not the caller's doing)
    "completed": 3,
}


class CallRecordError(ValueError):
    """A call record update was refused; the message is one line naming what was wrong."""



class CallRecordRow(Base):
    """Table row of a call detail record."""

    __tablename__ = "call_records"

    linkedid: Mapped[str] = mapped_column(String(64), primary_key=True)
    caller_number: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    case_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    ivr_path: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    queue_wait_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    talk_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    hangup_cause: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False, default="in_ivr")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When this store first heard of the call: orders list_recent even if the start event never came.
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_call_records_first_seen_at", "first_seen_at"),
        Index("ix_call_records_case_number", "case_number"),
    )


_table = CallRecordRow.__table__


@dataclass(frozen=True)
class CallRecord:
    """One call's detail record (a snapshot)."""

    linkedid: str
    caller_number: str
    case_number: str | None
    ivr_path: list[str]
    queue: str | None
    queue_wait_seconds: float | None
    agent: str | None
    talk_seconds: float | None
    hangup_cause: str | None
    outcome: str
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with times as ISO 8601 strings."""
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "linkedid": self.linkedid,
            "caller_number": self.caller_number,
            "case_number": self.case_number,
            "ivr_path": list(self.ivr_path),
            "queue": self.queue,
            "queue_wait_seconds": self.queue_wait_seconds,
            "agent": self.agent,
            "talk_seconds": self.talk_seconds,
            "hangup_cause": self.hangup_cause,
            "outcome": self.outcome,
            "started_at": iso(self.started_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
        }


# --- validation of upsert fields: each returns the clean value or raises CallRecordError ---


def _text(name: str, max_len: int, optional: bool = True) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            expected = "a string or None" if optional else "a string"
            raise CallRecordError(f"{name} must be {expected}, got {type(value).__name__}")
        if len(value) > max_len:
            raise CallRecordError(f"{name} is longer than {max_len} characters")
        return value

    return check


def _seconds(name: str) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 10**7:
            raise CallRecordError(f"{name} must be a non-negative number of seconds or None, got {value!r}")
        return float(value)

    return check


def _time(name: str) -> Callable[[Any], datetime | None]:
    def check(value: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise CallRecordError(f"{name} must be a timezone-aware datetime or None, got {value!r}")
        return value.astimezone(UTC)

    return check


def _ivr_path(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(step, str) and len(step) <= 64 for step in value):
        raise CallRecordError(f"ivr_path must be a list of short strings, got {value!r}")
    return list(value)


def _outcome(value: Any) -> str:
    if value not in OUTCOME_RANK:
        raise CallRecordError(f"outcome must be one of {', '.join(OUTCOME_RANK)}; got {value!r}")
    return str(value)


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "caller_number": _text("caller_number", 64, optional=False),
    "case_number": _text("case_number", 20),
    "ivr_path": _ivr_path,
    "queue": _text("queue", 64),
    "queue_wait_seconds": _seconds("queue_wait_seconds"),
    "agent": _text("agent", 64),
    "talk_seconds": _seconds("talk_seconds"),
    "hangup_cause": _text("hangup_cause", 64),
    "outcome": _outcome,
    "started_at": _time("started_at"),
    "answered_at": _time("answered_at"),
    "ended_at": _time("ended_at"),
}


def _to_record(row: Row[Any]) -> CallRecord:
    m = row._mapping
    return CallRecord(
        linkedid=m["linkedid"],
        caller_number=m["caller_number"],
        case_number=m["case_number"],
        ivr_path=list(m["ivr_path"] or []),
        queue=m["queue"],
        queue_wait_seconds=m["queue_wait_seconds"],
        agent=m["agent"],
        talk_seconds=m["talk_seconds"],
        hangup_cause=m["hangup_cause"],
        outcome=m["outcome"],
        started_at=m["started_at"],
        answered_at=m["answered_at"],
        ended_at=m["ended_at"],
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


@finish_on_cancel
class CallRecordStore:
    """Stores call detail records; every upsert is one atomic statement, so concurrent events merge safely."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utcnow) -> None:
        # clock: returns the current tz-aware time (tests pass a fake one).
        insert = dialect_insert(engine)
        if insert is None:
            raise CallRecordError(f"unsupported database dialect {engine.dialect.name!r}; use SQLite or PostgreSQL")
        self._insert = insert
        self._engine = engine
        self._clock = clock

    async def upsert(self, linkedid: str, **fields: Any) -> CallRecord:
        """Create the call's record or set the given fields on it; repeated or late events are harmless."""
        _text("linkedid", 64, optional=False)(linkedid)
        if not linkedid:
            raise CallRecordError("linkedid must not be empty")
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise CallRecordError(f"unknown call record field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        values = {name: _FIELDS[name](value) for name, value in fields.items()}
        now = _time("the store's clock")(self._clock())
        insert = self._insert(_table).values(linkedid=linkedid, first_seen_at=now, **values)
        if values:
            changes: dict[str, Any] = {name: insert.excluded[name] for name in values if name != "outcome"}
            if "outcome" in values:
                current_rank = case(OUTCOME_RANK, value=_table.c.outcome, else_=-1)
                changes["outcome"] = case(
                    (current_rank <= OUTCOME_RANK[values["outcome"]], insert.excluded.outcome),
                    else_=_table.c.outcome,
                )
            stmt = insert.on_conflict_do_update(index_elements=[_table.c.linkedid], set_=changes)
        else:
            stmt = insert.on_conflict_do_nothing(index_elements=[_table.c.linkedid])
        async with self._engine.begin() as conn:
            await conn.execute(stmt)
            row = (await conn.execute(select(_table).where(_table.c.linkedid == linkedid))).one()
        return _to_record(row)

    async def get(self, linkedid: str) -> CallRecord | None:
        """The call's record, or None if no event for it was stored."""
        _text("linkedid", 64, optional=False)(linkedid)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_table).where(_table.c.linkedid == linkedid))).one_or_none()
        return None if row is None else _to_record(row)

    async def list_recent(self, limit: int = 50) -> list[CallRecord]:
        """Records of the calls most recently first seen, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise CallRecordError(f"limit must be an integer from 1 to 1000, got {limit!r}")
        stmt = (
            select(_table)
            .order_by(_table.c.first_seen_at.desc(), _table.c.linkedid.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_to_record(r) for r in rows]


class DurableCallRecords:
    """Call detail records written through the outbox: a database outage delays them, never loses them.

    Upserts merge (a repeat sets the same fields; outcomes only move forward), so a replayed one is harmless.
    Register the handler with register() before the outbox starts."""

    _OP = "records.upsert"

    def __init__(self, store: CallRecordStore, outbox: Outbox, *, read_timeout: float = 2.0) -> None:
        self._store = store
        self._outbox = outbox
        self._read_timeout = read_timeout

    def register(self) -> None:
        """Name this store's write on the outbox (once, before it starts)."""
        self._outbox.register(self._OP, self._apply)

    async def upsert(self, linkedid: str, **fields: Any) -> None:
        """Create the call's record or set these fields on it (now, or from the journal)."""
        if is_provisional(str(fields.get("case_number") or "")):
            fields.pop("case_number")  # set when the case's number is known (the call's later events carry it)
        if "ivr_path" in fields:
            fields["ivr_path"] = normalise_menu_path(list(fields["ivr_path"]))
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:  # refused now, not parked later
            raise CallRecordError(f"unknown call record field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        args = {name: value.isoformat() if isinstance(value, datetime) else value for name, value in fields.items()}
        await self._outbox.submit(self._outbox.entry(self._OP, {"linkedid": linkedid, "fields": args}))

    async def get(self, linkedid: str) -> CallRecord | None:
        """The call's record; None if there is none or the database does not answer in time."""
        try:
            async with asyncio.timeout(self._read_timeout):
                return await self._store.get(linkedid)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return None

    async def _apply(self, entry: OutboxEntry) -> None:
        fields = {name: datetime.fromisoformat(value) if name.endswith("_at") and isinstance(value, str) else value
                  for name, value in entry.args["fields"].items()}
        await self._store.upsert(str(entry.args["linkedid"]), **fields)
