"""SQLAlchemy tables of the case store (schema changes go through an Alembic revision in storage/migrations/)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage import Base, UTCDateTime


class CaseRow(Base):
    """One citizen case."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_number: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)
    caller_number: Mapped[str] = mapped_column(String(64), nullable=False)
    category: Mapped[str] = mapped_column(String(32), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Statuses are plain strings (validated in Python) so adding one needs no migration.
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    menu_path: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    transcript: Mapped[str | None] = mapped_column(Text, nullable=True)
    transcript_status: Mapped[str] = mapped_column(String(16), nullable=False)
    recording_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Unique: one producer (e.g. one call) opens at most one case, which find_by_source relies on.
    source_ref: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_cases_created_at", "created_at"),
        Index("ix_cases_status_created_at", "status", "created_at"),
        Index("ix_cases_transcript_status_created_at", "transcript_status", "created_at"),
    )


class CaseEventRow(Base):
    """One change of a case, appended in the transaction that changed the case row (never updated or deleted)."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cases.id"), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)  # a username, 'ivr' or 'system'
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)

    # A case's history is read in order: by case, then by id (ids grow with time).
    __table_args__ = (Index("ix_case_events_case_id_id", "case_id", "id"),)


class CaseCounterRow(Base):
    """Last case sequence number handed out for one day (YYMMDD); bumped atomically by each create."""

    __tablename__ = "case_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False)


class CaseAppliedOpRow(Base):
    """The id of each journaled write applied to a case, stored in the same transaction as the change itself, so
    a write replayed from the outbox (after a timeout that committed late, or a restart) is applied once."""

    __tablename__ = "case_applied_ops"

    op_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
