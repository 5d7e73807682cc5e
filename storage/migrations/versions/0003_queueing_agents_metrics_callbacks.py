"""Queueing: agents, agent_skills, queue_interval_metrics, callbacks (queueing.queue_tables).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the queueing tables."""
    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("sip_password", sa.String(length=128), nullable=False),
        sa.Column("logged_in", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("pause_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agents")),
    )
    op.create_table(
        "agent_skills",
        sa.Column("agent_name", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("penalty", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["agent_name"], ["agents.name"], name=op.f("fk_agent_skills_agent_name_agents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_name", "queue", name=op.f("pk_agent_skills")),
    )
    op.create_table(
        "queue_interval_metrics",
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("offered", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("answered_within_sl", sa.Integer(), nullable=False),
        sa.Column("answer_wait_sum", sa.Float(), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
        sa.Column("abandon_wait_sum", sa.Float(), nullable=False),
        sa.Column("handled", sa.Integer(), nullable=False),
        sa.Column("handle_time_sum", sa.Float(), nullable=False),
        sa.Column("longest_wait", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("queue", "interval_start", name=op.f("pk_queue_interval_metrics")),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=20), nullable=True),
        sa.Column("linkedid", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index("ix_callbacks_status_queued_at", "callbacks", ["status", "queued_at"], unique=False)


def downgrade() -> None:
    """Drop the queueing tables."""
    op.drop_index("ix_callbacks_status_queued_at", table_name="callbacks")
    op.drop_table("callbacks")
    op.drop_table("queue_interval_metrics")
    op.drop_table("agent_skills")
    op.drop_table("agents")
