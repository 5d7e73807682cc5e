"""Alembic migrations for the hotline database; driven programmatically (see cases.migration), no alembic.ini."""
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent

__all__ = ["MIGRATIONS_DIR"]
