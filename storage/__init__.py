"""The database kit every domain uses: engines from a URL (with timeouts), the one metadata registry, UTC
timestamps, the dialect-aware insert, finish-on-cancel for stores, and the migration runner."""
from .engine import create_engine_from_url, dialect_insert, normalize_database_url, sqlite_database_files
from .errors import StorageError
from .migrate import MIGRATIONS_DIR, alembic_config, migrate_database
from .schema import NAMING_CONVENTION, Base, UTCDateTime, metadata
from .transactions import finish_on_cancel

__all__ = [
    "MIGRATIONS_DIR",
    "NAMING_CONVENTION",
    "Base",
    "StorageError",
    "UTCDateTime",
    "alembic_config",
    "create_engine_from_url",
    "dialect_insert",
    "finish_on_cancel",
    "metadata",
    "migrate_database",
    "normalize_database_url",
    "sqlite_database_files",
]
