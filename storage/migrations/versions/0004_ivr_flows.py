"""IVR flows: ivr_flow_versions, ivr_flow_audit, ivr_survey_results (ivr.flow_store).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the flow version, audit and survey tables."""
    op.create_table(
        "ivr_flow_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("flow_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_by", sa.String(length=64), nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("comment", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ivr_flow_versions")),
        sa.UniqueConstraint("flow_name", "version", name=op.f("uq_ivr_flow_versions_flow_name")),
    )
    op.create_table(
        "ivr_flow_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("flow_name", sa.String(length=64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ivr_flow_audit")),
    )
    op.create_table(
        "ivr_survey_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("flow_name", sa.String(length=64), nullable=False),
        sa.Column("flow_version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ivr_survey_results")),
    )
    op.create_index(op.f("ix_ivr_survey_results_case_number"), "ivr_survey_results", ["case_number"], unique=False)


def downgrade() -> None:
    """Drop the flow tables."""
    op.drop_index(op.f("ix_ivr_survey_results_case_number"), table_name="ivr_survey_results")
    op.drop_table("ivr_survey_results")
    op.drop_table("ivr_flow_audit")
    op.drop_table("ivr_flow_versions")
