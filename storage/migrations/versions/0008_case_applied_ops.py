"""case_applied_ops: ids of journaled writes applied to cases, so an outbox replay applies each once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create case_applied_ops."""
    op.create_table(
        "case_applied_ops",
        sa.Column("op_id", sa.String(length=64), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("op_id", name=op.f("pk_case_applied_ops")),
    )


def downgrade() -> None:
    """Drop case_applied_ops."""
    op.drop_table("case_applied_ops")
