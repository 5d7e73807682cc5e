"""The database kit every domain uses: engines from a URL (with timeouts), the one metadata registry, UTC
timestamps, the dialect-aware insert, finish-on-cancel for stores, the migration runner, and the outbox that
keeps writes through an outage."""
from .engine import create_engine_from_url, dialect_insert, normalize_database_url, sqlite_database_files
from .errors import StorageError
from .migrate import MIGRATIONS_DIR, alembic_config, migrate_database
from .outbox import Outbox, OutboxEntry, is_transient
from .schema import NAMING_CONVENTION, Base, UTCDateTime, metadata
from .transactions import finish_on_cancel

__all__ = [
    "MIGRATIONS_DIR",
    "NAMING_CONVENTION",
    "Outbox",
    "OutboxEntry",
    "Base",
    "StorageError",
    "UTCDateTime",
    "alembic_config",
    "create_engine_from_url",
    "dialect_insert",
    "finish_on_cancel",
    "is_transient",
    "metadata",
    "migrate_database",
    "normalize_database_url",
    "sqlite_database_files",
]
