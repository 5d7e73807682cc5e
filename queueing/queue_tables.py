"""Tables of the queueing domain: agents and their skills, per-queue interval metrics, callback requests."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage import Base, UTCDateTime


class AgentRow(Base):
    """An agent: SIP endpoint secret (never the console password) and the durable wish re-applied to Asterisk."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # also the login and the PJSIP endpoint
    display_name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    sip_secret: Mapped[str] = mapped_column(String(128), nullable=False)  # generated: the phone's digest secret
    logged_in: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    pause_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class AgentSkillRow(Base):
    """One queue an agent serves, with the app_queue penalty (lower is asked first)."""

    __tablename__ = "agent_skills"

    agent_name: Mapped[str] = mapped_column(String(32), ForeignKey("agents.name", ondelete="CASCADE"),
                                            primary_key=True)
    queue: Mapped[str] = mapped_column(String(32), primary_key=True)
    penalty: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class QueueIntervalMetricRow(Base):
    """Per queue and interval (e.g. 15 min): sums from which the usual call-center figures are derived."""

    __tablename__ = "queue_interval_metrics"

    queue: Mapped[str] = mapped_column(String(32), primary_key=True)
    interval_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    offered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    answered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    answered_within_sl: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    answer_wait_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    abandoned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    abandon_wait_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    handled: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    handle_time_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    longest_wait: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class CallbackRow(Base):
    """A caller's durable request to be called back; keeps the place they had in the queue (queued_at)."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    caller_number: Mapped[str] = mapped_column(String(64), nullable=False)
    case_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    linkedid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)  # the caller's place in line
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    agent: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_callbacks_status_queued_at", "status", "queued_at"),)
