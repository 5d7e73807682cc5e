"""Cases, the daily case-number counters and call detail records.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create cases, case_counters and call_records."""
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_number", sa.String(length=20), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("menu_path", sa.JSON(), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("transcript_status", sa.String(length=16), nullable=False),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.Column("source_ref", sa.String(length=255), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("case_number", name=op.f("uq_cases_case_number")),
        sa.UniqueConstraint("source_ref", name=op.f("uq_cases_source_ref")),
    )
    op.create_index("ix_cases_created_at", "cases", ["created_at"], unique=False)
    op.create_index("ix_cases_status_created_at", "cases", ["status", "created_at"], unique=False)
    op.create_index(
        "ix_cases_transcript_status_created_at", "cases", ["transcript_status", "created_at"], unique=False
    )

    op.create_table(
        "case_counters",
        sa.Column("day", sa.String(length=8), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_case_counters")),
    )

    op.create_table(
        "call_records",
        sa.Column("linkedid", sa.String(length=64), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=20), nullable=True),
        sa.Column("ivr_path", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("queue_wait_seconds", sa.Float(), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("hangup_cause", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("linkedid", name=op.f("pk_call_records")),
    )
    op.create_index("ix_call_records_case_number", "call_records", ["case_number"], unique=False)
    op.create_index("ix_call_records_first_seen_at", "call_records", ["first_seen_at"], unique=False)


def downgrade() -> None:
    """Drop everything upgrade() created."""
    op.drop_index("ix_call_records_first_seen_at", table_name="call_records")
    op.drop_index("ix_call_records_case_number", table_name="call_records")
    op.drop_table("call_records")
    op.drop_table("case_counters")
    op.drop_index("ix_cases_transcript_status_created_at", table_name="cases")
    op.drop_index("ix_cases_status_created_at", table_name="cases")
    op.drop_index("ix_cases_created_at", table_name="cases")
    op.drop_table("cases")
