"""Case events: case_events, the append-only history of every change of a case; notes become `note` events.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables as this revision sees them (never the application's models, which move on).
_cases = sa.table(
    "cases",
    sa.column("id", sa.Integer()),
    sa.column("notes", sa.Text()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_events = sa.table(
    "case_events",
    sa.column("id", sa.Integer()),
    sa.column("case_id", sa.Integer()),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String(64)),
    sa.column("kind", sa.String(32)),
    sa.column("data", sa.JSON()),
)


def upgrade() -> None:
    """Create case_events, move each case's notes into one `note` event, drop cases.notes."""
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    op.create_index("ix_case_events_case_id_id", "case_events", ["case_id", "id"], unique=False)
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_cases.c.id, _cases.c.notes, _cases.c.updated_at).where(_cases.c.notes.is_not(None))
        .order_by(_cases.c.id)
    ).all()
    moved = [{"case_id": case_id, "at": updated_at, "actor": "system", "kind": "note", "data": {"text": notes}}
             for case_id, notes, updated_at in rows if notes.strip()]
    if moved:
        bind.execute(sa.insert(_events), moved)
    with op.batch_alter_table("cases") as batch_op:
        batch_op.drop_column("notes")


def downgrade() -> None:
    """Put the notes column back, filled with each case's `note` events (one per line), and drop case_events."""
    with op.batch_alter_table("cases") as batch_op:
        batch_op.add_column(sa.Column("notes", sa.Text(), nullable=True))
    bind = op.get_bind()
    notes: dict[int, list[str]] = {}
    for case_id, data in bind.execute(
        sa.select(_events.c.case_id, _events.c.data).where(_events.c.kind == "note")
        .order_by(_events.c.case_id, _events.c.id)
    ).all():
        notes.setdefault(case_id, []).append(str((data or {}).get("text", "")))
    for case_id, texts in notes.items():
        bind.execute(sa.update(_cases).where(_cases.c.id == case_id).values(notes="\n".join(texts)))
    op.drop_index("ix_case_events_case_id_id", table_name="case_events")
    op.drop_table("case_events")
