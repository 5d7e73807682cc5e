"""SQLAlchemy table of durable transcription jobs (schema changes go through an Alembic revision)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage import Base, UTCDateTime


class TranscriptionJobRow(Base):
    """One recording (or a call's recordings) to transcribe, kept until its transcript is stored."""

    __tablename__ = "transcription_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # What the job is for, unique so a repeated enqueue (a retried event, a restart) adds nothing.
    job_key: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # The case the transcript belongs to, as a plain reference: the case store knows nothing of jobs.
    case_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    recordings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    grammar: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The observer (case update) has heard of the final state; false after a crash between the two.
    notified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_transcription_jobs_status_not_before", "status", "not_before"),
        Index("ix_transcription_jobs_case_number", "case_number"),
    )
