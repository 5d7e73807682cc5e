"""Agents' SIP secrets apart from their console passwords: agents.sip_password becomes agents.sip_secret.

Until now an agent's SIP password was also their console password. A SIP password that still opens the
agent's console account (its Argon2 hash verifies it), or is shorter than a SIP secret now must be (16), is
replaced by a newly generated secret (`hotline agents rotate-sip-secret NAME` gives the agent a new one and shows
it); one that does not is kept, so those phones go on registering.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

"""
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_agents = sa.table("agents", sa.column("name", sa.String), sa.column("sip_password", sa.String),
                   sa.column("sip_secret", sa.String))
_accounts = sa.table("accounts", sa.column("username", sa.String), sa.column("password_hash", sa.String))


def _opens_console(hasher: PasswordHasher, password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def upgrade() -> None:
    """Add sip_secret, fill it (a new secret where the old one doubled as a console password), drop sip_password."""
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("sip_secret", sa.String(length=128), nullable=True))
    conn = op.get_bind()
    hashes = dict(conn.execute(sa.select(_accounts.c.username, _accounts.c.password_hash)).all())
    hasher = PasswordHasher()
    for name, old in conn.execute(sa.select(_agents.c.name, _agents.c.sip_password)).all():
        keep = len(old or "") >= 16 and ";" not in old and not _opens_console(hasher, hashes.get(name), old)
        conn.execute(_agents.update().where(_agents.c.name == name).values(
            sip_secret=old if keep else secrets.token_urlsafe(24)))
    with op.batch_alter_table("agents") as batch:
        batch.alter_column("sip_secret", existing_type=sa.String(length=128), nullable=False)
        batch.drop_column("sip_password")


def downgrade() -> None:
    """Back to sip_password (holding the SIP secret; console passwords are not touched)."""
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("sip_password", sa.String(length=128), nullable=True))
    op.execute(_agents.update().values(sip_password=_agents.c.sip_secret))
    with op.batch_alter_table("agents") as batch:
        batch.alter_column("sip_password", existing_type=sa.String(length=128), nullable=False)
        batch.drop_column("sip_secret")
