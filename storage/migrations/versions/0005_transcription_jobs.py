"""Durable transcription jobs (transcripts.tables).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create transcription_jobs."""
    op.create_table(
        "transcription_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_key", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("case_number", sa.String(length=20), nullable=True),
        sa.Column("recordings", sa.JSON(), nullable=False),
        sa.Column("grammar", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcription_jobs")),
        sa.UniqueConstraint("job_key", name=op.f("uq_transcription_jobs_job_key")),
    )
    op.create_index("ix_transcription_jobs_status_not_before", "transcription_jobs", ["status", "not_before"])
    op.create_index("ix_transcription_jobs_case_number", "transcription_jobs", ["case_number"])


def downgrade() -> None:
    """Drop transcription_jobs."""
    op.drop_index("ix_transcription_jobs_case_number", table_name="transcription_jobs")
    op.drop_index("ix_transcription_jobs_status_not_before", table_name="transcription_jobs")
    op.drop_table("transcription_jobs")
