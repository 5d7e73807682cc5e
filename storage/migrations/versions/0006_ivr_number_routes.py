"""IVR number routes: ivr_number_routes, the flow an admin switched a dialed number to (ivr.flow_store).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ivr_number_routes."""
    op.create_table(
        "ivr_number_routes",
        sa.Column("number", sa.String(length=15), nullable=False),
        sa.Column("flow_name", sa.String(length=64), nullable=False),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("routed_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_ivr_number_routes")),
    )


def downgrade() -> None:
    """Drop ivr_number_routes."""
    op.drop_table("ivr_number_routes")
