"""Alembic revisions for every domain's tables; driven programmatically by storage.migrate (no alembic.ini)."""
